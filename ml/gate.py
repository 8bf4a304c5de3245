"""The promotion gate: may the challenger replace the champion?

`decide` is pure (two evaluations and thresholds in, a decision with reasons out) so its rules are
property-tested. `gate` is the stage: it loads the challenger and the champion from the registry,
evaluates both on the same holdout with the same code, decides, writes reports/gate.json and
records the decision on the challenger's version (promote reads it).

Nothing here depends on the task: both models are scored by ml.evaluate on the same holdout,
and the rules read only the metrics and the per-row predictions (ml.compare pairs them).

Rules: data validation passed; behavioural checks pass (at the configured rate; skipped checks,
e.g. for another label set, and a task without behavioural checks do not fail); and then either
  - with a champion, non-inferiority on the paired bootstrap interval of challenger - champion:
    fail when the whole weighted-F1 interval lies below -f1_tolerance (detectably worse by more
    than the tolerance), or when a class's F1 interval lies wholly below -max_class_f1_drop.
    A difference the holdout cannot tell from noise never fails the gate, and is never called
    better;
  - without one: every configured floor is reached.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.config import GateSettings, Settings
from ml.errors import UserError
from ml.io import write_json

if TYPE_CHECKING:
    from ml.compare import Comparison

# Float noise must not turn "exactly at the tolerance" into a failure.
EPSILON = 1e-9
UNREGISTERED = "unregistered"  # ml.registry.UNREGISTERED, without importing mlflow here


class GateError(UserError):
    """The gate cannot be evaluated (no challenger, no holdout, unreadable report)."""


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Decision:
    passed: bool
    mode: str  # "compare" (against the champion) or "floors" (no champion yet)
    checks: list[Check] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """Why it failed (every failing check), or why it passed."""
        failing = [c.detail for c in self.checks if not c.passed]
        return failing or [c.detail for c in self.checks]

    def summary(self) -> str:
        verdict = "passed" if self.passed else "failed"
        return f"{verdict}: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "mode": self.mode,
            "reasons": self.reasons,
            "checks": [asdict(c) for c in self.checks],
        }


def decide(
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    data_validation_passed: bool,
    config: GateSettings,
    comparison: Comparison | None = None,
) -> Decision:
    """Decide from two evaluations ({"overall", "per_class", "behavioural"} as written by
    `evaluate_predictor`) and their paired `comparison` (ml.compare.compare on the same rows);
    `champion` None means there is no production model yet."""
    checks = [
        Check(
            "data_validation",
            bool(data_validation_passed),
            "data validation passed" if data_validation_passed else "data validation failed",
        ),
        _behavioural_check(challenger.get("behavioural") or {}, config),
    ]
    if champion is None:
        mode = "floors"
        for metric, floor in config.floors.items():
            value = float(challenger["overall"][metric])
            ok = value + EPSILON >= floor
            sign = ">=" if ok else "<"
            checks.append(
                Check(f"floor.{metric}", ok, f"{metric} {value:.4f} {sign} floor {floor}")
            )
    else:
        if comparison is None:
            raise ValueError("a champion needs the paired comparison (ml.compare.compare)")
        mode = "compare"
        checks += [_f1_check(comparison, config), _class_check(champion, comparison, config)]
    return Decision(all(c.passed for c in checks), mode, checks)


def interval_text(interval: Any) -> str:
    """ "Δ +0.0150, 95% interval [-0.0120, +0.0410]" (an ml.compare Interval)."""
    return (
        f"Δ {interval.diff:+.4f}, {interval.level:.0%} interval "
        f"[{interval.low:+.4f}, {interval.high:+.4f}]"
    )


def _f1_check(comparison: Comparison, config: GateSettings) -> Check:
    f1 = comparison.headline["f1_weighted"]
    ok = f1.high >= -config.f1_tolerance - EPSILON
    head = f"weighted F1 {f1.new:.4f} vs champion {f1.old:.4f} ({interval_text(f1)})"
    if ok:
        return Check(
            "f1_weighted",
            True,
            f"{head}: {f1.word}; fails only if the whole interval lies below "
            f"-{config.f1_tolerance} (tolerance)",
        )
    return Check(
        "f1_weighted",
        False,
        f"{head}: detectably worse by more than the tolerance {config.f1_tolerance}",
    )


def _class_check(champion: dict[str, Any], comparison: Comparison, config: GateSettings) -> Check:
    limit = config.max_class_f1_drop
    drops = [
        f"{label} {i.old:.4f} -> {i.new:.4f} ({interval_text(i)})"
        for label, i in comparison.per_class.items()
        # A class the champion never scored has nothing to regress from.
        if label in champion["per_class"] and i.high < -limit - EPSILON
    ]
    if drops:
        return Check(
            "class_f1", False, f"class F1 detectably dropped more than {limit}: " + ", ".join(drops)
        )
    return Check("class_f1", True, f"no class F1 detectably dropped more than {limit}")


def _behavioural_check(result: dict[str, Any], config: GateSettings) -> Check:
    status = result.get("status", "skipped")
    if status == "not_applicable":
        return Check(
            "behavioural", True, f"behavioural checks not applicable: {result.get('reason', '')}"
        )
    if status == "skipped":
        return Check("behavioural", True, f"behavioural checks skipped: {result.get('reason', '')}")
    rate = result.get("pass_rate")
    rate = 0.0 if rate is None else float(rate)
    ok = rate + EPSILON >= config.min_behavioural_pass_rate
    return Check(
        "behavioural",
        ok,
        f"behavioural checks {result.get('passed', 0)}/"
        f"{result.get('passed', 0) + result.get('failed', 0)} passed "
        f"(need {config.min_behavioural_pass_rate:.0%})",
    )


def data_validation_status(settings: Settings) -> tuple[bool, dict[str, Any]]:
    path = settings.path(settings.validate_.report)
    if not path.is_file():
        return False, {"passed": False, "problems": [], "missing": str(path)}
    report = json.loads(path.read_text())
    return bool(report.get("passed")), report


def _headline(evaluation: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "overall",
        "per_class",
        "confusion_matrix",
        "calibration",
        "slices",
        "behavioural",
        "model_labels",
        "task",
    )
    return {k: evaluation[k] for k in keep if k in evaluation}


@dataclass(frozen=True)
class GateResult:
    decision: Decision
    challenger_version: str | None
    champion_version: str | None
    report_path: Path


def gate(
    settings: Settings, challenger: str | None = None, champion: str | None = None
) -> GateResult:
    """Evaluate challenger and champion on the holdout, decide, write the report, tag the version.

    `challenger`/`champion` are registry version numbers; by default the `challenger` and
    `champion` aliases. No champion alias means the floors apply. In the pr tier the default
    challenger is the PR run's model that reports/registry.json describes (never registered),
    and only the report is written: no version is tagged.
    """
    from ml.evaluate.evaluate import (
        behavioural_spec,
        evaluate_predictor,
        load_registry_model,
        read_holdout,
    )
    from ml.registry import (
        CHALLENGER,
        CHAMPION,
        RegistryError,
        alias_version,
        client,
        get_version,
        record_gate,
    )

    registry = client(settings)
    name = settings.mlflow.registered_model
    unregistered = _unregistered_challenger(settings) if challenger is None else None
    try:
        if unregistered is not None:
            found = None
        elif challenger is None:
            found = alias_version(registry, name, CHALLENGER)
            if found is None:
                raise GateError(f"{name} has no {CHALLENGER}; run `ml registry register` first")
        else:
            found = get_version(registry, name, challenger)
        challenger_mv = found
        champion_mv = (
            alias_version(registry, name, CHAMPION)
            if champion is None
            else get_version(registry, name, champion)
        )
    except RegistryError as exc:
        raise GateError(str(exc)) from exc
    challenger_version = str(challenger_mv.version) if challenger_mv else UNREGISTERED
    champion_version = str(champion_mv.version) if champion_mv else None
    challenger_uri = (unregistered or {}).get("model_uri")
    uris = {
        "challenger": challenger_uri or f"models:/{name}/{challenger_version}",
        "champion": f"models:/{name}/{champion_version}" if champion_version else None,
    }

    holdout = read_holdout(settings)
    cases = behavioural_spec(settings)
    evaluations: dict[str, dict[str, Any]] = {}
    rows: dict[str, Any] = {}
    for role, uri in uris.items():
        if uri is None:
            continue
        predictor = load_registry_model(settings, uri)
        evaluations[role], rows[role] = evaluate_predictor(predictor, holdout, settings, cases)

    comparison, mdd = _compare(settings, holdout, evaluations["challenger"], rows)
    validation_passed, validation = data_validation_status(settings)
    decision = decide(
        evaluations["challenger"],
        evaluations.get("champion"),
        validation_passed,
        settings.gate,
        comparison,
    )
    from ml.registry import utc_now

    def describe(mv: Any) -> dict[str, Any] | None:
        if mv is None:
            return None
        return {
            "version": str(mv.version),
            "model_uri": f"models:/{name}/{mv.version}",
            "run_id": mv.run_id,
            "aliases": list(mv.aliases or []),
            "git_sha": (mv.tags or {}).get("git_sha", ""),
        }

    report = {
        "verdict": "pass" if decision.passed else "fail",
        **decision.to_dict(),
        "decided_at": utc_now(),
        "registered_model": name,
        "thresholds": settings.gate.model_dump(exclude={"report"}),
        "challenger": {
            **(describe(challenger_mv) or _describe_unregistered(unregistered)),
            **_headline(evaluations["challenger"]),
        },
        "champion": (
            {**(describe(champion_mv) or {}), **_headline(evaluations["champion"])}
            if champion_mv
            else None
        ),
        "data_validation": {
            "passed": validation_passed,
            "problems": len(validation.get("problems", [])),
        },
        "holdout_rows": len(holdout),
        "task": settings.task,
        "comparison": comparison.to_dict() if comparison else None,
        "mdd": mdd,
    }
    report_path = settings.path(settings.gate.report)
    write_json(report_path, report)
    if unregistered is None and challenger_version != champion_version:
        record_gate(
            settings, challenger_version, decision.passed, champion_version, decision.summary()
        )
    return GateResult(decision, challenger_version, champion_version, report_path)


def _compare(
    settings: Settings, holdout: Any, challenger: dict[str, Any], rows: dict[str, Any]
) -> tuple[Comparison | None, dict[str, Any]]:
    """The paired comparison (None without a champion) and the holdout's minimum detectable
    difference, from the per-row predictions of each model on the same holdout rows."""
    from ml.compare import compare, holdout_mdd
    from ml.tasks import task_of

    config = settings.gate
    new = rows["challenger"]
    labels = list(challenger["per_class"])
    options = {
        "resamples": config.bootstrap_resamples,
        "level": config.confidence_level,
        "seed": config.bootstrap_seed,
    }
    if "champion" not in rows:
        truth, predicted = new["label"].tolist(), new["predicted"].tolist()
        return None, holdout_mdd(truth, predicted, labels, **options)
    old = rows["champion"]
    comparison = compare(
        new["label"].tolist(),
        {"predicted": old["predicted"].tolist(), "confidence": old["confidence"].tolist()},
        {"predicted": new["predicted"].tolist(), "confidence": new["confidence"].tolist()},
        labels,
        list(holdout.ids),
        task_of(settings).prediction_columns(holdout),
        examples=config.flip_examples,
        **options,
    )
    return comparison, comparison.mdd


def _unregistered_challenger(settings: Settings) -> dict[str, Any] | None:
    """The pr tier's challenger: reports/registry.json of a run `register` did not register."""
    from ml.registry import registry_report

    if settings.mlflow.tier != "pr":
        return None
    path = registry_report(settings)
    report = json.loads(path.read_text()) if path.is_file() else {}
    if report.get("registered") is not False or not report.get("model_uri"):
        raise GateError(f"{path} describes no PR-run model; run `ml registry register` first")
    return report


def _describe_unregistered(report: dict[str, Any] | None) -> dict[str, Any]:
    report = report or {}
    return {
        "version": UNREGISTERED,
        "model_uri": report.get("model_uri", ""),
        "run_id": report.get("run_id", ""),
        "aliases": [],
        "git_sha": report.get("tags", {}).get("git_sha", ""),
    }


def check_report(settings: Settings) -> dict[str, Any]:
    """Read the gate decision already written (for a workflow's final pass/fail step)."""
    return read_report(settings.path(settings.gate.report))


def read_report(path: Path) -> dict[str, Any]:
    """A gate.json already written; also one model's of several (`ml report combine --check`)."""
    if not path.is_file():
        raise GateError(f"{path} not found; run `ml gate` first")
    return json.loads(path.read_text())
