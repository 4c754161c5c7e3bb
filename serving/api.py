"""The LitServe API of ``POST /v1/predict``: one study (by UID or uploaded DICOM) -> calibrated prediction.

The module imports no torch: the HTTP process only needs the class and its auth hook.
Per worker process, ``setup`` opens the object store and the ``filepaths`` catalog and starts
the :class:`~serving.model_source.ModelWatcher`, which loads the registered version in the
background (the worker reports not-ready until it has) and swaps in a newly promoted one.
Per request, ``decode_request`` resolves and preprocesses the study; ``predict`` scores the
dynamic batch through the batch path's inference code, then explains each exam (Grad-CAM
overlays in the store, ROI boxes) and applies the version's triage thresholds.

A request that fails (unknown study, missing views, bad DICOM, ...) becomes a
:class:`~serving.errors.RequestError` carried through the batch, and only its own response is
an error: LitServe would otherwise fail the whole batch with the first exception.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import litserve as ls
from starlette.responses import JSONResponse

from serving.auth import TokenVerifier
from serving.errors import RequestError, where
from serving.gate import predict_gate
from serving.settings import ServeSettings

if TYPE_CHECKING:
    from serving.pipeline import PreparedExam

log = logging.getLogger(__name__)

API_PATH = "/v1/predict"


class PredictAPI(ls.LitAPI):
    """Dynamic batching across requests; picklable until ``setup`` runs in the worker."""

    def __init__(self, settings: ServeSettings, status_dir: str, verifier: TokenVerifier | None) -> None:
        super().__init__(max_batch_size=settings.max_batch_size, batch_timeout=settings.batch_timeout_s, api_path=API_PATH)
        self.settings, self.status_dir, self.verifier = settings, status_dir, verifier

    @property
    def authorize(self):
        """LitServe's auth hook, a FastAPI dependency of the route (HTTP process only): see serving.gate."""
        return predict_gate(self.verifier, self.settings.max_payload_bytes, self.settings.max_upload_files)

    def setup(self, device: str) -> None:
        import matplotlib.backends.backend_agg  # noqa: F401 - warm imports: the first request should not pay them
        import serving.explain  # noqa: F401
        import serving.uploads  # noqa: F401
        from resources.object_store import ObjectStore
        from serving.catalog import StudyCatalog
        from serving.model_source import ModelSource, ModelWatcher
        from serving.status import StatusBoard

        s = self.settings
        self.store = ObjectStore(base_uri=s.store_uri, endpoint_url=s.s3_endpoint_url)
        self.catalog = StudyCatalog(self.store)
        source = ModelSource(s.mlflow_tracking_uri, s.model_name, s.model_alias, device)
        self.watcher = ModelWatcher(source, s.reload_interval_s, StatusBoard(self.status_dir))
        self.watcher.start()

    def decode_request(self, request):  # no annotations: LitServe builds the route's parameter from them
        """Resolve and preprocess one study (JSON dict or multipart form); a RequestError instead of raising."""
        try:
            model = self.watcher.current
            if model is None:
                raise RequestError(503, f"no model loaded yet ({self.settings.model_name}@{self.settings.model_alias})", "not_ready")
            if isinstance(request, dict):
                return self._by_study(str(request.get("study_uid", "")), model)
            return self._upload(request, model)
        except RequestError as exc:
            return exc
        except Exception as exc:
            log.error("decoding a request failed: %s", where(exc))
            return RequestError(500, "internal error while reading the study", "internal")

    def _by_study(self, study_uid: str, model) -> PreparedExam:
        from serving.pipeline import prepare

        views = self.catalog.views(study_uid)
        if views is None:
            raise RequestError(404, "unknown study: no such StudyUID in the filepaths table", "unknown_study")
        return prepare(study_uid, views, model, source="study_uid", opener=self.store.local_path)

    def _upload(self, form: Any, model) -> PreparedExam:
        from serving.pipeline import prepare
        from serving.uploads import read_upload

        files = [upload.file.read() for upload in form.getlist("files")]
        with tempfile.TemporaryDirectory(prefix="tomosight-upload-") as tmp:
            study = read_upload(files, Path(tmp))
            return prepare(study.study_uid, {v: str(p) for v, p in study.paths.items()}, model, source="upload")

    def batch(self, inputs: list) -> list:
        return list(inputs)

    def predict(self, batch: Any) -> Any:
        """Score, explain and triage the valid exams of the batch; errors pass through in place."""
        from serving.pipeline import PreparedExam, score

        items = batch if isinstance(batch, list) else [batch]
        exams = [item for item in items if isinstance(item, PreparedExam)]
        scores = iter(score(exams)) if exams else iter(())
        outputs = [self._answer(item, next(scores)) if isinstance(item, PreparedExam) else item for item in items]
        return outputs if isinstance(batch, list) else outputs[0]

    def _answer(self, exam: PreparedExam, scores: Any) -> dict[str, Any] | RequestError:
        from serving.explain import explain

        model = exam.model
        cams_uri, rois = None, []
        if self.settings.explain:
            try:
                found = explain(exam, scores, self.store)
                cams_uri, rois = found.cams_uri, found.rois
            except Exception as exc:
                log.error("explaining a prediction failed: %s", where(exc))
                return RequestError(500, "internal error while explaining the prediction", "internal")
        triage = model.triage
        decision = triage.decide(scores.prob_malignant)
        return {
            "study_uid": exam.study_uid, "source": exam.source, "prob_malignant": scores.prob_malignant,
            "view_scores": scores.view_scores, "rois": rois, "cams_uri": cams_uri,
            "triage": {"decision": decision, "low": triage.low, "high": triage.high, "source": triage.source},
            "model_name": model.name, "model_version": model.version, "mlflow_run_id": model.run_id,
            "preprocess_fingerprint": model.preprocess.fingerprint(),
        }  # fmt: skip

    def unbatch(self, output: list) -> list:
        return list(output)

    def encode_response(self, output):  # no return annotation: it would become the route's response model
        """The prediction as JSON, or this request's own error response."""
        if isinstance(output, RequestError):
            model = self.watcher.current
            return JSONResponse({**output.body(), "model_version": model.version if model else None}, status_code=output.status)
        return output
