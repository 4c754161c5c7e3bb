"""Straightforward per-prediction DBTex FROC, written from the pseudo-code of the spec (4.6).

Only for checking ``ml.froc.evaluate`` (tests) and timing it (``bench_froc.py``):
plain Python loops over predictions and thresholds, CSV parsing with the ``csv``
module, no input validation.  NumPy is used only for ``interp`` and ``mean``,
as in the challenge code.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TARGETS_POSITIVE = (1.0, 2.0, 3.0, 4.0)
TARGETS_ALL = (2.0,)


@dataclass
class Prediction:
    """One prediction row and its verdict."""

    key: tuple[str, str]
    x: float
    y: float
    z: float
    score: float
    tp: bool = False
    gtid: int = -1


@dataclass
class Box:
    """One GT row."""

    row: int
    x: float
    y: float
    slice: float
    width: float
    height: float
    volume_slices: float


def _rows(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def reference_evaluate(labels: str | Path, boxes: str | Path, predictions: str | Path) -> dict:
    """DBTex metrics plus both curves (lists of ``(fps, sensitivity)``) for three CSV paths."""
    label_keys = [(r["StudyUID"], r["View"]) for r in _rows(labels)]
    gts: dict[tuple[str, str], list[Box]] = {}
    n_boxes = 0
    for i, r in enumerate(_rows(boxes)):
        box = Box(
            row=i,
            x=float(r["X"]) + float(r["Width"]) / 2,
            y=float(r["Y"]) + float(r["Height"]) / 2,
            slice=float(r["Slice"]),
            width=float(r["Width"]),
            height=float(r["Height"]),
            volume_slices=float(r["VolumeSlices"]),
        )
        gts.setdefault((r["StudyUID"], r["View"]), []).append(box)
        n_boxes += 1
    preds = [
        Prediction(
            key=(r["StudyUID"], r["View"]),
            x=float(r["X"]) + float(r["Width"]) / 2,
            y=float(r["Y"]) + float(r["Height"]) / 2,
            z=float(r["Z"]) + float(r["Depth"]) / 2,
            score=float(r["Score"]),
        )
        for r in _rows(predictions)
    ]

    levels = [max(p.score for p in preds) + 1.0]
    for p in preds:
        volume = gts.get(p.key)
        if not volume:
            continue
        tol = volume[0].volume_slices / 4
        best: tuple[float, Box] | None = None
        for g in volume:
            dx, dy, dz = p.x - g.x, p.y - g.y, p.z - g.slice
            radius = max(math.sqrt(g.width * g.width + g.height * g.height) / 2, 100.0)
            if math.sqrt(dx * dx + dy * dy) <= radius and abs(dz) <= tol:
                dist3 = math.sqrt(dx * dx + dy * dy + dz * dz)
                if best is None or dist3 < best[0]:
                    best = (dist3, g)
        if best is not None:
            p.tp, p.gtid = True, best[1].row
            levels.append(p.score)
    levels.append(min(p.score for p in preds) - 1.0)
    levels.sort(reverse=True)

    curve_all = _curve(preds, levels, len(label_keys), n_boxes, TARGETS_ALL)
    positive = [p for p in preds if p.key in gts]
    n_positive = sum(1 for key in label_keys if key in gts)
    curve_pos = _curve(positive, levels, n_positive, n_boxes, TARGETS_POSITIVE)
    at_pos = [np.interp(x, *zip(*curve_pos)) for x in TARGETS_POSITIVE]
    at_all = np.interp(2.0, *zip(*curve_all))
    return {
        "mean_sensitivity": float(np.mean(at_pos)),
        "sensitivity_at_fps": {f"{x:g}": float(v) for x, v in zip(TARGETS_POSITIVE, at_pos)},
        "sensitivity_at_2_fps_all": float(at_all),
        "curve_all": curve_all,
        "curve_positive": curve_pos,
    }


def _curve(
    preds: list[Prediction], levels: list[float], n_volumes: int, n_boxes: int, targets: tuple
) -> list[tuple[float, float]]:
    points = []
    for t in levels:
        kept = [p for p in preds if p.score >= t]
        n_fp = sum(1 for p in kept if not p.tp)
        found = {p.gtid for p in kept if p.tp}
        points.append((n_fp / n_volumes, len(found) / n_boxes))
        if n_fp / n_volumes > max(targets):
            break
    return points
