"""The DBTex FROC metric of the Duke BCS-DBT challenge, vectorised.

Reproduces the challenge's ``evaluate(labels, boxes, predictions)`` exactly
(see the Duke DBT spec, section 4): each prediction is judged on its own, a hit is
inclusive on the planar radius ``max(diag/2, 100)`` and on ``VolumeSlices/4``
slices, several hits go to the nearest box in 3-D (CSV order breaks ties),
duplicates on one box are never false positives, and the curve is sampled at the
true-positive scores and read with ``numpy.interp``.

Matching is a join on ``(StudyUID, View)``; the curve comes from sorted scores and
``searchsorted``, counting a GT box as found from its highest true-positive score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import polars as pl

from ml.froc_io import (
    BOXES,
    KEY,
    LABELS,
    PREDICTIONS,
    FrocInputError,
    FrocSource,
    read_table,
    source_name,
)

__all__ = [
    "FPS_TARGETS_ALL",
    "FPS_TARGETS_POSITIVE",
    "FrocCurve",
    "FrocInputError",
    "FrocResult",
    "evaluate",
    "froc_curve",
    "match_predictions",
    "thresholds",
]

FPS_TARGETS_POSITIVE = (1.0, 2.0, 3.0, 4.0)
FPS_TARGETS_ALL = (2.0,)
MIN_RADIUS = 100.0


@dataclass(frozen=True, eq=False)
class FrocCurve:
    """Sampled FROC points: ``fps[i]`` false positives per volume at ``sensitivity[i]``."""

    fps: np.ndarray
    sensitivity: np.ndarray
    n_volumes: int

    def sensitivity_at(self, targets: Sequence[float]) -> np.ndarray:
        """Sensitivity at each FP rate in ``targets``, linearly interpolated (DBTex rule)."""
        return np.interp(np.asarray(targets, dtype=np.float64), self.fps, self.sensitivity)


@dataclass(frozen=True, eq=False)
class FrocResult:
    """DBTex metrics and both curves.

    ``mean_sensitivity`` is the primary metric (mean over 1-4 FPs per positive
    volume), ``sensitivity_at_fps`` holds those four values keyed ``"1"``..``"4"``,
    and ``sensitivity_at_2_fps_all`` is the tie-breaker over all volumes.
    """

    mean_sensitivity: float
    sensitivity_at_fps: Mapping[str, float]
    sensitivity_at_2_fps_all: float
    curve_all: FrocCurve
    curve_positive: FrocCurve
    n_boxes: int
    n_predictions: int
    n_true_positives: int

    def to_dict(self) -> dict[str, object]:
        """The three headline metrics as plain JSON-ready values."""
        return {
            "mean_sensitivity": self.mean_sensitivity,
            "sensitivity_at_fps": dict(self.sensitivity_at_fps),
            "sensitivity_at_2_fps_all": self.sensitivity_at_2_fps_all,
        }


def evaluate(labels: FrocSource, boxes: FrocSource, predictions: FrocSource) -> FrocResult:
    """Score ``predictions`` against GT ``boxes`` over the volumes in ``labels`` (DBTex FROC).

    Each argument is a CSV path or a DataFrame; bad input raises :class:`FrocInputError`.
    """
    label_table = read_table(labels, LABELS)
    box_table = read_table(boxes, BOXES)
    pred_table = read_table(predictions, PREDICTIONS)

    positive_keys = box_table.select(KEY).unique()
    n_positive = label_table.join(positive_keys, on=KEY, how="semi").height
    if n_positive == 0:
        raise FrocInputError(
            f"labels {source_name(labels)}: no label row has a GT box in boxes "
            f"{source_name(boxes)}, so there are 0 positive volumes to divide by",
            source=source_name(labels),
        )

    gtids = match_predictions(box_table, pred_table)
    scores = pred_table["Score"].to_numpy()
    levels = thresholds(scores, gtids)
    on_positive = (
        pred_table.select(KEY)
        .with_row_index("row")
        .join(positive_keys, on=KEY, how="semi")["row"]
        .to_numpy()
    )

    n_boxes = box_table.height
    curve_all = froc_curve(scores, gtids, levels, label_table.height, n_boxes, max(FPS_TARGETS_ALL))
    curve_positive = froc_curve(
        scores[on_positive],
        gtids[on_positive],
        levels,
        n_positive,
        n_boxes,
        max(FPS_TARGETS_POSITIVE),
    )
    at_positive = curve_positive.sensitivity_at(FPS_TARGETS_POSITIVE)
    return FrocResult(
        mean_sensitivity=float(np.mean(at_positive)),
        sensitivity_at_fps=MappingProxyType(
            {f"{fps:g}": float(value) for fps, value in zip(FPS_TARGETS_POSITIVE, at_positive)}
        ),
        sensitivity_at_2_fps_all=float(curve_all.sensitivity_at(FPS_TARGETS_ALL)[0]),
        curve_all=curve_all,
        curve_positive=curve_positive,
        n_boxes=n_boxes,
        n_predictions=pred_table.height,
        n_true_positives=int(np.count_nonzero(gtids >= 0)),
    )


def match_predictions(boxes: pl.DataFrame, predictions: pl.DataFrame) -> np.ndarray:
    """The 0-based GT row each prediction hits (nearest in 3-D), or -1 for a false positive.

    ``boxes`` and ``predictions`` are validated tables from :func:`ml.froc_io.read_table`.
    """
    gt = boxes.with_row_index("gid").with_columns(
        (pl.col("VolumeSlices").first().over(KEY) / 4).alias("tol")
    )
    pairs = (
        predictions.with_row_index("pid")
        .join(gt, on=KEY, how="inner", suffix="_gt")
        .select(
            "pid", "gid", "X", "Y", "Width", "Height", "Z", "Depth",
            "X_gt", "Y_gt", "Width_gt", "Height_gt", "Slice", "tol",
        )
    )
    col = {name: pairs[name].to_numpy() for name in pairs.columns}
    dx = (col["X"] + col["Width"] / 2) - (col["X_gt"] + col["Width_gt"] / 2)
    dy = (col["Y"] + col["Height"] / 2) - (col["Y_gt"] + col["Height_gt"] / 2)
    dz = (col["Z"] + col["Depth"] / 2) - col["Slice"]
    width, height = col["Width_gt"], col["Height_gt"]
    radius = np.maximum(np.sqrt(width * width + height * height) / 2, MIN_RADIUS)
    planar2 = dx * dx + dy * dy
    hit = (np.sqrt(planar2) <= radius) & (np.abs(dz) <= col["tol"])

    pid, gid = col["pid"][hit].astype(np.int64), col["gid"][hit].astype(np.int64)
    dist3 = np.sqrt(planar2[hit] + dz[hit] * dz[hit])
    order = np.lexsort((gid, dist3, pid))  # per prediction: nearest, then first in CSV order
    pid, gid = pid[order], gid[order]
    first = np.ones(pid.size, dtype=bool)
    first[1:] = pid[1:] != pid[:-1]
    matched = np.full(predictions.height, -1, dtype=np.int64)
    matched[pid[first]] = gid[first]
    return matched


def thresholds(scores: np.ndarray, gtids: np.ndarray) -> np.ndarray:
    """DBTex thresholds, descending: max score + 1, every TP score (repeats kept), min score - 1."""
    ends = np.array([scores.max() + 1.0, scores.min() - 1.0])
    return np.sort(np.concatenate([ends, scores[gtids >= 0]]))[::-1]


def froc_curve(
    scores: np.ndarray,
    gtids: np.ndarray,
    levels: np.ndarray,
    n_volumes: int,
    n_boxes: int,
    max_fps: float,
) -> FrocCurve:
    """FROC points at each descending threshold in ``levels`` (``score >= t`` kept).

    Stops after the first point whose FP rate exceeds ``max_fps`` (that point is kept).
    """
    is_tp = gtids >= 0
    fp_scores = np.sort(scores[~is_tp])
    n_fp = fp_scores.size - np.searchsorted(fp_scores, levels, side="left")

    best = np.full(n_boxes, -np.inf)
    np.maximum.at(best, gtids[is_tp], scores[is_tp])
    found_at = np.sort(best[best > -np.inf])  # the score at which each found box is first hit
    n_found = found_at.size - np.searchsorted(found_at, levels, side="left")

    fps = n_fp / n_volumes
    sensitivity = n_found / n_boxes
    past = np.flatnonzero(fps > max_fps)
    end = int(past[0]) + 1 if past.size else fps.size
    fps, sensitivity = fps[:end], sensitivity[:end]
    fps.setflags(write=False)
    sensitivity.setflags(write=False)
    return FrocCurve(fps=fps, sensitivity=sensitivity, n_volumes=n_volumes)
