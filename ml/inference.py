"""One inference path: preprocessed view tensors + a trained classifier -> view and exam probabilities.

The predictions asset calls :func:`predict_exams` (tensors from the store) and the serving
endpoint :func:`predict_exam_arrays` (tensors in memory); both stack views with
:func:`stack_exam` and score with :func:`score_batches`, so batch and online scores for the
same study are the same up to float32 rounding of the batch they are computed in (~1e-7).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import polars as pl
import torch

from ml.models import VIEW_ORDER
from ml.training.dataset import local_path, view_paths


def stack_exam(views: Sequence[np.ndarray | None]) -> tuple[np.ndarray, list[bool]]:
    """One exam's view tensors in ``VIEW_ORDER`` as ``(4, S, H, W)`` float32 (zeros where a view is missing) and its view mask."""
    shape = next(v.shape for v in views if v is not None)
    x = np.stack([np.zeros(shape, np.float32) if v is None else np.asarray(v, np.float32) for v in views])
    return x, [v is not None for v in views]


def _batch(chunk: list[str], exams: list[Sequence[np.ndarray | None]]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    stacked = [stack_exam(views) for views in exams]
    x = torch.from_numpy(np.stack([x for x, _ in stacked]))
    return chunk, x, torch.tensor([mask for _, mask in stacked], dtype=torch.bool)


def exam_batches(
    manifest: pl.DataFrame, *, batch_size: int = 8, path_column: str = "tensor_uri"
) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor]]:
    """``(study_uids, x (B, 4, S, H, W), view_mask (B, 4))`` batches read from memmapped tensors."""
    paths = view_paths(manifest, path_column)
    studies = sorted(paths)
    for start in range(0, len(studies), batch_size):
        chunk = studies[start : start + batch_size]
        yield _batch(chunk, [[None if p is None else np.load(local_path(p), mmap_mode="r") for p in paths[s]] for s in chunk])


def array_batches(
    exams: Mapping[str, Sequence[np.ndarray | None]], *, batch_size: int = 8
) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor]]:
    """The same batches from in-memory view tensors: ``{key: [tensor or None per VIEW_ORDER slot]}``, in order."""
    keys = list(exams)
    for start in range(0, len(keys), batch_size):
        chunk = keys[start : start + batch_size]
        yield _batch(chunk, [exams[k] for k in chunk])


@torch.no_grad()
def score_batches(
    model: torch.nn.Module, batches: Iterable[tuple[list[str], torch.Tensor, torch.Tensor]], *, temperature: float = 1.0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Calibrated probabilities of ``batches``: ``(views: StudyUID, View, prob_malignant; exams: StudyUID, prob_malignant)``."""
    model.eval()
    device = next(model.parameters()).device
    view_rows: list[dict[str, object]] = []
    exam_rows: list[dict[str, object]] = []
    for studies, x, mask in batches:
        out = model(x.to(device), mask.to(device))
        view_probs = torch.sigmoid(out["view"][..., 0] / temperature).cpu().numpy()
        exam_probs = torch.sigmoid(out["exam"][:, 0] / temperature).cpu().numpy()
        for i, study in enumerate(studies):
            exam_rows.append({"StudyUID": study, "prob_malignant": float(exam_probs[i])})
            view_rows.extend(
                {"StudyUID": study, "View": view, "prob_malignant": float(view_probs[i, slot])}
                for slot, view in enumerate(VIEW_ORDER)
                if mask[i, slot]
            )
    views = pl.DataFrame(view_rows, schema={"StudyUID": pl.String, "View": pl.String, "prob_malignant": pl.Float64})
    exams = pl.DataFrame(exam_rows, schema={"StudyUID": pl.String, "prob_malignant": pl.Float64})
    return views, exams


def predict_exams(
    model: torch.nn.Module,
    manifest: pl.DataFrame,
    *,
    temperature: float = 1.0,
    batch_size: int = 8,
    path_column: str = "tensor_uri",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Calibrated probabilities: ``(views: StudyUID, View, prob_malignant; exams: StudyUID, prob_malignant)``."""
    return score_batches(model, exam_batches(manifest, batch_size=batch_size, path_column=path_column), temperature=temperature)


def predict_exam_arrays(
    model: torch.nn.Module,
    exams: Mapping[str, Sequence[np.ndarray | None]],
    *,
    temperature: float = 1.0,
    batch_size: int = 8,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """:func:`predict_exams` for in-memory view tensors (the serving endpoint); ``StudyUID`` holds the keys of ``exams``."""
    return score_batches(model, array_batches(exams, batch_size=batch_size), temperature=temperature)
