"""Evaluation report: every metric with a patient-level bootstrap CI, overall and per subgroup.

A subgroup level with fewer than ``min_group_size`` rows, or holding one class only, is
reported as :class:`NotEvaluable` (its counts and the reason) instead of with metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ml.evaluation._inputs import EvaluationError, binary_inputs, check_fraction
from ml.evaluation.bootstrap import DEFAULT_N_BOOT, bootstrap_metrics, percentile_interval
from ml.evaluation.metrics import (
    DEFAULT_ECE_BINS,
    SPECIFICITY_TARGETS,
    metrics_unchecked,
    reliability_bins,
)

MISSING_GROUP = "unknown"
DEFAULT_MIN_GROUP_SIZE = 10


@dataclass(frozen=True)
class MetricEstimate:
    """A point estimate with its bootstrap interval (``None`` where undefined)."""

    value: float | None
    lower: float | None = None
    upper: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready form."""
        return {"value": self.value, "lower": self.lower, "upper": self.upper}


@dataclass(frozen=True)
class GroupResult:
    """Metrics of one set of exams (the whole cohort or one subgroup level)."""

    n_exams: int
    n_patients: int
    n_positive: int
    metrics: dict[str, MetricEstimate]
    n_boot_used: int
    n_boot_skipped: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "n_exams": self.n_exams,
            "n_patients": self.n_patients,
            "n_positive": self.n_positive,
            "n_boot_used": self.n_boot_used,
            "n_boot_skipped": self.n_boot_skipped,
            "evaluable": True,
            "metrics": {name: m.to_dict() for name, m in self.metrics.items()},
        }


@dataclass(frozen=True)
class NotEvaluable:
    """A subgroup level left unevaluated (too few rows or one class): its counts and why."""

    n_exams: int
    n_patients: int
    n_positive: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "evaluable": False}


@dataclass(frozen=True)
class EvaluationReport:
    """Overall and per-subgroup metrics with the settings that produced them."""

    overall: GroupResult
    subgroups: dict[str, dict[str, GroupResult | NotEvaluable]] = field(default_factory=dict)
    n_boot: int = DEFAULT_N_BOOT
    seed: int = 0
    confidence: float = 0.95
    ece_bins: int = DEFAULT_ECE_BINS
    specificities: tuple[float, ...] = SPECIFICITY_TARGETS
    unit: str = "exam"
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (plain dicts, lists, floats, ints and ``None``)."""
        return {
            "settings": {
                "n_boot": self.n_boot,
                "seed": self.seed,
                "confidence": self.confidence,
                "ece_bins": self.ece_bins,
                "specificities": list(self.specificities),
                "resampling": "patient",
                "interval": "percentile",
                "unit": self.unit,
                "min_group_size": self.min_group_size,
            },
            "overall": self.overall.to_dict(),
            "subgroups": {
                column: {level: result.to_dict() for level, result in levels.items()}
                for column, levels in self.subgroups.items()
            },
        }


def evaluate_group(
    probabilities: np.ndarray,
    labels: np.ndarray,
    patient_ids: np.ndarray,
    *,
    n_boot: int,
    seed: int,
    confidence: float,
    ece_bins: int,
    specificities: tuple[float, ...],
) -> GroupResult:
    """Point metrics plus patient-level bootstrap intervals for one set of exams."""

    def metric_fn(p: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
        return metrics_unchecked(p, y, specificities, ece_bins)

    point = metric_fn(probabilities, labels)
    samples, skipped = bootstrap_metrics(
        probabilities, labels, patient_ids, metric_fn, n_boot=n_boot, seed=seed
    )
    metrics = {}
    for name, value in point.items():
        interval = None if value is None else percentile_interval(samples.get(name, []), confidence)
        low, high = interval if interval is not None else (None, None)
        metrics[name] = MetricEstimate(value, low, high)
    return GroupResult(
        n_exams=int(labels.size),
        n_patients=int(np.unique(patient_ids).size),
        n_positive=int(labels.sum()),
        metrics=metrics,
        n_boot_used=n_boot - skipped,
        n_boot_skipped=skipped,
    )


def _group_levels(values: ArrayLike, n: int, column: str) -> np.ndarray:
    array = np.asarray(values, dtype=object)
    if array.ndim != 1 or array.shape[0] != n:
        raise EvaluationError(
            f"group column {column!r} must be 1-D with {n} entries, got shape {array.shape}"
        )
    missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in array])
    levels = array.astype(str)
    levels[missing] = MISSING_GROUP
    return levels


def not_evaluable_reason(labels: np.ndarray, min_size: int, unit: str = "exam") -> str | None:
    """Why a subgroup with these 0/1 ``labels`` cannot be evaluated, or ``None`` when it can."""
    n, positives = int(labels.size), int(labels.sum())
    if n < min_size:
        return f"{n} {unit}(s), fewer than the minimum of {min_size}"
    if positives in (0, n):
        return f"one class only: {positives} malignant of {n} {unit}(s)"
    return None


def evaluate_scores(
    scores: ArrayLike,
    labels: ArrayLike,
    patient_ids: ArrayLike,
    *,
    groups: Mapping[str, ArrayLike] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    confidence: float = 0.95,
    ece_bins: int = DEFAULT_ECE_BINS,
    specificities: tuple[float, ...] = SPECIFICITY_TARGETS,
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
    unit: str = "exam",
) -> EvaluationReport:
    """Evaluate malignancy probabilities overall and per level of each ``groups`` column.

    ``scores`` are probabilities in [0, 1] (one per ``unit``: exam, or view when evaluating
    views), ``labels`` 0/1, ``patient_ids`` the resampling unit.  Each group column holds one
    value per row; missing values (``None``/NaN) form the level ``"unknown"``.  A level with
    fewer than ``min_group_size`` rows or one class only is :class:`NotEvaluable`.  Every group
    is resampled with the same ``seed``, so results do not depend on the order of the columns.
    """
    p, y = binary_inputs(scores, labels, probabilities=True)
    patients = np.asarray(patient_ids).astype(str)
    if patients.shape != p.shape:
        raise EvaluationError(f"patient_ids must have {p.size} entries, got shape {patients.shape}")
    check_fraction(confidence, "confidence", closed=False)
    for s in specificities:
        check_fraction(s, "specificity")
    reliability_bins(p[:1], y[:1], ece_bins)  # validates ece_bins
    if int(min_group_size) != min_group_size or min_group_size < 1:
        raise EvaluationError(f"min_group_size must be a positive integer, got {min_group_size}")
    options: dict[str, Any] = {
        "n_boot": n_boot,
        "seed": seed,
        "confidence": confidence,
        "ece_bins": ece_bins,
        "specificities": specificities,
    }
    overall = evaluate_group(p, y, patients, **options)
    subgroups: dict[str, dict[str, GroupResult | NotEvaluable]] = {}
    for column, values in (groups or {}).items():
        levels = _group_levels(values, p.size, column)
        subgroups[column] = {}
        for level in np.unique(levels):
            inside = levels == level
            p_in, y_in, patients_in = p[inside], y[inside], patients[inside]
            reason = not_evaluable_reason(y_in, min_group_size, unit)
            if reason is None:
                result = evaluate_group(p_in, y_in, patients_in, **options)
            else:
                counts = (int(y_in.size), int(np.unique(patients_in).size), int(y_in.sum()))
                result = NotEvaluable(*counts, reason)
            subgroups[column][str(level)] = result
    return EvaluationReport(
        overall, subgroups, n_boot, seed, confidence, ece_bins, tuple(specificities), unit,
        int(min_group_size),
    )
