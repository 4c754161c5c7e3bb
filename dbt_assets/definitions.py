"""The Dagster code location: assets, checks, resources, jobs, sensor and executor.

``defs`` is built from the deployment settings (``dbt_assets.settings``): the local
profile keeps everything under ``TOMOSIGHT_HOME`` and runs in process; the production
profile uses S3, the MLflow server and one Kubernetes pod per step.
"""

from __future__ import annotations

import os

import dagster as dg

from dbt_assets.assets import annotations, cross_validation, ingest, model, preprocessing, reports, warehouse
from dbt_assets.hpo import HPO_IO_MANAGER, JsonIOManager, OptunaStorage
from dbt_assets.jobs import build_jobs
from dbt_assets.sensors import new_studies_sensor
from dbt_assets.settings import DEMO_PSEUDONYM_KEY, Settings, load_settings
from resources.annotations import AnnotationsResource
from resources.compute import ComputeResource
from resources.dicom_source import dicom_source_from_uri
from resources.mlflow_resource import MlflowResource
from resources.object_store import ObjectStore
from resources.parquet_io import ParquetIOManager
from resources.pseudonymizer import Pseudonymizer
from resources.warehouse import Warehouse

ASSET_MODULES = (ingest, annotations, preprocessing, model, reports, cross_validation, warehouse)


def secret_value(settings: Settings, name: str, default: str | None = None) -> object:
    """A secret from the environment: an ``EnvVar`` in production (never shown in the UI), the value locally."""
    if settings.production:
        return dg.EnvVar(name)
    return os.environ.get(name, default)


def source_options(settings: Settings) -> dict[str, object]:
    """Options of the DICOM source URI: S3 endpoint, DICOMweb credentials."""
    scheme = settings.source_uri.split("://", 1)[0] if "://" in settings.source_uri else "file"
    if scheme == "s3" and settings.s3_endpoint_url:
        return {"endpoint_url": settings.s3_endpoint_url}
    if scheme.startswith("dicomweb") and os.environ.get("TOMOSIGHT_SOURCE_USERNAME"):
        return {
            "username": os.environ["TOMOSIGHT_SOURCE_USERNAME"],
            "password": secret_value(settings, "TOMOSIGHT_SOURCE_PASSWORD"),
        }
    return {}


def build_resources(settings: Settings) -> dict[str, object]:
    """Resources of a profile; secrets come from the environment, never from code."""
    store = ObjectStore(base_uri=settings.store_uri, endpoint_url=settings.s3_endpoint_url)
    source = dicom_source_from_uri(settings.source_uri, **source_options(settings))
    secret = secret_value(settings, settings.pseudonym_key_env, DEMO_PSEUDONYM_KEY)
    artifacts = None if settings.production else str(settings.home / "mlartifacts")
    return {
        "store": store,
        "io_manager": ParquetIOManager(store=store),
        "dicom_source": source,
        "pseudonymizer": Pseudonymizer(secret=secret),
        "annotations": AnnotationsResource(dataset_dir=getattr(source, "root", None)),
        "mlflow": MlflowResource(tracking_uri=settings.mlflow_tracking_uri, artifact_location=artifacts),
        "warehouse_db": Warehouse(path=str(settings.warehouse_path)),
        "compute": ComputeResource(),
        HPO_IO_MANAGER: JsonIOManager(store=store),
        "hpo_storage": OptunaStorage(url=secret_value(settings, "TOMOSIGHT_OPTUNA_STORAGE", f"sqlite:///{settings.home / 'optuna.db'}")),
    }


def build_executor(settings: Settings) -> dg.ExecutorDefinition:
    """In process on a laptop; one pod per step (GPU op tags honoured) in production."""
    if settings.production:
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return dg.in_process_executor


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """The whole code location for ``settings`` (default: from the environment)."""
    settings = settings or load_settings()
    loaded = dg.load_assets_from_modules(list(ASSET_MODULES))
    checks = dg.load_asset_checks_from_modules(list(ASSET_MODULES))
    return dg.Definitions(
        assets=loaded,
        asset_checks=checks,
        jobs=build_jobs(),
        sensors=[new_studies_sensor],
        resources=build_resources(settings),
        executor=build_executor(settings),
    )


defs = build_definitions()
