from __future__ import annotations

from pathlib import Path

import pytest

from tests.evaluate.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One build per session, shared with tests/registry (same base temp folder).
    return build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")
