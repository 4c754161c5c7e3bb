"""The production profile against real services on loopback: Postgres, MLflow on Postgres, S3.

* the Dagster instance of ``deployment/dagster/dagster.yaml`` keeps runs and materialisations
  in a throwaway Postgres database;
* MLflow with a Postgres backend registers the trained model (artifacts in a tmp folder);
* with ``TOMOSIGHT_STORE_URI=s3://...`` (moto) tables, raw DICOM and the warehouse mirror
  live in the bucket; the production settings refuse to start without their variables and
  build a Kubernetes code location.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pydicom
import pytest

from dbt_assets.assets.model import REGISTERED_MODEL
from dbt_assets.assets.warehouse import warehouse as warehouse_asset
from dbt_assets.definitions import build_definitions
from dbt_assets.ingestion import read_inventory, scan_source
from dbt_assets.materialize import QUIET
from dbt_assets.partitions import study_date
from dbt_assets.settings import SettingsError, git_sha, load_settings
from resources.pyfunc_model import load_classifier
from ml.synth import generate_cohort
from ml.synth.config import CohortConfig
from resources.object_store import ObjectStore
from resources.pseudonymizer import Pseudonymizer
from resources.sources_folder import FolderSource
from tests.support.postgres import (  # noqa: F401 (fixture)
    PgDatabase,
    database_exists,
    pg_database,
    query,
    require_server,
    throwaway_database,
)
from tests.support.s3 import s3_bucket, s3_client, s3_server  # noqa: F401 (fixtures)

INSTANCE_YAML = Path(__file__).resolve().parents[1] / "deployment" / "dagster" / "dagster.yaml"
PSEUDONYM_KEY = "production-profile-test-key"
PER_STUDY_ASSETS = {"filepaths", "quarantine", "exam_labels", "boxes", "preprocessed", "box_predictions"}
REQUIRED = ("TOMOSIGHT_STORE_URI", "MLFLOW_TRACKING_URI", "TOMOSIGHT_SOURCE_URI")


@dataclass(frozen=True)
class Cohort:
    """A tiny synthetic Duke-layout cohort and how many volumes land in each study date."""

    root: Path
    volumes: dict[str, int]

    @property
    def busiest(self) -> str:
        """The partition with the most volumes (the earliest of ties)."""
        return max(sorted(self.volumes), key=self.volumes.__getitem__)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    """Four studies; their partitions come from a scan with the tests' pseudonym key."""
    base = tmp_path_factory.mktemp("cohort")
    root = base / "cohort"
    config = CohortConfig(studies=4, seed=3, rows=64, cols=52, slices=6, cancer_fraction=0.5)
    generate_cohort(root, config)
    scratch = ObjectStore(base_uri=str(base / "scan-store"))
    pseudonymizer = Pseudonymizer(secret=PSEUDONYM_KEY)
    scan_source(FolderSource(root=str(root)), scratch, pseudonymizer, dataset_root=root)
    inventory = read_inventory(scratch).filter(pl.col("status") == "pending")
    return Cohort(root, dict(Counter(inventory["partition"].to_list())))


@pytest.fixture(autouse=True)
def pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both profiles read the key from the environment (production: at run time)."""
    monkeypatch.setenv("TOMOSIGHT_PSEUDONYM_KEY", PSEUDONYM_KEY)


def local_env(tmp_path: Path, cohort: Cohort, **extra: str) -> dict[str, str]:
    return {"TOMOSIGHT_HOME": str(tmp_path / "home"), "TOMOSIGHT_SOURCE_URI": str(cohort.root), **extra}


def production_env(tmp_path: Path, source: Path, store_uri: str, endpoint_url: str) -> dict[str, str]:
    return {
        "TOMOSIGHT_PROFILE": "production",
        "TOMOSIGHT_HOME": str(tmp_path / "home"),
        "TOMOSIGHT_SOURCE_URI": str(source),
        "TOMOSIGHT_STORE_URI": store_uri,
        "AWS_ENDPOINT_URL": endpoint_url,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'unused-mlflow.db'}",
    }


def run_per_study(
    defs: dg.Definitions, partition: str, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def("per_study_job").execute_in_process(
        partition_key=partition, instance=instance, run_config=QUIET
    )
    assert result.success, partition
    return result


def materialized(pg: PgDatabase, run_id: str) -> set[tuple[str, str]]:
    """(asset, partition) of the run's materialisation events, read from ``event_logs``."""
    rows = query(
        pg,
        "SELECT asset_key, partition FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
        [run_id, "ASSET_MATERIALIZATION"],
    )
    return {(dg.AssetKey.from_db_string(key).to_user_string(), partition) for key, partition in rows}


@dataclass(frozen=True)
class PostgresRun:
    """One per-study run recorded in the Dagster instance of ``deployment/dagster/dagster.yaml``."""

    database: PgDatabase
    dagster_home: Path
    partition: str
    run_id: str


@pytest.fixture(scope="module")
def postgres_run(cohort: Cohort, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresRun]:
    """Run ``per_study_job`` for the busiest study date on an instance in a fresh Postgres database."""
    require_server()
    tmp_path = tmp_path_factory.mktemp("postgres-run")
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(INSTANCE_YAML, dagster_home / "dagster.yaml")
    with throwaway_database() as database, pytest.MonkeyPatch.context() as patch:
        for name, value in database.dagster_env().items():  # empty password: trust auth
            patch.setenv(name, value)
        patch.setenv("TOMOSIGHT_PSEUDONYM_KEY", PSEUDONYM_KEY)
        defs = build_definitions(load_settings(local_env(tmp_path, cohort)))
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            result = run_per_study(defs, cohort.busiest, instance)
        yield PostgresRun(database, dagster_home, cohort.busiest, result.run_id)


def test_dagster_instance_keeps_runs_and_materializations_in_postgres(postgres_run: PostgresRun) -> None:
    pg, partition, run_id = postgres_run.database, postgres_run.partition, postgres_run.run_id
    with dg.DagsterInstance.from_config(str(postgres_run.dagster_home)) as instance:  # e.g. the webserver
        assert type(instance.run_storage).__module__.startswith("dagster_postgres")
        assert type(instance.event_log_storage).__module__.startswith("dagster_postgres")
        assert type(instance.schedule_storage).__module__.startswith("dagster_postgres")
        assert instance.get_ref().run_launcher_data.class_name == "K8sRunLauncher"
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        for asset in PER_STUDY_ASSETS:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {partition}, asset

    runs = query(pg, "SELECT run_id, pipeline_name, status FROM runs")
    assert runs == [(run_id, "per_study_job", "SUCCESS")]
    tags = dict(query(pg, "SELECT key, value FROM run_tags WHERE run_id = %s", [run_id]))
    assert tags["dagster/partition"] == partition
    assert materialized(pg, run_id) == {(asset, partition) for asset in PER_STUDY_ASSETS}
    checks = query(
        pg,
        "SELECT asset_key, check_name, partition, execution_status"
        " FROM asset_check_executions WHERE run_id = %s",
        [run_id],
    )
    # Every planned check of the partition was resolved (none left PLANNED or stored unpartitioned).
    assert {(part, status) for _, _, part, status in checks} == {(partition, "SUCCEEDED")}
    checked = {(dg.AssetKey.from_db_string(key).to_user_string(), name) for key, name, _, _ in checks}
    assert ("filepaths", "every_input_accounted_for") in checked
    assert {asset for asset, _ in checked} == PER_STUDY_ASSETS  # every per-study asset has its contract check


def test_throwaway_database_is_dropped_with_open_connections() -> None:
    import psycopg2

    require_server()
    with throwaway_database() as database:
        assert database_exists(database.name)
        lingering = psycopg2.connect(database.url.replace("+psycopg2", ""))  # like a pooled engine
    assert not database_exists(database.name)
    lingering.close()


def test_instance_yaml_needs_the_password_variable(
    pg_database: PgDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in pg_database.dagster_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DAGSTER_PG_PASSWORD")
    shutil.copy(INSTANCE_YAML, tmp_path / "dagster.yaml")
    with pytest.raises(dg.DagsterInvalidConfigError, match="DAGSTER_PG_PASSWORD"):
        dg.DagsterInstance.from_config(str(tmp_path))


@pytest.fixture
def mlflow_uri(pg_database: PgDatabase, monkeypatch: pytest.MonkeyPatch) -> str:
    """The tracking URI of a fresh Postgres database; MLflow's process-wide state is put back after.

    ``mlflow.set_tracking_uri``/``set_registry_uri``/``set_experiment`` keep module globals and
    also export ``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI`` and ``MLFLOW_EXPERIMENT_ID``.
    """
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    monkeypatch.setattr(fluent, "_active_experiment_id", fluent._active_experiment_id)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(name, pg_database.url)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "")  # records the old value for the teardown
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID")
    return pg_database.url


def test_mlflow_on_postgres_registers_the_model(
    pg_database: PgDatabase, mlflow_uri: str, cohort: Cohort, tmp_path: Path
) -> None:
    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    settings = load_settings(local_env(tmp_path, cohort, MLFLOW_TRACKING_URI=mlflow_uri))
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        for partition in sorted(cohort.volumes):
            run_per_study(defs, partition, instance)
        result = defs.resolve_job_def("training_job").execute_in_process(instance=instance, run_config=QUIET)
    assert result.success
    row = defs.resources["store"].read_parquet("tables/model/model.parquet").row(0, named=True)
    run_id = row["mlflow_run_id"]

    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    versions = client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    assert [(str(v.version), v.run_id) for v in versions] == [(row["model_version"], run_id)]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["git_sha"] == git_sha() != ""
    assert run.data.tags["dagster_run_id"] == result.run_id

    # The registry and the run live in Postgres, not in a SQLite fallback.
    assert query(pg_database, "SELECT name FROM registered_models") == [(REGISTERED_MODEL,)]
    versions_in_pg = query(pg_database, "SELECT version, run_id FROM model_versions")
    assert versions_in_pg == [(int(row["model_version"]), run_id)]
    tag_sql = "SELECT value FROM tags WHERE run_uuid = %s AND key = 'git_sha'"
    assert query(pg_database, tag_sql, [run_id]) == [(git_sha(),)]
    assert not (settings.home / "mlflow.db").exists()

    # Artifacts went to the resource's artifact_location and load back through the registry.
    artifacts = settings.home / "mlartifacts"
    assert list(artifacts.rglob("MLmodel"))
    classifier, temperature = load_classifier(row["model_uri"])
    assert temperature > 0 and hasattr(classifier, "forward_features")
    height, width = classifier.config.input_size
    out = mlflow.pyfunc.load_model(row["model_uri"]).predict(
        {"x": np.zeros((2, 4, classifier.config.n_slices, height, width), np.float32), "view_mask": np.ones((2, 4), bool)}
    )
    assert out["prob_malignant"].shape == (2,) and ((out["prob_malignant"] > 0) & (out["prob_malignant"] < 1)).all()


def bucket_keys(endpoint_url: str, bucket: str) -> list[str]:
    pages = s3_client(endpoint_url).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def test_s3_store_holds_tables_raw_dicom_and_feeds_the_warehouse(
    s3_server: str, s3_bucket: str, cohort: Cohort, tmp_path: Path
) -> None:
    store_uri = f"s3://{s3_bucket}/tomosight"
    settings = load_settings(production_env(tmp_path, cohort.root, store_uri, s3_server))
    defs = build_definitions(settings)
    partition = cohort.busiest
    with dg.instance_for_test() as instance:
        run_per_study(defs, partition, instance)

    keys = bucket_keys(s3_server, s3_bucket)
    table_key = f"tomosight/tables/filepaths/{partition}.parquet"
    assert table_key in keys
    client = s3_client(s3_server)
    direct = pl.read_parquet(io.BytesIO(client.get_object(Bucket=s3_bucket, Key=table_key)["Body"].read()))
    context = dg.build_input_context(
        asset_key=dg.AssetKey("filepaths"), partition_key=partition, asset_partitions_def=study_date
    )
    filepaths = defs.resources["io_manager"].load_input(context)
    assert filepaths.equals(direct)
    assert len(filepaths) == cohort.volumes[partition]

    # Raw DICOM: de-identified, content-addressed under raw/<sha[:2]>/<sha>.dcm in the bucket.
    raw_keys = [key for key in keys if key.startswith("tomosight/raw/")]
    bucket_prefix = f"s3://{s3_bucket}/"
    assert sorted(raw_keys) == sorted(uri.removeprefix(bucket_prefix) for uri in filepaths["dicom_uri"])
    for row in filepaths.iter_rows(named=True):
        key = row["dicom_uri"].removeprefix(bucket_prefix)
        assert key == f"tomosight/raw/{row['sha256'][:2]}/{row['sha256']}.dcm"
        body = client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == row["sha256"]
        assert pydicom.dcmread(io.BytesIO(body), stop_before_pixels=True).PatientID == row["PatientID"]
    assert not (settings.home / "store").exists()

    # The warehouse mirrors the bucket's Parquet locally and serves it through DuckDB views.
    resources = {"warehouse_db": defs.resources["warehouse_db"], "store": defs.resources["store"]}
    assert dg.materialize([warehouse_asset], resources=resources).success
    mirror = settings.home / "warehouse_mirror" / "tables" / "filepaths" / f"{partition}.parquet"
    assert pl.read_parquet(mirror).equals(filepaths)
    warehouse = defs.resources["warehouse_db"]
    assert warehouse.views()["filepaths"].files == [str(mirror)]
    assert warehouse.query("SELECT count(*) AS n FROM filepaths")["n"].to_list() == [len(filepaths)]


@pytest.mark.parametrize("missing", REQUIRED)
def test_production_profile_requires_its_variables(missing: str, tmp_path: Path) -> None:
    env = production_env(tmp_path, tmp_path / "landing", "s3://bucket/tomosight", "http://127.0.0.1:9")
    del env[missing]
    with pytest.raises(SettingsError, match=missing):
        load_settings(env)
    with pytest.raises(SettingsError, match="TOMOSIGHT_STORE_URI"):
        load_settings({"TOMOSIGHT_PROFILE": "production"})


def test_production_definitions_use_kubernetes_and_secret_from_env(tmp_path: Path) -> None:
    from dagster_k8s import k8s_job_executor

    env = production_env(tmp_path, tmp_path / "landing", "s3://bucket/tomosight", "http://127.0.0.1:9")
    defs = build_definitions(load_settings(env))
    for job in ("per_study_job", "scoring_job", "training_job", "reports_job"):
        assert defs.resolve_job_def(job).executor_def is k8s_job_executor
    secret = defs.resources["pseudonymizer"].secret
    assert isinstance(secret, dg.EnvVar)
    assert secret.env_var_name == "TOMOSIGHT_PSEUDONYM_KEY"
    store = defs.resources["store"]
    assert (store.base_uri, store.endpoint_url) == (env["TOMOSIGHT_STORE_URI"], env["AWS_ENDPOINT_URL"])
    mlflow = defs.resources["mlflow"]
    assert (mlflow.tracking_uri, mlflow.artifact_location) == (env["MLFLOW_TRACKING_URI"], None)

    local = build_definitions(load_settings({"TOMOSIGHT_HOME": str(tmp_path / "home")}))
    assert local.resolve_job_def("per_study_job").executor_def is dg.in_process_executor
    assert local.resources["pseudonymizer"].secret == PSEUDONYM_KEY
