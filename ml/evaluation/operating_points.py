"""Decision thresholds chosen on validation scores.

An exam is called positive when ``score >= threshold``; candidate thresholds are the distinct
scores (plus ``+inf``, which calls nothing positive and is reported as ``None`` in JSON).

* Youden: the threshold maximising ``sensitivity + specificity - 1``; among ties the highest.
* Target specificity: the lowest threshold whose specificity is ``>= target``, i.e. the one
  with the highest sensitivity under that constraint (matches ``sens_at_spec_*`` metrics).
* Triage (dual threshold): ``t_low`` is the highest threshold whose sensitivity is ``>=
  low_sensitivity`` (exams below it are auto-cleared, missing at most ``1 - low_sensitivity``
  of cancers); ``t_high`` is the target-specificity threshold for ``high_specificity`` (exams
  at or above it are flagged suspicious).  Exams in ``[t_low, t_high)`` go to review.  When
  the two cross, ``t_high`` is raised to ``t_low`` so the review band is empty, not negative.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ml.evaluation._inputs import binary_inputs, check_fraction
from ml.evaluation.metrics import BinaryCurve, binary_curve


def _json_threshold(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def threshold_metrics(
    scores: ArrayLike, labels: ArrayLike, threshold: float | None
) -> dict[str, Any]:
    """Confusion counts and rates when ``score >= threshold`` is positive (``None``: +inf)."""
    s, y = binary_inputs(scores, labels)
    t = np.inf if threshold is None else float(threshold)
    called = s >= t
    tp = int(np.sum(called & (y == 1)))
    fp = int(np.sum(called & (y == 0)))
    fn = int(np.sum(~called & (y == 1)))
    tn = int(np.sum(~called & (y == 0)))

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    return {
        "threshold": _json_threshold(t),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
    }


def _youden_index(curve: BinaryCurve) -> int:
    j = curve.tpr - curve.fpr
    return int(np.flatnonzero(j >= j.max() - 1e-12)[0])  # first = highest threshold


def _specificity_index(curve: BinaryCurve, specificity: float) -> int:
    allowed = np.flatnonzero(curve.fps <= (1.0 - specificity) * curve.n_neg + 1e-9)
    return int(allowed[-1])  # fps never decrease, so the last allowed is the lowest threshold


def _sensitivity_index(curve: BinaryCurve, sensitivity: float) -> int:
    reached = np.flatnonzero(curve.tps >= sensitivity * curve.n_pos - 1e-9)
    return int(reached[0])


def youden_threshold(scores: ArrayLike, labels: ArrayLike) -> float:
    """Threshold maximising Youden's J (the highest one among ties)."""
    curve = binary_curve(scores, labels)
    return float(curve.thresholds[_youden_index(curve)])


def threshold_at_specificity(scores: ArrayLike, labels: ArrayLike, specificity: float) -> float:
    """Lowest threshold whose specificity is at least ``specificity`` (``inf`` if none but +inf)."""
    curve = binary_curve(scores, labels)
    index = _specificity_index(curve, check_fraction(specificity, "specificity"))
    return float(curve.thresholds[index])


def threshold_at_sensitivity(scores: ArrayLike, labels: ArrayLike, sensitivity: float) -> float:
    """Highest threshold whose sensitivity is at least ``sensitivity``."""
    curve = binary_curve(scores, labels)
    index = _sensitivity_index(curve, check_fraction(sensitivity, "sensitivity"))
    return float(curve.thresholds[index])


def triage_bands(
    scores: ArrayLike, labels: ArrayLike, t_low: float, t_high: float
) -> dict[str, Any]:
    """Share of exams and of cancers in the auto-clear, review and suspicious bands."""
    s, y = binary_inputs(scores, labels)
    review = (s >= t_low) & (s < t_high)
    bands = {"auto_clear": s < t_low, "review": review, "suspicious": s >= t_high}
    n_pos = max(int(y.sum()), 1)
    out: dict[str, Any] = {}
    for name, inside in bands.items():
        count = int(inside.sum())
        cancers = int(np.sum(inside & (y == 1)))
        out[name] = {
            "exams": count,
            "fraction": count / s.size,
            "cancers": cancers,
            "cancer_fraction": cancers / n_pos,
            "cancer_rate": cancers / count if count else None,
        }
    return out


def operating_points(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    target_specificity: float = 0.90,
    low_sensitivity: float = 0.98,
    high_specificity: float = 0.95,
) -> dict[str, Any]:
    """Youden, target-specificity and triage thresholds with their sensitivity and specificity."""
    s, y = binary_inputs(scores, labels)
    curve = binary_curve(s, y)
    target_specificity = check_fraction(target_specificity, "target_specificity")
    low_sensitivity = check_fraction(low_sensitivity, "low_sensitivity")
    high_specificity = check_fraction(high_specificity, "high_specificity")
    youden = float(curve.thresholds[_youden_index(curve)])
    at_spec = float(curve.thresholds[_specificity_index(curve, target_specificity)])
    t_low = float(curve.thresholds[_sensitivity_index(curve, low_sensitivity)])
    t_high = max(float(curve.thresholds[_specificity_index(curve, high_specificity)]), t_low)
    return {
        "youden": threshold_metrics(s, y, youden),
        "target_specificity": {"target": target_specificity, **threshold_metrics(s, y, at_spec)},
        "triage": {
            "low_sensitivity": low_sensitivity,
            "high_specificity": high_specificity,
            "low": threshold_metrics(s, y, t_low),
            "high": threshold_metrics(s, y, t_high),
            "bands": triage_bands(s, y, t_low, t_high),
        },
    }
