"""`ml retrain`: the continuous-training path, composed of the pipeline's own stages.

ingest (+ newly labelled rows from `monitor.labelled_source`) -> validate -> split -> [train ->
evaluate -> register] -> gate -> pull request (default) or promotion (`monitor.auto_promote` and
the gate passed).

Idempotent: the split data and the effective params are hashed exactly as `ml registry register`
tags them (`data_sha256`, `params_sha256`); when a registered version already carries both,
training, evaluation and registration are skipped and that version is reported (its recorded gate
decision is reused when it has one). A second run on unchanged data creates no new version.

Opening a pull request (ml/monitor/pull_request.py): with $ML_RETRAIN_GITHUB_TOKEN set (a GitHub
App installation token) and GITHUB_REPOSITORY, the new data version (dvc.lock) is committed to
the branch `retrain/<model>-<data sha>-<params sha>`, its outputs and run cache are pushed to the
trusted DVC remote, the branch is pushed to the git remote and the PR is opened through GitHub's
REST API with the drift and gate report (`monitor.pr_body`) as its body. Once per data and
params: an open (or closed) PR from that branch is reported, not opened again. Without the token
only the body is written (the message says so) for a person or a workflow step to use.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ml.config import Settings
from ml.errors import UserError
from ml.io import atomic_path


class RetrainError(UserError):
    """Continuous training stopped (invalid data, bad labelled source); the message says why."""


@dataclass
class RetrainResult:
    version: str
    created: bool  # False: a version for this data+params existed; nothing was trained
    gate_passed: bool | None
    gate_reasons: list[str]
    action: str  # "promoted" | "pr_opened" | "pr_exists" | "pr_body_written" | "none"
    message: str
    data_sha256: str
    params_sha256: str
    labelled_rows_added: int = 0
    pr_body: str | None = None
    steps: list[str] = field(default_factory=list)
    pr_url: str | None = None
    branch: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- newly labelled data ----------------------------------------------------------------------


def _labelled_files(source: str) -> list[tuple[str, bytes]]:
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=30) as response:
                return [(source, response.read())]
        except OSError as exc:
            raise RetrainError(f"cannot download labelled data {source}: {exc}") from exc
    path = Path(source)
    if path.is_file():
        return [(str(path), path.read_bytes())]
    if path.is_dir():
        return [(str(p), p.read_bytes()) for p in sorted(path.glob("*.csv"))]
    raise RetrainError(
        f"monitor.labelled_source {source} is neither a CSV file, a folder nor a URL"
    )


def append_labelled(settings: Settings) -> int:
    """Append labelled rows (same columns as the training file) to data/raw/<train_file>.
    Rows whose id is already present are skipped, so the result depends only on the inputs."""
    import pandas as pd

    source = settings.monitor.labelled_source
    if not source:
        return 0
    data = settings.data
    location = source if "://" in source else str(settings.path(source))
    train_path = settings.path(data.raw_dir) / data.train_file
    base = pd.read_csv(train_path, dtype=str, keep_default_na=False)
    columns = list(base.columns)
    extra, read = [], []
    for name, raw in _labelled_files(location):
        read.append({"origin": name, "sha256": hashlib.sha256(raw).hexdigest()})
        frame = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
        missing = [
            c
            for c in [data.id_column, data.label_column, *data.text_columns]
            if c not in frame.columns
        ]
        if missing:
            raise RetrainError(f"labelled file {name} lacks column(s) {missing}")
        extra.append(frame.reindex(columns=columns, fill_value=""))
    if not extra:
        return 0
    new = pd.concat(extra, ignore_index=True).drop_duplicates(subset=[data.id_column])
    new = new[~new[data.id_column].isin(set(base[data.id_column]))]
    if new.empty:
        return 0
    with atomic_path(train_path) as tmp:
        pd.concat([base, new], ignore_index=True).to_csv(tmp, index=False)
    _record_labelled(settings, read, len(new))
    return len(new)


def _record_labelled(settings: Settings, files: list[dict[str, str]], rows: int) -> None:
    """Extend ingest's manifest (data/raw/manifest.json, versioned by dvc.lock with the data)
        so it still describes data/raw: which labelled files were merged into the training file, and
    that file's sha256 after the merge (the `files` entries keep what the source gave)."""
    from ml.data.ingest import MANIFEST
    from ml.io import sha256_file, write_json

    raw_dir = settings.path(settings.data.raw_dir)
    path = raw_dir / MANIFEST
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    merged = raw_dir / settings.data.train_file
    manifest["labelled"] = {
        "rows_added": rows,
        "files": files,
        "merged_file": settings.data.train_file,
        "merged_sha256": sha256_file(merged),
    }
    write_json(path, manifest)


# --- decisions --------------------------------------------------------------------------------


def choose_action(gate_passed: bool | None, auto_promote: bool, can_open_pr: bool) -> str:
    """promote only when the policy allows it and the gate passed; otherwise a PR (or its body)
    when the gate passed; nothing to propose when it failed."""
    if not gate_passed:
        return "none"
    if auto_promote:
        return "promoted"
    return "pr_opened" if can_open_pr else "pr_body_written"


def render_pr_body(
    settings: Settings,
    version: str,
    created: bool,
    gate: dict[str, Any] | None,
    drift_summary: dict[str, Any] | None,
    labelled_rows: int,
    data_sha: str,
    params_sha: str,
) -> str:
    name = settings.mlflow.registered_model
    verdict = "passed" if gate and gate.get("passed") else "failed"
    lines = [
        f"## Retrained model: {name} v{version}",
        "",
        f"`ml retrain` {'trained and registered' if created else 'found (no new training)'} "
        f"version {version} for data `{data_sha[:12]}` and params `{params_sha[:12]}`.",
        "",
    ]
    if drift_summary:
        lines += [
            f"**Why:** drift check verdict `{drift_summary.get('verdict')}`: "
            + "; ".join(drift_summary.get("reasons", [])),
            "",
        ]
    if labelled_rows:
        lines += [f"Newly labelled rows added to the training data: {labelled_rows}.", ""]
    lines += [f"### Gate: {verdict}", ""]
    for reason in (gate or {}).get("reasons", []):
        lines.append(f"- {reason}")
    champion = (gate or {}).get("champion") or {}
    challenger = (gate or {}).get("challenger") or {}
    if challenger.get("overall"):
        lines += ["", "| metric | challenger | champion |", "|---|---|---|"]
        for metric in ("accuracy", "f1_weighted", "f1_macro"):
            new = challenger["overall"].get(metric)
            old = (champion.get("overall") or {}).get(metric)
            lines.append(
                f"| {metric} | {new:.4f} | {f'{old:.4f}' if old is not None else '-'} |"
                if new is not None
                else f"| {metric} | - | - |"
            )
    lines += [
        "",
        "Merging this PR and tagging a release promotes the version (`ml release`); or promote "
        f'now: `ml registry promote {version} --reason "..."`.',
    ]
    return "\n".join(lines) + "\n"


# --- the stage --------------------------------------------------------------------------------


DRIFT_ENV = "ML_RETRAIN_DRIFT"


def drift_summary_for(settings: Settings) -> dict[str, Any] | None:
    """Why retraining ran, for the PR body: the drift check's summary.json when it ran in this
    checkout, else $ML_RETRAIN_DRIFT, the `decision` line of its GITHUB_OUTPUT (the retrain
    workflow passes it on from the drift job, which ran on another runner)."""
    path = settings.path(settings.monitor.report_dir) / "summary.json"
    if path.is_file():
        return json.loads(path.read_text())
    raw = os.environ.get(DRIFT_ENV, "")
    if not raw:
        return None
    try:
        summary = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RetrainError(
            f"${DRIFT_ENV} is not JSON ({exc}): pass the `decision` output of `ml monitor "
            "drift` (or the `decisions` output of `ml monitor drift --all`), or unset it"
        ) from exc
    if not isinstance(summary, dict):
        raise RetrainError(f"${DRIFT_ENV} must be a JSON object with verdict and reasons")
    if "verdict" not in summary:  # `decisions` of `ml monitor drift --all`: one per model
        summary = summary.get(settings.model_name or "")
        if summary is not None and not isinstance(summary, dict):
            raise RetrainError(f"${DRIFT_ENV}[{settings.model_name!r}] must be a JSON object")
    return summary


def _existing_version(settings: Settings, data_sha: str, params_sha: str):
    from mlflow.exceptions import MlflowException

    from ml.registry import client

    registry = client(settings)
    name = settings.mlflow.registered_model
    try:
        versions = registry.search_model_versions(f"name = '{name}'")
    except MlflowException:  # no registered model yet
        return None
    matches = [
        v
        for v in versions
        if (v.tags or {}).get("data_sha256") == data_sha
        and (v.tags or {}).get("params_sha256") == params_sha
    ]
    return max(matches, key=lambda v: int(v.version)) if matches else None


def _prepare_data(settings: Settings, steps: list[str]) -> int:
    """ingest (+ labelled rows) -> validate -> split; returns the labelled rows added."""
    from ml.data.ingest import ingest
    from ml.data.split import split
    from ml.data.validate import validate

    ingest(settings)
    steps.append("ingest")
    added = append_labelled(settings)
    steps.append(f"labelled rows +{added}")
    report = validate(settings)
    if not report.passed:
        kinds = ", ".join(sorted(report.kinds()))
        raise RetrainError(
            f"data validation failed ({len(report.problems)} problem(s): {kinds}); see "
            f"{settings.validate_.report}. Nothing was trained."
        )
    steps.append("validate")
    split(settings)
    steps.append("split")
    return added


def _model_for(
    settings: Settings, data_sha: str, params_sha: str, max_rows: int | None, steps: list[str]
) -> tuple[str, bool, bool | None, list[str], dict[str, Any] | None]:
    """The registered version for this data and params (reused, or trained now) and its gate
    verdict: (version, created, gate_passed, reasons, gate report)."""
    existing = _existing_version(settings, data_sha, params_sha)
    if existing is not None:
        version = str(existing.version)
        tags = existing.tags or {}
        status = tags.get("gate.status")
        if status is None:
            gate_passed, reasons, gate_doc = _run_gate(settings, version)
            steps.append("gate")
        else:
            gate_passed, reasons = status == "passed", [tags.get("gate.summary", "")]
            gate_doc = {"passed": gate_passed, "reasons": reasons}
        steps.append(f"reuse v{version} (same data and params: not retrained)")
        return version, False, gate_passed, reasons, gate_doc

    from ml.evaluate.evaluate import evaluate
    from ml.registry import register
    from ml.train.ray_train import TrainOptions, run_training

    run_training(settings, TrainOptions(max_rows=max_rows, extra_tags={"trigger": "ml retrain"}))
    steps.append("train")
    evaluate(settings)
    steps.append("evaluate")
    version = register(settings).version
    steps.append(f"register v{version}")
    gate_passed, reasons, gate_doc = _run_gate(settings, version)
    steps.append("gate")
    return version, True, gate_passed, reasons, gate_doc


def retrain(
    settings: Settings, max_rows: int | None = None, environ: Mapping[str, str] | None = None
) -> RetrainResult:
    """Run the continuous-training path once; see the module doc. `environ` (default
    os.environ) holds the GitHub token and repository the pull request is opened with."""
    from ml.monitor.pull_request import TOKEN_ENV, branch_name, propose, target_from_env
    from ml.registry import data_checksum, params_hash, promote

    # A bad token setup fails before training.
    target = target_from_env(settings.report.base_rev, environ)
    drift_summary = drift_summary_for(settings)  # so does a bad $ML_RETRAIN_DRIFT
    # Held in `target` for git and the API calls only: Ray's workers, DVC and the training code
    # started from here do not inherit it.
    os.environ.pop(TOKEN_ENV, None)
    steps: list[str] = []
    added = _prepare_data(settings, steps)
    data_sha, params_sha = data_checksum(settings), params_hash(settings)
    version, created, gate_passed, reasons, gate_doc = _model_for(
        settings, data_sha, params_sha, max_rows, steps
    )

    action = choose_action(gate_passed, settings.monitor.auto_promote, target is not None)
    body = render_pr_body(
        settings, version, created, gate_doc, drift_summary, added, data_sha, params_sha
    )
    body_path = settings.path(settings.monitor.pr_body)
    with atomic_path(body_path) as tmp:
        tmp.write_text(body, encoding="utf-8")

    pr_url = branch = None
    if action == "promoted":
        promote(settings, version, "auto-promotion by `ml retrain` (monitor.auto_promote: true)")
        message = f"promoted v{version} to champion (monitor.auto_promote)"
    elif action == "pr_opened" and target is not None:
        branch = branch_name(data_sha, params_sha, settings.model_name)
        title = f"Retrain {settings.mlflow.registered_model}: v{version} on data {data_sha[:12]}"
        # A model trained on capped rows is not what `ml train` makes from these params: it
        # goes in dvc.lock for this PR, never into the run cache others restore.
        outcome = propose(
            settings.root,
            target,
            branch,
            title,
            body,
            max_rows is None,
            created,
            model=settings.model_name,
        )
        pr_url, message = outcome.url, outcome.message
        action = "pr_opened" if outcome.created else "pr_exists" if pr_url else "none"
        steps.append(f"branch {branch}" + (f" at {outcome.commit[:12]}" if outcome.commit else ""))
    elif action == "pr_body_written":
        message = (
            "gate passed; $ML_RETRAIN_GITHUB_TOKEN is not set, so no branch was pushed and no "
            f"PR opened: the PR body is in {body_path}"
        )
    else:
        message = f"gate failed for v{version}: nothing to promote; report in {body_path}"
    return RetrainResult(
        version,
        created,
        gate_passed,
        reasons,
        action,
        message,
        data_sha,
        params_sha,
        added,
        str(body_path),
        steps,
        pr_url,
        branch,
    )


def _run_gate(settings: Settings, version: str) -> tuple[bool, list[str], dict[str, Any]]:
    from ml.gate import gate

    result = gate(settings, challenger=version)
    doc = json.loads(result.report_path.read_text())
    return result.decision.passed, result.decision.reasons, doc
