"""Temperature scaling for binary logits, fitted by minimising the validation NLL.

``p = sigmoid(logit / T)``.  The NLL is convex in ``1/T``, so a bounded scalar search over
``log(1/T)`` finds its single minimum; ``T`` is limited to [1e-3, 1e3] (a model whose scores
are anti-correlated with the labels would want ``T < 0``, which is not allowed).  The fit
uses Platt's smoothed targets, ``(N+ + 1) / (N+ + 2)`` for positives and ``1 / (N- + 2)``
for negatives: on a small validation split that the model separates perfectly the plain NLL
would drive ``T`` to its lower bound (probabilities of exactly 0 and 1); with many exams
the targets are practically 0 and 1.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ml.evaluation._inputs import EvaluationError, binary_inputs, require_both_classes

TEMPERATURE_BOUNDS = (1e-3, 1e3)
PROBABILITY_EPS = 1e-7


def sigmoid(logits: ArrayLike) -> np.ndarray:
    """Numerically stable logistic function."""
    z = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def logit(probabilities: ArrayLike, eps: float = PROBABILITY_EPS) -> np.ndarray:
    """Inverse of :func:`sigmoid`, probabilities clipped to [eps, 1 - eps]."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def binary_nll(logits: ArrayLike, labels: ArrayLike) -> float:
    """Mean binary cross-entropy of ``sigmoid(logits)`` against 0/1 ``labels``, from logits."""
    z, y = binary_inputs(logits, labels)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits: ArrayLike, labels: ArrayLike) -> float:
    """Temperature ``T`` minimising the NLL of ``sigmoid(logits / T)`` against validation ``labels`` (Platt targets)."""
    from scipy.optimize import minimize_scalar

    z, y = binary_inputs(logits, labels)
    require_both_classes(y, "temperature scaling")
    positives = float(y.sum())
    target = np.where(y > 0, (positives + 1) / (positives + 2), 1 / (y.size - positives + 2))

    def nll(log_inverse_t: float) -> float:
        scaled = z * np.exp(log_inverse_t)
        return float(np.mean(np.logaddexp(0.0, scaled) - target * scaled))

    low, high = TEMPERATURE_BOUNDS
    result = minimize_scalar(
        nll, bounds=(-np.log(high), -np.log(low)), method="bounded", options={"xatol": 1e-9}
    )
    if not result.success:
        raise EvaluationError(f"temperature search failed: {result.message}")
    return float(np.exp(-result.x))


def apply_temperature(logits: ArrayLike, temperature: float) -> np.ndarray:
    """Return ``logits / temperature`` (apply :func:`sigmoid` for probabilities)."""
    t = float(temperature)
    if not np.isfinite(t) or t <= 0:
        raise EvaluationError(f"temperature must be a positive finite number, got {temperature}")
    return np.asarray(logits, dtype=np.float64) / t
