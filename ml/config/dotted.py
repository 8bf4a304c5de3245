"""Settings as trees of sections addressed by dotted keys ("train.epochs"): flatten a tree, set
one key, lay values over a tree recording where each came from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ml.config.base import ConfigError


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> leaf value; data.sha256 (file name -> digest) counts as one value."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "sha256":
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        if tree.get(part) is None:  # absent, or a YAML key with nothing under it
            tree[part] = {}
        tree = tree[part]
        if not isinstance(tree, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a section")
    tree[leaf] = value


def overlay(
    tree: dict[str, Any], values: Mapping[str, Any], source: str, provenance: dict[str, str]
) -> None:
    """Lay `values` (dotted keys like "train.epochs", or nested sections) over `tree`."""
    for dotted, value in flatten(dict(values)).items():
        set_dotted(tree, dotted, value)
        provenance[dotted] = source
