"""MLflow models-from-code entry point: the model logged by `log_pyfunc_model`."""

import mlflow

from ml.train.pyfunc import TaskPyfunc

mlflow.models.set_model(TaskPyfunc())
