"""A study's view files -> model tensors -> calibrated scores: the batch path, one request at a time.

``prepare`` runs :func:`ml.preprocess.preprocess_view` (what the ``preprocessed`` asset runs for
every view) with the preprocessing the served version was trained on; ``score`` runs a dynamic
batch of prepared exams through :func:`ml.inference.predict_exam_arrays`, which shares its
stacking and forward pass with the ``predictions`` asset's :func:`ml.inference.predict_exams`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from ml.dicomio import DicomError
from ml.inference import predict_exam_arrays
from ml.models import VIEW_ORDER
from ml.preprocess import PreprocessedView, preprocess_view
from serving.errors import RequestError
from serving.model_source import LoadedModel
from serving.views import VIEW_LABELS, four_views

Opener = Callable[[str], AbstractContextManager[Path]]
"""Gives a local path for a view's location (the object store's ``local_path``, or a plain file)."""


@dataclass(frozen=True)
class PreparedExam:
    """One request's four model-ready views, with the version that will score them."""

    study_uid: str
    source: str  # "study_uid" or "upload"
    model: LoadedModel
    views: tuple[PreprocessedView, ...]  # in VIEW_ORDER


@dataclass(frozen=True)
class ExamScore:
    """Calibrated exam probability and per-view probabilities keyed ``L-CC``, ``L-MLO``, ``R-CC``, ``R-MLO``."""

    prob_malignant: float
    view_scores: dict[str, float]


def local_file(location: str) -> AbstractContextManager[Path]:
    """An opener for files already on local disk (uploads)."""
    from contextlib import nullcontext

    return nullcontext(Path(location))


def prepare(study_uid: str, locations: Mapping[str, str | os.PathLike[str]], model: LoadedModel, *,
            source: str, opener: Opener = local_file) -> PreparedExam:  # fmt: skip
    """Preprocess the four screening views of ``locations`` (``{Duke view name: location}``) for ``model``."""
    views = []
    for view, location in four_views(locations):
        try:
            with opener(str(location)) as path:
                views.append(preprocess_view(path, view, model.preprocess))
        except DicomError as exc:
            label = VIEW_LABELS[view[:4]]
            raise RequestError(422, f"view {label} cannot be read ({exc.reason}): {exc.detail}", exc.reason) from None
    return PreparedExam(study_uid, source, model, tuple(views))


def _by_model(exams: list[PreparedExam]) -> Iterator[tuple[LoadedModel, list[int]]]:
    """Positions of ``exams`` grouped by the loaded version that scores them (one group, except across a swap)."""
    groups: dict[int, tuple[LoadedModel, list[int]]] = {}
    for position, exam in enumerate(exams):
        groups.setdefault(id(exam.model), (exam.model, []))[1].append(position)
    yield from groups.values()


def score(exams: list[PreparedExam]) -> list[ExamScore]:
    """Scores of a dynamic batch, in order; each exam with the version it was prepared for."""
    results: list[ExamScore | None] = [None] * len(exams)
    for model, positions in _by_model(exams):
        arrays = {str(p): [view.array for view in exams[p].views] for p in positions}
        views, exam_probs = predict_exam_arrays(model.net, arrays, temperature=model.temperature, batch_size=len(arrays))
        per_view: dict[str, dict[str, float]] = {}
        for key, view, prob in views.iter_rows():
            per_view.setdefault(key, {})[VIEW_LABELS[view]] = prob
        for key, prob in exam_probs.iter_rows():
            results[int(key)] = ExamScore(prob, {VIEW_LABELS[v]: per_view[key][VIEW_LABELS[v]] for v in VIEW_ORDER})
    return [r for r in results if r is not None]
