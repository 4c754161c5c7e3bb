"""Contracts for model outputs: per view, per exam, and DBTex detection boxes."""

from __future__ import annotations

from typing import Optional

import pandera.polars as pa
import polars as pl

from schemas.fields import identifier, probability, view
from schemas.pipeline import SPLITS
from schemas.registry import register_contract


@register_contract("1.0")
class Predictions(pa.DataFrameModel):
    """Per-view malignancy probability and the model version that produced it."""

    StudyUID: str = identifier()
    View: str = view()
    prob_malignant: float = probability()
    model_version: str = identifier()
    PatientID: Optional[str] = identifier()

    class Config:
        strict = True
        unique = ["StudyUID", "View", "model_version"]


@register_contract("1.1")
class ExamPredictions(pa.DataFrameModel):
    """Per-exam (study) malignancy probability."""

    StudyUID: str = identifier()
    prob_malignant: float = probability()
    model_version: str = identifier()
    PatientID: Optional[str] = identifier()
    # The study's split when it was scored (null for studies outside any split).
    split: Optional[str] = pa.Field(isin=list(SPLITS), nullable=True)

    class Config:
        strict = True
        unique = ["StudyUID", "model_version"]


@register_contract("1.0")
class BoxPredictions(pa.DataFrameModel):
    """DBTex detection submission, columns in the submission header order.

    ``Z`` is the first slice and ``Depth`` the number of slices; ``Depth`` is
    not range-checked because the DBTex baseline writes -1. Not strict: the
    evaluator ignores extra columns, so detectors may add their own (e.g. a
    class label) to the same file.
    """

    PatientID: Optional[str] = identifier()
    StudyUID: str = identifier()
    View: str = view()
    # 3-D box: top-left corner and size in pixels, first slice and depth.
    X: int
    Width: int = pa.Field(gt=0)
    Y: int
    Height: int = pa.Field(gt=0)
    Z: int
    Depth: int
    # Detection score: any finite float.
    Score: float

    @pa.check("Score", name="is_finite")
    def score_is_finite(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """No +/-inf scores (NaN is already rejected as a null)."""
        return data.lazyframe.select(pl.col(data.key).is_finite())

    class Config:
        strict = False
