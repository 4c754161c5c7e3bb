"""Small numpy image filters (no scipy): Gaussian blur and smooth steps."""

from __future__ import annotations

import numpy as np


def gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """An ``(n, n)`` row-normalised Gaussian smoothing matrix (edges renormalised, no wrap)."""
    idx = np.arange(n, dtype=np.float64)
    if sigma <= 0:
        return np.eye(n)
    weights = np.exp(-0.5 * ((idx[:, None] - idx[None, :]) / sigma) ** 2)
    return weights / weights.sum(axis=1, keepdims=True)


def gaussian_blur(image: np.ndarray, sigma_y: float, sigma_x: float) -> np.ndarray:
    """Separable anisotropic Gaussian blur of a 2-D array (meant for small patches)."""
    rows, cols = image.shape
    return gaussian_matrix(rows, sigma_y) @ image @ gaussian_matrix(cols, sigma_x).T


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at ``edge0`` to 1 at ``edge1``."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)
