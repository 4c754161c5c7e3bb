"""The asset graph end to end: `tomosight demo` on a tiny cohort, then lineage, audit, idempotence, checks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pydicom
import pytest

from dbt_assets.cli import main
from dbt_assets.definitions import build_definitions
from dbt_assets.ingestion import read_inventory
from dbt_assets.lineage import trace_prediction
from dbt_assets.materialize import instance_for_home
from dbt_assets.settings import load_settings
from resources.warehouse import Warehouse
from schemas import FilePaths, validate

TINY = ["--rows", "64", "--cols", "52", "--slices", "6", "--workers", "1"]


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory) -> Path:
    """A home where `tomosight demo` materialized everything for 8 synthetic studies."""
    home = tmp_path_factory.mktemp("graph") / "home"
    saved = {k: os.environ.get(k) for k in ("TOMOSIGHT_HOME", "TOMOSIGHT_SOURCE_URI", "DAGSTER_HOME")}
    try:
        assert main(["demo", "--home", str(home), "--studies", "8", "--seed", "11", *TINY]) == 0
        yield home
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def settings_for(home: Path, source: Path | None = None):
    return load_settings({"TOMOSIGHT_HOME": str(home), "TOMOSIGHT_SOURCE_URI": str(source or home / "dataset")})


def tables(home: Path, name: str) -> pl.DataFrame:
    files = sorted((home / "store/tables" / name).glob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed") if files else pl.DataFrame()


def test_every_source_file_is_ingested_or_quarantined(demo_home):
    inventory = read_inventory(build_definitions(settings_for(demo_home)).resources["store"])
    filepaths, quarantine = tables(demo_home, "filepaths"), tables(demo_home, "quarantine")
    listed = len(list((demo_home / "dataset").rglob("*.dcm")))
    assert len(inventory) == listed
    assert len(filepaths) + len(quarantine) == listed
    assert inventory["partition"].n_unique() > 1  # studies spread over several study dates
    validate(filepaths.drop("SOPInstanceUID"), FilePaths)


def test_stored_dicom_is_deidentified_and_content_addressed(demo_home):
    row = tables(demo_home, "filepaths").row(0, named=True)
    path = Path(row["dicom_uri"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"] and row["sha256"] in path.name
    ds = pydicom.dcmread(path)
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientID == row["PatientID"]
    assert "SYNTH" not in str(ds.PatientName) and b"SYNTH^" not in path.read_bytes()
    assert ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0].FrameLaterality == row["View"][0].upper()
    assert row["StudyDate"].strftime("%Y%m%d") == ds.StudyDate  # partition = shifted study date


def test_prediction_traces_back_to_dicom_and_model(demo_home):
    settings = settings_for(demo_home)
    exams = Warehouse(path=str(settings.warehouse_path)).query("SELECT * FROM exam_predictions ORDER BY StudyUID")
    assert {"StudyUID", "PatientID", "model_version", "prob_malignant", "split"} <= set(exams.columns)
    trace = trace_prediction(settings, exams["StudyUID"][0])
    assert trace["views"], "every exam prediction has its views"
    for view in trace["views"]:
        assert hashlib.sha256(Path(view["dicom_uri"]).read_bytes()).hexdigest() == view["sha256"]
    model = tables(demo_home, "model").row(0, named=True)
    assert trace["model"]["version"] == model["model_version"]
    assert trace["model"]["mlflow_run_id"] == model["mlflow_run_id"]
    assert len(trace["model"]["git_sha"]) >= 7 and len(trace["model"]["dataset_hash"]) == 64


def test_materializations_carry_audit_metadata(demo_home):
    instance = instance_for_home(demo_home)
    record = instance.fetch_materializations(dg.AssetKey("predictions"), limit=1).records[0]
    meta = record.asset_materialization.metadata
    for key in ("rows", "dataset_hash", "schema", "schema_version", "code_version", "upstream_versions", "model_version", "mlflow_run_id"):
        assert key in meta, key
    upstream = meta["upstream_versions"].value
    assert set(upstream) == {"preprocessed", "filepaths", "splits", "model"}
    assert all(len(v) == 64 for v in upstream.values())


def test_rerunning_a_partition_is_idempotent(demo_home):
    settings = settings_for(demo_home)
    defs = build_definitions(settings)
    instance = instance_for_home(demo_home)
    partition = sorted(p.stem for p in (demo_home / "store/tables/filepaths").glob("*.parquet"))[0]
    before = {name: (demo_home / "store/tables" / name / f"{partition}.parquet").read_bytes() for name in ("filepaths", "exam_labels", "preprocessed")}
    result = defs.resolve_job_def("per_study_job").execute_in_process(partition_key=partition, instance=instance)
    assert result.success
    for name, data in before.items():
        assert (demo_home / "store/tables" / name / f"{partition}.parquet").read_bytes() == data, name


def test_reports_and_warehouse_views(demo_home):
    reports = demo_home / "store/reports"
    evaluation = json.loads((reports / "evaluation.json").read_text())
    assert set(evaluation["exams"]) == {"train", "val", "test"} and evaluation["temperature"] > 0
    pngs = ["froc.png"] + (["roc.png", "pr.png", "reliability.png"] if evaluation["test"] else [])
    for png in pngs:  # the ROC family needs both classes in the test split
        assert (reports / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if evaluation["test"]:
        assert "ROC-AUC" in (reports / "model_card.md").read_text()
    assert (demo_home / "contact_sheet.png").exists()
    counts = Warehouse(path=str(demo_home / "warehouse.duckdb")).query(
        "SELECT (SELECT count(*) FROM filepaths) AS volumes, (SELECT count(*) FROM predictions) AS scored, "
        "(SELECT count(*) FROM box_predictions) AS rois, (SELECT count(*) FROM splits) AS studies"
    ).row(0, named=True)
    assert counts["volumes"] == counts["scored"] > 0 and counts["rois"] > 0 and counts["studies"] > 0


def test_sql_command_reads_the_warehouse(demo_home, capsys):
    assert main(["sql", "SELECT View, count(*) AS n FROM predictions GROUP BY View ORDER BY View", "--home", str(demo_home), "--format", "csv"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "View,n" and len(out) > 1


# ---------------------------------------------------------------- bad input and blocking checks


@pytest.fixture()
def messy_landing(demo_home, tmp_path) -> Path:
    """A copy of the demo dataset with a corrupt file, a non-DICOM file, a duplicate, bad annotations."""
    landing = tmp_path / "landing"
    shutil.copytree(demo_home / "dataset", landing)
    volumes = sorted(landing.rglob("1-1.dcm"))
    (volumes[0].parent / "notes.dcm").write_text("not an image")
    data = bytearray(volumes[1].read_bytes())
    data[-400:] = b"\x00" * 400  # corrupt the end of the last JPEG 2000 fragment
    volumes[1].write_bytes(bytes(data))
    shutil.copy(volumes[2], volumes[2].parent / "copy-of-1-1.dcm")  # duplicated SOP Instance UID
    labels = next(landing.glob("BCS-DBT labels-*.csv"))
    labels.write_text(labels.read_text() + "DBT-P99999,DBT-S99999,lcc,1,0,0,0\n")
    boxes = next(landing.glob("BCS-DBT boxes-*.csv"))
    header, first, *rest = boxes.read_text().splitlines()
    outside = first.split(",")
    outside[header.split(",").index("X")] = "100000"  # a box far outside its image
    boxes.write_text("\n".join([header, first, ",".join(outside), *rest]) + "\n")
    return landing


def test_bad_inputs_are_quarantined_and_good_data_still_flows(messy_landing, tmp_path):
    home = tmp_path / "home"
    settings = settings_for(home, messy_landing)
    defs = build_definitions(settings)
    instance = instance_for_home(home)
    store = defs.resources["store"]
    from dbt_assets.ingestion import scan_source

    scan_source(defs.resources["dicom_source"], store, defs.resources["pseudonymizer"], dataset_root=messy_landing)
    inventory = read_inventory(store)
    for partition in sorted(set(inventory["partition"])):
        result = defs.resolve_job_def("per_study_job").execute_in_process(partition_key=partition, instance=instance, raise_on_error=False)
        assert result.success, partition
    quarantine = tables(home, "quarantine")
    reasons = set(quarantine["reason"].to_list())
    assert {"not_dicom", "duplicate_sop_instance"} <= reasons
    assert reasons & {"corrupt_codestream", "truncated"}
    assert len(tables(home, "filepaths")) + len(quarantine) == len(inventory)
    assert 100000 not in tables(home, "boxes")["X"].to_list()
    rejected = [r.asset_materialization.metadata["rejected_boxes"].value
                for r in instance.fetch_materializations(dg.AssetKey("boxes"), limit=100).records]
    assert sum(rejected) == 1
    unmatched = dg.materialize(list(defs.assets), resources=defs.resources, instance=instance, selection=["unmatched_annotations"])
    assert unmatched.success
    assert "unknown_study" in tables(home, "unmatched_annotations")["reason"].to_list()


def test_failing_contract_check_blocks_downstream_steps(demo_home, tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(demo_home / "dataset", landing)
    csv = next(landing.glob("BCS-DBT file-paths-*.csv"))
    lines = csv.read_text().splitlines()
    header, first = lines[0], lines[1].split(",")
    first[2] = first[2].upper()  # an upper-case view violates the FilePaths contract
    csv.write_text("\n".join([header, ",".join(first), *lines[2:]]) + "\n")
    home = tmp_path / "home"
    settings = settings_for(home, landing)
    defs = build_definitions(settings)
    from dbt_assets.ingestion import scan_source

    scan_source(defs.resources["dicom_source"], defs.resources["store"], defs.resources["pseudonymizer"], dataset_root=landing)
    bad = read_inventory(defs.resources["store"]).filter(pl.col("View") == first[2].upper())["partition"][0]
    result = defs.resolve_job_def("per_study_job").execute_in_process(partition_key=bad, instance=instance_for_home(home), raise_on_error=False)
    assert not result.success
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert any("FilePaths" in e.asset_check_key.name for e in failed)
    assert "View" in str(failed[0].metadata["problems"].value)
    materialized = {event.asset_key.path[-1] for event in result.get_asset_materialization_events()}
    assert "filepaths" in materialized and "preprocessed" not in materialized and "exam_labels" not in materialized


def test_sensor_requests_runs_for_new_study_dates(demo_home, tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(demo_home / "dataset", landing)
    settings = settings_for(tmp_path / "home", landing)
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("new_studies_sensor")
    with dg.build_sensor_context(resources=defs.resources, instance=dg.DagsterInstance.ephemeral()) as context:
        requests = list(sensor(context))
    partitions = sorted(set(read_inventory(defs.resources["store"])["partition"]))
    assert sorted(r.partition_key for r in requests) == partitions
    with dg.build_sensor_context(resources=defs.resources, instance=dg.DagsterInstance.ephemeral()) as context:
        again = sensor(context)
    assert isinstance(again, dg.SkipReason) or not list(again)  # nothing new the second time


def readme_queries() -> list[str]:
    """The SQL queries the README promises analysts."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("```sql", 1)[1].split("```", 1)[0]
    statements = [s for s in block.split(";") if s.strip()]
    return ["\n".join(line for line in s.splitlines() if not line.startswith("--")).strip() for s in statements]


def test_readme_queries_run_on_the_warehouse(demo_home):
    queries = readme_queries()
    assert len(queries) == 5
    warehouse = Warehouse(path=str(demo_home / "warehouse.duckdb"))
    for query in queries:
        warehouse.query(query)  # raises QueryError on any problem
