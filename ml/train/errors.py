"""The errors training raises (a leaf module: every part of ml/train imports it)."""

from __future__ import annotations

from ml.errors import UserError


class TrainError(UserError):
    """Training cannot start or did not finish; the message says why and what to do."""


class TrainInterrupted(TrainError):
    """Ctrl-C or SIGTERM (a cancelled CI job) stopped fit(); the run can be resumed."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # 128 + the signal, as a shell reports it
