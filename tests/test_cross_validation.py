"""Patient-level k-fold cross-validation: the fold split (ml.splits) and ``cv_job`` end to end."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from ml.splits import (
    SplitError,
    assert_patient_disjoint,
    fold_splits,
    patient_folds,
    patient_strata,
)
from tests.support.cohort_home import materialized_home

CLASSES = ("Normal", "Actionable", "Benign", "Cancer")


def labels(n_patients: int, seed: int = 0) -> pl.DataFrame:
    """Duke-style label rows: patients with 1-3 studies, about a quarter of patients with a cancer study."""
    rng = np.random.default_rng(seed)
    rows, study = [], 0
    for patient in range(n_patients):
        for _ in range(int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))):
            study += 1
            cls = CLASSES[3] if patient % 4 == 0 else str(rng.choice(CLASSES[:3]))
            for view in ("lcc", "lmlo") if cls in ("Benign", "Cancer") else ("lcc", "lmlo", "rcc", "rmlo"):
                rows.append({"PatientID": f"P{patient:03d}", "StudyUID": f"S{study:04d}", "View": view,
                             **{c: int(c == cls) for c in CLASSES}})  # fmt: skip
    return pl.DataFrame(rows)


def one_fold_per_patient(folds: pl.DataFrame) -> bool:
    """No patient's studies in two folds."""
    return folds.group_by("PatientID").agg(pl.col("fold").n_unique())["fold"].max() == 1


@pytest.mark.parametrize("k", [2, 3, 5])
def test_patient_folds_are_disjoint_complete_balanced_and_stratified(k):
    table = labels(60, seed=k)
    folds = patient_folds(table, k, seed=3)
    assert folds.columns == ["PatientID", "StudyUID", "fold"]
    assert set(folds["StudyUID"]) == set(table["StudyUID"])  # every study, once
    assert folds["StudyUID"].is_unique().all()
    assert one_fold_per_patient(folds)
    per_patient = folds.unique("PatientID")
    assert per_patient.height == table["PatientID"].n_unique()
    sizes = per_patient["fold"].value_counts()["count"]
    assert sorted(per_patient["fold"].unique()) == list(range(k)) and sizes.max() - sizes.min() <= 1
    cancer = per_patient.join(patient_strata(table), on="PatientID").filter(pl.col("stratum") == 3)
    counts = cancer["fold"].value_counts()["count"]
    assert cancer["fold"].n_unique() == k and counts.max() - counts.min() <= 1  # cancers spread evenly
    assert patient_folds(table, k, seed=3).equals(folds)  # deterministic
    assert not patient_folds(table, k, seed=4).equals(folds)


def test_fold_splits_hold_one_fold_out_and_keep_a_validation_patient():
    table = labels(12, seed=1)
    folds = patient_folds(table, 3, seed=0)
    held_out = set()
    for fold in range(3):
        plan = fold_splits(table, folds, fold, seed=0)
        assert_patient_disjoint(plan)
        test = set(plan.filter(pl.col("split") == "test")["StudyUID"])
        assert test == set(folds.filter(pl.col("fold") == fold)["StudyUID"])
        assert set(plan["StudyUID"]) == set(table["StudyUID"])
        assert plan.filter(pl.col("split") == "val").height >= 1 and plan.filter(pl.col("split") == "train").height >= 1
        held_out |= test
    assert held_out == set(table["StudyUID"])  # every study is held out exactly once over the rounds
    tiny = labels(2)
    plan = fold_splits(tiny, patient_folds(tiny, 2), 0)
    assert plan.filter(pl.col("split") == "val").height == 0  # a single remaining patient trains


def test_folds_refuse_bad_settings():
    table = labels(3)
    with pytest.raises(SplitError, match="k must be"):
        patient_folds(table, 1)
    with pytest.raises(SplitError, match="cannot fill"):
        patient_folds(table, 5)
    with pytest.raises(SplitError, match="not among"):
        fold_splits(table, patient_folds(table, 2), 7)


# ------------------------------------------------------------------- the Dagster job


@pytest.fixture(scope="module")
def cohort_home(tmp_path_factory):
    """A home with filepaths, exam_labels, 32x26 preprocessed tensors and splits for 8 synthetic studies."""
    from dbt_assets.materialize import QUIET

    small = {**QUIET, "ops": {"preprocessed": {"config": {"strategy": "central", "height": 32, "width": 26}}}}
    with materialized_home(tmp_path_factory.mktemp("cv") / "home", ("filepaths", "quarantine", "exam_labels", "preprocessed"), small) as found:
        yield found


def table(settings, name: str) -> pl.DataFrame:
    files = sorted((settings.home / "store/tables" / name).glob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")


def test_catalogue_records_the_breast_density_the_generator_wrote(cohort_home):
    filepaths = table(cohort_home[0], "filepaths")
    assert filepaths["density"].null_count() == 0 and set(filepaths["density"]) <= {"A", "B", "C", "D"}


def test_cv_job_trains_each_fold_in_nested_runs_and_aggregates(cohort_home):
    from mlflow.tracking import MlflowClient

    settings, defs, instance = cohort_home
    training = {"model_name": "dbt_tiny", "epochs": 2, "batch_size": 4, "device": "cpu", "n_boot": 20, "seed": 1}
    run_config = {"ops": {"cross_validation_report": {"config": {"folds": 2, "training": training}}},
                  "loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # fmt: skip
    result = defs.resolve_job_def("cv_job").execute_in_process(run_config=run_config, instance=instance)
    assert result.success

    report = json.loads((settings.home / "store/reports/cross_validation.json").read_text())
    png = (settings.home / "store/reports/cross_validation_roc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    splits = table(settings, "splits")
    development = set(splits.filter(pl.col("split") != "test")["StudyUID"])
    assert set(report["fold_of_study"]) == development  # the test split stays untouched
    folds = pl.DataFrame({"StudyUID": list(report["fold_of_study"]), "fold": list(report["fold_of_study"].values())})
    assert one_fold_per_patient(folds.join(splits.select("StudyUID", "PatientID"), on="StudyUID"))
    assert [r["fold"] for r in report["rounds"]] == [0, 1]
    assert sum(r["n_test"] for r in report["rounds"]) == len(development)  # each exam held out once
    assert report["training"]["model_name"] == "dbt_tiny" and report["folds"] == 2
    aucs = [r["metrics"]["roc_auc"] for r in report["rounds"] if r["metrics"]["roc_auc"] is not None]
    aggregate = report["aggregate"]["roc_auc"]
    assert aggregate["n_folds"] == len(aucs)
    if aucs:
        assert aggregate["mean"] == pytest.approx(float(np.mean(aucs)))
    if len(aucs) == 2:
        assert aggregate["lower"] <= aggregate["mean"] <= aggregate["upper"]

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    parent = client.get_run(report["mlflow_parent_run_id"])
    assert parent.data.params["folds"] == "2" and parent.data.tags["cross_validation"] == "true"
    experiment = client.get_experiment_by_name("tomosight").experiment_id
    children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(run.data.tags["cv_fold"] for run in children) == ["0", "1"]
    for run in children:
        record = report["rounds"][int(run.data.tags["cv_fold"])]
        assert run.info.run_id == record["mlflow_run_id"]
        assert run.data.params["model_name"] == "dbt_tiny"
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == record["epochs_run"]  # per epoch
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "cross_validation")}
    assert artifacts == {"cross_validation/cross_validation.json", "cross_validation/cross_validation_roc.png"}
    assert client.search_model_versions("name = 'tomosight-dbt'") == []  # cross-validation registers nothing


def test_cv_job_requests_a_gpu_pod_in_production(tmp_path):
    from dbt_assets.definitions import build_definitions
    from dbt_assets.k8s import GPU_STEP_TAGS
    from dbt_assets.settings import load_settings

    env = {"TOMOSIGHT_PROFILE": "production", "TOMOSIGHT_HOME": str(tmp_path), "TOMOSIGHT_SOURCE_URI": str(tmp_path),
           "TOMOSIGHT_STORE_URI": "s3://tomosight-test/store", "MLFLOW_TRACKING_URI": "http://127.0.0.1:9/mlflow"}  # fmt: skip
    job = build_definitions(load_settings(env)).resolve_job_def("cv_job")
    assert job.executor_def.name == "k8s"
    (node,) = job.graph.nodes
    assert node.name == "cross_validation_report"
    assert json.loads(dict(node.tags)["dagster-k8s/config"]) == GPU_STEP_TAGS["dagster-k8s/config"]
