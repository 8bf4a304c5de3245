"""The gate's glue to ml.compare: two predictors scored by the real evaluation code on a real
(small) holdout, paired row by row, flips shown through the task's prediction columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ml.config import load_settings
from ml.evaluate.evaluate import evaluate_predictor, read_holdout
from ml.gate import _compare, decide
from tests.evaluate.tiny import make_eval_project


class Scripted:
    """A predictor that answers row i of the holdout (scored in one call) with answers[i]."""

    def __init__(self, answers: list[str], labels: list[str]) -> None:
        self.answers, self.labels = answers, labels

    def predict_proba(self, inputs, batch_size: int = 64) -> np.ndarray:
        assert len(inputs) == len(self.answers)
        out = np.full((len(inputs), len(self.labels)), 0.1 / (len(self.labels) - 1))
        for row, answer in enumerate(self.answers):
            out[row, self.labels.index(answer)] = 0.9
        return out


def test_the_gate_pairs_both_models_row_by_row(tmp_path: Path, monkeypatch):
    root = make_eval_project(tmp_path / "project", holdout_per_class=6)
    monkeypatch.chdir(root)
    settings = load_settings(root / "params.yaml", {})
    holdout = read_holdout(settings)
    texts, truth = list(holdout.inputs), list(holdout.labels)
    labels = sorted(set(truth))

    def other(label: str) -> str:
        return labels[(labels.index(label) + 1) % len(labels)]

    champion = [other(y) if i < 3 else y for i, y in enumerate(truth)]
    challenger = [other(y) if 3 <= i < 5 else y for i, y in enumerate(truth)]
    scored = {
        role: evaluate_predictor(Scripted(answers, labels), holdout, settings, None)
        for role, answers in (("challenger", challenger), ("champion", champion))
    }
    evaluations = {role: found[0] for role, found in scored.items()}
    rows = {role: found[1] for role, found in scored.items()}

    comparison, mdd = _compare(settings, holdout, evaluations["challenger"], rows)
    assert comparison is not None and mdd is comparison.mdd
    assert (comparison.fixed, comparison.broken) == (3, 2)
    first = comparison.flips["examples"]["fixed"][0]
    assert first["id"] == holdout.ids[0] and texts[0].startswith(first["input"].rstrip("…"))
    assert first["champion"] == other(truth[0]) and first["challenger"] == truth[0]
    assert first["champion_confidence"] == 0.9
    assert comparison.resamples == settings.gate.bootstrap_resamples
    decision = decide(
        evaluations["challenger"], evaluations["champion"], True, settings.gate, comparison
    )
    assert decision.passed, decision.reasons  # 3 fixed, 2 broken on 24 rows: noise

    alone, holdout_mdd = _compare(
        settings, holdout, evaluations["challenger"], {"challenger": rows["challenger"]}
    )
    assert alone is None and holdout_mdd["basis"] == "independent errors"
