"""What every settings section shares: the error for bad configuration and the strict base."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ml.errors import UserError


class ConfigError(UserError, ValueError):
    """The configuration cannot be read or is invalid; the message says what to fix."""

    exit_code = 2  # bad config or usage, as the CLI's usage errors


class Section(BaseModel):
    """A params.yaml section: an unknown key is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")
