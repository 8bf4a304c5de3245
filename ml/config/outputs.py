"""Per-model outputs: where one declared model's stages write (#23's monorepo layout).

A model NAME owns three roots, data/NAME, models/NAME and reports/NAME. `scope_outputs` moves
every output path of a Settings under them, keeping the file names a single-model project uses:
data/raw -> data/NAME/raw, models/model -> models/NAME, reports/gate.json ->
reports/NAME/gate.json. The params files keep today's paths, so one file reads the same with
`--params FILE` (ad-hoc runs and tests: its paths as written) and with `--model NAME` (scoped);
and two models' files can share values without their outputs colliding.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml.config.settings import Settings

# Every settings field naming a file or folder a stage writes (or a later stage reads back;
# monitor.model_dir, when set, names the trained model dir).
# train_metrics.json and registry.json live beside train.report, so they follow it.
OUTPUT_FIELDS: tuple[str, ...] = (
    "data.raw_dir",
    "data.splits_dir",
    "validate.report",
    "model.dir",
    "train.report",
    "tune.output",
    "evaluate.metrics",
    "evaluate.detail_dir",
    "gate.report",
    "report.pr_comment",
    "monitor.model_dir",
    "monitor.report_dir",
    "monitor.cache_dir",
    "monitor.pr_body",
)


def output_roots(name: str) -> dict[str, str]:
    """The folders model `name` writes under: its data, its model dir and its reports."""
    return {"data": f"data/{name}", "models": f"models/{name}", "reports": f"reports/{name}"}


def scoped_path(value: str, name: str) -> str:
    """`value` moved under model `name`'s roots. Paths outside data/, models/ and reports/
    (absolute ones, another folder) and paths already under the model's roots are kept: the
    params file chose them on purpose."""
    path = PurePosixPath(value.replace("\\", "/"))
    roots = output_roots(name)
    if path.is_absolute() or len(path.parts) < 2 or path.parts[0] not in roots:
        return value
    root = PurePosixPath(roots[path.parts[0]])
    if path == root or root in path.parents:
        return value
    if path.parts[0] == "models":
        # The model dir is one folder per model (models/model -> models/NAME), not nested.
        rest = path.parts[2:]
        return root.joinpath(*rest).as_posix()
    return root.joinpath(*path.parts[1:]).as_posix()


def scope_outputs(settings: Settings, name: str) -> Settings:
    """`settings` with every OUTPUT_FIELDS path under model `name`'s roots (in place; also
    returned). The provenance says so, so `ml config show` tells where a path came from."""
    for dotted in OUTPUT_FIELDS:
        section, field = dotted.split(".")
        owner = getattr(settings, "validate_" if section == "validate" else section)
        value = getattr(owner, field)
        scoped = value if value is None else scoped_path(value, name)
        if scoped != value:
            setattr(owner, field, scoped)
            source = settings.provenance.get(dotted, "default")
            settings.provenance[dotted] = f"{source}, scoped to model {name}"
    settings.model_name = name
    return settings
