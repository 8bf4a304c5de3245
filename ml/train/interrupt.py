"""Ctrl-C and SIGTERM during training: stop the workers, keep the checkpoints, say how to resume.

SIGTERM is what a cancelled CI job or `kill` sends; it takes Ray Train's Ctrl-C path, which
aborts the controller and its workers, and the run ends as TrainInterrupted (exit 128 + signal).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ml.train.errors import TrainInterrupted


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[list[int]]:
    """While the block runs, SIGTERM takes the Ctrl-C path: in fit(), Ray Train's SIGINT
    handler aborts the controller and its workers. Yields the list that records a SIGTERM. Both
    handlers are put back afterwards; Ray Train leaves its own SIGINT handler installed, and it
    would exit 0 on a later Ctrl-C."""
    import signal
    import threading

    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # signal handlers can only be set from the main thread
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        received.append(signum)
        signal.raise_signal(signal.SIGINT)

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def interruption(run_name: str, storage_path: str, sigterm: bool) -> TrainInterrupted:
    """The TrainInterrupted for a signal that stopped training, saying how to resume."""
    import signal

    signum = signal.SIGTERM if sigterm else signal.SIGINT
    return TrainInterrupted(
        f"training run {run_name!r} interrupted ({signum.name}); its checkpoints are kept in "
        f"{storage_path}. Rerun with --run-name {run_name} to resume from the last one.",
        128 + signum,
    )


@contextmanager
def fit_interruptible(run_name: str, storage_path: str) -> Iterator[list[Exception]]:
    """Run trainer.fit() in the block; a signal that stops it is recorded (as TrainInterrupted)
    in the yielded list instead of propagating, so the driver can still close its MLflow run."""
    errors: list[Exception] = []
    with sigterm_as_ctrl_c() as sigterm:
        try:
            yield errors
        except (KeyboardInterrupt, SystemExit):
            # Ray Train's Ctrl-C handler ends fit() with SystemExit once it has aborted the
            # controller.
            errors.append(interruption(run_name, storage_path, bool(sigterm)))
