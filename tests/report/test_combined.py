"""The combined PR comment for several models (ml/report/combined.py, `ml report combine`).

Each model's report folder is written the way its own stages write it: gate.json and
eval/evaluation.json from the gate and evaluation reports of the single-model golden tests,
and pr_comment.md rendered by the real single-model renderer (ml/report/pr.py) from them.

Regenerate the golden files after an intended change with
`UPDATE_GOLDEN=1 pytest tests/report/test_combined.py`; review the golden/ diff.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml.io import write_json
from ml.report import combined, sticky
from ml.report.combined import MODEL_NAME, TRUNCATED, CombineError, ModelReport, collect, render
from ml.report.pr import PrReportInputs
from ml.report.pr import render as render_one
from ml.report.sticky import GITHUB_COMMENT_LIMIT, MARKER
from tests.conftest import run_ml
from tests.evaluate.test_image_evaluation import fixed_image_evaluation, image_report
from tests.evaluate.test_report_golden import champion_present, gate_fail, no_champion

GOLDEN = Path(__file__).parent / "golden"
TEXT = "text-classification"


def text_model(scenario) -> PrReportInputs:
    inputs = scenario()
    inputs.gate["task"] = TEXT  # what `ml gate` writes; the single-model fixtures predate tasks
    return inputs


def image_model() -> PrReportInputs:
    return image_report(fixed_image_evaluation())


SCENARIOS = {
    "champion_present": lambda: text_model(champion_present),
    "gate_fail": lambda: text_model(gate_fail),
    "no_champion": lambda: text_model(no_champion),
    "image": image_model,
}


def with_slices(inputs: PrReportInputs, count: int, description: str = "rows") -> PrReportInputs:
    """The same report with `count` slices: the longest table a real report carries."""
    inputs = copy.deepcopy(inputs)
    challenger = inputs.gate["challenger"]
    row = {"description": description, "num_samples": 20, "accuracy": 0.9, "f1_weighted": 0.89}
    challenger["slices"] = {f"slice_{i:04d}": dict(row) for i in range(count)}
    return inputs


def write_folder(folder: Path, inputs: PrReportInputs) -> Path:
    """A model's report folder as evaluate, gate and `ml report pr` leave it."""
    write_json(folder / "gate.json", inputs.gate)
    write_json(folder / "eval" / "evaluation.json", inputs.gate["challenger"])
    (folder / "pr_comment.md").write_text(render_one(inputs), encoding="utf-8")
    return folder


def report(name: str, inputs: PrReportInputs) -> ModelReport:
    """What `collect` reads from a folder written by `write_folder`, without the disk."""
    gate = copy.deepcopy(inputs.gate)
    return ModelReport(name, gate.get("task"), gate, gate["challenger"], render_one(inputs))


# ---- what every combined comment must be ----------------------------------------------------

_PIPE = re.compile(r"(?<!\\)\|")


def assert_well_formed(body: str) -> None:
    """Balanced <details>, closed code fences, and tables whose rows all have the header's
    columns and end at a blank line (a text line after a table would become a row)."""
    depth, fence, columns = 0, False, None
    lines = body.splitlines()
    for number, line in enumerate(lines, 1):
        where = f"line {number}: {line[:80]!r}"
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if fence:
            continue
        depth += line.count("<details") - line.count("</details>")
        assert depth >= 0, f"</details> without <details> at {where}"
        if line.startswith("<details"):
            following = lines[number] if number < len(lines) else ""
            assert following.startswith("<summary>"), f"<details> without <summary> at {where}"
        if line.startswith("|"):
            cells = len(_PIPE.findall(line))
            if columns is None:
                columns = cells
                following = lines[number] if number < len(lines) else ""
                assert following.startswith("|---"), f"table without separator at {where}"
            assert cells == columns, f"table row with {cells} pipes, header {columns}, {where}"
        else:
            assert columns is None or not line.strip(), f"text straight after a table: {where}"
            columns = None
    assert depth == 0, f"{depth} <details> left open"
    assert not fence, "a code block left open"


def summary_rows(body: str) -> list[str]:
    """The model names in the summary table, in order."""
    lines = body.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Model | Task | Gate"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line.split("|")[1].strip().strip("`"))
    return rows


def assert_postable(body: str, unchanged: bool = True) -> None:
    """The poster accepts it (its limit counts after defusing), unchanged unless the models'
    own reports carry mentions or HTML."""
    posted = sticky.check_body(body.encode("utf-8"))
    assert len(posted) <= GITHUB_COMMENT_LIMIT
    assert posted == body or not unchanged
    assert body.startswith(MARKER) and body.count(MARKER) == 1


# ---- golden files ---------------------------------------------------------------------------


def two_passing() -> str:
    text = report("tag-classifier", SCENARIOS["champion_present"]())
    return render([text, report("fashion", image_model())])


def one_failing() -> str:
    return render(
        [
            report("fashion", image_model()),
            report("tag-classifier", SCENARIOS["gate_fail"]()),
            report("medical-abstracts", SCENARIOS["champion_present"]()),
        ]
    )


def no_champion_yet() -> str:
    return render(
        [report("medical-abstracts", SCENARIOS["no_champion"]())],
        not_affected=["tag-classifier", "fashion"],
    )


@pytest.mark.parametrize("scenario", [two_passing, one_failing, no_champion_yet])
def test_combined_comment_matches_golden_file(scenario):
    body = scenario()
    golden = GOLDEN / f"combined_{scenario.__name__}.md"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(body, encoding="utf-8")
    assert golden.is_file(), f"{golden} missing: run with UPDATE_GOLDEN=1 and review it"
    assert body == golden.read_text(encoding="utf-8")
    assert_postable(body)
    assert_well_formed(body)


def test_a_failed_model_comes_first_and_opened():
    body = one_failing()
    assert summary_rows(body) == ["tag-classifier", "fashion", "medical-abstracts"]
    opened = re.findall(r"<details open>\n<summary>(.*)</summary>", body)
    assert opened == [f"❌ tag-classifier ({TEXT}): gate failed"]
    closed = re.findall(r"<details>\n<summary>(✅ .*)</summary>", body)
    assert closed == [
        "✅ fashion (image-classification): gate passed",
        f"✅ medical-abstracts ({TEXT}): gate passed",
    ]
    assert "1 of 3 affected model(s) did not pass the gate**: `tag-classifier` (failed)" in body
    assert "| `tag-classifier` | text-classification | ❌ failed | 0.8218 | 0.8614 (v2) |" in body
    # Each section holds its model's own report, without a second marker or title.
    assert body.count("## Model report") == 1
    assert body.count("### Headline metrics") == 3
    assert "mlops 0.6829 -> 0.4118" in body


def test_no_champion_and_not_affected_are_said():
    body = no_champion_yet()
    row = "| `medical-abstracts` | text-classification | ✅ passed | 0.9581 | no champion yet | — |"
    assert row in body
    assert "_Not affected by this PR (not trained): `tag-classifier`, `fashion`._" in body
    assert "<details open>" not in body


def test_a_pr_that_affects_no_model_says_so():
    body = render([], not_affected=["tag-classifier"])
    assert_postable(body)
    assert "No model is affected by this PR" in body and "<details" not in body


def test_the_poster_still_defuses_other_attributes():
    """`<details open>` is the one attribute the poster lets through."""
    assert sticky.neutralise("<details open>") == "<details open>"
    assert sticky.neutralise("<details open onclick=x>") == "&lt;details open onclick=x>"
    assert sticky.neutralise("<details ontoggle=x>") == "&lt;details ontoggle=x>"


# ---- the length limit -----------------------------------------------------------------------


def test_long_sections_are_cut_largest_first_and_stay_postable():
    # ~35k characters each uncut (the single-model renderer keeps every row below 65,536), and
    # mentions and HTML in one that the poster lengthens when it defuses them.
    big = report("tag-classifier", with_slices(SCENARIOS["champion_present"](), 650))
    defused = report("medical", with_slices(SCENARIOS["gate_fail"](), 550, "@ops <b>x</b>"))
    small = report("fashion", image_model())
    assert len(big.body) > 30_000 and len(defused.body) > 30_000
    body = render([big, defused, small])
    assert_postable(body, unchanged=False)
    assert len(sticky.neutralise(body)) > len(body)  # the poster did lengthen it
    assert_well_formed(body)
    assert summary_rows(body) == ["medical", "tag-classifier", "fashion"]
    for name in ("medical", "tag-classifier", "fashion"):
        assert re.search(rf"<summary>\S+ {name} \(", body), f"{name}'s section header is gone"
    assert body.count(TRUNCATED) == 2  # both long sections cut, the short one whole
    assert small.body.split("## Model report\n\n", 1)[1].rstrip() in body
    assert len(body) > GITHUB_COMMENT_LIMIT - 5_000  # cut to fit, not cut to nothing


def test_a_tiny_limit_keeps_every_heading_or_refuses():
    reports = [report(f"m{i}", SCENARIOS["champion_present"]()) for i in range(3)]
    body = render(reports, limit=6_000)
    assert_well_formed(body)
    assert len(body) <= 6_000 and summary_rows(body) == ["m0", "m1", "m2"]
    with pytest.raises(CombineError, match="do not fit in one comment"):
        render(reports, limit=1_000)


@functools.lru_cache(maxsize=64)
def cached_body(scenario: str, slices: int) -> PrReportInputs:
    return with_slices(SCENARIOS[scenario](), slices)


names = st.from_regex(MODEL_NAME, fullmatch=True).filter(lambda n: len(n) <= 40)
models = st.lists(
    st.tuples(names, st.sampled_from(sorted(SCENARIOS)), st.sampled_from([0, 5, 120, 450, 700])),
    max_size=6,
    unique_by=lambda m: m[0],
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    models=models,
    not_affected=st.lists(names, max_size=4),
    limit=st.sampled_from([GITHUB_COMMENT_LIMIT, 30_000, 12_000, 6_000]),
)
def test_any_set_of_models_gives_one_postable_comment(models, not_affected, limit):
    reports = [report(name, cached_body(kind, slices)) for name, kind, slices in models]
    body = render(reports, not_affected, limit=limit)
    assert len(sticky.neutralise(body)) <= limit
    assert body.startswith(MARKER) and body.count(MARKER) == 1
    assert_well_formed(body)
    if reports:
        assert sorted(summary_rows(body)) == sorted(r.name for r in reports)
        for r in reports:
            assert f"<summary>{'✅' if r.status == 'passed' else '❌'} {r.name} (" in body
    else:
        assert "No model is affected" in body


# ---- reading folders and the CLI ------------------------------------------------------------


def test_collect_reads_a_folder_written_by_the_stages(tmp_path):
    folder = write_folder(tmp_path / "fashion", image_model())
    found = collect("fashion", folder)
    assert found.task == "image-classification" and found.status == "passed"
    assert found.body.startswith(MARKER)
    (folder / "gate.json").unlink()
    assert collect("fashion", folder).status == "not run"
    with pytest.raises(CombineError, match=r"holds no gate\.json"):
        collect("empty", tmp_path / "nothing")
    with pytest.raises(CombineError, match="not a plain name"):
        collect("a b", folder)


def test_a_folder_without_its_comment_still_gets_a_section(tmp_path):
    folder = write_folder(tmp_path / "m", SCENARIOS["champion_present"]())
    (folder / "pr_comment.md").unlink()
    body = render([collect("m", folder)])
    assert "run `ml report pr` for it" in body
    assert_well_formed(body)


def test_cli_combines_and_the_check_fails_on_a_failed_gate(tmp_path):
    passing = write_folder(tmp_path / "reports" / "fashion", image_model())
    failing = write_folder(tmp_path / "reports" / "tag", SCENARIOS["gate_fail"]())
    output = tmp_path / "out" / "pr_comment.md"
    args = ["report", "combine", "--output", str(output), "--reports", f"fashion={passing}"]

    ok = run_ml([*args, "--not-affected", "medical", "--check"], cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "gate passed for every model" in ok.stdout
    assert summary_rows(output.read_text(encoding="utf-8")) == ["fashion"]

    bad = run_ml([*args, "--reports", f"tag={failing}", "--check"], cwd=tmp_path)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "gate failed for 1 model(s)" in bad.stderr
    assert "tag: data validation failed; behavioural checks 1/2 passed" in bad.stdout
    # The comment is written before the check fails, so the workflow can still post it.
    assert summary_rows(output.read_text(encoding="utf-8")) == ["tag", "fashion"]

    assert run_ml([*args, "--reports", f"tag={failing}"], cwd=tmp_path).returncode == 0

    (failing / "gate.json").unlink()  # a gate that never ran fails the check too
    missing = run_ml([*args, "--reports", f"tag={failing}", "--check"], cwd=tmp_path)
    assert missing.returncode == 1 and "gate.json not found; run `ml gate` first" in missing.stdout

    usage = run_ml([*args, "--reports", "tag"], cwd=tmp_path)
    assert usage.returncode == 2 and "expected NAME=DIR" in usage.stderr


def test_the_single_model_check_reads_through_the_same_function(tmp_path, monkeypatch):
    """`ml gate --check` and `ml report combine --check` share ml.gate.read_report."""
    from ml import gate

    seen = []
    monkeypatch.setattr(gate, "read_report", lambda path: seen.append(path) or {"passed": True})
    assert combined.gate_failures([("m", tmp_path)]) == []
    assert seen == [tmp_path / "gate.json"]
