"""Deployment profile: embedded defaults on a laptop, production by configuration only.

``TOMOSIGHT_PROFILE=local`` (default) keeps everything under ``TOMOSIGHT_HOME``: the
object store folder, ``warehouse.duckdb``, ``mlflow.db`` and the in-process executor.
``TOMOSIGHT_PROFILE=production`` reads S3, the MLflow tracking server and the
Kubernetes executor from the environment; the Dagster instance (Postgres) is set in
``$DAGSTER_HOME/dagster.yaml`` (see deployment/dagster/).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROFILES = ("local", "production")
DEMO_PSEUDONYM_KEY = "tomosight-demo-key-not-for-clinical-data"


class SettingsError(ValueError):
    """A missing or invalid deployment setting."""


@dataclass(frozen=True)
class Settings:
    """Everything that differs between a laptop and a cluster."""

    profile: str
    home: Path
    store_uri: str
    s3_endpoint_url: str | None
    warehouse_path: Path
    mlflow_tracking_uri: str
    source_uri: str
    pseudonym_key_env: str

    @property
    def production(self) -> bool:
        return self.profile == "production"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the deployment settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    profile = env.get("TOMOSIGHT_PROFILE", "local")
    if profile not in PROFILES:
        raise SettingsError(f"TOMOSIGHT_PROFILE={profile!r}; expected one of {PROFILES}")
    home = Path(env.get("TOMOSIGHT_HOME", "demo_home")).resolve()
    if profile == "production":
        missing = [k for k in ("TOMOSIGHT_STORE_URI", "MLFLOW_TRACKING_URI", "TOMOSIGHT_SOURCE_URI") if not env.get(k)]
        if missing:
            raise SettingsError(f"production profile needs {missing}")
        store_uri = env["TOMOSIGHT_STORE_URI"]
        tracking = env["MLFLOW_TRACKING_URI"]
    else:
        store_uri = env.get("TOMOSIGHT_STORE_URI", str(home / "store"))
        tracking = env.get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    return Settings(
        profile=profile,
        home=home,
        store_uri=store_uri,
        s3_endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
        warehouse_path=Path(env.get("TOMOSIGHT_WAREHOUSE", str(home / "warehouse.duckdb"))),
        mlflow_tracking_uri=tracking,
        source_uri=env.get("TOMOSIGHT_SOURCE_URI") or env.get("TOMOSIGHT_DATASET") or str(home / "landing"),
        pseudonym_key_env="TOMOSIGHT_PSEUDONYM_KEY",
    )


@lru_cache(maxsize=1)
def git_sha() -> str:
    """The code version: ``TOMOSIGHT_GIT_SHA`` (set in images) or ``git rev-parse HEAD``."""
    if sha := os.environ.get("TOMOSIGHT_GIT_SHA"):
        return sha
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent, timeout=5,
        )  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
