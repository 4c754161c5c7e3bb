"""Trace a prediction back to its DICOM files and forward to the model that produced it.

The warehouse views give the prediction, the volumes (content-addressed de-identified
DICOM with their sha256) and the model version; the MLflow registry gives the training
run with its dataset hash and code version.
"""

from __future__ import annotations

from typing import Any

from dbt_assets.settings import Settings
from resources.mlflow_resource import MlflowResource
from resources.warehouse import Warehouse

REGISTERED_MODEL = "tomosight-dbt"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def trace_prediction(settings: Settings, study_uid: str, model_version: str | None = None) -> dict[str, Any]:
    """Everything that produced the exam prediction of ``study_uid`` (latest model version by default)."""
    warehouse = Warehouse(path=str(settings.warehouse_path))
    where = f"StudyUID = {_quote(study_uid)}"
    exams = warehouse.query(f"SELECT * FROM exam_predictions WHERE {where} ORDER BY model_version DESC")
    if exams.is_empty():
        raise LookupError(f"no exam prediction for study {study_uid}")
    exam = exams.row(0, named=True) if model_version is None else exams.filter(exams["model_version"] == model_version).row(0, named=True)
    version = exam["model_version"]
    views = warehouse.query(
        f"SELECT p.View, p.prob_malignant, f.dicom_uri, f.sha256, f.StudyDate, f.vendor, f.rows, f.columns, f.frames "
        f"FROM predictions p JOIN filepaths f USING (StudyUID, View) "
        f"WHERE p.{where} AND p.model_version = {_quote(version)} ORDER BY p.View"
    )
    client = MlflowResource(tracking_uri=settings.mlflow_tracking_uri).client()
    model = client.get_model_version(REGISTERED_MODEL, version)
    run = client.get_run(model.run_id)
    return {
        "study_uid": study_uid,
        "prob_malignant": exam["prob_malignant"],
        "split": exam.get("split"),
        "views": views.to_dicts(),
        "model": {
            "name": REGISTERED_MODEL,
            "version": version,
            "mlflow_run_id": model.run_id,
            "git_sha": run.data.tags.get("git_sha"),
            "dataset_hash": run.data.params.get("dataset_hash"),
            "dagster_run_id": run.data.tags.get("dagster_run_id"),
        },
    }
