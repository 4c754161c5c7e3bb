"""Input checks shared by the evaluation functions, with one typed error."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


class EvaluationError(ValueError):
    """Raised when scores, labels or options given to an evaluation function are invalid."""


def as_scores(
    scores: ArrayLike, *, probabilities: bool = False, name: str = "scores"
) -> np.ndarray:
    """Return ``scores`` as a finite 1-D float64 array (in [0, 1] when ``probabilities``)."""
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1:
        raise EvaluationError(f"{name} must be 1-D, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise EvaluationError(f"{name} contain NaN or infinite values")
    if probabilities and array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise EvaluationError(
            f"{name} must be probabilities in [0, 1], got range [{array.min()}, {array.max()}]"
        )
    return array


def as_labels(labels: ArrayLike, n: int) -> np.ndarray:
    """Return ``labels`` as a 1-D int8 array of 0/1 with ``n`` entries."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != n:
        raise EvaluationError(f"labels must be 1-D with {n} entries, got shape {array.shape}")
    if array.size and not np.all(np.isin(array, (0, 1))):
        raise EvaluationError(f"labels must be 0/1, got values {np.unique(array)[:5].tolist()}")
    return array.astype(np.int8)


def binary_inputs(
    scores: ArrayLike, labels: ArrayLike, *, probabilities: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (scores, labels) pair of equal length; at least one exam."""
    s = as_scores(scores, probabilities=probabilities)
    y = as_labels(labels, s.shape[0])
    if s.size == 0:
        raise EvaluationError("no exams to evaluate")
    return s, y


def require_both_classes(labels: np.ndarray, metric: str) -> None:
    """Raise unless ``labels`` hold at least one positive and one negative."""
    positives = int(labels.sum())
    if positives == 0 or positives == labels.size:
        raise EvaluationError(
            f"{metric} needs both classes, got {positives} positives of {labels.size}"
        )


def check_fraction(value: float, name: str, *, closed: bool = True) -> float:
    """Return ``value`` as float if it lies in [0, 1] (or (0, 1) when not ``closed``)."""
    v = float(value)
    ok = 0.0 <= v <= 1.0 if closed else 0.0 < v < 1.0
    if not ok:
        raise EvaluationError(f"{name} must lie in {'[0, 1]' if closed else '(0, 1)'}, got {value}")
    return v
