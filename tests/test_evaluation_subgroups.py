"""Evaluation subgroups: per view, laterality, vendor and density, with not-evaluable levels; density in DICOM."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import numpy as np
import polars as pl
import pytest

import ml.evaluation as ev
from dbt_assets.assets.reports import (
    VIEW_GROUPS,
    EvaluationConfig,
    breast_truth,
    evaluate_split,
    exam_truth,
    report_metrics,
    view_truth,
)
from ml.density import DensityError, breast_composition, category_from_fraction, composition_item
from ml.dicomio import read_header
from ml.synth.bto import BtoError, BtoMeta, write_bto

CLASSES = ("Normal", "Actionable", "Benign", "Cancer")


def grouped_cohort() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """40 exams of 20 patients: group 'perfect' ranks perfectly, 'noisy' does not, 'normals' has no cancer, 'tiny' has 4 exams."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.tile([0, 1], 6), np.tile([0, 1], 6), np.zeros(12, int), [0, 1, 0, 1]]
    probs = np.where(labels == 1, 0.8, 0.2) + rng.uniform(-0.1, 0.1, labels.size)
    noisy = slice(12, 24)
    probs[noisy] = rng.uniform(0.05, 0.95, 12)
    groups = np.array(["perfect"] * 12 + ["noisy"] * 12 + ["normals"] * 12 + ["tiny"] * 4)
    patients = np.array([f"P{i // 2:02d}" for i in range(labels.size)])
    return probs, labels, patients, groups


def test_perfect_subgroup_gets_auc_one_and_small_or_one_class_subgroups_are_not_evaluable():
    probs, labels, patients, groups = grouped_cohort()
    report = ev.evaluate_scores(probs, labels, patients, groups={"site": groups}, n_boot=200, seed=0, min_group_size=10)
    site = report.subgroups["site"]
    perfect = site["perfect"]
    assert isinstance(perfect, ev.GroupResult)
    assert perfect.metrics["roc_auc"].value == 1.0
    assert (perfect.metrics["roc_auc"].lower, perfect.metrics["roc_auc"].upper) == pytest.approx((1.0, 1.0))  # every resample ranks perfectly
    assert perfect.metrics["sens_at_spec_0.95"].value == 1.0
    assert site["noisy"].metrics["roc_auc"].value == pytest.approx(ev.roc_auc(probs[12:24], labels[12:24]))
    normals, tiny = site["normals"], site["tiny"]
    assert isinstance(normals, ev.NotEvaluable) and "one class" in normals.reason and normals.n_exams == 12
    assert isinstance(tiny, ev.NotEvaluable) and "fewer than the minimum of 10" in tiny.reason
    assert (tiny.n_exams, tiny.n_patients, tiny.n_positive) == (4, 2, 2)
    payload = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert payload["subgroups"]["site"]["normals"] == {"n_exams": 12, "n_patients": 6, "n_positive": 0, "evaluable": False,
                                                      "reason": "one class only: 0 malignant of 12 exam(s)"}  # fmt: skip
    assert payload["subgroups"]["site"]["perfect"]["evaluable"] is True
    assert payload["settings"]["min_group_size"] == 10 and payload["settings"]["unit"] == "exam"
    with pytest.raises(ev.EvaluationError, match="min_group_size"):
        ev.evaluate_scores(probs, labels, patients, groups={"site": groups}, n_boot=5, min_group_size=0)


def test_model_card_tables_show_view_level_section_and_not_evaluable_rows():
    probs, labels, patients, groups = grouped_cohort()
    exams = ev.evaluate_scores(probs, labels, patients, groups={"density": groups}, n_boot=50, min_group_size=10)
    views = ev.evaluate_scores(probs, labels, patients, groups={"view": np.where(np.arange(40) % 2, "CC", "MLO")},
                               n_boot=50, min_group_size=10, unit="view")  # fmt: skip
    card = ev.model_card(exams, model_name="m", version="1", config={}, data={}, calibration={}, operating_points={},
                         view_report=views)  # fmt: skip
    assert "### By density" in card and "## Metrics per view" in card and "### By view" in card
    assert "| Group | Views | Patients | Malignant |" in card and "| Group | Exams | Patients | Malignant |" in card
    assert "| normals | 12 | 6 | 0 | not evaluable: one class only: 0 malignant of 12 exam(s) | - |" in card
    assert "| perfect | 12 | 6 | 6 | 1.000 (1.000-1.000) |" in card
    header = next(line for line in card.splitlines() if line.startswith("| Group | Exams"))
    row = next(line for line in card.splitlines() if line.startswith("| tiny |"))
    assert row.count("|") == header.count("|")  # a well-formed Markdown row
    assert "Subgroups with fewer than 10 views" in card


# ----------------------------------------------------------------- the report asset's tables


def label_rows(study: str, patient: str, cls: str, views: tuple[str, ...]) -> list[dict]:
    return [{"PatientID": patient, "StudyUID": study, "View": v, **{c: int(c == cls) for c in CLASSES}} for v in views]


def test_view_truth_follows_the_breast_cancer_boxes_then_labels():
    four = ("lcc", "lmlo", "rcc", "rmlo")
    labels = pl.DataFrame(
        label_rows("S1", "P1", "Cancer", four)  # labelled on both breasts, the cancer box is on the left
        + label_rows("S2", "P2", "Cancer", ("rcc", "rmlo"))  # no boxes: the labels decide
        + label_rows("S3", "P3", "Normal", four)
    )
    boxes = pl.DataFrame({"StudyUID": ["S1", "S1"], "View": ["lcc", "rmlo"], "Class": ["cancer", "benign"]})
    truth = breast_truth(labels, boxes)
    assert truth.rows() == [("S1", "L", 1), ("S1", "R", 0), ("S2", "R", 1), ("S3", "L", 0), ("S3", "R", 0)]
    predictions = pl.DataFrame({
        "StudyUID": ["S1"] * 4 + ["S2"] * 2 + ["S3"] * 4, "View": [*four, "rcc", "rmlo", *four],
        "prob_malignant": np.linspace(0.1, 0.9, 10), "model_version": "3", "PatientID": ["P1"] * 4 + ["P2"] * 2 + ["P3"] * 4,
    })  # fmt: skip
    exams = pl.DataFrame({"StudyUID": ["S1", "S2", "S3"], "model_version": "3", "split": ["test", "test", "val"]})
    views = view_truth(predictions, exams, labels, boxes)
    assert views.select("StudyUID", "view", "laterality", "cancer", "split").rows() == [
        ("S1", "CC", "L", 1, "test"), ("S1", "MLO", "L", 1, "test"), ("S1", "CC", "R", 0, "test"), ("S1", "MLO", "R", 0, "test"),
        ("S2", "CC", "R", 1, "test"), ("S2", "MLO", "R", 1, "test"),
        ("S3", "CC", "L", 0, "val"), ("S3", "MLO", "L", 0, "val"), ("S3", "CC", "R", 0, "val"), ("S3", "MLO", "R", 0, "val"),
    ]  # fmt: skip
    no_boxes = breast_truth(labels, pl.DataFrame())
    assert no_boxes.filter(pl.col("StudyUID") == "S1")["cancer"].to_list() == [1, 1]


def test_exam_truth_takes_the_denser_breast_and_unknown_when_not_stated():
    labels = pl.DataFrame(label_rows("S1", "P1", "Cancer", ("lcc", "rcc")) + label_rows("S2", "P2", "Normal", ("lcc",)))
    filepaths = pl.DataFrame({"StudyUID": ["S1", "S1", "S2"], "View": ["lcc", "rcc", "lcc"],
                              "vendor": ["Hologic", "Hologic", None], "density": ["B", "C", None]})  # fmt: skip
    exams = pl.DataFrame({"StudyUID": ["S1", "S2"], "prob_malignant": [0.7, 0.2], "model_version": "1",
                          "PatientID": ["P1", "P2"], "split": ["test", "test"]})  # fmt: skip
    table = exam_truth(exams, labels, filepaths)
    assert table.select("StudyUID", "cancer", "vendor", "density").rows() == [("S1", 1, "Hologic", "C"), ("S2", 0, "unknown", "unknown")]
    older = exam_truth(exams, labels, filepaths.drop("density"))  # partitions catalogued before density existed
    assert older["density"].to_list() == ["unknown", "unknown"]


def test_report_subgroups_by_view_and_laterality_with_perfect_and_one_class_levels():
    rng = np.random.default_rng(3)
    n = 48
    laterality = np.where(np.arange(n) % 2 == 0, "L", "R")
    view = np.where(np.arange(n) % 4 < 2, "CC", "MLO")
    cancer = np.where(laterality == "L", np.arange(n) % 8 == 0, 0).astype(int)  # right breasts: no cancer at all
    prob = np.where(view == "CC", np.where(cancer == 1, 0.9, 0.1), rng.uniform(0.05, 0.95, n))  # CC views rank perfectly
    part = pl.DataFrame({"prob_malignant": prob, "cancer": cancer, "PatientID": [f"P{i // 4}" for i in range(n)],
                         "view": view, "laterality": laterality})  # fmt: skip
    config = EvaluationConfig(n_boot=50, min_subgroup_size=10)
    report = evaluate_split(part, 1.0, config, groups=VIEW_GROUPS, unit="view")
    assert set(report.subgroups) == {"view", "laterality"}
    assert report.subgroups["view"]["CC"].metrics["roc_auc"].value == 1.0
    right = report.subgroups["laterality"]["R"]
    assert isinstance(right, ev.NotEvaluable) and right.reason == "one class only: 0 malignant of 24 view(s)"
    assert report.subgroups["laterality"]["L"].n_positive == int(cancer.sum())
    metrics = report_metrics(report, "test_view")
    assert metrics["test_view_view_CC_roc_auc"] == 1.0 and "test_view_laterality_R_roc_auc" not in metrics
    assert {"test_view_roc_auc", "test_view_ece"} <= set(metrics)
    strict = evaluate_split(part, 1.0, EvaluationConfig(n_boot=20, min_subgroup_size=100), groups=VIEW_GROUPS, unit="view")
    assert all(isinstance(g, ev.NotEvaluable) for levels in strict.subgroups.values() for g in levels.values())
    assert evaluate_split(part.filter(pl.col("laterality") == "R"), 1.0, config, groups=VIEW_GROUPS) is None  # one class overall


def test_fold_roc_plot_accepts_a_one_class_fold(tmp_path):
    folds = [(np.array([0.1, 0.8, 0.3, 0.9]), np.array([0, 1, 0, 1])), (np.array([0.2, 0.4]), np.array([0, 0]))]
    path = ev.plot_fold_rocs(folds, tmp_path / "cv.png", mean_auc=1.0, auc_ci=(0.9, 1.0))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------- density in the DICOM


@pytest.mark.parametrize(("fraction", "category"), [(0.0, "A"), (0.249, "A"), (0.25, "B"), (0.5, "C"), (0.74, "C"), (0.75, "D"), (1.0, "D")])
def test_fibroglandular_fraction_maps_to_bi_rads_quartiles(fraction, category):
    assert category_from_fraction(fraction) == category


def test_breast_composition_round_trips_through_the_acquisition_context(tmp_path):
    meta = {"patient_id": "P1", "study_instance_uid": "1.2.3", "series_instance_uid": "1.2.3.4",
            "study_date": dt.date(2024, 1, 1), "laterality": "L", "view": "CC"}  # fmt: skip
    volume = np.zeros((2, 32, 32), np.uint16)
    for category in "ABCD":
        path = write_bto(tmp_path / f"{category}.dcm", volume, BtoMeta(**meta, breast_composition=category))
        ds = read_header(path).dataset
        assert breast_composition(ds) == category
        item = ds.AcquisitionContextSequence[0]
        assert (item.ValueType, item.ConceptNameCodeSequence[0].CodeValue) == ("CODE", "129715009")
    assert breast_composition(read_header(write_bto(tmp_path / "none.dcm", volume, BtoMeta(**meta))).dataset) is None
    with pytest.raises(BtoError, match="breast_composition"):
        BtoMeta(**meta, breast_composition="E")
    with pytest.raises(DensityError):
        composition_item("b")
    with pytest.raises(DensityError):
        category_from_fraction(1.5)


# ----------------------------------------------------------------- the evaluation_report asset


class Frames(dg.IOManager):
    """Hands the asset fixed upstream tables by asset name."""

    def __init__(self, frames: dict[str, pl.DataFrame]) -> None:
        self.frames = frames

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        return self.frames[context.asset_key.path[-1]]

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        raise AssertionError("evaluation_report returns no table")


def report_inputs(run_id: str) -> dict[str, pl.DataFrame]:
    """24 single-study patients (8 val, 16 test), every other a left-breast cancer; CC views and exams ranked perfectly."""
    rng = np.random.default_rng(5)
    labels, boxes, files, views, exams = [], [], [], [], []
    for i in range(24):
        study, patient, cancer = f"S{i:02d}", f"P{i:02d}", i % 2 == 1
        listed = ("lcc", "lmlo") if cancer else ("lcc", "lmlo", "rcc", "rmlo")
        labels += label_rows(study, patient, "Cancer" if cancer else "Normal", listed)
        if cancer:
            boxes.append({"StudyUID": study, "View": "lcc", "Class": "cancer"})
        for view in listed:
            files.append({"StudyUID": study, "View": view, "vendor": "Hologic" if cancer or i % 4 == 0 else "GE",
                          "density": "B" if i < 12 else "C"})  # fmt: skip
            prob = (0.9 if cancer else 0.1) if view.endswith("cc") else float(rng.uniform(0.05, 0.95))
            views.append({"StudyUID": study, "View": view, "prob_malignant": prob, "model_version": "1", "PatientID": patient})
        exams.append({"StudyUID": study, "prob_malignant": 0.8 if cancer else 0.3, "model_version": "1", "PatientID": patient,
                      "split": "val" if i < 8 else "test"})  # fmt: skip
    model = {"model_name": ["tomosight-dbt"], "model_version": ["1"], "mlflow_run_id": [run_id], "model_uri": ["models:/tomosight-dbt/1"]}
    return {"predictions": pl.DataFrame(views), "exam_predictions": pl.DataFrame(exams), "exam_labels": pl.DataFrame(labels),
            "boxes": pl.DataFrame(boxes), "filepaths": pl.DataFrame(files), "model": pl.DataFrame(model)}  # fmt: skip


def materialize_report(tmp_path, frames: dict[str, pl.DataFrame], mlflow) -> dict:
    from dbt_assets.assets.reports import evaluation_report
    from resources.object_store import ObjectStore

    config = {"ops": {"evaluation_report": {"config": {"n_boot": 50, "min_subgroup_size": 4}}}}
    result = dg.materialize([evaluation_report, *(dg.AssetSpec(name) for name in frames)], run_config=config, selection=[evaluation_report],
                            resources={"io_manager": Frames(frames), "store": ObjectStore(base_uri=str(tmp_path / "store")), "mlflow": mlflow})  # fmt: skip
    assert result.success
    return json.loads((tmp_path / "store/reports/evaluation.json").read_text())


def test_evaluation_report_writes_every_subgroup_to_json_card_and_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    from resources.mlflow_resource import MlflowResource

    mlflow = MlflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=str(tmp_path / "artifacts"))
    with mlflow.start_run("model") as run:
        run_id = run.info.run_id
    registry = mlflow.client()
    registry.create_registered_model("tomosight-dbt")
    assert registry.create_model_version("tomosight-dbt", f"runs:/{run_id}/model", run_id=run_id).version in (1, "1")
    report = materialize_report(tmp_path, report_inputs(run_id), mlflow)
    exams, views = report["test"], report["test_views"]
    assert exams["overall"]["metrics"]["roc_auc"]["value"] == 1.0 and exams["overall"]["n_exams"] == 16
    assert set(exams["subgroups"]) == {"vendor", "density"} and set(views["subgroups"]) == {"view", "laterality"}
    assert exams["subgroups"]["vendor"]["GE"] == {"n_exams": 4, "n_patients": 4, "n_positive": 0, "evaluable": False,
                                                  "reason": "one class only: 0 malignant of 4 exam(s)"}  # fmt: skip
    assert exams["subgroups"]["density"]["C"]["metrics"]["roc_auc"]["value"] == 1.0
    assert views["settings"]["unit"] == "view" and views["overall"]["n_exams"] == 48  # 8 cancer x 2 + 8 normal x 4 views
    assert views["subgroups"]["view"]["CC"]["metrics"]["roc_auc"]["value"] == 1.0
    assert views["subgroups"]["view"]["MLO"]["metrics"]["roc_auc"]["value"] < 1.0
    right = views["subgroups"]["laterality"]["R"]
    assert right["evaluable"] is False and right["n_positive"] == 0  # right breasts: no cancer anywhere
    card = (tmp_path / "store/reports/model_card.md").read_text()
    assert "### By density" in card and "### By laterality" in card and "| GE | 4 | 4 | 0 | not evaluable" in card
    metrics = MlflowClient(tracking_uri=mlflow.tracking_uri).get_run(run_id).data.metrics
    assert metrics["test_roc_auc"] == 1.0 and metrics["test_view_view_CC_roc_auc"] == 1.0
    assert "test_vendor_GE_roc_auc" not in metrics and "test_density_C_roc_auc" in metrics


def test_evaluation_report_evaluates_the_scoring_version_as_served_or_with_a_residual_temperature(tmp_path):
    """Scores of the model this run trained are evaluated as served (its temperature was fitted on
    this validation split); scores of a kept champion get a residual temperature, and its run and
    version (not the new challenger's) receive the metrics and triage tags; older scores are left out."""
    from resources.mlflow_resource import MlflowResource

    mlflow = MlflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=str(tmp_path / "artifacts"))
    registry = mlflow.client()
    registry.create_registered_model("tomosight-dbt")
    run_ids = []
    for temperature in (1.7, 0.8):
        with mlflow.start_run("model") as run:
            mlflow.configure().log_metrics({"temperature": temperature})
        run_ids.append(run.info.run_id)
        registry.create_model_version("tomosight-dbt", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    frames = report_inputs(run_ids[0])

    served = materialize_report(tmp_path / "v1", frames, mlflow)
    assert served["model_version"] == "1" and served["temperature"] == 1.0 and served["registered_temperature"] == 1.7

    # version 2 trained but kept as challenger; the scores come from version 1 (and a few stale ones from version 0)
    stale = frames["exam_predictions"].head(3).with_columns(model_version=pl.lit("0"), prob_malignant=pl.lit(0.99))
    kept = {**frames, "exam_predictions": pl.concat([frames["exam_predictions"], stale]),
            "model": frames["model"].with_columns(model_version=pl.lit("2"), mlflow_run_id=pl.lit(run_ids[1]))}  # fmt: skip
    report = materialize_report(tmp_path / "v2", kept, mlflow)
    assert report["model_version"] == "1" and report["registered_temperature"] == 1.7
    assert report["temperature"] < 1.0  # 0.8 vs 0.3 separate the validation split: a residual sharpening
    assert report["exams"] == served["exams"]  # the stale version-0 rows were left out
    assert "test_roc_auc" in registry.get_run(run_ids[0]).data.metrics and "test_roc_auc" not in registry.get_run(run_ids[1]).data.metrics
    assert "triage_low" in registry.get_model_version("tomosight-dbt", "1").tags
    assert "triage_low" not in registry.get_model_version("tomosight-dbt", "2").tags
