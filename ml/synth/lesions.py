"""Lesion templates (masses, spiculations, distortions, calcifications) and DBT focus blur.

A template is a small 2-D patch (peak about 1) centred in the patch. ``insert_lesion`` adds it
to a tissue volume: sharp at the central slice, increasingly blurred and faded on the slices
around it (out-of-plane blur, stronger along the rows, the tube-travel direction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.synth.filters import gaussian_blur, smoothstep

# kind -> (box class, architectural-distortion flag, contrast in tissue units)
LESION_KINDS: dict[str, tuple[str, int, float]] = {
    "mass_benign": ("benign", 0, 0.30),
    "calc_benign": ("benign", 0, 0.60),  # scattered punctate specks, fainter than a malignant cluster
    "mass_spiculated": ("cancer", 0, 0.36),
    "distortion": ("cancer", 1, 0.45),
    "calc_malignant": ("cancer", 0, 0.90),
    "asymmetry": ("", 0, 0.18),  # actionable finding, never boxed
}


@dataclass(frozen=True)
class Box:
    """A ground-truth box in output-frame pixels (Duke convention: top-left corner and size)."""

    x: int
    y: int
    width: int
    height: int
    slice: int
    cls: str
    ad: int


def _grid(half: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    return yy, xx


def _spicules(
    yy: np.ndarray,
    xx: np.ndarray,
    radius: float,
    count: int,
    reach: tuple[float, float],
    width: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Thin bright lines radiating from the centre, fading towards their tips."""
    out = np.zeros_like(yy)
    for angle in rng.uniform(0, 2 * np.pi, count):
        length = radius * rng.uniform(*reach)
        along = xx * np.cos(angle) + yy * np.sin(angle)
        across = -xx * np.sin(angle) + yy * np.cos(angle)
        fade = np.clip(1.0 - along / length, 0.0, 1.0) ** 0.8 * (along >= 0)
        out = np.maximum(out, 0.8 * fade * np.exp(-((across / width) ** 2)))
    return out


def _oval(
    yy: np.ndarray, xx: np.ndarray, radius: float, rng: np.random.Generator, lobulation: float
) -> np.ndarray:
    """Distance from the centre relative to a (possibly lobulated) oval outline."""
    angle = rng.uniform(0, np.pi)
    aspect = rng.uniform(0.7, 1.0)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = (-xx * np.sin(angle) + yy * np.cos(angle)) / aspect
    theta = np.arctan2(v, u)
    outline = 1.0 + sum(
        rng.uniform(0, lobulation) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        for k in range(2, 7)
    )
    return np.hypot(u, v) / (radius * outline)


def _calcifications(
    yy: np.ndarray, xx: np.ndarray, radius: float, malignant: bool, rng: np.random.Generator
) -> np.ndarray:
    """Bright specks: a tight pleomorphic cluster if malignant, a few scattered round ones if not."""
    count = int(rng.integers(8, 20)) if malignant else int(rng.integers(3, 7))
    if malignant:
        # Partly along a short branching line (ductal pattern), partly scattered.
        angle = rng.uniform(0, np.pi)
        t = rng.uniform(-1, 1, count) * radius
        centres = np.stack([t * np.sin(angle), t * np.cos(angle)], axis=1)
        centres += rng.normal(0, radius * 0.3, (count, 2))
        sigmas = rng.uniform(0.45, 0.85, count)
    else:
        r = radius * np.sqrt(rng.uniform(0, 1, count))
        phi = rng.uniform(0, 2 * np.pi, count)
        centres = np.stack([r * np.sin(phi), r * np.cos(phi)], axis=1)
        sigmas = rng.uniform(0.7, 1.0, count)
    centres = np.clip(centres, -radius, radius)
    out = np.zeros_like(yy)
    for (cy, cx), s in zip(centres, sigmas, strict=True):
        out = np.maximum(out, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)))
    return out


def lesion_template(kind: str, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Render the in-focus 2-D patch of a lesion of the given kind and radius (pixels)."""
    if kind not in LESION_KINDS:
        raise ValueError(f"unknown lesion kind {kind!r}; choose from {sorted(LESION_KINDS)}")
    half = int(np.ceil(radius * (2.8 if kind in ("mass_spiculated", "distortion") else 1.4))) + 3
    yy, xx = _grid(half)
    if kind == "mass_benign":
        rel = _oval(yy, xx, radius, rng, lobulation=0.03)
        dome = 0.55 + 0.45 * np.sqrt(np.clip(1.0 - rel**2, 0.0, 1.0))
        return dome * smoothstep(1.0 + 0.7 / radius, 1.0 - 0.7 / radius, rel)  # sharp margin
    if kind == "mass_spiculated":
        rel = _oval(yy, xx, radius, rng, lobulation=0.12)
        core = smoothstep(1.05, 0.6, rel)
        spikes = _spicules(
            yy, xx, radius, int(rng.integers(8, 16)), (1.5, 2.7), rng.uniform(0.5, 0.9), rng
        )
        return np.maximum(core, spikes)
    if kind == "distortion":
        rel = _oval(yy, xx, radius * 0.35, rng, lobulation=0.1)
        spikes = _spicules(
            yy, xx, radius, int(rng.integers(12, 22)), (1.2, 2.5), rng.uniform(0.45, 0.8), rng
        )
        return np.maximum(0.35 * smoothstep(1.0, 0.3, rel), spikes)
    if kind == "asymmetry":
        return smoothstep(1.0, 0.2, _oval(yy, xx, radius, rng, lobulation=0.1))
    return _calcifications(yy, xx, radius, kind == "calc_malignant", rng)


def visible_extent(template: np.ndarray, kind: str) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1), ends exclusive, of a template's visible part (patch pixels)."""
    threshold = 0.3 if kind.startswith("calc") else 0.15
    rows, cols = np.nonzero(template >= threshold * template.max())
    margin = 2 if kind.startswith("calc") else 1
    return (
        int(rows.min()) - margin,
        int(cols.min()) - margin,
        int(rows.max()) + 1 + margin,
        int(cols.max()) + 1 + margin,
    )


def focus_profile(dz: int, half_depth: float) -> tuple[float, float, float]:
    """(weight, sigma_rows, sigma_cols) of a lesion ``dz`` slices from its central slice."""
    distance = abs(dz)
    weight = float(np.exp(-0.5 * (distance / max(half_depth, 0.5)) ** 2))
    return weight, 0.9 * distance, 0.4 * distance


def insert_lesion(
    tissue: np.ndarray,
    template: np.ndarray,
    row: int,
    col: int,
    z0: int,
    half_depth: float,
    contrast: float,
) -> None:
    """Add ``contrast * template`` to ``tissue`` (F, R, C) in place, centred at (z0, row, col)."""
    frames, rows, cols = tissue.shape
    reach = int(np.ceil(3 * max(half_depth, 0.5)))
    pad = int(np.ceil(3 * 0.9 * reach)) + 1
    patch = np.pad(template, pad)
    size = patch.shape[0] // 2
    for z in range(max(0, z0 - reach), min(frames, z0 + reach + 1)):
        weight, sig_r, sig_c = focus_profile(z - z0, half_depth)
        if weight < 0.02:
            continue
        blurred = gaussian_blur(patch, sig_r, sig_c) * (contrast * weight)
        r0, c0 = row - size, col - size
        rs, cs = max(r0, 0), max(c0, 0)
        re, ce = min(r0 + patch.shape[0], rows), min(c0 + patch.shape[1], cols)
        tissue[z, rs:re, cs:ce] += blurred[rs - r0 : re - r0, cs - c0 : ce - c0]
