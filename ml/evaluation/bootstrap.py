"""Patient-level bootstrap: resample patients with replacement and keep all of their exams.

Each resample draws as many patients as there are (with replacement) from a generator
seeded with ``seed``; an exam appears in the resample once for every time its patient
was drawn, so a patient's exams always travel together.  Resamples holding a single
class are skipped (ranking metrics are undefined there) and counted.  Intervals are
percentile intervals of the metric over the kept resamples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from numpy.typing import ArrayLike

from ml.evaluation._inputs import EvaluationError, check_fraction
from ml.evaluation.metrics import curve_unchecked

DEFAULT_N_BOOT = 1000
MIN_RESAMPLES_FOR_CI = 20


def patient_bootstrap_indices(
    patient_ids: ArrayLike, n_boot: int, seed: int
) -> Iterator[np.ndarray]:
    """Yield ``n_boot`` exam-index arrays, each a patient-level resample of the exams."""
    if n_boot < 0:
        raise EvaluationError(f"n_boot must be >= 0, got {n_boot}")
    _, inverse = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    n_patients = int(inverse.max()) + 1 if inverse.size else 0
    if n_patients == 0:
        raise EvaluationError("no patients to resample")
    rng = np.random.default_rng(seed)
    exams = np.arange(inverse.size)
    for _ in range(n_boot):
        times_drawn = np.bincount(rng.integers(0, n_patients, n_patients), minlength=n_patients)
        yield np.repeat(exams, times_drawn[inverse])


def percentile_interval(values: ArrayLike, confidence: float = 0.95) -> tuple[float, float] | None:
    """Central percentile interval of ``values``; ``None`` with fewer than 20 values."""
    level = check_fraction(confidence, "confidence", closed=False)
    v = np.asarray(values, dtype=np.float64)
    if v.size < MIN_RESAMPLES_FOR_CI:
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(v, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    patient_ids: ArrayLike,
    metric_fn: Callable[[np.ndarray, np.ndarray], dict[str, float | None]],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> tuple[dict[str, list[float]], int]:
    """Return each metric's values over the kept resamples and the number of skipped resamples."""
    values: dict[str, list[float]] = {}
    skipped = 0
    for idx in patient_bootstrap_indices(patient_ids, n_boot, seed):
        y = labels[idx]
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == y.size:
            skipped += 1
            continue
        for name, value in metric_fn(scores[idx], y).items():
            if value is not None:
                values.setdefault(name, []).append(value)
    return values, skipped


def roc_band(
    scores: np.ndarray,
    labels: np.ndarray,
    patient_ids: ArrayLike,
    *,
    grid: np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Pointwise percentile band of sensitivity on an FPR ``grid`` over patient resamples."""
    curves = []
    for idx in patient_bootstrap_indices(patient_ids, n_boot, seed):
        y = labels[idx]
        if 0 < int(y.sum()) < y.size:
            curve = curve_unchecked(scores[idx], y)
            curves.append(np.interp(grid, curve.fpr, curve.tpr))
    if len(curves) < MIN_RESAMPLES_FOR_CI:
        return None
    tail = (1.0 - check_fraction(confidence, "confidence", closed=False)) / 2.0 * 100.0
    low, high = np.percentile(np.stack(curves), [tail, 100.0 - tail], axis=0)
    return low, high
