"""Suite-wide isolation between test modules (pytest-xdist runs many modules in one process)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# ``mlflow.set_tracking_uri``/``set_registry_uri``/``set_experiment`` export these; a module that
# configured MLflow must not point the next module's `load_settings()` at its database.
MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


@pytest.fixture(autouse=True, scope="module")
def isolated_mlflow_environment() -> Iterator[None]:
    """Each test module starts without the MLflow variables earlier modules exported, and leaves none."""
    saved = {name: os.environ.pop(name, None) for name in MLFLOW_ENV}
    yield
    for name, value in saved.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value
