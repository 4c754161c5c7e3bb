"""Binary classification metrics as pure functions on arrays.

Conventions used by every function here:

* ``labels`` are 0/1 (1 = malignant); ``scores`` are higher-is-more-suspicious.
  Calibration metrics (Brier, ECE, log-loss) need ``scores`` to be probabilities.
* An exam is called positive at threshold ``t`` when ``score >= t``.  The thresholds
  considered are the distinct scores plus ``+inf`` (nothing called positive).
* ROC-AUC is the trapezoidal area under the empirical ROC curve, equal to the
  Mann-Whitney probability that a positive outscores a negative, ties counting 1/2.
* PR-AUC is average precision: ``sum_n (R_n - R_{n-1}) * P_n`` over the distinct
  thresholds, a step function with no interpolation (scikit-learn's definition).
* Sensitivity at specificity ``s`` is the highest sensitivity among thresholds whose
  specificity is ``>= s``; it is 0 when only the ``+inf`` threshold qualifies.
* ECE uses ``n_bins`` equal-width bins on [0, 1] (bin ``i`` is ``[i/B, (i+1)/B)``, the
  last bin also holds 1.0), weighting each non-empty bin's ``|mean(label) - mean(p)|``
  by its share of exams.  It is the calibration error of the malignancy probability
  itself, not of the top-label confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ml.evaluation._inputs import (
    EvaluationError,
    binary_inputs,
    check_fraction,
    require_both_classes,
)

DEFAULT_ECE_BINS = 10
SPECIFICITY_TARGETS = (0.90, 0.95)
LOG_LOSS_EPS = 1e-15


@dataclass(frozen=True)
class BinaryCurve:
    """Cumulative counts at each distinct threshold, highest threshold first.

    Index 0 is the ``+inf`` threshold (no positives called); ``tps[i]``/``fps[i]`` are the
    true/false positives when exams with ``score >= thresholds[i]`` are called positive.
    """

    thresholds: np.ndarray
    tps: np.ndarray
    fps: np.ndarray
    n_pos: int
    n_neg: int

    @property
    def tpr(self) -> np.ndarray:
        """Sensitivity at each threshold."""
        return self.tps / self.n_pos

    @property
    def fpr(self) -> np.ndarray:
        """1 - specificity at each threshold."""
        return self.fps / self.n_neg


def binary_curve(scores: ArrayLike, labels: ArrayLike) -> BinaryCurve:
    """Return the cumulative TP/FP counts over all distinct thresholds (both classes needed)."""
    s, y = binary_inputs(scores, labels)
    require_both_classes(y, "a ROC/PR curve")
    return curve_unchecked(s, y)


def curve_unchecked(s: np.ndarray, y: np.ndarray) -> BinaryCurve:
    """:func:`binary_curve` on validated arrays holding both classes."""
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order].astype(np.int64)
    last_of_run = np.flatnonzero(np.diff(s_sorted)) if s.size > 1 else np.array([], dtype=np.int64)
    ends = np.r_[last_of_run, s.size - 1]
    cum = np.cumsum(y_sorted)
    tps = np.r_[0, cum[ends]]
    fps = np.r_[0, ends + 1 - cum[ends]]
    thresholds = np.r_[np.inf, s_sorted[ends]]
    n_pos = int(cum[-1])
    return BinaryCurve(thresholds, tps, fps, n_pos, int(s.size - n_pos))


def roc_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (ties between a positive and a negative count 1/2)."""
    return _roc_auc(binary_curve(scores, labels))


def _roc_auc(curve: BinaryCurve) -> float:
    return float(np.trapezoid(curve.tpr, curve.fpr))


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """PR-AUC as average precision (step-wise sum, no interpolation)."""
    return _average_precision(binary_curve(scores, labels))


def _average_precision(curve: BinaryCurve) -> float:
    tps, fps = curve.tps[1:], curve.fps[1:]
    precision = tps / (tps + fps)
    recall_steps = np.diff(curve.tps) / curve.n_pos
    return float(np.sum(recall_steps * precision))


def sensitivity_at_specificity(scores: ArrayLike, labels: ArrayLike, specificity: float) -> float:
    """Highest sensitivity among thresholds whose specificity is at least ``specificity``."""
    target = check_fraction(specificity, "specificity")
    return _sensitivity_at_specificity(binary_curve(scores, labels), target)


def _sensitivity_at_specificity(curve: BinaryCurve, specificity: float) -> float:
    allowed_fps = (1.0 - specificity) * curve.n_neg + 1e-9  # (1 - 0.9) * 10 is not exactly 1
    return float(curve.tpr[curve.fps <= allowed_fps].max())


def brier_score(probabilities: ArrayLike, labels: ArrayLike) -> float:
    """Mean squared difference between the malignancy probability and the 0/1 label."""
    p, y = binary_inputs(probabilities, labels, probabilities=True)
    return float(np.mean((p - y) ** 2))


def expected_calibration_error(
    probabilities: ArrayLike, labels: ArrayLike, n_bins: int = DEFAULT_ECE_BINS
) -> float:
    """ECE over ``n_bins`` equal-width probability bins, weighted by bin size."""
    p, y = binary_inputs(probabilities, labels, probabilities=True)
    counts, mean_p, mean_y = reliability_bins(p, y, n_bins)
    filled = counts > 0
    return float(np.sum(counts[filled] / p.size * np.abs(mean_y[filled] - mean_p[filled])))


def reliability_bins(
    probabilities: ArrayLike, labels: ArrayLike, n_bins: int = DEFAULT_ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: exam count, mean probability and positive rate (NaN when empty)."""
    if int(n_bins) != n_bins or n_bins < 1:
        raise EvaluationError(f"n_bins must be a positive integer, got {n_bins}")
    p, y = binary_inputs(probabilities, labels, probabilities=True)
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(bins, weights=p, minlength=n_bins) / counts
        mean_y = np.bincount(bins, weights=y, minlength=n_bins) / counts
    return counts, mean_p, mean_y


def log_loss(probabilities: ArrayLike, labels: ArrayLike) -> float:
    """Mean binary cross-entropy, probabilities clipped to [1e-15, 1 - 1e-15]."""
    p, y = binary_inputs(probabilities, labels, probabilities=True)
    p = np.clip(p, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def metric_names(specificities: tuple[float, ...] = SPECIFICITY_TARGETS) -> tuple[str, ...]:
    """Names of the metrics returned by :func:`compute_metrics`, in report order."""
    sens = (f"sens_at_spec_{s:.2f}" for s in specificities)
    return ("roc_auc", "pr_auc", *sens, "brier", "ece", "log_loss")


def compute_metrics(
    probabilities: ArrayLike,
    labels: ArrayLike,
    *,
    specificities: tuple[float, ...] = SPECIFICITY_TARGETS,
    ece_bins: int = DEFAULT_ECE_BINS,
) -> dict[str, float | None]:
    """All report metrics at once; ranking metrics are ``None`` when only one class is present."""
    p, y = binary_inputs(probabilities, labels, probabilities=True)
    for s in specificities:
        check_fraction(s, "specificity")
    reliability_bins(p[:1], y[:1], ece_bins)  # validates n_bins
    return metrics_unchecked(p, y, specificities, ece_bins)


def metrics_unchecked(
    p: np.ndarray, y: np.ndarray, specificities: tuple[float, ...], ece_bins: int
) -> dict[str, float | None]:
    """:func:`compute_metrics` on already-validated arrays (the bootstrap's inner loop)."""
    out: dict[str, float | None] = dict.fromkeys(metric_names(specificities))
    n_pos = int(y.sum())
    if 0 < n_pos < y.size:
        curve = curve_unchecked(p, y)
        out["roc_auc"] = _roc_auc(curve)
        out["pr_auc"] = _average_precision(curve)
        for s in specificities:
            out[f"sens_at_spec_{s:.2f}"] = _sensitivity_at_specificity(curve, s)
    out["brier"] = float(np.mean((p - y) ** 2))
    bins = np.minimum((p * ece_bins).astype(np.int64), ece_bins - 1)
    gap = np.abs(np.bincount(bins, weights=y - p, minlength=ece_bins))
    out["ece"] = float(gap.sum() / p.size)
    clipped = np.clip(p, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    out["log_loss"] = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log1p(-clipped)))
    return out
