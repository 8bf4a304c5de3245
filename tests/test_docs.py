"""The documentation site builds offline in strict mode (broken links or snippets fail)."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess

import pytest

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
    # The tasks page embeds the Task interface, the measurements page the dated history.
    tasks = re.sub(r"<[^>]+>", "", (tmp_path / "site/tasks/index.html").read_text())
    assert "class Task(Protocol)" in tasks and "def read_split(" in tasks
    assert "Measurement history" in (tmp_path / "site/benchmarks/index.html").read_text()


def _shell_lines(path) -> list[str]:
    """The lines of every ```bash block in a Markdown file, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)
    lines = (line.split(" #")[0].strip() for block in blocks for line in block.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def check_ml_call(args: list[str]) -> None:
    """`ml ARGS` names real sub-commands and options (an option's value is skipped)."""
    from typer.main import get_command

    from ml.cli import app

    command, path, tokens = get_command(app), ["ml"], list(args)
    while tokens:
        token = tokens.pop(0)
        if token.startswith("-"):
            if token == "--help":
                continue
            params = {o: p for p in command.params for o in (*p.opts, *p.secondary_opts)}
            option = params.get(token.split("=", 1)[0])
            assert option is not None, f"`{' '.join(path)}` has no option {token}"
            if not option.is_flag and "=" not in token:
                tokens.pop(0)  # its value
        elif hasattr(command, "commands") and token in command.commands:
            command = command.commands[token]
            path.append(token)
        else:
            # an argument, or (for `ml predict TEXT`) the default sub-command's input
            assert path != ["ml"], f"`ml` has no command {token}"


DOCS_WITH_COMMANDS = [
    "README.md",
    "docs/quickstart.md",
    "docs/tasks.md",
    "docs/configuration.md",
    "docs/models.md",
]


@pytest.mark.parametrize("name", DOCS_WITH_COMMANDS)
def test_the_commands_in_the_docs_exist(name):
    """Every `ml ...` command, option and params file, and every `make` target, that a README
    or docs code block names is real (the same checker as the workflows')."""
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M))
    lines = _shell_lines(REPO_ROOT / name)
    assert lines, f"{name}: no bash blocks found"
    for line in lines:
        tokens = shlex.split(line)
        while tokens and "=" in tokens[0] and not tokens[0].startswith("-"):
            tokens = tokens[1:]  # VAR=value prefixes
        if tokens[:1] == ["ml"]:
            check_ml_call(tokens[1:])
            for flag, value in itertools.pairwise(tokens):
                if flag in ("--params", "-p"):
                    assert (REPO_ROOT / value).is_file(), f"{name}: {line}: no {value}"
        elif tokens[:1] == ["make"]:
            assert set(tokens[1:]) <= targets, f"{name}: {line}: no such make target"


def test_the_command_checker_catches_mistakes():
    check_ml_call(["--params", "configs/fashion-mnist.yaml", "data", "ingest"])
    with pytest.raises(AssertionError, match="no command"):
        check_ml_call(["no-such-command"])
    with pytest.raises(AssertionError, match="no option --no-such-flag"):
        check_ml_call(["train", "--no-such-flag"])


def test_the_readme_quickstart_is_what_ci_runs():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "make quickstart" in readme and "make test" in readme
    assert "make test" in (REPO_ROOT / ".ci/run").read_text(encoding="utf-8")
    for config in re.findall(r"configs/[\w.-]+\.yaml", readme):
        assert (REPO_ROOT / config).is_file(), f"README names {config}, which does not exist"
