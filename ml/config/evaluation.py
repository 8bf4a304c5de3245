"""The sections that judge a trained model: evaluation and its slices, the gate, the PR report."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ml.config.base import Section

# Each slicing function's arguments (which task offers which: ml/tasks/*/evaluation.py).
SLICE_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "short_text": ("words",),
    "long_text": ("words",),
    "keywords": ("keywords",),
    "brightness": ("min_intensity", "max_intensity"),
    "classes": ("classes",),
}


class SliceSettings(Section):
    """One slice of the holdout, chosen by a named slicing function of the configured task."""

    name: str = Field(min_length=1)
    function: Literal["short_text", "long_text", "keywords", "brightness", "classes"]
    words: int | None = Field(None, ge=1, description="word-count threshold (short/long_text)")
    keywords: list[str] = Field(default_factory=list, description="any of these (keywords)")
    # Mean pixel intensity on the 0-1 scale of the image statistics (drift, prediction log).
    min_intensity: float | None = Field(
        None, ge=0, le=1, description="mean pixel intensity at least this (brightness)"
    )
    max_intensity: float | None = Field(
        None, ge=0, le=1, description="mean pixel intensity at most this (brightness)"
    )
    classes: list[str] = Field(default_factory=list, description="true class among (classes)")

    @model_validator(mode="after")
    def _arguments_present(self) -> SliceSettings:
        arguments = {a for names in SLICE_ARGUMENTS.values() for a in names}
        given = sorted(a for a in arguments if getattr(self, a) not in (None, []))
        takes = SLICE_ARGUMENTS[self.function]
        stray = [a for a in given if a not in takes]
        if stray:
            raise ValueError(
                f"slice {self.name!r}: {self.function} takes {' / '.join(takes)}, not {stray}"
            )
        if self.function in ("short_text", "long_text") and self.words is None:
            raise ValueError(f"slice {self.name!r}: {self.function} needs `words`")
        if self.function == "keywords" and not self.keywords:
            raise ValueError(f"slice {self.name!r}: keywords needs a non-empty `keywords` list")
        if self.function == "classes" and not self.classes:
            raise ValueError(f"slice {self.name!r}: classes needs a non-empty `classes` list")
        if self.function == "brightness":
            low, high = self.min_intensity, self.max_intensity
            if low is None and high is None:
                raise ValueError(
                    f"slice {self.name!r}: brightness needs `min_intensity` and/or "
                    "`max_intensity` (mean pixel intensity, 0-1)"
                )
            if low is not None and high is not None and low > high:
                raise ValueError(f"slice {self.name!r}: min_intensity {low} > max_intensity {high}")
        return self

    @property
    def description(self) -> str:
        """How the PR report names the slice's rule."""
        if self.function == "short_text":
            return f"≤ {self.words} words"
        if self.function == "long_text":
            return f"≥ {self.words} words"
        if self.function == "keywords":
            return "mentions " + ", ".join(self.keywords)
        if self.function == "classes":
            return "classes " + ", ".join(self.classes)
        low, high = self.min_intensity, self.max_intensity
        if low is None:
            return f"mean intensity ≤ {high:g}"
        if high is None:
            return f"mean intensity ≥ {low:g}"
        return f"mean intensity {low:g} to {high:g}"


class EvaluateSettings(Section):
    metrics: str = "reports/metrics.json"
    detail_dir: str = "reports/eval"
    ece_bins: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    behavioural_file: str = "ml/evaluate/behavioural.yaml"
    slices: list[SliceSettings] = Field(default_factory=list)


class GateSettings(Section):
    f1_tolerance: float = Field(0.01, ge=0, le=1)
    max_class_f1_drop: float = Field(0.05, ge=0, le=1)
    min_behavioural_pass_rate: float = Field(1.0, ge=0, le=1)
    # The paired comparison (ml/compare). 95% two-sided: an equal challenger fails only when
    # its interval lies wholly below -tolerance, under 2.5% of the time (benchmarks/gate.py
    # measures it); 2000 resamples keep the interval bounds stable to about 0.001.
    confidence_level: float = Field(0.95, gt=0.5, lt=1)
    bootstrap_resamples: int = Field(2000, ge=100)
    bootstrap_seed: int = 0
    # Flipped rows shown per kind (fixed / broken / both wrong) in gate.json and the comment.
    flip_examples: int = Field(10, ge=0)
    floors: dict[str, float] = Field(
        default_factory=lambda: {"accuracy": 0.8, "f1_weighted": 0.8, "f1_macro": 0.7}
    )
    report: str = "reports/gate.json"

    @model_validator(mode="after")
    def _floors_are_known_metrics(self) -> GateSettings:
        known = {f"{m}_{a}" for m in ("f1", "precision", "recall") for a in ("weighted", "macro")}
        unknown = sorted(set(self.floors) - known - {"accuracy"})
        if unknown:
            raise ValueError(f"gate.floors: unknown metric(s) {unknown}; use {sorted(known)}")
        return self


class ReportSettings(Section):
    pr_comment: str = "reports/pr_comment.md"
    base_rev: str = "main"
