"""Fit a Duke-frame image into a fixed model input: area resize, chest-wall-aware padding, box maps.

One scale factor maps both axes, so the aspect ratio is kept.  Output pixel ``j``
averages the input interval ``[j / scale, (j + 1) / scale)`` (an exact box filter,
computed from cumulative sums: anti-aliased, deterministic, no BLAS), so a point
``x`` of the Duke frame lands at ``x * scale + pad.left`` in the model input, with
pixel edges as the coordinate origin.  The chest wall stays on its image edge: a
left breast (chest wall at column 0) is padded on the right, a right breast on the
left; all vertical padding goes to the bottom.  Padding is 0 (air).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Pad(NamedTuple):
    """Rows and columns of zero padding added on each side of the resized image."""

    top: int
    bottom: int
    left: int
    right: int


class Fitted(NamedTuple):
    """A resized and padded stack ``(C, height, width)`` and the map from the Duke frame."""

    array: np.ndarray
    scale: float
    pad: Pad


def fit_scale(rows: int, cols: int, height: int, width: int) -> tuple[float, int, int]:
    """Scale fitting ``rows x cols`` into ``height x width`` (aspect kept), and the resized size."""
    if min(rows, cols, height, width) < 1:
        raise ValueError(f"sizes must be >= 1, got image {rows}x{cols} into {height}x{width}")
    scale = min(height / rows, width / cols)
    new_rows = min(height, max(1, round(rows * scale)))
    new_cols = min(width, max(1, round(cols * scale)))
    return scale, new_rows, new_cols


def area_resize_axis(x: np.ndarray, scale: float, n_out: int, axis: int) -> np.ndarray:
    """Box-filter ``x`` along ``axis`` to ``n_out`` samples (``j`` covers ``[j, j+1) / scale``)."""
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, 0)
    n_in = x.shape[0]
    edges = np.minimum(np.arange(n_out + 1, dtype=np.float64) / scale, n_in)
    whole = np.floor(edges).astype(np.int64)
    frac = edges - whole
    cumulative = np.concatenate([np.zeros((1, *x.shape[1:])), np.cumsum(x, axis=0)])
    shape = (-1,) + (1,) * (x.ndim - 1)
    # Integral of the piecewise-constant signal from 0 up to each (fractional) edge.
    at_edges = cumulative[whole] + frac.reshape(shape) * x[np.minimum(whole, n_in - 1)]
    out = np.diff(at_edges, axis=0) / np.diff(edges).reshape(shape)
    return np.moveaxis(out, 0, axis)


def fit_to_canvas(stack: np.ndarray, height: int, width: int, laterality: str) -> Fitted:
    """Resize ``stack`` ``(C, rows, cols)`` to fit ``height x width``; pad away from the chest wall.

    ``laterality`` is ``"L"`` or ``"R"`` (the Duke frame puts a left chest wall at
    column 0, a right one at the last column).  Returns float32.
    """
    if stack.ndim != 3:
        raise ValueError(f"expected a (C, rows, cols) stack, got shape {stack.shape}")
    side = laterality.strip().upper()[:1]
    if side not in ("L", "R"):
        raise ValueError(f"laterality must start with L or R, got {laterality!r}")
    _, rows, cols = stack.shape
    scale, new_rows, new_cols = fit_scale(rows, cols, height, width)
    spare_cols = width - new_cols
    pad = Pad(
        0, height - new_rows, 0 if side == "L" else spare_cols, spare_cols if side == "L" else 0
    )
    out = np.zeros((stack.shape[0], height, width), dtype=np.float32)
    for channel, image in enumerate(stack):  # one channel at a time bounds the float64 working set
        resized = area_resize_axis(area_resize_axis(image, scale, new_rows, 0), scale, new_cols, 1)
        out[channel, pad.top : pad.top + new_rows, pad.left : pad.left + new_cols] = resized
    return Fitted(out, scale, pad)


def _boxes(boxes_xywh: np.ndarray | list) -> np.ndarray:
    arr = np.asarray(boxes_xywh, dtype=np.float64)
    if arr.shape[-1:] != (4,):
        raise ValueError(
            f"boxes must have 4 values (x, y, width, height) per box, got shape {arr.shape}"
        )
    return arr


def to_model_coords(boxes_xywh: np.ndarray | list, scale: float, pad: Pad) -> np.ndarray:
    """Map ``(..., 4)`` boxes ``x, y, width, height`` from the Duke frame to model-input pixels."""
    arr = _boxes(boxes_xywh) * scale
    arr[..., 0] += pad.left
    arr[..., 1] += pad.top
    return arr


def to_duke_coords(boxes_xywh: np.ndarray | list, scale: float, pad: Pad) -> np.ndarray:
    """Inverse of :func:`to_model_coords`: model-input boxes back to Duke-frame pixels."""
    arr = _boxes(boxes_xywh).copy()
    arr[..., 0] -= pad.left
    arr[..., 1] -= pad.top
    return arr / scale
