"""ml.splits: patient-level, stratified, deterministic splits and folds."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import schemas
from ml.splits import (
    PatientLeakError,
    SplitError,
    assert_patient_disjoint,
    patient_splits,
    patient_strata,
    quotas,
)

CLASSES = ("Normal", "Actionable", "Benign", "Cancer")


def labels_for(patients: list[tuple[str, list[str]]]) -> pl.DataFrame:
    """Duke-style label rows: 4 views for normal/actionable studies, 2 for benign/cancer."""
    rows = []
    study = 0
    for patient, classes in patients:
        for cls in classes:
            study += 1
            views = (
                ("lcc", "lmlo") if cls in ("Benign", "Cancer") else ("lcc", "lmlo", "rcc", "rmlo")
            )
            for view in views:
                flags = {c: int(c == cls) for c in CLASSES}
                rows.append(
                    {"PatientID": patient, "StudyUID": f"DBT-S{study:05d}", "View": view, **flags}
                )
    return pl.DataFrame(rows)


def cohort(n_patients: int, n_cancer: int = 0, seed: int = 0, first: int = 0) -> pl.DataFrame:
    """Patients with 1-3 studies; the first ``n_cancer`` have a cancer study, the rest none."""
    rng = np.random.default_rng(seed)
    patients = []
    for i in range(first, first + n_patients):
        n_studies = int(rng.choice([1, 2, 3], p=[0.8, 0.15, 0.05]))
        classes = [str(rng.choice(CLASSES[:3], p=[0.9, 0.07, 0.03])) for _ in range(n_studies)]
        if i - first < n_cancer:
            classes[0] = "Cancer"
        patients.append((f"DBT-P{i:05d}", classes))
    return labels_for(patients)


def per_patient(splits: pl.DataFrame) -> pl.DataFrame:
    return splits.unique("PatientID").sort("PatientID")


def test_output_fits_the_splits_contract():
    splits = patient_splits(cohort(60, n_cancer=5))
    schemas.validate(splits, schemas.Splits)
    assert splits.columns == ["PatientID", "StudyUID", "split", "fold"]
    assert splits.schema["fold"] == pl.Int64


def test_every_study_is_assigned_once_and_patients_never_straddle():
    labels = cohort(300, n_cancer=20, seed=1)
    splits = patient_splits(labels)
    assert splits.height == labels["StudyUID"].n_unique() == splits["StudyUID"].n_unique()
    assert_patient_disjoint(splits)
    straddle = splits.group_by("PatientID").agg(pl.struct("split", "fold").n_unique().alias("n"))
    assert straddle["n"].max() == 1
    assert (labels.group_by("PatientID").agg(pl.col("StudyUID").n_unique())["StudyUID"] > 1).any()


def test_fractions_are_respected_on_500_patients():
    splits = per_patient(patient_splits(cohort(500, n_cancer=25), fractions=(0.6, 0.25, 0.15)))
    shares = splits["split"].value_counts(normalize=True)
    share = dict(zip(shares["split"], shares["proportion"], strict=True))
    assert share["train"] == pytest.approx(0.6, abs=0.02)
    assert share["val"] == pytest.approx(0.25, abs=0.02)
    assert share["test"] == pytest.approx(0.15, abs=0.02)


@pytest.mark.parametrize("seed", range(5))
def test_every_split_gets_cancers_with_ten_cancer_patients(seed):
    labels = cohort(200, n_cancer=10, seed=seed)
    splits = patient_splits(labels, seed=seed)
    strata = patient_strata(labels)
    cancer_patients = strata.filter(pl.col("stratum") == CLASSES.index("Cancer"))["PatientID"]
    counts = (
        per_patient(splits)
        .filter(pl.col("PatientID").is_in(cancer_patients.implode()))["split"]
        .value_counts()
    )
    assert dict(zip(counts["split"], counts["count"], strict=True)) == {
        "train": 7,
        "val": 2,
        "test": 1,
    }


def test_stratum_is_the_worst_class_of_the_patient():
    labels = labels_for(
        [("A", ["Normal", "Cancer"]), ("B", ["Actionable", "Benign"]), ("C", ["Normal"])]
    )
    strata = dict(patient_strata(labels).iter_rows())
    assert strata == {"A": 3, "B": 2, "C": 0}


def test_folds_are_balanced_in_size_and_class():
    labels = cohort(400, n_cancer=30, seed=2)
    splits = per_patient(patient_splits(labels, k_folds=5))
    trainval = splits.filter(pl.col("split") != "test")
    assert trainval["fold"].null_count() == 0
    assert (
        splits.filter(pl.col("split") == "test")["fold"].null_count()
        == splits.filter(pl.col("split") == "test").height
    )
    sizes = trainval["fold"].value_counts()
    assert sorted(sizes["fold"].to_list()) == [0, 1, 2, 3, 4]
    assert sizes["count"].max() - sizes["count"].min() <= 1
    strata = patient_strata(labels)
    cancers = (
        trainval.join(strata, on="PatientID").filter(pl.col("stratum") == 3)["fold"].value_counts()
    )
    assert cancers["count"].max() - cancers["count"].min() <= 1


def test_no_folds_gives_null_folds():
    splits = patient_splits(cohort(30), k_folds=0)
    assert splits["fold"].null_count() == splits.height
    schemas.validate(splits, schemas.Splits)


def test_splits_are_deterministic_and_seeded():
    labels = cohort(150, n_cancer=10)
    first = patient_splits(labels, seed=7)
    assert first.equals(patient_splits(labels.sample(fraction=1.0, shuffle=True, seed=3), seed=7))
    assert not first.equals(patient_splits(labels, seed=8))


def test_adding_patients_moves_few_existing_ones():
    old = cohort(400, n_cancer=20, seed=4)
    new = pl.concat(
        [
            old,
            cohort(40, seed=5, first=400).with_columns(
                pl.col("StudyUID").str.replace("DBT-S", "DBT-N")
            ),
        ]
    )
    before = per_patient(patient_splits(old))
    both = before.join(per_patient(patient_splits(new)), on="PatientID", suffix="_after")
    assert both.height == before.height
    assert both.filter(pl.col("split") != pl.col("split_after")).height <= 0.05 * before.height
    kept = both.filter((pl.col("split") != "test") & (pl.col("split_after") != "test"))
    assert kept.filter(pl.col("fold") != pl.col("fold_after")).height <= 0.1 * kept.height


def test_tiny_input_is_still_valid():
    labels = labels_for([("P1", ["Normal"]), ("P2", ["Cancer"]), ("P3", ["Benign", "Normal"])])
    splits = patient_splits(labels)
    schemas.validate(splits, schemas.Splits)
    assert splits.height == 4 and set(splits["PatientID"]) == {"P1", "P2", "P3"}
    assert_patient_disjoint(splits)


def test_quotas_use_largest_remainders():
    assert quotas(10, (0.7, 0.15, 0.15)) == [7, 2, 1]
    assert quotas(3, (0.7, 0.15, 0.15)) == [2, 1, 0]
    assert quotas(0, (0.7, 0.15, 0.15)) == [0, 0, 0]
    for n in range(1, 60):
        assert sum(quotas(n, (0.6, 0.25, 0.15))) == n


def test_leaks_are_named():
    leaky = pl.DataFrame(
        {
            "PatientID": ["P1", "P1", "P2", "P3", "P3"],
            "StudyUID": ["S1", "S2", "S3", "S4", "S5"],
            "split": ["train", "test", "val", "train", "train"],
            "fold": [0, None, 1, 2, 3],
        },
        schema_overrides={"fold": pl.Int64},
    )
    with pytest.raises(
        PatientLeakError, match=r"1 patient\(s\) in more than one split: P1"
    ) as info:
        assert_patient_disjoint(leaky)
    assert "more than one fold: P1" in str(info.value) and "P3" in str(info.value)
    assert "P2" not in str(info.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda df: df.drop("Cancer"), "lack column"),
        (lambda df: df.with_columns(pl.lit(1).alias("Benign")), "exactly one"),
        (lambda df: df.with_columns(pl.lit(0).alias("Normal")), "exactly one"),
        (lambda df: df.with_columns(pl.lit("DBT-S1").alias("StudyUID")), "several patients"),
        (lambda df: df.head(0), "empty"),
    ],
)
def test_bad_labels_raise_clear_errors(change, message):
    with pytest.raises(SplitError, match=message):
        patient_splits(change(cohort(10)))


def test_bad_settings_raise_clear_errors():
    labels = cohort(10)
    with pytest.raises(SplitError, match="fractions"):
        patient_splits(labels, fractions=(0.5, 0.5, 0.5))
    with pytest.raises(SplitError, match="k_folds"):
        patient_splits(labels, k_folds=-1)
