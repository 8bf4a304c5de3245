"""The models this repository holds, declared once in models.yaml at the repository root.

models.yaml maps each model's name to its params file, and names the default model:

    default: madewithml
    models:
      madewithml:
        params: params.yaml
      fashion-mnist:
        params: configs/fashion-mnist.yaml

A mapping keyed by name, not a list, because dvc.yaml imports this file (`vars:`) and its
`foreach: ${models}` names each model's stages by the key: `train@fashion-mnist`.

The task is not repeated there: it is read from the params file's `task:` (Settings' default
where a file has none), so a fact has one home. `ml models list` prints the list (`--json` for
workflow matrices), `ml --model NAME VERB` runs a verb on that model's params file, and
`ml models affected` (ml/models/affected.py) says which models a change affects.

With neither --model nor --params (nor $ML_PARAMS), a verb runs the default model: it reads
./params.yaml, so the default model must be the one whose params file is params.yaml
(load_models checks it).

Each model registers under its params file's mlflow.registered_model; load_models refuses two
models sharing one (in one tracking store), since they would share versions and the champion.

A name becomes a path segment and a route: data/NAME/, models/NAME/, reports/NAME/ and the
Serve route prefix /NAME, hence NAME_PATTERN and the reserved names below.

Per-model outputs: `output_roots(name)` (ml/config/outputs.py, re-exported here) maps a model
to its data, models and reports roots, and `ml --model NAME` (or the default model) moves every
output path of its settings under them (`scope_outputs`): data/NAME/raw, data/NAME/splits,
models/NAME, reports/NAME/metrics.json... `--params FILE` alone keeps the file's paths. The
affected rules use the same roots (a change under data/NAME/ affects NAME).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ml.config import (
    DEFAULT_PARAMS_FILE,
    ConfigError,
    DataSettings,
    MlflowSettings,
    Settings,
    output_roots,
)
from ml.config.outputs import scoped_path
from ml.tasks import TASK_MODULES

MODELS_FILE = "models.yaml"

# Lowercase letters, digits and inner hyphens: safe as a folder name on every OS, in a URL path,
# as an MLflow registered model name and as a GitHub Actions matrix value.
NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
# Folders that today's single-model layout already uses under data/, models/ and reports/: a
# model with one of these names would share its outputs with them.
RESERVED_NAMES = frozenset({"raw", "splits", "monitor", "model", "benchmarks"})


class ModelsError(ConfigError):
    """models.yaml is missing or wrong, or names a model that is not declared."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelEntry(_Strict):
    name: str = Field(description="the model's name: data/NAME/, models/NAME/, route /NAME")
    params: str = Field(description="its params file, relative to the repository root")

    @field_validator("params")
    @classmethod
    def _inside_the_repository(cls, value: str) -> str:
        path = repo_path(value)
        if path is None:
            raise ValueError(f"{value!r} must be a path inside the repository, relative to it")
        return path


class ModelsFile(_Strict):
    default: str = Field(description="the model a verb runs without --model")
    models: list[ModelEntry] = Field(min_length=1)

    @field_validator("models", mode="before")
    @classmethod
    def _keyed_by_name(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValueError(
                "must map each model's name to its params file (name: {params: FILE}); "
                "dvc.yaml's foreach names each model's stages by that key"
            )
        return [
            {"name": name, **spec} if isinstance(spec, Mapping) else {"name": name, "params": spec}
            for name, spec in value.items()
        ]


@dataclass(frozen=True)
class Model:
    """One declared model, with what its params file says about it."""

    name: str
    params: str  # posix path relative to the repository root
    task: str
    # Repository paths holding its data (raw and splits folders, an in-repo source, data/NAME).
    data_paths: tuple[str, ...] = ()
    # Its params file's mlflow.registered_model: its versions, aliases (champion) and audit tags.
    registered_model: str = ""
    tracking_uri: str = ""  # the params file's mlflow.tracking_uri: where that name lives

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "task": self.task,
            "params": self.params,
            "registered_model": self.registered_model,
        }


@dataclass(frozen=True)
class Catalog:
    models: tuple[Model, ...]
    default: str

    @property
    def names(self) -> list[str]:
        return [model.name for model in self.models]

    def get(self, name: str) -> Model:
        """The model called `name`; a ModelsError naming the declared ones otherwise."""
        for model in self.models:
            if model.name == name:
                return model
        raise ModelsError(f"unknown model {name!r}{_did_you_mean(name, self.names)}")


def repo_path(value: Any) -> str | None:
    """`value` as a posix path relative to the repository, or None (a URL, an absolute path,
    one that climbs out with ..)."""
    if not isinstance(value, str) or "://" in value:
        return None
    path = PurePosixPath(value.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return path.as_posix()


def _did_you_mean(name: str, names: Iterable[str]) -> str:
    names = sorted(names)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; the models in {MODELS_FILE} are {names}"


class _UniqueKeys(yaml.SafeLoader):
    """A YAML mapping that names one key twice keeps the last silently: a model declared twice
    would vanish. This loader refuses it instead."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        twice = sorted({str(k) for k in keys if keys.count(k) > 1})
        if twice:
            raise yaml.constructor.ConstructorError(
                None, None, f"{twice} declared twice; names are unique", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path, what: str) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeys)
    except yaml.YAMLError as exc:
        raise ModelsError(f"{path} ({what}) is not valid YAML: {exc}") from exc


def parse_models_file(raw: Any, where: str = MODELS_FILE) -> ModelsFile:
    """Validate models.yaml's content: its shape, the names and the default (no file access)."""
    try:
        parsed = ModelsFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'top level'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ModelsError(f"invalid {where}: {problems}") from exc
    seen: set[str] = set()
    for entry in parsed.models:
        _check_name(entry.name, where)
        if entry.name in seen:
            raise ModelsError(f"{where}: model {entry.name!r} is declared twice; names are unique")
        seen.add(entry.name)
    if parsed.default not in seen:
        hint = _did_you_mean(parsed.default, seen)
        raise ModelsError(f"{where}: unknown default model {parsed.default!r}{hint}")
    default_params = next(e.params for e in parsed.models if e.name == parsed.default)
    if default_params != DEFAULT_PARAMS_FILE:
        raise ModelsError(
            f"{where}: the default model {parsed.default!r} reads {default_params}, but a verb "
            f"without --model reads {DEFAULT_PARAMS_FILE}; make the default the model whose params "
            f"file is {DEFAULT_PARAMS_FILE}"
        )
    return parsed


def _check_name(name: str, where: str) -> None:
    if not NAME_PATTERN.match(name):
        raise ModelsError(
            f"{where}: model name {name!r} is not a safe path segment; use 1-40 lowercase "
            "letters, digits and inner hyphens (it becomes data/NAME/, models/NAME/, "
            "reports/NAME/ and the route /NAME)"
        )
    if name in RESERVED_NAMES:
        raise ModelsError(
            f"{where}: model name {name!r} is taken by an existing output folder; "
            f"avoid {sorted(RESERVED_NAMES)}"
        )


def _model(entry: ModelEntry, root: Path, where: str) -> Model:
    params = entry.params
    path = root / params
    if not path.is_file():
        raise ModelsError(
            f"{where}: model {entry.name!r} names params file {params}, which does not exist; "
            "create it or fix the path"
        )
    raw = _read_yaml(path, f"params of model {entry.name!r}") or {}
    if not isinstance(raw, Mapping):
        raise ModelsError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    task = raw.get("task", Settings.model_fields["task"].default)
    if task not in TASK_MODULES:
        raise ModelsError(
            f"{params}: model {entry.name!r} has task {task!r}, which is not registered; "
            f"use one of {sorted(TASK_MODULES)} (ml/tasks/__init__.py)"
        )
    data = raw.get("data") if isinstance(raw.get("data"), Mapping) else {}
    fields = DataSettings.model_fields
    # Where its stages put them: scoped under data/NAME, as `ml --model NAME` does.
    folders = [
        scoped_path(data.get(key, fields[key].default), entry.name)
        for key in ("raw_dir", "splits_dir")
    ]
    folders += [data.get("source", ""), output_roots(entry.name)["data"]]
    # An outside data.source (a URL, ../shared/data) never shows in a git diff: dropped.
    in_repo = dict.fromkeys(path for path in map(repo_path, folders) if path)
    mlflow = raw.get("mlflow") if isinstance(raw.get("mlflow"), Mapping) else {}
    names = {key: mlflow.get(key) or MlflowSettings.model_fields[key].default for key in _REGISTRY}
    return Model(entry.name, params, task, tuple(in_repo), **names)


_REGISTRY = ("registered_model", "tracking_uri")


def _one_registered_model_each(models: Iterable[Model], where: str) -> None:
    """Two models registering under one name would share versions and the champion alias: the
    release would deploy one model's champion as the other's."""
    owners: dict[tuple[str, str], Model] = {}
    for model in models:
        other = owners.setdefault((model.tracking_uri, model.registered_model), model)
        if other is not model:
            raise ModelsError(
                f"{where}: models {other.name!r} ({other.params}) and {model.name!r} "
                f"({model.params}) both register as mlflow.registered_model "
                f"{model.registered_model!r}; give each its own, e.g. registered_model: "
                f"{model.name} in the mlflow section of {model.params}"
            )


def load_models(root: Path | None = None) -> Catalog:
    """Read ROOT/models.yaml (ROOT: the working folder) and every params file it names."""
    root = Path.cwd() if root is None else root
    path = root / MODELS_FILE
    if not path.is_file():
        raise ModelsError(
            f"{path} not found: run from the repository root, where {MODELS_FILE} lists the models"
        )
    parsed = parse_models_file(_read_yaml(path, "the model list"), str(path))
    models = tuple(_model(e, root, str(path)) for e in parsed.models)
    _one_registered_model_each(models, str(path))
    return Catalog(models, parsed.default)


def params_for(name: str, root: Path | None = None) -> Path:
    """The params file of model `name` (what `ml --model NAME` reads)."""
    params = load_models(root).get(name).params
    return Path(params) if root is None else root / params
