"""Temperature scaling for binary logits, fitted on validation by penalised maximum likelihood.

``p = sigmoid(logit / T)``.  The fit minimises the summed validation NLL plus a weak Gaussian
prior on ``log T`` centred on ``T = 1`` (standard deviation ``prior_sd``, default 0.5: ``T``
within [0.37, 2.7] before any data).  The objective is convex in ``log(1/T)``, so a bounded
scalar search finds its single minimum; ``T`` is limited to [1e-3, 1e3] (a model whose scores
are anti-correlated with the labels would want ``T < 0``, which is not allowed).

Why the prior: on a small validation split that the model separates perfectly (every positive
logit > 0 > every negative one) the plain NLL keeps falling as ``T`` shrinks and would drive it
to its lower bound (probabilities of exactly 0 and 1).  The prior stops it where the data stop
paying for more confidence, and with many exams it is negligible next to the NLL.  Smoothed
targets (Platt's ``(N+ + 1) / (N+ + 2)``) were tried first: with the ~8 positives of a small
split they soften a sound model (``T`` of 1.6 for a model already calibrated at ``T`` = 0.94,
held-out ECE 0.068 instead of 0.034).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ml.evaluation._inputs import EvaluationError, binary_inputs, require_both_classes

TEMPERATURE_BOUNDS = (1e-3, 1e3)
TEMPERATURE_PRIOR_SD = 0.5  # of log T
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


def fit_temperature(logits: ArrayLike, labels: ArrayLike, *, prior_sd: float = TEMPERATURE_PRIOR_SD) -> float:
    """Temperature ``T`` maximising the validation likelihood of ``sigmoid(logits / T)`` times a log-normal prior on ``T``."""
    from scipy.optimize import minimize_scalar

    z, y = binary_inputs(logits, labels)
    require_both_classes(y, "temperature scaling")
    if not np.isfinite(prior_sd) or prior_sd <= 0:
        raise EvaluationError(f"prior_sd must be a positive finite number, got {prior_sd}")

    def objective(log_inverse_t: float) -> float:
        scaled = z * np.exp(log_inverse_t)
        return float(np.sum(np.logaddexp(0.0, scaled) - y * scaled) + 0.5 * (log_inverse_t / prior_sd) ** 2)

    low, high = TEMPERATURE_BOUNDS
    result = minimize_scalar(
        objective, bounds=(-np.log(high), -np.log(low)), method="bounded", options={"xatol": 1e-9}
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
