"""Training: model definition, the framework-free core loop, Ray Train wrapper, MLflow tracking,
the pyfunc flavour and Ray Tune search. Heavy libraries are imported inside functions."""
