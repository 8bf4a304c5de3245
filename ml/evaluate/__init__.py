"""Evaluation: metrics, slices, calibration and behavioural checks on the holdout."""
