"""Breast phantom: compressed-breast footprint, skin line and 3-D power-law anatomy.

Everything is generated in the *canonical* frame of a left breast: the chest wall is at
column 0 and the nipple points to the right. The caller mirrors for right breasts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.synth.filters import smoothstep


@dataclass(frozen=True)
class BreastShape:
    """Outline of the compressed breast in the canonical frame (pixels)."""

    center_row: float
    depth: float  # semi-axis from the chest wall towards the nipple
    half_height: float  # semi-axis along the rows
    chest_offset: float  # ellipse centre sits this far behind column 0
    wobble: tuple[tuple[float, float], ...]  # (amplitude, phase) of harmonics 2, 3, ...
    pectoral: tuple[float, float] | None  # MLO: (width at row 0, height at column 0)


@dataclass(frozen=True)
class Anatomy:
    """Normal breast tissue of one view."""

    tissue: np.ndarray  # (F, R, C) float32, 0 = fat, 1 = dense fibroglandular
    mask: np.ndarray  # (F, R, C) float32 in [0, 1], soft breast footprint per slice
    edge_distance: np.ndarray  # (F, R, C) float32, approximate pixels inside the skin
    shape: BreastShape


def sample_shape(rows: int, cols: int, view: str, rng: np.random.Generator) -> BreastShape:
    """Draw a plausible breast outline for a CC or MLO view."""
    wobble = tuple(
        (float(rng.uniform(0.0, 0.03)), float(rng.uniform(0, 2 * np.pi))) for _ in range(3)
    )
    if view == "CC":
        return BreastShape(
            center_row=rows * rng.uniform(0.46, 0.54),
            depth=cols * rng.uniform(0.62, 0.82),
            half_height=rows * rng.uniform(0.36, 0.45),
            chest_offset=cols * rng.uniform(0.02, 0.10),
            wobble=wobble,
            pectoral=None,
        )
    return BreastShape(
        center_row=rows * rng.uniform(0.52, 0.60),
        depth=cols * rng.uniform(0.62, 0.80),
        half_height=rows * rng.uniform(0.38, 0.45),
        chest_offset=cols * rng.uniform(0.02, 0.08),
        wobble=wobble,
        pectoral=(cols * rng.uniform(0.22, 0.38), rows * rng.uniform(0.45, 0.70)),
    )


def footprint(
    shape: BreastShape, rows: int, cols: int, scales: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice soft mask (anti-aliased edge) and approximate inward distance to the skin (pixels).

    ``scales`` (one per slice, about 1) shrink the outline about the ellipse centre.
    """
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    dx = (xx + shape.chest_offset) / shape.depth
    dy = (yy - shape.center_row) / shape.half_height
    theta = np.arctan2(dy, dx)
    boundary = 1.0 + sum(a * np.cos((k + 2) * theta + p) for k, (a, p) in enumerate(shape.wobble))
    rho = np.hypot(dx, dy) / boundary  # at scale 1; scaling divides rho by the scale
    size = min(shape.depth, shape.half_height)
    scale = np.asarray(scales, dtype=np.float64)[:, None, None]
    distance = (scale - rho[None]) * size
    if shape.pectoral is not None:
        # MLO: above the ellipse the breast reaches up to the axilla along the chest wall.
        join_row = shape.center_row - 0.6 * shape.half_height * scale
        top_width = shape.pectoral[0] * 1.4 * scale
        join_width = 0.8 * shape.depth * scale - shape.chest_offset
        width = top_width + (join_width - top_width) * np.clip(yy / join_row, 0.0, 1.0)
        upper = np.minimum(np.minimum(width - xx, shape.center_row - yy), size * scale)
        soft = 0.04 * rows  # rounded (soft-max) join between the axilla and the ellipse
        distance = soft * np.logaddexp(distance / soft, upper / soft)
    mask = np.clip(distance + 0.5, 0.0, 1.0)
    return mask.astype(np.float32), np.maximum(distance, 0.0).astype(np.float32)


def pectoral_mask(shape: BreastShape, rows: int, cols: int) -> np.ndarray:
    """Soft triangle of the pectoral muscle in the upper chest-wall corner (MLO only)."""
    if shape.pectoral is None:
        return np.zeros((rows, cols))
    width, height = shape.pectoral
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    signed = 1.0 - xx / width - yy / height  # > 0 inside the triangle
    return np.clip(signed * min(width, height) + 0.5, 0.0, 1.0)


def _fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (fast FFT sizes)."""
    best = 1 << max(n - 1, 1).bit_length()
    p3 = 1
    while p3 < best:
        p35 = p3
        while p35 < best:
            p2 = p35
            while p2 < n:
                p2 *= 2
            best = min(best, p2)
            p35 *= 5
        p3 *= 3
    return best


def power_law_field(
    frames: int,
    rows: int,
    cols: int,
    beta: float,
    z_scale: float,
    rng: np.random.Generator,
    detail_cutoff: float = 0.04,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian field whose in-plane power spectrum falls as 1/f^beta, plus its fine detail.

    The 3-D spectrum is ``1/|f|^(beta+1)``, so every 2-D slice has the in-plane exponent
    ``beta``. ``z_scale`` is the in-plane distance (pixels) that one slice step stands for:
    small values make structure change slowly from slice to slice. The grid is padded so the
    FFT's periodic wrap does not tie opposite borders together. The second array is the
    same field high-passed above ``detail_cutoff`` cycles/pixel. Both are zero-mean, unit-std.
    """
    pad_f = _fast_length(frames + max(4, frames // 2))
    pad_r, pad_c = _fast_length(rows + rows // 8), _fast_length(cols + cols // 8)
    fz = np.fft.fftfreq(pad_f)[:, None, None] / z_scale
    fy = np.fft.fftfreq(pad_r)[None, :, None]
    fx = np.fft.rfftfreq(pad_c)[None, None, :]
    freq = np.sqrt(fz**2 + fy**2 + fx**2)
    amplitude = np.maximum(freq, 1.0 / max(pad_r, pad_c)) ** (-(beta + 1.0) / 2.0)
    amplitude[0, 0, 0] = 0.0
    spectrum = np.fft.rfftn(rng.standard_normal((pad_f, pad_r, pad_c))) * amplitude
    highpass = 1.0 - np.exp(-((np.hypot(fy, fx) / detail_cutoff) ** 2))
    out = []
    for spec in (spectrum, spectrum * highpass):
        field = np.fft.irfftn(spec, s=(pad_f, pad_r, pad_c), axes=(0, 1, 2))[:frames, :rows, :cols]
        out.append(((field - field.mean()) / field.std()).astype(np.float32))
    return out[0], out[1]


def anatomy(
    rows: int,
    cols: int,
    frames: int,
    view: str,
    density: float,
    rng: np.random.Generator,
    beta: float = 3.0,
    z_scale: float = 1.5,
) -> Anatomy:
    """Fatty/dense tissue of one view: power-law texture shaped by a breast-like prior.

    ``density`` (0..1) is the approximate fibroglandular fraction inside the breast.
    The footprint shrinks slightly towards the first and last slices (rounded breast edge).
    """
    shape = sample_shape(rows, cols, view, rng)
    rel = (np.arange(frames) - (frames - 1) / 2.0) / max((frames - 1) / 2.0, 1.0)
    mask3, dist3 = footprint(shape, rows, cols, 1.0 - 0.07 * rel**2)

    field, detail = power_law_field(frames, rows, cols, beta, z_scale, rng)
    size = min(shape.depth, shape.half_height)
    # Glandular tissue sits behind the nipple, away from the subcutaneous fat and the chest wall.
    xx = np.arange(cols, dtype=np.float32)[None, None, :]
    prior = 1.2 * smoothstep(0.0, 0.35 * size, dist3) - 0.6 * (xx / shape.depth) ** 2
    drive = field + prior
    inside = mask3 > 0.5
    threshold = np.quantile(drive[inside], 1.0 - float(np.clip(density, 0.02, 0.98)))
    dense = 1.0 / (1.0 + np.exp(-(drive - threshold) / 0.45))
    # Curvilinear strands (ligaments, ducts) at the zero crossings of the fine detail.
    strands = np.exp(-((detail / 0.25) ** 2))
    tissue = 0.7 * dense + 0.1 * detail * (0.3 + dense) + 0.18 * strands * (1.0 - dense)
    pectoral = pectoral_mask(shape, rows, cols)[None]
    tissue = tissue * (1.0 - pectoral) + (0.78 + 0.08 * field + 0.05 * detail) * pectoral
    return Anatomy(tissue.astype(np.float32), mask3, dist3, shape)
