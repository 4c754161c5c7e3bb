"""A tiny home folder for the serving tests, built once per test process through the asset graph.

Synthetic cohort (4 studies of 2 patients, 64 x 52 pixels, 4-5 frames) -> ingestion and
preprocessing (the per-study assets) -> a ``dbt_tiny`` classifier registered as champion with the
preprocessing tags the ``model`` asset records -> batch ``predictions`` / ``exam_predictions``
(the ``score`` asset).  Training is left out: the serving tests need a registered version and
its batch scores, not a good model, so the classifier is random with a wide head (studies then
score visibly differently).  Tests that change the registry use their own home.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl

PREPARE = ["filepaths", "quarantine", "exam_labels", "preprocessed"]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
REGISTERED_MODEL = "tomosight-dbt"

_built: dict[str, ServingHome] = {}


@dataclass(frozen=True)
class ServingHome:
    """What the tests need to know about the built home."""

    home: Path
    dataset: Path
    env: dict[str, str]

    def table(self, name: str) -> pl.DataFrame:
        """All partitions of an asset table, read from the local store."""
        files = sorted((self.home / "store" / "tables" / name).glob("*.parquet"))
        return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed") if files else pl.DataFrame()

    def complete_studies(self) -> list[str]:
        """Studies with all four screening views, sorted."""
        views = self.table("filepaths").group_by("StudyUID").agg(pl.col("View").str.slice(0, 4).unique().alias("v"))
        return sorted(views.filter(pl.col("v").list.len() == 4)["StudyUID"].to_list())


def _run(job, **kwargs) -> None:
    assert job.execute_in_process(run_config=QUIET, raise_on_error=True, **kwargs).success


def _register_champion(resources: dict, instance, preprocessed: pl.DataFrame) -> str:
    """Log a random dbt_tiny for the preprocessed geometry and make it the champion, tagged like the model asset does."""
    import torch

    from dbt_assets.registry_tags import preprocess_tags
    from ml.models import create_model
    from resources.model_registry import Validation, gate_challenger, mark_challenger
    from resources.pyfunc_model import log_classifier

    height, width = preprocessed.select("height", "width").unique().row(0)
    torch.manual_seed(0)
    net = create_model("dbt_tiny", input_size=(height, width), slice_strategy="mip").eval()
    with torch.no_grad():
        torch.nn.init.normal_(net.head.view_head.weight, std=2.0)
    mlflow = resources["mlflow"]
    with mlflow.start_run(run_name="serving-tests"):
        version = str(log_classifier(net, temperature=1.25, registered_model_name=REGISTERED_MODEL).registered_model_version)
    client = mlflow.client()
    for key, value in preprocess_tags(instance, preprocessed).items():
        client.set_model_version_tag(REGISTERED_MODEL, version, key, value)
    mark_challenger(client, REGISTERED_MODEL, version, Validation(0.5, 0.4, 0.6))
    assert gate_challenger(client, REGISTERED_MODEL, version).promoted
    return version


def build_serving_home(base: Path) -> ServingHome:
    """Build (once per process and ``base``) the home; later calls return the same one."""
    if str(base) in _built:
        return _built[str(base)]
    import dagster as dg

    from dbt_assets.definitions import build_definitions
    from dbt_assets.ingestion import read_inventory, scan_source
    from dbt_assets.materialize import instance_for_home
    from dbt_assets.settings import load_settings
    from ml.synth import CohortConfig, generate_cohort
    from resources.compute import ComputeResource

    home, dataset = base / "home", base / "dataset"
    cohort = CohortConfig(studies=4, seed=23, rows=64, cols=52, slices=4, slices_max=5, cancer_fraction=0.5,
                          benign_fraction=0.0, days=1)  # 2 patients: 2 studies with four views, 2 with two  # fmt: skip
    generate_cohort(dataset, cohort, workers=1, overwrite=True)
    env = {"TOMOSIGHT_HOME": str(home), "TOMOSIGHT_SOURCE_URI": str(dataset)}
    settings = load_settings(env)
    saved = os.environ.get("DAGSTER_HOME")
    try:
        defs = build_definitions(settings)
        instance = instance_for_home(home)
        resources = defs.resources
        scan_source(resources["dicom_source"], resources["store"], resources["pseudonymizer"], dataset_root=dataset)
        prepare = dg.Definitions(  # the per-study assets without a process pool (tiny volumes)
            assets=list(defs.assets), resources={**resources, "compute": ComputeResource(workers=1)},
            jobs=[dg.define_asset_job("serving_prepare", dg.AssetSelection.assets(*PREPARE))],
        ).resolve_job_def("serving_prepare")  # fmt: skip
        partitions = sorted(set(read_inventory(resources["store"])["partition"].to_list()))
        for key in partitions:
            _run(prepare, partition_key=key, instance=instance)
        built = ServingHome(home=home, dataset=dataset, env=env)
        _register_champion(resources, instance, built.table("preprocessed"))
        for key in partitions:
            _run(defs.resolve_job_def("scoring_job"), partition_key=key, instance=instance)
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = saved
    _built[str(base)] = built
    return built
