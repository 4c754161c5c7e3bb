"""Render one DBT view (anatomy, lesions, quantum noise) in the Duke output frame, with boxes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.synth.filters import smoothstep
from ml.synth.lesions import LESION_KINDS, Box, insert_lesion, lesion_template, visible_extent
from ml.synth.phantom import Anatomy, anatomy, pectoral_mask

BITS_STORED = 10
AIR_LEVEL = 24.0
FAT_LEVEL = 300.0
DENSE_SPAN = 330.0


@dataclass(frozen=True)
class LesionSpec:
    """A physical lesion of one breast, shared by its CC and MLO views."""

    kind: str
    radius: float  # fraction of the image rows
    nipple_distance: float  # 0 (chest wall) .. 1 (nipple), fraction of the breast depth
    shape_seed: int


@dataclass(frozen=True)
class ViewSpec:
    """Everything needed to render one view (all sizes in pixels or slices)."""

    rows: int
    cols: int
    frames: int
    laterality: str  # "L" or "R"
    view: str  # "CC" or "MLO"
    density: float
    lesions: tuple[LesionSpec, ...] = ()
    noise: float = 1.0
    contrast: float = 1.0
    malignant_contrast: float = 1.0  # extra factor for lesions whose box class is "cancer"
    pixel_mm: float = 0.1
    slice_mm: float = 1.0


@dataclass(frozen=True)
class RenderedView:
    """A rendered volume (uint16, display sense, output frame) with its boxes and window."""

    volume: np.ndarray
    boxes: tuple[Box, ...]
    window_center: float
    window_width: float


def _place(
    anat: Anatomy,
    spec: LesionSpec,
    radius_px: float,
    z0: int,
    taken: list[tuple[float, float, float]],
    rng: np.random.Generator,
) -> tuple[int, int]:
    """Pick a (row, col) inside the breast, clear of the skin, pectoral muscle and other lesions."""
    _, rows, cols = anat.tissue.shape
    depth = anat.shape.depth - anat.shape.chest_offset
    clearance = anat.edge_distance[z0] - pectoral_mask(anat.shape, rows, cols) * rows
    for _ in range(60):
        col = int(round(np.clip(spec.nipple_distance + rng.normal(0, 0.06), 0.08, 0.9) * depth))
        col = min(max(col, 0), cols - 1)
        ok = np.nonzero(clearance[:, col] >= 1.2 * radius_px + 2)[0]
        ok = ok[(ok >= 0.1 * rows) & (ok < 0.9 * rows)]
        ok = [
            r
            for r in ok
            if all(np.hypot(r - tr, col - tc) > 1.6 * (radius_px + trad) for tr, tc, trad in taken)
        ]
        if ok:
            return int(rng.choice(ok)), col
    row, col = np.unravel_index(int(np.argmax(clearance)), clearance.shape)
    return int(row), int(col)


def _to_intensity(
    anat: Anatomy, tissue: np.ndarray, noise: float, rng: np.random.Generator
) -> np.ndarray:
    size = min(anat.shape.depth, anat.shape.half_height)
    falloff = 0.86 + 0.14 * smoothstep(0.0, 0.2 * size, anat.edge_distance)
    skin = 60.0 * np.exp(-((anat.edge_distance / 1.5) ** 2))
    breast = (FAT_LEVEL + DENSE_SPAN * tissue) * falloff + skin
    signal = AIR_LEVEL + anat.mask * (breast - AIR_LEVEL)
    noisy = signal + noise * 0.45 * np.sqrt(signal) * rng.standard_normal(signal.shape)
    return np.clip(np.rint(noisy), 0, (1 << BITS_STORED) - 1).astype(np.uint16)


def _window(volume: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    centre = volume.shape[0] // 2
    values = volume[centre][mask[centre] > 0.5]
    lo, hi = np.percentile(values, [0.5, 99.9])
    hi = lo + 1.2 * (hi - lo)  # head-room so dense lesions do not saturate
    return float(round((lo + hi) / 2)), float(max(round(hi - lo), 1))


def render_view(spec: ViewSpec, rng: np.random.Generator) -> RenderedView:
    """Render a view in the Duke output frame (left chest wall at x=0, right at x=C-1)."""
    anat = anatomy(spec.rows, spec.cols, spec.frames, spec.view, spec.density, rng)
    tissue = anat.tissue.copy()
    boxes: list[Box] = []
    taken: list[tuple[float, float, float]] = []
    lo_z, hi_z = round(0.3 * (spec.frames - 1)), round(0.7 * (spec.frames - 1))
    for lesion in spec.lesions:
        cls, ad, base_contrast = LESION_KINDS[lesion.kind]
        radius_px = max(lesion.radius * spec.rows, 1.5)
        template = lesion_template(lesion.kind, radius_px, np.random.default_rng(lesion.shape_seed))
        z0 = int(rng.integers(lo_z, hi_z + 1))
        row, col = _place(anat, lesion, radius_px, z0, taken, rng)
        taken.append((row, col, radius_px))
        calc = lesion.kind.startswith("calc")
        half_depth = 0.6 if calc else max(0.8 * radius_px * spec.pixel_mm / spec.slice_mm, 0.8)
        density = base_contrast * spec.contrast * (spec.malignant_contrast if cls == "cancer" else 1.0)
        insert_lesion(tissue, template, row, col, z0, half_depth, density)
        if not cls:
            continue
        half = template.shape[0] // 2
        r0, c0, r1, c1 = visible_extent(template, lesion.kind)
        y0, x0 = max(row - half + r0, 0), max(col - half + c0, 0)
        y1, x1 = min(row - half + r1, spec.rows), min(col - half + c1, spec.cols)
        boxes.append(Box(x0, y0, x1 - x0, y1 - y0, z0, cls, ad))

    volume = _to_intensity(anat, tissue, spec.noise, rng)
    centre, width = _window(volume, anat.mask)
    if spec.laterality == "R":
        volume = volume[:, :, ::-1]
        boxes = [
            Box(spec.cols - b.x - b.width, b.y, b.width, b.height, b.slice, b.cls, b.ad)
            for b in boxes
        ]
    return RenderedView(np.ascontiguousarray(volume), tuple(boxes), centre, width)
