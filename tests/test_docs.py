"""The documentation site builds offline in strict mode (broken links or snippets fail)."""

from __future__ import annotations

import subprocess

from tests.conftest import BIN_DIR, REPO_ROOT, cli_env


def test_docs_build_strict(tmp_path):
    result = subprocess.run(
        [str(BIN_DIR / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO_ROOT,
        env=cli_env(NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    reference = (tmp_path / "site/configuration/index.html").read_text()
    # The reference embeds params.yaml itself, so it cannot fall behind the code.
    assert "early_stopping_patience" in reference and "max_class_f1_drop" in reference
