"""Serving: Ray Serve endpoint for the champion model, batch inference, and the prediction log.

Submodules import their heavy dependencies (ray, torch, mlflow) inside functions where they can,
so importing `ml.serve.prediction_log` (what drift monitoring reads) stays light.
"""
