"""The OpenAPI document at ``/openapi.json``, with ``POST /v1/predict`` described in full.

LitServe registers the predict route with a bare ``Request`` parameter, so FastAPI knows
neither its bodies nor its answers; they are added here: a JSON body (:class:`PredictByStudy`)
or a multipart upload (``files``), a :class:`Prediction`, and an :class:`ErrorBody` for each
error status the route gives.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from serving.schemas import ErrorBody, PredictByStudy, Prediction

TITLE = "tomosight clinician API"
ERRORS = {
    "400": "Malformed JSON or multipart body.",
    "401": "Missing, expired or invalid bearer token.",
    "403": "The token lacks the radiologist or admin role.",
    "404": "Unknown study.",
    "413": "Body over the payload limit.",
    "415": "Neither JSON nor multipart, or an uploaded file that is not DICOM.",
    "422": "Wrong JSON shape, wrong modality, a study with missing views or an unreadable view.",
    "503": "No model loaded yet.",
    "504": "The request waited in the queue longer than the request timeout.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def predict_operation(max_files: int) -> dict[str, Any]:
    """The request bodies and responses of ``POST /v1/predict``."""
    upload = {
        "type": "object", "required": ["files"], "additionalProperties": False,
        "properties": {"files": {"type": "array", "minItems": 1, "maxItems": max_files,
                                 "items": {"type": "string", "format": "binary"},
                                 "description": "The study's DICOM files, one per view (L-CC, L-MLO, R-CC, R-MLO)."}},
    }  # fmt: skip
    error = {"content": {"application/json": {"schema": _ref("ErrorBody")}}}
    return {
        "summary": "Calibrated malignancy prediction for one DBT study",
        "description": "By `study_uid` (views from the `filepaths` table and the object store) or by uploading the "
        "study's DICOM files. The answer names the model version, the triage band and where the Grad-CAM overlays are.",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _ref("PredictByStudy")},
            "multipart/form-data": {"schema": upload},
        }},
        "responses": {
            "200": {"description": "The prediction.", "content": {"application/json": {"schema": _ref("Prediction")}}},
            **{status: {"description": text, **error} for status, text in ERRORS.items()},
        },
    }  # fmt: skip


def install_openapi(app: FastAPI, api_path: str, max_files: int, version: str) -> None:
    """Replace ``app.openapi`` with a generator that documents ``api_path`` completely."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=TITLE, version=version, routes=app.routes,
                             description="Calibrated breast-cancer predictions from DBT studies; OIDC bearer tokens.")  # fmt: skip
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (PredictByStudy, Prediction, ErrorBody):
            found = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(found.pop("$defs", {}))
            components[model.__name__] = found
        operation = schema["paths"][api_path]["post"]
        operation.update(predict_operation(max_files))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
