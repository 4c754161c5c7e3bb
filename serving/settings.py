"""Settings of the clinician endpoint: where the home's data live, the server, batching, the model, limits.

``ServeSettings.from_env(env, **overrides)`` reads the deployment profile (``TOMOSIGHT_HOME``,
``TOMOSIGHT_STORE_URI``, ``MLFLOW_TRACKING_URI``, ... via :func:`dbt_assets.settings.load_settings`)
and ``TOMOSIGHT_SERVE_<FIELD>`` variables; keyword overrides (the command line) win.  Every value
is validated when built: the accelerator is explicit (``cpu`` or ``cuda``, never ``auto``), the
payload limit is an integer number of bytes, and the unauthenticated development mode refuses any
host but 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCELERATORS = ("cpu", "cuda")
HOSTS = ("127.0.0.1", "0.0.0.0", "::")
LATEST = "latest"
ENV_PREFIX = "TOMOSIGHT_SERVE_"
_ALIAS = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class ServeSettingsError(ValueError):
    """A missing or invalid serving setting."""


@dataclass(frozen=True)
class ServeSettings:
    """Everything ``tomosight serve`` needs; picklable (it travels to the inference workers)."""

    home: Path
    store_uri: str
    mlflow_tracking_uri: str
    s3_endpoint_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1  # inference worker processes per device
    devices: int = 1  # GPUs used when accelerator == "cuda"
    accelerator: str = "cpu"
    max_batch_size: int = 4
    batch_timeout_s: float = 0.05
    request_timeout_s: float = 30.0  # time a request may wait in the queue before a 504
    model_name: str = "tomosight-dbt"
    model_alias: str = "champion"  # an MLflow alias, or "latest" for the highest version
    reload_interval_s: float = 30.0
    max_payload_bytes: int = 1 << 30
    max_upload_files: int = 16
    explain: bool = True  # Grad-CAM overlays and ROIs in every response
    audit_log: Path | None = None  # also append audit lines to this file
    insecure_no_auth: bool = False  # development only; 127.0.0.1 only

    def __post_init__(self) -> None:
        for name in ("port", "workers", "devices", "max_batch_size", "max_payload_bytes", "max_upload_files"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ServeSettingsError(f"{name} must be a positive integer, got {value!r}")
        if not 1024 <= self.port <= 65535:
            raise ServeSettingsError(f"port must be from 1024 to 65535, got {self.port}")
        for name in ("batch_timeout_s", "request_timeout_s", "reload_interval_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ServeSettingsError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        if self.request_timeout_s <= self.batch_timeout_s or self.reload_interval_s == 0:
            raise ServeSettingsError("request_timeout_s must exceed batch_timeout_s, and reload_interval_s must be > 0")
        if self.accelerator not in ACCELERATORS:
            raise ServeSettingsError(f"accelerator must be one of {ACCELERATORS} (explicit, no 'auto'), got {self.accelerator!r}")
        if self.host not in HOSTS:
            raise ServeSettingsError(f"host must be one of {HOSTS}, got {self.host!r}")
        if not _ALIAS.match(self.model_alias) or not _MODEL_NAME.match(self.model_name):
            raise ServeSettingsError(f"model_alias must be an MLflow alias or {LATEST!r}; model_name letters, digits, . _ -")
        if self.insecure_no_auth and self.host != "127.0.0.1":
            raise ServeSettingsError("--insecure-no-auth serves without authentication and binds 127.0.0.1 only")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ServeSettings:
        """Settings from the deployment profile and ``TOMOSIGHT_SERVE_*`` variables; ``overrides`` (not None) win."""
        from dbt_assets.settings import load_settings

        env = os.environ if env is None else env
        profile = load_settings(env)
        values: dict[str, Any] = {
            "home": profile.home,
            "store_uri": profile.store_uri,
            "mlflow_tracking_uri": profile.mlflow_tracking_uri,
            "s3_endpoint_url": profile.s3_endpoint_url,
        }
        for field in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw not in (None, "") and field.name not in values:
                values[field.name] = _parse(field.name, raw, field.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ServeSettingsError(f"unknown serving settings {unknown}")
        return cls(**values)


def _parse(name: str, raw: str, kind: str) -> Any:
    """One ``TOMOSIGHT_SERVE_*`` value converted to its field's type."""
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if kind == "Path | None":
            return Path(raw)
    except ValueError:
        raise ServeSettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from None
    return raw
