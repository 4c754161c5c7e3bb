"""Contracts for the Duke BCS-DBT tables: file paths, labels and boxes.

Column names follow the Duke CSVs (CamelCase) plus the platform's own
snake_case columns. The volume key is ``(StudyUID, View)``.
"""

from __future__ import annotations

from typing import Optional

import pandera.polars as pa
import polars as pl

from schemas.fields import SHA256_PATTERN, flag, identifier, view
from schemas.registry import register_contract


@register_contract("1.1")
class FilePaths(pa.DataFrameModel):
    """One row per DICOM volume in the raw store.

    Not strict: ingest may attach extra DICOM attributes (e.g. transfer
    syntax, SeriesInstanceUID) without a contract bump; downstream code only
    relies on the columns listed here.
    """

    # Keys (Duke pseudonymous IDs, not DICOM UIDs).
    PatientID: str = identifier()
    StudyUID: str = identifier()
    View: str = view()
    # Where the file lives and what it is.
    dicom_uri: str = identifier(unique=True)
    StudyDate: pl.Date
    vendor: str = pa.Field(nullable=True)
    # BI-RADS breast composition A-D from the DICOM Acquisition Context (ml.density); null: not stated.
    density: Optional[str] = pa.Field(nullable=True, isin=["A", "B", "C", "D"])
    rows: int = pa.Field(gt=0)
    columns: int = pa.Field(gt=0)
    frames: int = pa.Field(gt=0)
    sha256: str = pa.Field(str_matches=SHA256_PATTERN)
    # Optional relative paths from the Duke file-paths CSV.
    descriptive_path: Optional[str] = pa.Field(nullable=True)
    classic_path: Optional[str] = pa.Field(nullable=True)

    class Config:
        strict = False
        unique = ["StudyUID", "View"]


@register_contract("1.0")
class ExamLabels(pa.DataFrameModel):
    """Duke labels: one row per volume, exactly one of the four flags set."""

    PatientID: str = identifier()
    StudyUID: str = identifier()
    View: str = view()
    # Normal: no findings; Actionable: more imaging, no biopsy; Benign/Cancer: biopsy-proven.
    Normal: int = flag()
    Actionable: int = flag()
    Benign: int = flag()
    Cancer: int = flag()

    @pa.dataframe_check
    def exactly_one_flag(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Normal + Actionable + Benign + Cancer == 1 on every row."""
        total = pl.col("Normal") + pl.col("Actionable") + pl.col("Benign") + pl.col("Cancer")
        return data.lazyframe.select(total == 1)

    class Config:
        strict = True
        unique = ["StudyUID", "View"]


@register_contract("1.0")
class Boxes(pa.DataFrameModel):
    """Duke ground-truth boxes: 2-D boxes on the central slice, in output-frame pixels."""

    PatientID: str = identifier()
    StudyUID: str = identifier()
    View: str = view()
    # Undocumented (0 or 2 in Duke, constant per study); never a feature.
    Subject: int
    # Geometry: 0-based central slice, top-left corner and size in pixels.
    Slice: int = pa.Field(ge=0)
    X: int = pa.Field(ge=0)
    Y: int = pa.Field(ge=0)
    Width: int = pa.Field(gt=0)
    Height: int = pa.Field(gt=0)
    # Lesion: class, architectural distortion (1) or mass (0), frame count.
    Class: str = pa.Field(isin=["benign", "cancer"])
    AD: int = flag()
    VolumeSlices: int = pa.Field(gt=0)

    @pa.dataframe_check
    def slice_within_volume(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Slice < VolumeSlices."""
        return data.lazyframe.select(pl.col("Slice") < pl.col("VolumeSlices"))

    class Config:
        strict = True
