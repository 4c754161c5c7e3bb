"""The endpoint's life with a registry that changes under it: not ready before a version exists, a
promotion noticed without a restart, triage tags applied when they appear, queue timeouts (504)
after which the server keeps serving.  Uploads of a synthetic study (no asset graph needed)."""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import polars as pl
import pytest

from ml.models import create_model
from ml.preprocess import PreprocessConfig
from ml.synth import CohortConfig, generate_cohort
from ml.synth.layout import FILE_PATHS_CSV
from resources.mlflow_resource import MlflowResource
from resources.model_registry import CHAMPION, PREPROCESS_CONFIG_TAG, PREPROCESS_FINGERPRINT_TAG, TriageThresholds
from serving.model_source import ModelSource
from tests.support.oidc import LocalIssuer
from tests.support.serving_server import RunningServer, running_server

NAME = "tomosight-dbt"
STAGING = "tomosight-dbt-staging"
RELOAD_S = 1.0
REQUEST_TIMEOUT_S = 1.5
PREPROCESS = PreprocessConfig(strategy="mip", height=64, width=52)


@dataclass
class Lifecycle:
    server: RunningServer
    mlflow: MlflowResource
    headers: dict[str, str]
    admin: dict[str, str]
    upload: list[tuple[str, tuple[str, bytes]]]
    before_registration: dict[str, object] = field(default_factory=dict)

    def predict(self, **kwargs) -> httpx.Response:
        return httpx.post(f"{self.server.url}/v1/predict", files=self.upload, headers=self.headers, timeout=60, **kwargs)


def _log_model(mlflow: MlflowResource) -> str:
    """A dbt_tiny classifier logged under a staging name (MLflow's logging takes seconds; copies do not)."""
    import torch

    from resources.pyfunc_model import log_classifier

    torch.manual_seed(0)
    net = create_model("dbt_tiny", input_size=(PREPROCESS.height, PREPROCESS.width), slice_strategy="mip")
    with mlflow.start_run(run_name="serving-lifecycle"):
        return str(log_classifier(net, temperature=1.3, registered_model_name=STAGING).registered_model_version)


def _register(mlflow: MlflowResource, source: str) -> str:
    """Copy ``source`` (a models:/ URI) into NAME with its preprocessing tags and make it the champion."""
    client = mlflow.client()
    version = str(client.copy_model_version(source, NAME).version)
    client.set_model_version_tag(NAME, version, PREPROCESS_CONFIG_TAG, json.dumps(PREPROCESS.to_dict()))
    client.set_model_version_tag(NAME, version, PREPROCESS_FINGERPRINT_TAG, PREPROCESS.fingerprint())
    client.set_registered_model_alias(NAME, CHAMPION, version)
    return version


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory):
    base = tmp_path_factory.mktemp("serving-lifecycle")
    home, dataset = base / "home", base / "dataset"
    generate_cohort(dataset, CohortConfig(studies=1, seed=9, rows=64, cols=52, slices=4, slices_max=4, cancer_fraction=0.0,
                                          benign_fraction=0.0, actionable_fraction=0.0), workers=1)  # fmt: skip
    files = [dataset / p for p in pl.read_csv(dataset / FILE_PATHS_CSV)["descriptive_path"]]
    upload = [("files", (f"view{i}.dcm", f.read_bytes())) for i, f in enumerate(files)]
    mlflow = MlflowResource(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", artifact_location=str(home / "mlartifacts"))
    mlflow.configure()  # the registry exists (empty) before the server looks at it
    with LocalIssuer() as issuer:
        env = {**issuer.env(), "OIDC_JWKS_COOLDOWN_S": "0"}
        args = ["--reload-interval", str(RELOAD_S), "--request-timeout", str(REQUEST_TIMEOUT_S), "--max-batch-size", "1"]
        with running_server(home, args, env, base / "server.log", wait=False) as server:
            headers = {"Authorization": f"Bearer {issuer.mint(subject='dr-lifecycle', roles=('radiologist',))}"}
            admin = {"Authorization": f"Bearer {issuer.mint(subject='ops-lifecycle', roles=('admin',))}"}
            state = Lifecycle(server, mlflow, headers, admin, upload)
            staged = _log_model(mlflow)  # while the server starts
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # up, but no version registered yet
                try:
                    probe = httpx.get(f"{server.url}/readyz", timeout=5)
                except httpx.TransportError:
                    time.sleep(0.2)
                    continue
                if probe.json()["workers"] and probe.json()["workers"][0]["state"] == "no_model":
                    break
                time.sleep(0.2)
            state.before_registration = {"readyz": probe.status_code, "probe": probe.json(), "predict": state.predict()}
            _register(mlflow, f"models:/{STAGING}/{staged}")
            server.wait_ready()
            yield state


def test_not_ready_and_refusing_until_a_version_is_registered(lifecycle):
    before = lifecycle.before_registration
    assert before["readyz"] == 503 and before["probe"]["status"] == "not ready"
    assert "no version of tomosight-dbt" in before["probe"]["workers"][0]["detail"]
    assert before["predict"].status_code == 503 and before["predict"].json()["reason"] == "not_ready"
    assert lifecycle.server.readiness[-1] == 200
    answer = lifecycle.predict()
    assert answer.status_code == 200 and answer.json()["model_version"] == "1" and answer.json()["source"] == "upload"


def test_a_promotion_is_noticed_without_a_restart(lifecycle):
    first = lifecycle.predict().json()
    pids = [w["pid"] for w in _model_info(lifecycle)["serving"]]
    promoted_version = _register(lifecycle.mlflow, f"models:/{NAME}/1")
    promoted = time.monotonic()
    while (answer := lifecycle.predict().json())["model_version"] != promoted_version:
        assert time.monotonic() - promoted < RELOAD_S + 15, "the promotion was not picked up"
        time.sleep(0.2)
    assert answer["prob_malignant"] == first["prob_malignant"]  # same weights, copied: the same score
    info = _model_info(lifecycle)
    assert [w["pid"] for w in info["serving"]] == pids and info["serving"][0]["version"] == promoted_version == "2"
    assert info["registry"]["version"] == "2"
    uri = lifecycle.mlflow.tracking_uri
    client = lifecycle.mlflow.client()
    client.set_registered_model_alias(NAME, "previous", "1")
    assert ModelSource(uri, NAME, "previous").resolve()[0] == "1" and ModelSource(uri, NAME, "latest").resolve()[0] == "2"
    assert ModelSource(uri, "no-such-model", CHAMPION).resolve() is None and ModelSource(uri, NAME, "nope").resolve() is None


def test_triage_thresholds_registered_later_apply_to_the_served_version(lifecycle):
    version = _model_info(lifecycle)["serving"][0]["version"]
    prob = lifecycle.predict().json()["prob_malignant"]
    triage = TriageThresholds(prob / 2, prob, "test operating points")
    client = lifecycle.mlflow.client()
    for key, value in triage.as_tags().items():
        client.set_model_version_tag(NAME, version, key, value)
    deadline = time.monotonic() + RELOAD_S + 15
    while (answer := lifecycle.predict().json())["triage"]["source"] != "test operating points":
        assert time.monotonic() < deadline, "the triage tags were not picked up"
        time.sleep(0.2)
    assert answer["triage"] == {"decision": "suspicious", "low": prob / 2, "high": prob, "source": "test operating points"}
    assert answer["model_version"] == version


def test_requests_queued_past_the_timeout_get_504_and_the_server_keeps_serving(lifecycle):
    # One request at a time (max batch 1): enough concurrent requests that the last ones would wait
    # three timeouts in the queue, however fast this machine answers one.
    latency = min(_timed(lifecycle.predict) for _ in range(3))
    n = min(256, math.ceil(3 * REQUEST_TIMEOUT_S / latency) + 4)
    with ThreadPoolExecutor(n) as pool:
        statuses = list(pool.map(lambda _: lifecycle.predict().status_code, range(n)))
    assert set(statuses) <= {200, 504} and 200 in statuses and 504 in statuses, statuses
    assert lifecycle.predict().status_code == 200
    assert "Traceback" not in lifecycle.server.log_text()


def _timed(call) -> float:
    start = time.perf_counter()
    assert call().status_code == 200
    return time.perf_counter() - start


def _model_info(lifecycle) -> dict:
    info = httpx.get(f"{lifecycle.server.url}/v1/model", headers=lifecycle.admin, timeout=30)
    assert info.status_code == 200, info.text
    return info.json()
