"""Explanations of one exam score: Grad-CAM per view, PNG overlays in the object store, ROI boxes.

The CAM explains the exam logit (:func:`ml.models.grad_cam`); each view's overlay is written to
``serving/cams/<model>/<version>/<sha256(study)[:24]>/<L-CC|L-MLO|R-CC|R-MLO>.png`` (no patient
data in the key) and ``cams_uri`` is that folder.  Until a detector exists, ROIs are the CAM's
peaks: each connected region above ``level`` x the view's maximum becomes a box in the Duke frame
of the view (pixels of the de-identified image, after the laterality flip), scored by the
region's peak times the view's probability.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ml.inference import stack_exam
from ml.models import VIEW_ORDER, grad_cam, save_cam_overlay
from ml.preprocess import PreprocessedView
from ml.preprocess_geometry import to_duke_coords
from resources.object_store import ObjectStore
from serving.pipeline import ExamScore, PreparedExam
from serving.views import VIEW_LABELS

CAM_PREFIX = "serving/cams"
ROI_LEVEL = 0.5
MAX_ROIS_PER_VIEW = 3


@dataclass(frozen=True)
class Explanation:
    """Where the overlays are and the ROI boxes (dicts: view, x, y, width, height, score)."""

    cams_uri: str
    rois: list[dict[str, Any]]


def study_key(study_uid: str) -> str:
    """The study's name in store keys and logs: a SHA-256 prefix, never the UID itself."""
    return hashlib.sha256(study_uid.encode("utf-8")).hexdigest()[:24]


def cam_rois(cam: np.ndarray, view: PreprocessedView, view_prob: float, label: str, *,
             level: float = ROI_LEVEL, limit: int = MAX_ROIS_PER_VIEW) -> list[dict[str, Any]]:  # fmt: skip
    """Boxes around the CAM's regions above ``level`` x its maximum, in the view's Duke-frame pixels."""
    peak = float(cam.max()) if cam.size else 0.0
    if peak <= 0.0:
        return []
    regions, count = ndimage.label(cam >= level * peak)
    rois = []
    for index, found in enumerate(ndimage.find_objects(regions), start=1):
        if found is None:
            continue
        rows, cols = found
        region_peak = float(cam[found][regions[found] == index].max())
        box = [cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start]
        x, y, width, height = to_duke_coords(np.asarray([box], dtype=np.float64), view.scale, view.pad)[0]
        x0, y0 = max(x, 0.0), max(y, 0.0)
        rois.append({
            "view": label, "x": int(round(x0)), "y": int(round(y0)),
            "width": max(int(round(width - (x0 - x))), 1), "height": max(int(round(height - (y0 - y))), 1),
            "score": region_peak * float(view_prob),
        })  # fmt: skip
    rois.sort(key=lambda roi: roi["score"], reverse=True)
    return rois[:limit]


def explain(exam: PreparedExam, scores: ExamScore, store: ObjectStore) -> Explanation:
    """Grad-CAM of ``exam``'s score, overlays written to ``store``, ROI boxes."""
    x, mask = stack_exam([view.array for view in exam.views])
    cams = grad_cam(exam.model.net, x, np.asarray(mask), output="exam")
    model = exam.model
    prefix = f"{CAM_PREFIX}/{model.name}/{model.version}/{study_key(exam.study_uid)}"
    rois: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tomosight-cam-") as tmp:
        for slot, (view_name, view) in enumerate(zip(VIEW_ORDER, exam.views, strict=True)):
            label = VIEW_LABELS[view_name]
            image = np.asarray(view.array, dtype=np.float32).max(axis=0)
            png = save_cam_overlay(image, cams[slot], Path(tmp) / f"{label}.png")
            store.put_file(f"{prefix}/{label}.png", png)
            rois.extend(cam_rois(cams[slot], view, scores.view_scores[label], label))
    rois.sort(key=lambda roi: roi["score"], reverse=True)
    return Explanation(store.uri(prefix), rois)
