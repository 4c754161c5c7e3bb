"""The registered model a worker serves: resolve the alias, load the version, swap on promotion.

``ModelSource`` resolves ``models:/<name>@<alias>`` (or the highest version for ``latest``) in the
MLflow registry and loads it with :func:`resources.pyfunc_model.load_classifier`, the loader of
the batch ``score`` asset, together with what the version's tags say about it: the preprocessing
its training tensors were made with and the triage thresholds of its evaluation report.
``ModelWatcher`` keeps the loaded version in a worker, re-resolves the alias every
``interval_s`` (or when the HTTP side asks, see :class:`serving.status.StatusBoard`) in a
daemon thread, and swaps in a newly promoted version without a restart; requests in flight keep
the version they started with.

When a version has no ``preprocess_config`` tag (registered before the tag existed, or by
another path) the preprocessing is derived from the model's own config (strategy, input size,
slices) with the ``preprocessed`` asset's defaults for the rest (:data:`FALLBACK_PREPROCESS`);
if the version names a fingerprint that this derivation does not reproduce, it is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from ml.preprocess import PreprocessConfig, PreprocessConfigError
from resources.model_registry import (
    NO_TRIAGE,
    PREPROCESS_CONFIG_TAG,
    PREPROCESS_FINGERPRINT_TAG,
    TriageThresholds,
)
from serving.settings import LATEST
from serving.status import READY, StatusBoard, WorkerStatus

log = logging.getLogger(__name__)

REGISTRY_FACTS = ("val_auc", "val_auc_ci_low", "val_auc_ci_high", "promotion_decision",
                  "triage_low", "triage_high", "triage_source")
"""Version tags a worker reports with what the alias points at (``GET /v1/model``)."""

FALLBACK_PREPROCESS: dict[str, Any] = {"n_slices": 8, "slab": 5, "breast_mask": False, "dtype": "float16"}
"""The ``preprocessed`` asset's defaults for what a model config does not say."""


NOT_LOADED_RETRY_S = 5.0
"""How soon a worker that serves nothing yet looks again (the alias may be set any moment)."""


class ModelLoadError(RuntimeError):
    """A registered version cannot be served (unreadable, or its preprocessing cannot be reproduced)."""


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, ready to score: the module, its temperature, preprocessing and triage."""

    name: str
    version: str
    alias: str
    run_id: str | None
    net: Any  # ml.models.DBTClassifier, eval mode, on the worker's device
    temperature: float
    preprocess: PreprocessConfig
    triage: TriageThresholds
    loaded_at: float

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts about the version (no weights)."""
        return {
            "name": self.name, "version": self.version, "alias": self.alias, "run_id": self.run_id,
            "temperature": self.temperature, "preprocess": self.preprocess.to_dict(),
            "preprocess_fingerprint": self.preprocess.fingerprint(), "triage": dataclasses.asdict(self.triage),
            "loaded_at": self.loaded_at,
        }  # fmt: skip


def preprocess_for(model_config: Any, tags: dict[str, str]) -> PreprocessConfig:
    """The preprocessing a version was trained with: its tag, else derived from the model config."""
    try:
        if PREPROCESS_CONFIG_TAG in tags:
            config = PreprocessConfig.from_dict(json.loads(tags[PREPROCESS_CONFIG_TAG]))
        else:
            height, width = model_config.input_size
            strategy = model_config.slice_strategy
            n_slices = model_config.n_slices if strategy == "sampled" else FALLBACK_PREPROCESS["n_slices"]
            fallback = {k: v for k, v in FALLBACK_PREPROCESS.items() if k != "n_slices"}
            config = PreprocessConfig(strategy=strategy, height=height, width=width, n_slices=n_slices, **fallback)
    except (PreprocessConfigError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"cannot read the version's preprocessing: {exc}") from None
    expected = tags.get(PREPROCESS_FINGERPRINT_TAG)
    if expected and config.fingerprint() != expected:
        raise ModelLoadError(
            f"the version was trained on preprocessing {expected}, but {config.fingerprint()} is all that can be "
            f"reproduced here: register it with its `{PREPROCESS_CONFIG_TAG}` tag"
        )
    channels = config.channels
    geometry = (config.strategy, (config.height, config.width))
    if geometry != (model_config.slice_strategy, tuple(model_config.input_size)) or (
        config.strategy == "sampled" and channels != model_config.n_slices
    ):
        raise ModelLoadError(f"preprocessing {geometry} with {channels} channel(s) does not fit the model's input")
    return config


class ModelSource:
    """Resolves and loads versions of one registered model from one MLflow tracking server."""

    def __init__(self, tracking_uri: str, name: str, alias: str, device: str = "cpu") -> None:
        self.tracking_uri, self.name, self.alias, self.device = tracking_uri, name, alias, device

    def client(self):
        """An MLflow client bound to the tracking server (and the global URIs the loader uses)."""
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def resolve(self) -> tuple[str, dict[str, str], str | None] | None:
        """``(version, tags, run_id)`` the alias points at now; None when there is no such version."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        try:
            if self.alias == LATEST:
                found = client.search_model_versions(f"name = '{self.name}'", order_by=["version_number DESC"], max_results=1)
                if not found:
                    return None
                version = found[0]
            else:
                version = client.get_model_version_by_alias(self.name, self.alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return str(version.version), dict(version.tags), version.run_id

    def load(self, version: str, tags: dict[str, str], run_id: str | None) -> LoadedModel:
        """Load ``version`` (by number, not alias, so a promotion mid-load cannot mix versions)."""
        from resources.pyfunc_model import load_classifier

        self.client()
        try:
            net, temperature = load_classifier(f"models:/{self.name}/{version}")
        except Exception as exc:  # MLflow, unpickling or state-dict errors: this version cannot be served
            raise ModelLoadError(f"cannot load {self.name} v{version}: {type(exc).__name__}: {exc}") from exc
        preprocess = preprocess_for(net.config, tags)
        net = net.to(self.device).eval()
        triage = TriageThresholds.from_tags(tags) or NO_TRIAGE
        return LoadedModel(self.name, version, self.alias, run_id, net, float(temperature), preprocess, triage, time.time())


class ModelWatcher:
    """The version a worker serves now; re-resolved every ``interval_s`` in a daemon thread."""

    def __init__(self, source: ModelSource, interval_s: float, board: StatusBoard | None = None) -> None:
        self.source, self.interval_s, self.board = source, interval_s, board
        self.current: LoadedModel | None = None
        self._state, self._detail = "loading", ""
        self._registry: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """Re-resolve the alias once; load and swap a new version. True when the served version changed."""
        with self._lock:
            changed = False
            try:
                found = self.source.resolve()
                self._registry = {"version": None, "checked_at": time.time()} if found is None else {
                    "version": found[0], "run_id": found[2], "checked_at": time.time(),
                    "tags": {k: v for k, v in found[1].items() if k in REGISTRY_FACTS},
                }  # fmt: skip
                if found is None:
                    if self.current is None:
                        self._state, self._detail = "no_model", f"no version of {self.source.name} under {self.source.alias!r}"
                else:
                    version, tags, run_id = found
                    if self.current is None or self.current.version != version:
                        self.current = self.source.load(version, tags, run_id)
                        changed = True
                        log.info("serving %s v%s (%s)", self.source.name, version, self.source.alias)
                    else:
                        triage = TriageThresholds.from_tags(tags) or NO_TRIAGE
                        if triage != self.current.triage:  # the evaluation report ran after the load
                            self.current = dataclasses.replace(self.current, triage=triage)
                    self._state, self._detail = READY, ""
            except ModelLoadError as exc:
                log.error("%s", exc)
                self._state, self._detail = ("error" if self.current is None else READY), str(exc)
            except Exception as exc:  # registry unreachable: keep serving what is loaded
                log.warning("model registry check failed: %s: %s", type(exc).__name__, exc)
                self._registry = {**self._registry, "error": f"registry unreachable: {type(exc).__name__}"}
                if self.current is None:
                    self._state, self._detail = "error", f"registry unreachable: {type(exc).__name__}"
            self.publish()
            return changed

    def publish(self) -> None:
        """Tell the HTTP side what this worker serves."""
        if self.board is None:
            return
        model = self.current
        self.board.publish(WorkerStatus(
            pid=os.getpid(), device=self.source.device, state=self._state, model_name=self.source.name,
            alias=self.source.alias, version=model.version if model else None,
            loaded_at=model.loaded_at if model else None, detail=self._detail,
            triage=dataclasses.asdict(model.triage) if model else {},
            preprocess=model.preprocess.to_dict() if model else {}, registry=self._registry,
        ))  # fmt: skip

    def start(self) -> None:
        """Load in a daemon thread and keep checking there; the worker reports "loading" until then."""
        self.publish()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        seen = self.board.reload_requests() if self.board else 0
        self.check()
        last = time.monotonic()
        while not self._stop.wait(min(0.25, self.interval_s)):
            requested = self.board.reload_requests() if self.board else seen
            period = self.interval_s if self.current is not None else min(self.interval_s, NOT_LOADED_RETRY_S)
            if requested != seen or time.monotonic() - last >= period:
                seen, last = requested, time.monotonic()
                self.check()
