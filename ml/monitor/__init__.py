"""Monitoring: drift of production traffic against the training reference, and retraining."""
