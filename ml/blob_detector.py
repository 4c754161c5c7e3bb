"""A classical lesion-candidate detector: multi-scale Laplacian-of-Gaussian blobs in sampled slices.

No learning: a baseline that makes DBTex-format box predictions, so the FROC metric
has something honest to evaluate before a trained detector exists.  Boxes are in the
Duke output frame (chest wall of a left breast at column 0), like the GT boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import ndimage

from ml.dicomio import load_view

PREDICTION_COLUMNS = ("X", "Width", "Y", "Height", "Z", "Depth", "Score")


@dataclass(frozen=True)
class BlobDetectorConfig:
    """Scales are fractions of the image height, so one config fits any resolution."""

    n_slices: int = 8
    scales: tuple[float, ...] = (0.012, 0.02, 0.032, 0.05)
    max_detections: int = 4
    tissue_threshold: float = 0.08  # presentation value separating tissue from air
    edge_margin: float = 2.0  # ignore responses within this many largest-scale sigmas of the skin line


def blob_response(image: np.ndarray, sigmas: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Scale-normalised bright-blob response ``-sigma^2 * LoG`` maximised over ``sigmas``.

    Returns the response map and the index of the winning scale per pixel.
    """
    stack = np.stack([-(s**2) * ndimage.gaussian_laplace(image, s) for s in sigmas])
    return stack.max(axis=0), stack.argmax(axis=0)


def tissue_mask(image: np.ndarray, threshold: float, margin_px: int) -> np.ndarray:
    """Breast tissue minus a margin along the skin line and image border."""
    mask = ndimage.gaussian_filter(image, 2.0) > threshold
    if margin_px > 0:
        mask = ndimage.binary_erosion(mask, iterations=margin_px, border_value=0)
    return mask


def detect_blobs(pixels: np.ndarray, frame_indices: tuple[int, ...], config: BlobDetectorConfig) -> pl.DataFrame:
    """Candidate boxes with scores in ``(0, 1)`` from presentation slices ``(k, rows, cols)``."""
    rows = pixels.shape[1]
    sigmas = [s * rows for s in config.scales]
    margin = max(int(round(config.edge_margin * max(sigmas))), 1)
    candidates: list[tuple[float, float, float, float, int]] = []  # strength, y, x, sigma, frame
    for image, frame in zip(pixels.astype(np.float32), frame_indices):
        response, scale = blob_response(image, sigmas)
        mask = tissue_mask(image, config.tissue_threshold, margin)
        if not mask.any():
            continue
        spread = np.median(np.abs(response[mask] - np.median(response[mask]))) + 1e-6
        peaks = (response == ndimage.maximum_filter(response, size=int(2 * sigmas[0]) + 1)) & mask & (response > 0)
        for y, x in zip(*np.nonzero(peaks)):
            candidates.append((response[y, x] / spread, float(y), float(x), sigmas[scale[y, x]], int(frame)))
    kept: list[tuple[float, float, float, float, int]] = []
    for cand in sorted(candidates, key=lambda c: -c[0]):
        if all(np.hypot(cand[1] - k[1], cand[2] - k[2]) > 2 * max(cand[3], k[3]) for k in kept):
            kept.append(cand)
        if len(kept) == config.max_detections:
            break
    records = []
    for strength, y, x, sigma, frame in kept:
        half = int(round(1.5 * np.sqrt(2) * sigma))
        records.append(
            {
                "X": int(round(x)) - half,
                "Width": 2 * half,
                "Y": int(round(y)) - half,
                "Height": 2 * half,
                "Z": frame - 1,
                "Depth": 2,  # centre at the best slice: Z + Depth / 2
                "Score": float(strength / (strength + 10.0)),  # monotone, never saturates to 1
            }
        )
    return pl.DataFrame(records, schema={c: (pl.Float64 if c == "Score" else pl.Int64) for c in PREDICTION_COLUMNS})


def detect_volume(path: str, view: str, config: BlobDetectorConfig = BlobDetectorConfig()) -> pl.DataFrame:
    """Decode ``config.n_slices`` sampled frames of one volume and detect blobs in them.

    ``view`` is the Duke view name; its first letter fixes the laterality, as the
    reference loader does, so the boxes share the GT boxes' frame.
    """
    image = load_view(path, "sampled", laterality=view[0], n_slices=config.n_slices)
    return detect_blobs(image.pixels, image.frame_indices, config)
