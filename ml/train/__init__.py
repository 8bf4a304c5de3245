"""Training, written once for every task: the framework-free core loop (loop.py), the Ray Train
worker (worker.py), its inputs (inputs.py), the cluster (cluster.py), interruption handling
(interrupt.py), the `ml train` driver (ray_train.py), MLflow tracking, the task-generic pyfunc
flavour and Ray Tune search. The task (ml/tasks) supplies the model, its preprocessing and the
batch collation. Heavy libraries are imported inside functions."""
