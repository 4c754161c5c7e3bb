"""Build and run the clinician endpoint: the LitServer with the predict API and its extra routes.

:func:`build_server` is the one entry point (the CLI, the tests and the load bench use it):

- ``POST /v1/predict`` (radiologist or admin): :class:`serving.api.PredictAPI`, dynamic batching;
- ``GET /livez`` and ``GET /readyz`` (no token): alive; ready once every inference worker has
  finished LitServe's setup *and* loaded a model version (503 with the reason until then);
- ``GET /metrics`` (no token, Prometheus): requests by route and status, latency, triage
  decisions, the versions the workers serve;
- ``GET /v1/model`` (admin): what the workers serve and what the registry alias pointed at when they
  last checked (every reload interval); ``POST /v1/model`` (admin): ask them to re-check now (202);
- ``GET /openapi.json``: the OpenAPI document.

Production requires OIDC (a :class:`~serving.auth.TokenVerifier`); without one the server is
only built with ``insecure_no_auth``, which the settings allow on 127.0.0.1 alone.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import litserve as ls
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from litserve.utils import WorkerSetupStatus

from serving.api import API_PATH, PredictAPI
from serving.audit import AuditLog
from serving.auth import Permission, TokenVerifier
from serving.gate import caller
from serving.metrics import ServerMetrics
from serving.observe import ObservabilityMiddleware
from serving.openapi import install_openapi
from serving.schemas import ModelInfo, Probe
from serving.settings import ServeSettings, ServeSettingsError
from serving.status import READY, StatusBoard

API_VERSION = "1.0.0"


@dataclass
class ServingApp:
    """A built (not yet running) server and what its routes share."""

    server: ls.LitServer
    settings: ServeSettings
    board: StatusBoard
    metrics: ServerMetrics
    status_dir: Path

    @property
    def app(self) -> FastAPI:
        return self.server.app

    def readiness(self) -> tuple[bool, Probe]:
        """Ready when LitServe's workers finished setup and every worker serves a model version."""
        setup = getattr(self.server, "workers_setup_status", None) or {}
        setup_done = bool(setup) and all(v == WorkerSetupStatus.READY for v in setup.values())
        workers = self.board.workers()
        expected = self.settings.workers * (self.settings.devices if self.settings.accelerator == "cuda" else 1)
        loaded = len(workers) >= expected and all(w.state == READY and w.version for w in workers)
        versions = sorted({w.version for w in workers if w.version})
        summary = [{"state": w.state, "version": w.version, "device": w.device, "detail": w.detail} for w in workers]
        ready = setup_done and loaded
        return ready, Probe(status="ready" if ready else "not ready", model_versions=versions, workers=summary)

    def model_info(self) -> ModelInfo:
        """What the workers serve, and what the alias pointed at when a worker last checked the registry."""
        s = self.settings
        workers = self.board.workers()
        checked = [w.registry for w in workers if w.registry]
        registry = max(checked, key=lambda r: r.get("checked_at", 0.0)) if checked else None
        serving = [
            {"pid": w.pid, "device": w.device, "state": w.state, "version": w.version, "loaded_at": w.loaded_at,
             "detail": w.detail, "triage": w.triage, "preprocess": w.preprocess}
            for w in workers
        ]  # fmt: skip
        return ModelInfo(name=s.model_name, alias=s.model_alias, serving=serving, registry=registry,
                         reload_requests=self.board.reload_requests())  # fmt: skip

    def close(self) -> None:
        """Remove the run folder (after the server stopped)."""
        shutil.rmtree(self.status_dir, ignore_errors=True)


def build_server(settings: ServeSettings, verifier: TokenVerifier | None) -> ServingApp:
    """The LitServer for ``settings``; ``verifier`` None is accepted only with ``insecure_no_auth``."""
    if verifier is None and not settings.insecure_no_auth:
        raise ServeSettingsError("the endpoint needs OIDC settings (OIDC_ISSUER, OIDC_AUDIENCE, OIDC_JWKS_URL)")
    status_dir = Path(tempfile.mkdtemp(prefix="tomosight-serve-"))
    board = StatusBoard(status_dir)
    api = PredictAPI(settings, str(status_dir), verifier)
    server = ls.LitServer(
        [api],  # a list: LitServe's own /health, /info and / then need no token (probes)
        accelerator=settings.accelerator,
        devices=settings.devices if settings.accelerator == "cuda" else "auto",
        workers_per_device=settings.workers,
        timeout=settings.request_timeout_s,
        max_payload_size=settings.max_payload_bytes,
    )
    serving = ServingApp(server, settings, board, ServerMetrics(board), status_dir)
    _add_routes(serving, verifier)
    server.app.add_middleware(ObservabilityMiddleware, metrics=serving.metrics, audit=AuditLog(settings.audit_log))
    install_openapi(server.app, API_PATH, settings.max_upload_files, API_VERSION)
    return serving


def _add_routes(serving: ServingApp, verifier: TokenVerifier | None) -> None:
    app = serving.app
    admin = [Depends(caller(verifier, Permission.MODEL_INFO))]

    @app.get("/livez", response_model=Probe, tags=["probes"], summary="Liveness (no token)")
    def livez() -> Probe:
        return Probe(status="alive")

    @app.get("/readyz", response_model=Probe, tags=["probes"], summary="Readiness: a model is loaded (no token)",
             responses={503: {"model": Probe, "description": "Not ready yet."}})  # fmt: skip
    def readyz() -> JSONResponse:
        ready, probe = serving.readiness()
        return JSONResponse(probe.model_dump(), status_code=200 if ready else 503)

    @app.get("/metrics", tags=["probes"], summary="Prometheus metrics (no token)", response_class=Response)
    def metrics() -> Response:
        body, content_type = serving.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/model", response_model=ModelInfo, dependencies=admin, tags=["model"], summary="Served model version (admin)")
    def get_model() -> ModelInfo:
        return serving.model_info()

    @app.post("/v1/model", response_model=ModelInfo, status_code=202, dependencies=admin, tags=["model"],
              summary="Re-check the registry alias now (admin)")  # fmt: skip
    def reload_model() -> ModelInfo:
        serving.board.request_reload()
        return serving.model_info()


def serve(serving: ServingApp) -> None:
    """Run until stopped: one HTTP process, ``workers`` inference processes per device."""
    s = serving.settings
    try:
        serving.server.run(host=s.host, port=s.port, num_api_servers=1, generate_client_file=False)
    finally:
        serving.close()
