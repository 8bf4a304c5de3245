"""The one base class of errors a user can fix; the CLI turns them into a message and an exit code.

A leaf module (it imports nothing from ml), so every stage can subclass it without cycles.
"""

from __future__ import annotations


class UserError(RuntimeError):
    """Something the user can fix: the message names the problem and what to do."""

    exit_code: int = 1


# What the CLI reports as a message rather than a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (UserError, FileNotFoundError)
