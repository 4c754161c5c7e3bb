"""The clinician endpoint end to end: a real ``tomosight serve`` over a home built by the asset graph,
behind a real OIDC issuer on loopback.  Probes, the 401/403 matrix, batch/online score identity,
uploads, dynamic batching, bad input, metrics, the audit trail without PHI, and a schemathesis run."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import polars as pl
from mlflow.tracking import MlflowClient
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.support.oidc import LocalIssuer
from tests.support.serving_home import build_serving_home
from tests.support.serving_server import running_server

PAYLOAD_LIMIT = 3_000_000
PHI_NAME, PHI_ID = "Zebulon^Quixote^PHI", "PHI-0451-7788"
SCORE_ATOL = 1e-6  # float32 rounding of a different batch; distinct studies here differ by ~1e-4


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return build_serving_home(tmp_path_factory.getbasetemp() / "serving-home")


@pytest.fixture(scope="module")
def issuer():
    with LocalIssuer() as found:
        yield found


@pytest.fixture(scope="module")
def audit(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serving-api") / "audit.jsonl"


@pytest.fixture(scope="module")
def server(home, issuer, audit):
    args = ["--max-batch-size", "4", "--batch-timeout", "0.3", "--reload-interval", "5",
            "--max-payload-bytes", str(PAYLOAD_LIMIT), "--audit-log", str(audit)]  # fmt: skip
    with running_server(home.home, args, {**issuer.env(), "OIDC_JWKS_COOLDOWN_S": "0"}, audit.with_name("server.log")) as srv:
        yield srv


@pytest.fixture(scope="module")
def tokens(issuer):
    return {
        "radiologist": issuer.mint(subject="dr-ada", roles=("radiologist",)),
        "admin": issuer.mint(subject="ops-bob", roles=("admin",)),
        "nurse": issuer.mint(subject="rn-cy", roles=("nurse",)),
        "client_role": issuer.mint(subject="dr-eve", roles=(), client_roles=("radiologist",)),
        "expired": issuer.mint(subject="dr-ada", roles=("radiologist",), expires_in=-120),
        "foreign": issuer.foreign_token(subject="dr-ada", roles=("radiologist",)),
        "alg_none": issuer.alg_none_token(subject="dr-ada", roles=("radiologist",)),
        "hs256": issuer.hs256_confusion_token(subject="dr-ada", roles=("radiologist",)),
        "tampered": LocalIssuer.tamper(issuer.mint(subject="rn-cy", roles=("nurse",)), realm_access={"roles": ["admin"]}),
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def predict(server, token: str | None, **kwargs) -> httpx.Response:
    headers = {**(bearer(token) if token else {}), **kwargs.pop("headers", {})}
    return httpx.post(f"{server.url}/v1/predict", headers=headers, timeout=120, **kwargs)


def study_files(home, study: str) -> list[Path]:
    files = home.table("filepaths").filter(pl.col("StudyUID") == study).sort("View")
    return [Path(uri) for uri in files["dicom_uri"]]


# --------------------------------------------------------------------------------- probes
def test_probes_and_metrics_need_no_token(server):
    assert httpx.get(f"{server.url}/livez").json() == {"status": "alive", "model_versions": [], "workers": []}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["model_versions"] == ["1"]
    assert ready.json()["workers"][0]["state"] == "ready"
    assert httpx.get(f"{server.url}/health").status_code == 200
    metrics = httpx.get(f"{server.url}/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert re.search(r'tomosight_model_info\{alias="champion",model="tomosight-dbt",version="1"\} 1\.0', metrics.text)
    assert 'tomosight_workers{state="ready"} 1.0' in metrics.text


# ------------------------------------------------------------------------------------ auth
def test_predict_and_model_info_need_the_right_token(server, home, tokens):
    body = {"json": {"study_uid": home.complete_studies()[0]}}
    expected = {None: 401, "expired": 401, "foreign": 401, "alg_none": 401, "hs256": 401, "tampered": 401,
                "nurse": 403, "radiologist": 200, "admin": 200, "client_role": 200}  # fmt: skip
    got = {name: predict(server, tokens.get(name), **body).status_code for name in expected}
    assert got == expected
    assert predict(server, None, **body).headers["www-authenticate"].startswith("Bearer")
    for method, ok in (("GET", 200), ("POST", 202)):
        answers = {name: httpx.request(method, f"{server.url}/v1/model", headers=bearer(tokens[name]) if name else {},
                                       timeout=60).status_code for name in (None, "radiologist", "expired", "admin")}  # fmt: skip
        assert answers == {None: 401, "radiologist": 403, "expired": 401, "admin": ok}, method


def test_a_rotated_signing_key_is_fetched_and_accepted(server, home, issuer):
    issuer.rotate()
    fresh = issuer.mint(subject="dr-rotated", roles=("radiologist",))
    assert predict(server, fresh, json={"study_uid": home.complete_studies()[0]}).status_code == 200


def test_model_info_names_the_served_version_and_its_registry_facts(server, tokens):
    info = httpx.get(f"{server.url}/v1/model", headers=bearer(tokens["admin"]), timeout=30).json()
    assert info["name"] == "tomosight-dbt" and info["alias"] == "champion"
    assert info["registry"]["version"] == "1" and info["serving"][0]["version"] == "1"
    assert info["serving"][0]["preprocess"]["strategy"] == "mip"  # recorded by the model asset
    tags, served = info["registry"]["tags"], info["serving"][0]["triage"]
    if "triage_source" in tags:  # the evaluation report registered operating points for this version
        assert served["source"] == tags["triage_source"] == "evaluation_report of version 1"
    else:
        assert served["source"].startswith("default") and served["low"] is None and served["high"] is None


# --------------------------------------------------------------------- one inference path
def test_study_predictions_equal_the_batch_predictions_assets(server, home, tokens):
    exams, views = home.table("exam_predictions"), home.table("predictions")
    studies = home.complete_studies()
    batch = {s: exams.filter(pl.col("StudyUID") == s)["prob_malignant"][0] for s in studies}
    assert abs(batch[studies[0]] - batch[studies[1]]) > 100 * SCORE_ATOL  # the comparison can tell studies apart
    registered = MlflowClient(f"sqlite:///{home.home / 'mlflow.db'}").get_model_version("tomosight-dbt", "1")
    for study in studies:
        answer = predict(server, tokens["radiologist"], json={"study_uid": study})
        assert answer.status_code == 200, answer.text
        found = answer.json()
        assert found["study_uid"] == study and found["source"] == "study_uid"
        assert found["model_version"] == exams.filter(pl.col("StudyUID") == study)["model_version"][0] == "1"
        tensors = home.table("preprocessed").filter(pl.col("StudyUID") == study)["tensor_uri"][0]
        assert f"/processed/{found['preprocess_fingerprint']}/" in tensors  # the batch path's preprocessing
        assert found["mlflow_run_id"] == registered.run_id
        assert found["prob_malignant"] == pytest.approx(batch[study], abs=SCORE_ATOL)
        rows = views.filter(pl.col("StudyUID") == study).select("View", "prob_malignant").rows()
        per_view = {f"{v[0].upper()}-{v[1:].upper()}": p for v, p in rows}
        assert found["view_scores"].keys() == {"L-CC", "L-MLO", "R-CC", "R-MLO"}
        for label, prob in found["view_scores"].items():
            assert prob == pytest.approx(per_view[label], abs=SCORE_ATOL), label
        cams = Path(found["cams_uri"])
        assert sorted(p.name for p in cams.glob("*.png")) == ["L-CC.png", "L-MLO.png", "R-CC.png", "R-MLO.png"]
        assert study not in str(cams) and (cams / "L-CC.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for roi in found["rois"]:
            assert roi["view"] in found["view_scores"] and roi["width"] >= 1 and roi["height"] >= 1 and 0 <= roi["score"] <= 1
        triage = found["triage"]
        assert triage["decision"] in ("auto_clear", "review", "suspicious") and triage["source"]


def _with_phi(path: Path, folder: Path) -> bytes:
    ds = pydicom.dcmread(path)
    ds.PatientName, ds.PatientID, ds.InstitutionName = PHI_NAME, PHI_ID, "PHI General Hospital"
    out = folder / path.name
    ds.save_as(out)
    return out.read_bytes()


def test_an_upload_scores_like_its_study_uid_and_no_phi_leaks(server, home, tokens, audit, tmp_path):
    study = home.complete_studies()[1]
    by_uid = predict(server, tokens["radiologist"], json={"study_uid": study}).json()
    files = [("files", (f"view-{i}.dcm", _with_phi(p, tmp_path))) for i, p in enumerate(study_files(home, study))]
    answer = predict(server, tokens["radiologist"], files=files)
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["source"] == "upload" and found["model_version"] == by_uid["model_version"]
    assert found["prob_malignant"] == pytest.approx(by_uid["prob_malignant"], abs=SCORE_ATOL)
    assert found["view_scores"] == pytest.approx(by_uid["view_scores"], abs=SCORE_ATOL)
    ct = ("files", ("ct.dcm", Path(get_testdata_file("CT_small.dcm")).read_bytes()))
    wrong = predict(server, tokens["radiologist"], files=[*files[:2], ct])
    assert wrong.status_code == 422
    for text in (answer.text, wrong.text, server.log_text(), audit.read_text()):
        for phi in (PHI_NAME, PHI_ID, "Zebulon", "PHI General Hospital"):
            assert phi not in text


# ---------------------------------------------------------------------- dynamic batching
def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server, home, tokens):
    complete = home.complete_studies()
    incomplete = sorted(set(home.table("filepaths")["StudyUID"]) - set(complete))[0]
    requests = [complete[i % 2] for i in range(10)] + ["S-000000000000", incomplete]
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda s: predict(server, tokens["radiologist"], json={"study_uid": s}), requests))
    for study, answer in zip(requests, answers):
        if study in complete:
            assert answer.status_code == 200 and answer.json()["study_uid"] == study, answer.text
        elif study == incomplete:
            assert answer.status_code == 422 and answer.json()["reason"] == "missing_views"
        else:
            assert answer.status_code == 404 and answer.json()["reason"] == "unknown_study"
    scores = {s: {a.json()["prob_malignant"] for q, a in zip(requests, answers) if q == s} for s in complete}
    assert all(max(v) - min(v) <= SCORE_ATOL for v in scores.values())


# ------------------------------------------------------------------------------ bad input
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(server, home, tokens):
    token = tokens["radiologist"]
    complete = home.complete_studies()[0]
    incomplete = sorted(set(home.table("filepaths")["StudyUID"]) - set(home.complete_studies()))[0]
    cases = {
        "malformed json": (dict(content=b'{"study_uid": "S-', headers={"content-type": "application/json"}), 400),
        "wrong json shape": (dict(json={"study": complete}), 422),
        "unknown study": (dict(json={"study_uid": "S-ffffffffffff"}), 404),
        "missing views": (dict(json={"study_uid": incomplete}), 422),
        "not dicom": (dict(files=[("files", ("notes.txt", b"hello, not an image"))]), 415),
        "wrong modality": (dict(files=[("files", ("ct.dcm", Path(get_testdata_file("CT_small.dcm")).read_bytes()))]), 422),
        "three views": (dict(files=[("files", (p.name, p.read_bytes())) for p in study_files(home, complete)[:3]]), 422),
        "other media type": (dict(content=b"study_uid=x", headers={"content-type": "text/plain"}), 415),
        "oversized": (dict(files=[("files", ("big.dcm", b"\0" * (PAYLOAD_LIMIT + 1)))]), 413),
        "oversized, streamed": (dict(content=iter([b" " * (PAYLOAD_LIMIT // 4)] * 5),  # chunked: no Content-Length
                                     headers={"content-type": "application/json"}), 413),
    }  # fmt: skip
    for name, (kwargs, status) in cases.items():
        answer = predict(server, token, **kwargs)
        assert answer.status_code == status, f"{name}: {answer.status_code} {answer.text[:300]}"
        detail = answer.json()["detail"]
        assert detail and "Internal" not in str(detail), name
    assert predict(server, token, json={"study_uid": complete}).status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200


# ----------------------------------------------------------------------- metrics and audit
def test_metrics_count_requests_by_status_and_time_them(server, home, tokens):
    predict(server, tokens["radiologist"], json={"study_uid": home.complete_studies()[0]})
    predict(server, None, json={"study_uid": home.complete_studies()[0]})
    text = httpx.get(f"{server.url}/metrics").text

    def value(pattern: str) -> float:
        found = re.search(pattern + r" ([0-9.e+]+)", text)
        assert found, pattern
        return float(found.group(1))

    assert value(r'tomosight_requests_total\{method="POST",route="/v1/predict",status="200"\}') >= 1
    assert value(r'tomosight_requests_total\{method="POST",route="/v1/predict",status="401"\}') >= 1
    assert value(r'tomosight_request_duration_seconds_count\{route="/v1/predict"\}') >= 2
    assert value(r'tomosight_request_duration_seconds_sum\{route="/v1/predict"\}') > 0
    assert re.search(r'tomosight_triage_decisions_total\{decision="(auto_clear|review|suspicious)"\}', text)


def test_every_prediction_request_leaves_one_audit_line_without_phi(server, home, tokens, audit):
    study = home.complete_studies()[0]
    answer = predict(server, tokens["radiologist"], json={"study_uid": study})
    refused = predict(server, tokens["nurse"], json={"study_uid": study})
    unknown = predict(server, tokens["admin"], json={"study_uid": "S-0123456789ab"})
    lines = {r["request_id"]: r for r in map(json.loads, audit.read_text().splitlines())}
    line = lines[answer.headers["x-request-id"]]
    assert line["study_uid_sha256"] == hashlib.sha256(study.encode()).hexdigest()
    assert (line["subject"], line["role"], line["status"], line["model_version"]) == ("dr-ada", "radiologist", 200, "1")
    assert line["decision"] == answer.json()["triage"]["decision"] and line["latency_ms"] > 0
    assert {"event", "ts", "client", "source", "path"} <= line.keys()
    forbidden = lines[refused.headers["x-request-id"]]
    assert (forbidden["status"], forbidden["subject"], forbidden["role"]) == (403, "rn-cy", None)
    missing = lines[unknown.headers["x-request-id"]]
    assert (missing["status"], missing["role"], missing["reason"]) == (404, "admin", "unknown_study")
    assert missing["study_uid_sha256"] == hashlib.sha256(b"S-0123456789ab").hexdigest()
    everything = audit.read_text() + server.log_text()
    for uid in home.table("filepaths")["StudyUID"].unique():
        assert uid not in audit.read_text()
    assert PHI_NAME not in everything


# ------------------------------------------------------------------------------- README
def test_the_readme_curl_examples_work(server, home, tokens, tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Serving"):readme.index("\n## ", readme.index("## Serving") + 1)]
    script = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    script = re.sub(r"^TOKEN=.*$", "", script, flags=re.M).replace("http://127.0.0.1:8000", server.url)
    study = home.complete_studies()[0]
    script = re.sub(r"S-[0-9a-f]{12}", study, script)
    for view in ("lcc", "lmlo", "rcc", "rmlo"):  # the README names the files by view
        view_file = home.table("filepaths").filter((pl.col("StudyUID") == study) & (pl.col("View") == view))["dicom_uri"][0]
        (tmp_path / f"{view}.dcm").write_bytes(Path(view_file).read_bytes())
    run = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "TOKEN": tokens["radiologist"]})  # fmt: skip
    answers = [json.loads(line) for line in run.stdout.replace("}{", "}\n{").splitlines() if line.strip()]
    assert len(answers) == 2 and {a["source"] for a in answers} == {"study_uid", "upload"}, run.stdout + run.stderr
    assert answers[0]["prob_malignant"] == pytest.approx(answers[1]["prob_malignant"], abs=SCORE_ATOL)


# ------------------------------------------------------------------------------ OpenAPI
def test_the_openapi_document_describes_predict_and_schemathesis_finds_no_server_error(server, tokens, tmp_path):
    document = httpx.get(f"{server.url}/openapi.json").json()
    operation = document["paths"]["/v1/predict"]["post"]
    assert set(operation["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert {"200", "401", "403", "404", "413", "415", "422", "504"} <= set(operation["responses"])
    assert {"/livez", "/readyz", "/metrics", "/v1/model"} <= set(document["paths"])
    command = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{server.url}/openapi.json",
               "--checks", "not_a_server_error", "--max-examples", "8", "--seed", "7", "--workers", "2",
               "--phases", "examples,coverage,fuzzing", "--generation-database", "none", "--no-color",
               "--request-timeout", "60", "--header", f"Authorization: Bearer {tokens['admin']}",
               "--report", "junit", "--report-dir", str(tmp_path)]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)  # it keeps state in ./.schemathesis
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert httpx.get(f"{server.url}/readyz").status_code == 200
