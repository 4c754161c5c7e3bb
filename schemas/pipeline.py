"""Contracts for the platform's own tables: preprocessing manifest and data splits."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from schemas.fields import identifier, view
from schemas.registry import register_contract

SLICE_STRATEGIES: tuple[str, ...] = ("central", "mip", "slab_mip", "sampled")
SPLITS: tuple[str, ...] = ("train", "val", "test")


@register_contract("1.0")
class Preprocessed(pa.DataFrameModel):
    """Manifest of preprocessed tensors, one row per stored tensor."""

    StudyUID: str = identifier()
    View: str = view()
    # How the volume became a tensor, and the tensor's shape.
    slice_strategy: str = pa.Field(isin=list(SLICE_STRATEGIES))
    height: int = pa.Field(gt=0)
    width: int = pa.Field(gt=0)
    n_slices: int = pa.Field(gt=0)
    tensor_uri: str = identifier(unique=True)

    class Config:
        strict = True


@register_contract("1.0")
class Splits(pa.DataFrameModel):
    """Study-to-split assignment; all studies of a patient share one split and fold."""

    PatientID: str = identifier()
    StudyUID: str = identifier(unique=True)
    split: str = pa.Field(isin=list(SPLITS))
    # Cross-validation fold, null when folds are not used.
    fold: int = pa.Field(ge=0, nullable=True)

    @pa.dataframe_check
    def one_split_per_patient(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Split by PatientID: a patient's studies never straddle splits or folds."""
        per_patient = pl.struct("split", "fold").n_unique().over("PatientID")
        return data.lazyframe.select(per_patient == 1)

    class Config:
        strict = True


QUARANTINE_STAGES: tuple[str, ...] = ("scan", "fetch", "qc", "dedup")


@register_contract("1.0")
class Quarantine(pa.DataFrameModel):
    """Source files refused at ingestion: where they are, at which stage and why."""

    source_uri: str = identifier()
    stage: str = pa.Field(isin=list(QUARANTINE_STAGES))
    # A short machine-readable code (e.g. ``not_dicom``) and a readable explanation.
    reason: str = identifier()
    detail: str = pa.Field(nullable=True)

    class Config:
        strict = True
