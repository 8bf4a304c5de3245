"""The one params hash: which settings make a trained model a different one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection

from ml.config.settings import Settings

# The keys that decide what training produces; serving, monitoring and deployment settings can
# change without making an already trained model a different one.
MODEL_SECTIONS = ("task", "data", "validate", "split", "model", "image", "train")
DEPLOYMENT_ONLY = ("data.mirror", "data.mirror_root", "data.mirror_subdir")


def params_hash(settings: Settings, sections: Collection[str] = MODEL_SECTIONS) -> str:
    """sha256 of the effective settings in `sections` (after environment overrides, minus the
    deployment-only keys), as canonical JSON so formatting and comments do not count. The
    registry's `params_sha256` tag and the training run's `params_hash` tag are this value."""
    values = {name: value for name, value in settings.as_dict().items() if name in sections}
    for dotted in DEPLOYMENT_ONLY:
        section, key = dotted.split(".")
        if isinstance(values.get(section), dict):
            values[section].pop(key, None)
    canonical = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
