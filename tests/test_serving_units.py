"""The serving building blocks without a server: settings, triage tags, preprocessing of a version,
view checks, uploads, CAM ROIs, the study catalog, worker status, audit lines and the request gate."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pydicom
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file

from ml.evaluation import operating_points
from ml.models import create_model
from ml.preprocess import PreprocessConfig, preprocess_view
from ml.synth import CohortConfig, generate_cohort
from ml.synth.layout import FILE_PATHS_CSV
from resources.model_registry import NO_TRIAGE, PREPROCESS_CONFIG_TAG, PREPROCESS_FINGERPRINT_TAG, TriageThresholds
from resources.object_store import ObjectStore
from serving.audit import AuditLog, audit_record
from serving.auth import Principal
from serving.catalog import StudyCatalog
from serving.errors import RequestError
from serving.explain import cam_rois
from serving.gate import predict_gate
from serving.model_source import ModelLoadError, preprocess_for
from serving.settings import ServeSettings, ServeSettingsError
from serving.status import StatusBoard, WorkerStatus
from serving.uploads import read_upload
from serving.views import four_views


# ----------------------------------------------------------------------------------- settings
def test_settings_read_the_profile_and_serve_variables_and_overrides_win(tmp_path):
    env = {"TOMOSIGHT_HOME": str(tmp_path), "TOMOSIGHT_SERVE_PORT": "9001", "TOMOSIGHT_SERVE_MAX_PAYLOAD_BYTES": "2048",
           "TOMOSIGHT_SERVE_EXPLAIN": "false", "TOMOSIGHT_SERVE_BATCH_TIMEOUT_S": "0.1", "TOMOSIGHT_SERVE_AUDIT_LOG": "a.log"}
    settings = ServeSettings.from_env(env, port=9002, workers=None)
    assert settings.home == tmp_path.resolve() and settings.store_uri == str(tmp_path.resolve() / "store")
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert (settings.port, settings.max_payload_bytes, settings.explain, settings.batch_timeout_s) == (9002, 2048, False, 0.1)
    assert settings.audit_log == Path("a.log") and settings.workers == 1 and settings.accelerator == "cpu"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"accelerator": "auto"}, "explicit"),
    ({"max_payload_bytes": "10MB"}, "max_payload_bytes"),
    ({"max_payload_bytes": True}, "max_payload_bytes"),
    ({"port": 80}, "port"),
    ({"insecure_no_auth": True, "host": "0.0.0.0"}, "127.0.0.1 only"),
    ({"request_timeout_s": 0.01, "batch_timeout_s": 0.05}, "request_timeout_s"),
    ({"model_alias": "champion; drop"}, "model_alias"),
])  # fmt: skip
def test_settings_refuse_invalid_values(tmp_path, overrides, message):
    with pytest.raises(ServeSettingsError, match=message):
        ServeSettings.from_env({"TOMOSIGHT_HOME": str(tmp_path)}, **overrides)


def test_settings_refuse_a_malformed_variable(tmp_path):
    with pytest.raises(ServeSettingsError, match="TOMOSIGHT_SERVE_MAX_PAYLOAD_BYTES"):
        ServeSettings.from_env({"TOMOSIGHT_HOME": str(tmp_path), "TOMOSIGHT_SERVE_MAX_PAYLOAD_BYTES": "10MB"})


def test_serve_command_refuses_to_start_without_oidc_or_with_an_exposed_insecure_mode(tmp_path, monkeypatch, capsys):
    from dbt_assets.cli import main

    for name in ("OIDC_ISSUER", "OIDC_AUDIENCE", "OIDC_JWKS_URL", "OIDC_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert main(["serve", "--home", str(tmp_path)]) == 2
    assert "OIDC_ISSUER" in capsys.readouterr().err
    assert main(["serve", "--home", str(tmp_path), "--insecure-no-auth", "--host", "0.0.0.0"]) == 2
    assert "127.0.0.1 only" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- triage
def test_triage_bands_and_default():
    triage = TriageThresholds(0.1, 0.6, "test")
    assert [triage.decide(p) for p in (0.05, 0.1, 0.59, 0.6, 0.99)] == ["auto_clear", "review", "review", "suspicious", "suspicious"]
    assert {NO_TRIAGE.decide(p) for p in (0.0, 0.5, 1.0)} == {"review"}
    assert TriageThresholds.from_tags(triage.as_tags()) == triage
    assert TriageThresholds.from_tags(TriageThresholds(None, 0.7, "x").as_tags()) == TriageThresholds(None, 0.7, "x")
    assert TriageThresholds.from_tags({"val_auc": "0.9"}) is None


def test_report_thresholds_moved_to_the_served_scale_give_the_report_bands():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    served = np.clip(1 / (1 + np.exp(-(rng.normal(0, 1.5, 400) + 1.2 * labels))), 1e-6, 1 - 1e-6)
    temperature = 1.7
    calibrated = 1 / (1 + np.exp(-np.log(served / (1 - served)) / temperature))  # what the report thresholds
    points = operating_points(calibrated, labels, low_sensitivity=0.9, high_specificity=0.9)
    moved = TriageThresholds.from_operating_points(points, temperature, "report")
    decisions = [moved.decide(float(p)) for p in served]
    for band in ("auto_clear", "review", "suspicious"):
        assert decisions.count(band) == points["triage"]["bands"][band]["exams"], band
    assert TriageThresholds.from_operating_points({}, temperature, "report") is None


# ------------------------------------------------------------------- preprocessing of a version
def test_preprocessing_comes_from_the_tag_else_from_the_model_and_the_asset_defaults():
    from dbt_assets.assets.preprocessing import PreprocessingConfig

    model = create_model("dbt_tiny", input_size=(128, 104), slice_strategy="mip").config
    fallback = preprocess_for(model, {})
    assert fallback == PreprocessingConfig(height=128, width=104).to_library()  # what the demo trains on
    tagged = PreprocessConfig(strategy="mip", height=128, width=104, slab=3)
    tags = {PREPROCESS_CONFIG_TAG: json.dumps(tagged.to_dict()), PREPROCESS_FINGERPRINT_TAG: tagged.fingerprint()}
    assert preprocess_for(model, tags) == tagged
    with pytest.raises(ModelLoadError, match="trained on preprocessing"):
        preprocess_for(model, {PREPROCESS_FINGERPRINT_TAG: tagged.fingerprint()})  # the slab cannot be guessed
    with pytest.raises(ModelLoadError, match="does not fit"):
        preprocess_for(model, {PREPROCESS_CONFIG_TAG: json.dumps(PreprocessConfig(strategy="mip", height=64, width=52).to_dict())})


def test_four_views_take_the_plain_view_over_repeats_and_name_what_is_missing():
    assert four_views({"rmlo1": 5, "rmlo": 4, "lcc": 1, "lmlo": 2, "rcc": 3}) == [("lcc", 1), ("lmlo", 2), ("rcc", 3), ("rmlo", 4)]
    with pytest.raises(RequestError, match="R-CC, R-MLO") as found:
        four_views({"lcc": 1, "lmlo": 2})
    assert found.value.status == 422 and found.value.reason == "missing_views"


# -------------------------------------------------------------------------------------- uploads
@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, pl.DataFrame]:
    root = tmp_path_factory.mktemp("serving-units") / "cohort"
    generate_cohort(root, CohortConfig(studies=4, seed=5, rows=48, cols=40, slices=4, slices_max=4, cancer_fraction=0.0,
                                       benign_fraction=0.0, actionable_fraction=0.0), workers=1)  # fmt: skip
    return root, pl.read_csv(root / FILE_PATHS_CSV)


def _study_files(cohort, index: int = 0) -> list[bytes]:
    root, paths = cohort
    study = sorted(paths["StudyUID"].unique())[index]
    return [(root / p).read_bytes() for p in paths.filter(pl.col("StudyUID") == study)["descriptive_path"]]


def test_an_uploaded_study_is_grouped_by_view(cohort, tmp_path):
    study = read_upload(_study_files(cohort), tmp_path)
    assert sorted(study.paths) == ["lcc", "lmlo", "rcc", "rmlo"] and study.study_uid
    assert all(p.parent == tmp_path for p in study.paths.values())


def _rewrite(data: bytes, tmp_path: Path, **changes) -> bytes:
    path = tmp_path / "edited.dcm"
    path.write_bytes(data)
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)
    return path.read_bytes()


def test_bad_uploads_get_typed_errors(cohort, tmp_path):
    files = _study_files(cohort)
    cases = [
        ([b"not a dicom file at all"], 415, "not_dicom"),
        ([Path(get_testdata_file("CT_small.dcm")).read_bytes()], 422, "wrong_modality"),
        ([_rewrite(files[0], tmp_path, Modality="CT")], 422, "wrong_modality"),
        ([files[0], files[0]], 422, "duplicate_view"),
        ([*files[:2], *_study_files(cohort, 1)[2:]], 422, "several_studies"),
        ([_rewrite(files[0], tmp_path, ViewCodeSequence=None)], 422, "unknown_view"),
        ([], 422, "no_files"),
    ]
    for number, (upload, status, reason) in enumerate(cases):
        folder = tmp_path / str(number)
        folder.mkdir()
        with pytest.raises(RequestError) as found:
            read_upload(upload, folder)
        assert (found.value.status, found.value.reason) == (status, reason), found.value.detail
        assert "SYNTH" not in found.value.detail  # no patient data in messages


# ------------------------------------------------------------------------------------ CAM ROIs
def test_cam_peaks_become_boxes_in_the_duke_frame(cohort):
    root, paths = cohort
    row = paths.filter(pl.col("View") == "lcc").row(0, named=True)
    view = preprocess_view(root / row["descriptive_path"], "lcc", PreprocessConfig(strategy="mip", height=96, width=80))
    cam = np.zeros((96, 80), np.float32)
    cam[10:20, 30:40] = 1.0
    cam[60:64, 5:9] = 0.6
    rois = cam_rois(cam, view, 0.5, "L-CC")
    assert [r["score"] for r in rois] == [0.5, pytest.approx(0.3)]
    top = rois[0]
    assert top["x"] == round((30 - view.pad.left) / view.scale) and top["y"] == round((10 - view.pad.top) / view.scale)
    assert top["width"] == round(10 / view.scale) and top["view"] == "L-CC"
    assert cam_rois(np.zeros_like(cam), view, 0.9, "L-CC") == []


# ------------------------------------------------------------------------------- study catalog
def test_catalog_finds_studies_ingested_after_it_started(tmp_path):
    store = ObjectStore(base_uri=str(tmp_path / "store"))
    row = {"StudyUID": "S-1", "View": "lcc", "dicom_uri": "raw/a.dcm", "PatientID": "P-1"}
    store.write_parquet("tables/filepaths/2024-01-01.parquet", pl.DataFrame([row]))
    catalog = StudyCatalog(store, min_refresh_s=0.0)
    assert catalog.views("S-1") == {"lcc": "raw/a.dcm"} and catalog.views("S-2") is None
    store.write_parquet("tables/filepaths/2024-01-02.parquet", pl.DataFrame([{**row, "StudyUID": "S-2", "dicom_uri": "raw/b.dcm"}]))
    assert catalog.views("S-2") == {"lcc": "raw/b.dcm"}
    store.delete("tables/filepaths/2024-01-01.parquet")
    catalog.refresh()
    assert catalog.views("S-1") is None


# ------------------------------------------------------------------------------ worker statuses
def test_status_board_keeps_live_workers_and_counts_reload_requests(tmp_path):
    board = StatusBoard(tmp_path)
    board.publish(WorkerStatus(os.getpid(), "cpu", "ready", "m", "champion", "3"))
    board.publish(WorkerStatus(2**22 + 12345, "cpu", "ready", "m", "champion", "2"))  # no such process
    assert [w.version for w in board.workers()] == ["3"]
    assert board.reload_requests() == 0 and board.request_reload() == 1 and board.reload_requests() == 1
    with pytest.raises(ValueError, match="state"):
        WorkerStatus(1, "cpu", "sleeping", "m", "champion")


# -------------------------------------------------------------------------------------- audit
def test_audit_lines_hash_the_study_and_keep_only_safe_fields(tmp_path):
    principal = Principal("dr-house", frozenset({"radiologist", "offline_access"}), "viewer")
    response = {"study_uid": "1.2.3.4", "model_version": "7", "triage": {"decision": "review"}, "source": "upload",
                "view_scores": {"L-CC": 0.2}, "PatientName": "should-not-appear"}  # fmt: skip
    record = audit_record(request_id="r1", method="POST", path="/v1/predict", status=200, latency_s=0.1234,
                          principal=principal, study_uid=None, response=response)  # fmt: skip
    assert record["study_uid_sha256"] == hashlib.sha256(b"1.2.3.4").hexdigest()
    assert (record["subject"], record["role"], record["client"], record["model_version"], record["decision"]) == (
        "dr-house", "radiologist", "viewer", "7", "review")
    assert record["latency_ms"] == 123.4
    AuditLog(tmp_path / "audit.jsonl").write(record)
    text = (tmp_path / "audit.jsonl").read_text()
    assert json.loads(text) == record and "1.2.3.4" not in text and "should-not-appear" not in text


# --------------------------------------------------------------------------------------- gate
@pytest.fixture(scope="module")
def gated() -> TestClient:
    app = FastAPI()

    @app.post("/v1/predict", dependencies=[Depends(predict_gate(None, 2048, 4))])
    async def predict() -> dict:
        return {"ok": True}

    return TestClient(app)


@pytest.mark.parametrize(("kwargs", "status"), [
    ({"json": {"study_uid": "S-abc"}}, 200),
    ({"content": b'{"study_uid": ', "headers": {"content-type": "application/json"}}, 400),
    ({"json": {"study_uid": 3}}, 422),
    ({"json": {"study_uid": "S-1", "extra": 1}}, 422),
    ({"json": {"study_uid": "../etc/passwd"}}, 422),
    ({"content": b"study", "headers": {"content-type": "text/plain"}}, 415),
    ({"content": b"x" * 4096, "headers": {"content-type": "application/json"}}, 413),
    ({"files": [("files", ("a.dcm", b"123"))]}, 200),
    ({"files": [("other", ("a.dcm", b"123"))]}, 422),
    ({"files": [("files", ("a.dcm", b"1"))] * 5}, 400),
    ({"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 422),
    ({"content": b"abc", "headers": {"content-type": "multipart/form-data"}}, 400),
])  # fmt: skip
def test_gate_checks_the_body_before_any_worker_sees_it(gated, kwargs, status):
    response = gated.post("/v1/predict", **kwargs)
    assert response.status_code == status, response.text
    if status != 200:
        assert response.json()["detail"]
