"""The PR and main workflows run one job per model: pr.yml's matrix is `ml models affected`'s
list, its report job turns the legs' reports into one comment and the required check, and
main.yml runs every declared model. The act runs (tests/e2e/test_act_workflows.py) execute them;
these check the wiring that act does not tell apart (an empty matrix, the artifact layout)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT, run_ml
from tests.report.test_combined import image_model, write_folder

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
AFFECTED = "${{ fromJSON(needs.affected.outputs.models) }}"


def jobs(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())["jobs"]


def runs(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def uses(job: dict, action: str) -> list[dict]:
    return [step for step in job["steps"] if step.get("uses", "").startswith(action)]


def test_pr_model_jobs_are_a_matrix_of_the_affected_models():
    pr = jobs("pr.yml")
    assert any("ml models affected --base" in r and "--json" in r for r in runs(pr["affected"]))
    for name in ("validate", "train"):
        job = pr[name]
        assert job["strategy"]["matrix"] == {"model": AFFECTED}, name
        assert job["strategy"]["fail-fast"] is False, name
        # GitHub refuses an empty matrix: a change that affects no model skips the job.
        assert "needs.affected.outputs.models != '[]'" in job["if"], name
        assert job["env"]["MODEL"] == "${{ matrix.model.name }}"
    assert 'dvc repro --pull "report@$MODEL"' in runs(pr["train"])
    assert 'ml --model "$MODEL" gate --check' in runs(pr["train"])
    (upload,) = uses(pr["train"], "actions/upload-artifact")
    assert upload["with"]["name"] == "${{ matrix.model.name }}"
    assert upload["with"]["path"] == "reports/${{ matrix.model.name }}/"


def test_pr_report_job_is_the_required_check_and_runs_for_every_outcome():
    report = jobs("pr.yml")["report"]
    assert set(report["needs"]) == {"affected", "train"}
    assert report["if"] == "${{ !cancelled() && needs.affected.result == 'success' }}"
    (download,) = uses(report, "actions/download-artifact")
    assert download["with"] == {"path": "reports"}  # every leg's artifact: reports/NAME/
    (combine,) = [r for r in runs(report) if r.startswith("ml report combine")]
    assert "--affected" in combine and "--reports-root reports" in combine
    assert "--check" in combine
    (upload,) = uses(report, "actions/upload-artifact")
    assert upload["if"] == "${{ !cancelled() }}" and upload["with"]["name"] == "pr-report"
    # pr-comment.yml posts exactly the file the report job uploads.
    comment = (WORKFLOWS / "pr-comment.yml").read_text()
    assert "name: pr-report" in comment and "pr-report/pr_comment.md" in comment
    assert upload["with"]["path"] == "reports/pr_comment.md"


def test_main_registers_every_declared_model():
    main = jobs("main.yml")
    assert any("ml models list --json" in r for r in runs(main["models"]))
    pipeline = main["pipeline"]
    assert pipeline["strategy"]["matrix"] == {
        "model": "${{ fromJSON(needs.models.outputs.models) }}"
    }
    assert pipeline["strategy"]["fail-fast"] is False
    assert 'dvc repro --pull "report@$MODEL"' in runs(pipeline)


def test_model_matrix_workflows_set_only_the_mirror_root():
    """ML_DATA_MIRROR names one dataset's folder: set for a job running several models, it
    would point every one of them at it."""
    for name in ("pr.yml", "main.yml"):
        text = (WORKFLOWS / name).read_text()
        workflow = yaml.safe_load(text)
        assert "ML_DATA_MIRROR_ROOT" in workflow["env"], name
        assert "ML_DATA_MIRROR:" not in text and "vars.ML_DATA_MIRROR }}" not in text, name


def test_report_combine_takes_the_affected_matrix_as_it_is(tmp_path: Path):
    """The report job passes the affected job's JSON unchanged: each listed model's reports
    are REPORTS_ROOT/NAME, the other declared models are named as not affected, and a model
    whose leg left no reports is shown as not run and fails the check (the comment is still
    written, so it can be posted)."""
    reports = tmp_path / "reports"
    write_folder(reports / "fashion-mnist", image_model())
    output = tmp_path / "pr_comment.md"

    def combine(affected: list[dict]) -> tuple[int, str, str]:
        args = ["report", "combine", "--affected", json.dumps(affected),
                "--reports-root", str(reports), "--output", str(output), "--check"]  # fmt: skip
        result = run_ml(args, cwd=REPO_ROOT)
        return result.returncode, result.stdout + result.stderr, output.read_text()

    code, log, comment = combine([{"name": "fashion-mnist", "task": "image-classification"}])
    assert code == 0, log
    assert "| `fashion-mnist` | image-classification | ✅ passed |" in comment
    assert "Not affected by this PR (not trained): `madewithml`, `medical-abstracts`" in comment

    code, log, comment = combine([{"name": "madewithml"}, {"name": "fashion-mnist"}])
    assert code == 1 and "madewithml:" in log and "gate failed for 1 model(s)" in log
    assert "| `madewithml` | — | ⚠️ not run |" in comment
    assert "`medical-abstracts`" in comment and "fashion-mnist" in comment

    code, log, comment = combine([])
    assert code == 0, log
    assert "No model is affected by this PR" in comment

    for bad, message in (("[{\"nam\": 1}]", "expected the JSON list"),
                         ("[{\"name\": \"nope\"}]", "not in models.yaml")):  # fmt: skip
        args = ["report", "combine", "--affected", bad, "--output", str(tmp_path / "x.md")]
        result = run_ml(args, cwd=REPO_ROOT)
        assert result.returncode == 2 and message in result.stderr, result.stderr
