"""Request and response shapes of the clinician API (pydantic), also used for the OpenAPI document."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

StudyUid = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$",
                 description="A StudyUID of the `filepaths` table (pseudonymous, e.g. S-1a2b3c4d5e6f).")  # fmt: skip


class PredictByStudy(BaseModel):
    """``POST /v1/predict`` with JSON: score a study the asset graph has ingested."""

    model_config = ConfigDict(extra="forbid")
    study_uid: str = StudyUid


class Roi(BaseModel):
    """A region of interest (from the CAM's peaks) in the view's pixels, Duke frame."""

    view: Literal["L-CC", "L-MLO", "R-CC", "R-MLO"]
    x: int
    y: int
    width: int
    height: int
    score: float


class Triage(BaseModel):
    """The triage band of ``prob_malignant`` and the registered thresholds that gave it."""

    decision: Literal["auto_clear", "review", "suspicious"]
    low: float | None = Field(description="below: auto_clear (None: never)")
    high: float | None = Field(description="at or above: suspicious (None: never)")
    source: str


class Prediction(BaseModel):
    """A calibrated prediction for one exam and the model version that made it."""

    study_uid: str
    source: Literal["study_uid", "upload"]
    prob_malignant: float
    view_scores: dict[str, float] = Field(description="Calibrated probability per view: L-CC, L-MLO, R-CC, R-MLO.")
    rois: list[Roi]
    cams_uri: str | None = Field(description="Folder of the Grad-CAM PNG overlays (<view>.png); None when explanations are off.")
    triage: Triage
    model_name: str
    model_version: str
    mlflow_run_id: str | None = Field(description="The MLflow run that trained the version.")
    preprocess_fingerprint: str = Field(description="The preprocessing the views went through (ml.preprocess fingerprint).")


class ErrorBody(BaseModel):
    """Every error: what went wrong and, when the worker answered, a reason code and the model version."""

    detail: str | list
    reason: str | None = None
    model_version: str | None = None


class Probe(BaseModel):
    """Liveness/readiness answer."""

    status: str
    model_versions: list[str] = []
    workers: list[dict] = []


class ModelInfo(BaseModel):
    """What the workers serve and what the registry says now."""

    name: str
    alias: str
    serving: list[dict]
    registry: dict | None
    reload_requests: int
