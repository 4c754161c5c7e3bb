"""Hand-made per-view features for the baseline classifier (replaced by the CNN of the model issue).

Intensity percentiles of the tissue and the strongest scale-normalised blob responses:
cheap, resolution-independent, and enough for a logistic regression to learn from.
"""

from __future__ import annotations

import numpy as np

from ml.blob_detector import blob_response

FEATURE_NAMES: tuple[str, ...] = (
    "tissue_fraction",
    "p50",
    "p90",
    "p99",
    "blob_max",
    "blob_p999",
    "blob_top5_mean",
)
BLOB_SCALES = (0.012, 0.02, 0.032)


def view_features(tensor: np.ndarray, tissue_threshold: float = 0.08) -> np.ndarray:
    """Features of one preprocessed view ``(C, H, W)`` (values in ``[0, 1]``) as float64."""
    stack = np.asarray(tensor, dtype=np.float32)
    tissue = stack > tissue_threshold
    values = stack[tissue] if tissue.any() else stack.ravel()
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    rows = stack.shape[-2]
    sigmas = [s * rows for s in BLOB_SCALES]
    responses = []
    for image in stack:
        response, _ = blob_response(image, sigmas)
        mask = image > tissue_threshold
        responses.append(response[mask] if mask.any() else response.ravel())
    blob = np.concatenate(responses)
    top5 = np.sort(blob)[-5:]
    return np.array(
        [tissue.mean(), p50, p90, p99, blob.max(), np.percentile(blob, 99.9), top5.mean()], dtype=np.float64
    )
