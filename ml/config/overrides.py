"""The one way to change settings after loading: a params override file (`ml tune`'s best
params), command-line options, a tune trial's sampled values, a benchmark's variants."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from ml.config.base import ConfigError
from ml.config.dotted import overlay
from ml.config.settings import Settings, read_mapping, validate_tree


def override(settings: Settings, values: Mapping[str, Any], source: str) -> Settings:
    """`settings` with `values` (dotted keys like "train.epochs", or nested sections) laid over
    them and validated like params.yaml; provenance names `source` for each key given."""
    raw = settings.as_dict()
    provenance = dict(settings.provenance)
    overlay(raw, values, source, provenance)
    updated = validate_tree(raw, source)
    updated.root, updated.provenance = settings.root, provenance
    if settings.model_name is not None:
        from ml.config.outputs import scope_outputs

        # An override naming an output path (a tuned `model` section's dir) stays scoped.
        scope_outputs(updated, settings.model_name)
    return updated


# What `ml tune` writes and `ml train --params-override` may change: the model's own settings.
TUNED_SECTIONS = ("model", "train", "image")


def override_from_file(
    settings: Settings, path: Path, sections: Collection[str] = TUNED_SECTIONS
) -> Settings:
    """`override` with the given sections of a params file (e.g. `ml train --params-override`)."""
    if not path.is_file():
        raise ConfigError(f"params override file not found: {path}")
    values = read_mapping(path)
    unknown = sorted(map(str, set(values) - set(sections)))
    if unknown:
        close = [difflib.get_close_matches(key, list(sections), n=1) for key in unknown]
        hints = [f" (did you mean {match[0]!r}?)" for match in close if match]
        raise ConfigError(
            f"{path}: only {'/'.join(sections)} sections can be overridden, got {unknown}"
            + "".join(hints)
        )
    return override(settings, values, str(path))
