"""The Dagster UI for real: ``dagster dev`` on a tiny home, a partition run launched through
its GraphQL API, and the asset graph page looked at in headless Chromium.

Needs Debian's ``chromium`` for the page test (skipped without it, failed when CI is set).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from dbt_assets.definitions import build_resources
from dbt_assets.ingestion import read_inventory, scan_source
from dbt_assets.settings import load_settings
from ml.synth import CohortConfig, generate_cohort
from tests.support.dagster_dev import LOCATION, REPOSITORY, DagsterDev, graphql, log_tail, running_dagster_dev

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
WINDOW = (1600, 1000)
PAGE = f"/locations/{LOCATION}/asset-groups/ingestion"
CHROMIUM_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 240.0
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}

LAUNCH = """
mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message } } }
"""
RUN_STATUS = """
query($runId: ID!) { runOrError(runId: $runId) {
    __typename ... on Run { status } ... on Error { message } } }
"""
RUN_FAILURES = """
query($runId: ID!) { logsForRun(runId: $runId) { __typename
    ... on EventConnection { events { __typename
        ... on ExecutionStepFailureEvent { stepKey error { message } } } } } }
"""
MATERIALIZATIONS = """
query($partition: String!) { assetOrError(assetKey: {path: ["filepaths"]}) { __typename
    ... on Asset { assetMaterializations(partitions: [$partition]) { partition runId } } } }
"""

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class UiHome:
    """A tiny platform home whose source has been scanned: settings and the busiest partition."""

    settings: dict[str, str]
    home: Path
    partition: str
    inventory: pl.DataFrame


@pytest.fixture(scope="module")
def ui_home(tmp_path_factory: pytest.TempPathFactory) -> UiHome:
    """Four synthetic studies, scanned so the inventory knows their study-date partitions."""
    root = tmp_path_factory.mktemp("ui_home")
    cohort, home = root / "cohort", root / "home"
    generate_cohort(cohort, CohortConfig(studies=4, seed=11, rows=64, cols=52, slices=6), workers=1)
    settings = {"TOMOSIGHT_PROFILE": "local", "TOMOSIGHT_HOME": str(home), "TOMOSIGHT_SOURCE_URI": str(cohort)}
    resources = build_resources(load_settings(settings))
    source, store = resources["dicom_source"], resources["store"]
    scan_source(source, store, resources["pseudonymizer"], dataset_root=getattr(source, "root", None))
    inventory = read_inventory(store).filter(pl.col("status") == "pending")
    counts = inventory.group_by("partition").len().sort(["len", "partition"], descending=[True, False])
    assert len(counts), "the scan found no study to ingest"
    return UiHome(settings, home, counts["partition"][0], inventory)


@pytest.fixture(scope="module")
def dagster_ui(ui_home: UiHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    """``dagster dev`` over the tiny home, its code location loaded."""
    with running_dagster_dev(ui_home.settings, ui_home.home / "dagster", tmp_path_factory.mktemp("dagster_dev")) as server:
        yield server


def require_chromium() -> Path:
    """Debian's Chromium; skip without it (fail when CI is set)."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = f"{CHROMIUM} is not installed (Debian package chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; it is required in CI")
    pytest.skip(message)


def run_chromium(url: str, *args: str, timeout_s: float = CHROMIUM_TIMEOUT_S) -> str:
    """Run headless Chromium on ``url`` with a fresh profile; return its stdout.

    It runs in its own process group, which is killed afterwards, so no renderer or
    zygote outlives the call.
    """
    binary = require_chromium()
    with tempfile.TemporaryDirectory(prefix="tomosight-chromium-") as profile:
        command = [str(binary), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url]
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"chromium did not finish within {timeout_s} s: {stderr.decode(errors='replace')[-2000:]}")
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if process.returncode != 0:
        pytest.fail(f"chromium exited with {process.returncode}: {stderr.decode(errors='replace')[-2000:]}")
    return stdout.decode(errors="replace")


def launch_partition_run(server: DagsterDev, job: str, partition: str) -> str:
    """Launch one partition of ``job`` through GraphQL, as the UI's launchpad does; return the run id."""
    params = {
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": job},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
        "mode": "default",
    }
    result = graphql(server, LAUNCH, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", f"launchRun answered {result}"
    return result["run"]["runId"]


def wait_for_run(server: DagsterDev, run_id: str, timeout_s: float = RUN_TIMEOUT_S) -> str:
    """Poll ``runOrError`` until the run ends; return its final status."""
    deadline = time.monotonic() + timeout_s
    status = "unknown"
    while time.monotonic() < deadline:
        run = graphql(server, RUN_STATUS, {"runId": run_id})["runOrError"]
        assert run["__typename"] == "Run", f"runOrError answered {run}"
        status = run["status"]
        if status in TERMINAL:
            return status
        time.sleep(1.0)
    pytest.fail(f"run {run_id} still {status} after {timeout_s} s:\n{log_tail(server.log_path)}")


def step_failures(server: DagsterDev, run_id: str) -> list[str]:
    """``step: message`` of every failed step of a run (for failure reports)."""
    logs = graphql(server, RUN_FAILURES, {"runId": run_id})["logsForRun"]
    events = logs.get("events", []) if logs["__typename"] == "EventConnection" else []
    return [f"{e['stepKey']}: {e['error']['message']}" for e in events if e["__typename"] == "ExecutionStepFailureEvent"]


def test_partition_run_launched_through_graphql_materializes_filepaths(dagster_ui: DagsterDev, ui_home: UiHome) -> None:
    partition = ui_home.partition
    table = ui_home.home / "store" / "tables" / "filepaths" / f"{partition}.parquet"
    assert not table.exists()

    run_id = launch_partition_run(dagster_ui, "per_study_job", partition)
    status = wait_for_run(dagster_ui, run_id)
    assert status == "SUCCESS", f"run {run_id} ended {status}: {step_failures(dagster_ui, run_id)}"

    asset = graphql(dagster_ui, MATERIALIZATIONS, {"partition": partition})["assetOrError"]
    assert asset["__typename"] == "Asset"
    assert [(m["partition"], m["runId"]) for m in asset["assetMaterializations"]] == [(partition, run_id)]
    ingested = pl.read_parquet(table)
    quarantined = pl.read_parquet(table.parents[1] / "quarantine" / f"{partition}.parquet")
    expected = ui_home.inventory.filter(pl.col("partition") == partition)
    assert len(ingested) + len(quarantined) == len(expected)
    assert len(ingested) > 0
    assert set(ingested["StudyUID"]) <= set(expected["StudyUID"])
    assert ingested["StudyDate"].cast(pl.String).unique().to_list() == [partition]


def test_asset_graph_page_renders_in_chromium(dagster_ui: DagsterDev, tmp_path: Path) -> None:
    url = f"{dagster_ui.base_url}{PAGE}"
    budget = "--virtual-time-budget=15000"
    dom = run_chromium(url, budget, "--dump-dom", f"--window-size={WINDOW[0]},{WINDOW[1]}")  # nodes outside the view are not rendered
    for name in ("filepaths", "quarantine", "ingestion"):
        assert name in dom, f"{name!r} not on {PAGE}"
    assert "Join the Dagster community" not in dom

    screenshot = tmp_path / "asset_graph.png"
    run_chromium(url, budget, f"--screenshot={screenshot}", f"--window-size={WINDOW[0]},{WINDOW[1]}")
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == WINDOW
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
        colours = len(image.convert("RGB").getcolors(maxcolors=1 << 20) or [])
    assert pixels.std() > 5.0, "the screenshot is (nearly) blank"
    assert colours > 50, f"only {colours} colours: not a rendered page"
