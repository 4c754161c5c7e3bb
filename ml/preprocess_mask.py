"""Breast mask: Otsu threshold on a smoothed image, largest connected component, holes filled."""

from __future__ import annotations

import numpy as np

HISTOGRAM_BINS = 256


def otsu_threshold(image: np.ndarray, bins: int = HISTOGRAM_BINS) -> float:
    """Otsu's threshold: the value maximising the between-class variance of the histogram."""
    counts, edges = np.histogram(image, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)[:-1].astype(np.float64)
    weight_high = counts.sum() - weight_low
    sum_low = np.cumsum(counts * centers)[:-1]
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (np.sum(counts * centers) - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1:-1][int(np.argmax(between))])


def breast_mask(image: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Boolean mask of the breast in a 2-D presentation image (bright tissue on dark air).

    The image is smoothed (Gaussian, ``sigma`` defaults to 1% of the shorter side,
    at least 1 pixel), thresholded with Otsu, reduced to its largest connected
    component and hole-filled.  An image without contrast is kept whole.
    """
    from scipy import ndimage

    if image.ndim != 2:
        raise ValueError(f"breast_mask expects a 2-D image, got shape {image.shape}")
    smooth = ndimage.gaussian_filter(
        image.astype(np.float32), sigma=sigma or max(1.0, min(image.shape) / 100)
    )
    if float(smooth.max()) <= float(smooth.min()):
        return np.ones(image.shape, dtype=bool)
    labels, _ = ndimage.label(smooth > otsu_threshold(smooth))  # the maximum is always above
    sizes = np.bincount(labels.ravel())[1:]
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
