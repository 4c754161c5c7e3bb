"""One inference path: preprocessed view tensors + a trained classifier -> view and exam probabilities.

The predictions asset and the serving endpoint both call :func:`predict_exams`, so batch
and online scores for the same study are identical.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
import torch

from ml.models import VIEW_ORDER
from ml.training.dataset import local_path, view_paths


def exam_batches(
    manifest: pl.DataFrame, *, batch_size: int = 8, path_column: str = "tensor_uri"
) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor]]:
    """``(study_uids, x (B, 4, S, H, W), view_mask (B, 4))`` batches read from memmapped tensors."""
    paths = view_paths(manifest, path_column)
    studies = sorted(paths)
    for start in range(0, len(studies), batch_size):
        chunk = studies[start : start + batch_size]
        xs, masks = [], []
        for study in chunk:
            views = [None if p is None else np.load(local_path(p), mmap_mode="r") for p in paths[study]]
            shape = next(v.shape for v in views if v is not None)
            xs.append(np.stack([np.zeros(shape, np.float32) if v is None else np.asarray(v, np.float32) for v in views]))
            masks.append([v is not None for v in views])
        yield chunk, torch.from_numpy(np.stack(xs)), torch.tensor(masks, dtype=torch.bool)


@torch.no_grad()
def predict_exams(
    model: torch.nn.Module,
    manifest: pl.DataFrame,
    *,
    temperature: float = 1.0,
    batch_size: int = 8,
    path_column: str = "tensor_uri",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Calibrated probabilities: ``(views: StudyUID, View, prob_malignant; exams: StudyUID, prob_malignant)``."""
    model.eval()
    device = next(model.parameters()).device
    view_rows: list[dict[str, object]] = []
    exam_rows: list[dict[str, object]] = []
    for studies, x, mask in exam_batches(manifest, batch_size=batch_size, path_column=path_column):
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
