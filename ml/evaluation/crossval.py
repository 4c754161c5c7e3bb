"""Aggregate patient-level k-fold cross-validation results: mean and a t-interval per metric.

With ``k`` folds the interval is ``mean ± t_{k-1, (1+c)/2} · sd / sqrt(k)`` (``sd`` with ``k - 1``
degrees of freedom).  Folds where a metric is undefined (``None``) are left out of that metric.
The folds share training data, so this interval is optimistic; it describes fold-to-fold spread.
Metrics that live in [0, 1] (all but ``log_loss``) have their interval clipped to that range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ml.evaluation._inputs import EvaluationError, check_fraction
from ml.evaluation.metrics import DEFAULT_ECE_BINS, SPECIFICITY_TARGETS, compute_metrics

UNBOUNDED_METRICS = frozenset({"log_loss"})


def aggregate_folds(
    fold_metrics: Sequence[Mapping[str, float | None]], confidence: float = 0.95
) -> dict[str, dict[str, Any]]:
    """Per metric: number of folds, mean, sample sd and the t-interval of the mean."""
    from scipy.stats import t as student_t

    level = check_fraction(confidence, "confidence", closed=False)
    if not fold_metrics:
        raise EvaluationError("no folds to aggregate")
    names = list(dict.fromkeys(name for fold in fold_metrics for name in fold))
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        present = [f[name] for f in fold_metrics if f.get(name) is not None]
        values = np.array(present, dtype=np.float64)
        entry: dict[str, Any] = {"n_folds": int(values.size)}
        entry.update(dict.fromkeys(("mean", "sd", "lower", "upper")))
        if values.size:
            entry["mean"] = float(values.mean())
        if values.size >= 2:
            sd = float(values.std(ddof=1))
            quantile = float(student_t.ppf((1.0 + level) / 2.0, values.size - 1))
            half = quantile * sd / np.sqrt(values.size)
            lower, upper = entry["mean"] - half, entry["mean"] + half
            if name not in UNBOUNDED_METRICS:
                lower, upper = max(lower, 0.0), min(upper, 1.0)
            entry.update(sd=sd, lower=lower, upper=upper)
        out[name] = entry
    return out


def evaluate_folds(
    fold_predictions: Sequence[tuple[ArrayLike, ArrayLike]],
    *,
    confidence: float = 0.95,
    specificities: tuple[float, ...] = SPECIFICITY_TARGETS,
    ece_bins: int = DEFAULT_ECE_BINS,
) -> dict[str, Any]:
    """Metrics of each fold's held-out ``(probabilities, labels)`` and their aggregate."""
    per_fold = [
        compute_metrics(p, y, specificities=specificities, ece_bins=ece_bins)
        for p, y in fold_predictions
    ]
    return {"folds": per_fold, "aggregate": aggregate_folds(per_fold, confidence)}
