"""Ingestion through the asset graph from a PACS (Orthanc over DICOMweb) and from an S3 prefix."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pydicom
import pytest

from dbt_assets.definitions import build_definitions
from dbt_assets.ingestion import read_inventory, scan_source
from dbt_assets.materialize import instance_for_home
from dbt_assets.settings import load_settings
from ml.synth import CohortConfig, generate_cohort
from resources.dicom_source import store_instances
from tests.support.orthanc import OrthancServer, orthanc_fixture  # noqa: F401
from tests.support.s3 import s3_bucket, s3_client, s3_server  # noqa: F401


@pytest.fixture(scope="module")
def cohort_files(tmp_path_factory) -> list[Path]:
    """DICOM files of a small synthetic cohort (no CSVs are used: keys come from the tags)."""
    folder = tmp_path_factory.mktemp("cohort")
    generate_cohort(folder, CohortConfig(studies=3, seed=21, rows=64, cols=52, slices=6), overwrite=True)
    return sorted(folder.rglob("*.dcm"))


def ingest_everything(settings) -> pl.DataFrame:
    """Scan the source and run the per-study job for every partition; return all filepaths rows."""
    defs = build_definitions(settings)
    store = defs.resources["store"]
    scan_source(defs.resources["dicom_source"], store, defs.resources["pseudonymizer"])
    instance = instance_for_home(settings.home)
    for partition in sorted(set(read_inventory(store)["partition"])):
        result = defs.resolve_job_def("per_study_job").execute_in_process(partition_key=partition, instance=instance)
        assert result.success, partition
    files = sorted((settings.home / "store/tables/filepaths").glob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files])


def expected_studies(settings, files: list[Path]) -> set[str]:
    pseudonymizer = build_definitions(settings).resources["pseudonymizer"]
    return {pseudonymizer.study(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files}


def test_studies_pushed_to_a_pacs_are_ingested_over_dicomweb(orthanc: OrthancServer, cohort_files, tmp_path, monkeypatch):
    store_instances(orthanc.dicomweb_url, cohort_files, auth=orthanc.auth)
    monkeypatch.setenv("TOMOSIGHT_SOURCE_USERNAME", orthanc.username)
    monkeypatch.setenv("TOMOSIGHT_SOURCE_PASSWORD", orthanc.password)
    uri = "dicomweb+" + orthanc.dicomweb_url
    settings = load_settings({"TOMOSIGHT_HOME": str(tmp_path / "home"), "TOMOSIGHT_SOURCE_URI": uri})
    filepaths = ingest_everything(settings)
    ours = filepaths.filter(pl.col("StudyUID").is_in(list(expected_studies(settings, cohort_files))))
    assert len(ours) == len(cohort_files)
    assert set(ours["View"]) <= {"lcc", "lmlo", "rcc", "rmlo"}  # from FrameLaterality + ViewCodeSequence
    stored = pydicom.dcmread(ours["dicom_uri"][0], stop_before_pixels=True)
    assert stored.PatientIdentityRemoved == "YES" and stored.PatientID == ours["PatientID"][0]


def test_files_under_an_s3_prefix_are_ingested(s3_server, s3_bucket, cohort_files, tmp_path):
    client = s3_client(s3_server)
    for index, path in enumerate(cohort_files):
        client.upload_file(str(path), s3_bucket, f"landing/site-a/{index:03d}.dcm")
    client.put_object(Bucket=s3_bucket, Key="landing/site-a/readme.dcm", Body=b"not dicom")
    settings = load_settings(
        {"TOMOSIGHT_HOME": str(tmp_path / "home"), "TOMOSIGHT_SOURCE_URI": f"s3://{s3_bucket}/landing", "AWS_ENDPOINT_URL": s3_server}
    )
    filepaths = ingest_everything(settings)
    assert len(filepaths) == len(cohort_files)
    assert set(filepaths["StudyUID"]) == expected_studies(settings, cohort_files)
    quarantine = pl.concat([pl.read_parquet(f) for f in (settings.home / "store/tables/quarantine").glob("*.parquet")])
    assert quarantine.filter(pl.col("source_uri").str.ends_with("readme.dcm"))["reason"].to_list() == ["not_dicom"]
