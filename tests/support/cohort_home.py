"""A home folder with 8 synthetic studies taken through the per-study assets and ``splits``.

Shared by the tests of the jobs that train from those tables (cross-validation, HPO).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest


@contextmanager
def materialized_home(home: Path, assets: tuple[str, ...], run_config: dict[str, Any] | None = None) -> Iterator[tuple]:
    """``(settings, defs, instance)`` of ``home`` after ``assets`` ran for every partition, then ``splits``.

    ``DAGSTER_HOME`` points into ``home`` until the context exits.
    """
    from dbt_assets.definitions import build_definitions
    from dbt_assets.ingestion import read_inventory, scan_source
    from dbt_assets.materialize import QUIET, instance_for_home
    from dbt_assets.settings import load_settings
    from ml.synth import CohortConfig, generate_cohort

    dataset = home / "dataset"
    generate_cohort(dataset, CohortConfig(studies=8, seed=11, rows=64, cols=52, slices=6), workers=1, overwrite=True)
    settings = load_settings({"TOMOSIGHT_HOME": str(home), "TOMOSIGHT_SOURCE_URI": str(dataset)})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(home / "dagster"))
        defs = build_definitions(settings)
        instance = instance_for_home(home)
        resources = defs.resources
        scan_source(resources["dicom_source"], resources["store"], resources["pseudonymizer"], dataset_root=dataset)
        job = dg.define_asset_job("per_study_only", dg.AssetSelection.assets(*assets)).resolve(asset_graph=defs.resolve_asset_graph())
        for key in sorted(set(read_inventory(resources["store"])["partition"].to_list())):
            assert job.execute_in_process(partition_key=key, instance=instance, run_config=run_config or QUIET).success
        splits = defs.resolve_implicit_global_asset_job_def()
        assert splits.execute_in_process(asset_selection=[dg.AssetKey("splits")], instance=instance, run_config=QUIET).success
        yield settings, defs, instance
