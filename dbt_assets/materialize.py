"""Materialize the whole asset graph in process, in dependency order, for every study date.

What ``make demo`` and ``tomosight materialize`` run; the Dagster UI shows the same
runs afterwards because they are recorded in the home folder's Dagster instance.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from tqdm import tqdm

from dbt_assets.definitions import build_definitions
from dbt_assets.ingestion import read_inventory, scan_source
from dbt_assets.settings import Settings
from resources.object_store import ObjectStore


def instance_for_home(home: Path) -> dg.DagsterInstance:
    """The persistent Dagster instance under ``<home>/dagster`` (SQLite storage, local profile)."""
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dg.DagsterInstance.get()


@dataclass
class GraphRun:
    """What one end-to-end materialization did."""

    partitions: list[str] = field(default_factory=list)
    failed_steps: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.failed_steps


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""Run config that keeps the terminal to warnings; the UI keeps every event."""


def _record(result: dg.ExecuteInProcessResult, label: str, run: GraphRun) -> None:
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            run.failed_steps.append(f"{label}: {event.step_key}")
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            run.failed_checks.append(f"{label}: {evaluation.asset_check_key.to_user_string()}")


def materialize_graph(
    settings: Settings,
    *,
    partitions: Sequence[str] | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    echo: Callable[[str], None] = print,
) -> GraphRun:
    """Scan the source, then run per-study, training, scoring and report jobs in order.

    ``partitions`` (or the range ``date_from``..``date_to``, inclusive ISO dates) limits the
    study dates backfilled; by default every date the source has studies for.
    """
    defs = build_definitions(settings)
    resources = defs.resources
    instance = instance_for_home(settings.home)
    store, source, pseudonymizer = resources["store"], resources["dicom_source"], resources["pseudonymizer"]
    added = scan_source(source, store, pseudonymizer, dataset_root=getattr(source, "root", None))
    echo(f"source {settings.source_uri}: {len(added)} new item(s)")
    keys = sorted(partitions or set(read_inventory(store)["partition"].to_list()))
    keys = [k for k in keys if (date_from is None or k >= date_from) and (date_to is None or k <= date_to)]
    run = GraphRun(partitions=keys)
    if not run.partitions:
        echo("nothing to ingest")
        return run

    def per_partition(job_name: str) -> None:
        job = defs.resolve_job_def(job_name)
        for key in tqdm(run.partitions, desc=job_name, unit="day"):
            _record(job.execute_in_process(partition_key=key, instance=instance, run_config=QUIET, raise_on_error=False), f"{job_name}[{key}]", run)

    per_partition("per_study_job")
    for job_name in ("training_job",):
        _record(defs.resolve_job_def(job_name).execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False), job_name, run)
    if run.success:
        per_partition("scoring_job")
        _record(defs.resolve_job_def("reports_job").execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False), "reports_job", run)
    return run


def report_summary(settings: Settings) -> dict[str, object]:
    """The evaluation and FROC reports written by the last run (empty when absent)."""
    store = ObjectStore(base_uri=settings.store_uri, endpoint_url=settings.s3_endpoint_url)
    summary: dict[str, object] = {}
    for name in ("evaluation", "froc"):
        key = f"reports/{name}.json"
        if store.exists(key):
            summary[name] = json.loads(store.get_bytes(key))
    return summary
