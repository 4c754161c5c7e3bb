"""Held-out evaluation: a Duke-layout cohort (CSVs + DICOM) scored and evaluated at exam level."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ml.heldout import HeldoutError, evaluate_heldout
from ml.models import create_model
from ml.preprocess import PreprocessConfig
from ml.synth import CohortConfig, generate_cohort
from ml.synth.layout import LABELS_CSV

PREPROCESS = PreprocessConfig(strategy="sampled", height=40, width=32, n_slices=2)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("heldout") / "cohort"
    config = CohortConfig(studies=8, seed=5, rows=48, cols=40, slices=4, slices_max=5, cancer_fraction=0.5)
    generate_cohort(out, config, workers=1)
    return out


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = create_model("dbt_tiny", input_size=(40, 32), n_slices=2, slice_strategy="sampled", slice_pooling="max")
    return net.eval()


@pytest.fixture(scope="module")
def result(cohort, model):
    torch.set_num_threads(1)
    return evaluate_heldout(cohort, model, 1.0, PREPROCESS, n_boot=50)


def test_every_labelled_exam_is_scored_once(cohort, result):
    studies = {line.split(",")[1] for line in (cohort / LABELS_CSV).read_text().splitlines()[1:]}
    assert sorted(result.scores["StudyUID"].to_list()) == sorted(studies)
    assert result.scores["prob_malignant"].is_between(0.0, 1.0).all()
    assert set(result.scores["cancer"].unique().to_list()) == {0, 1}
    assert result.failed_views == 0 and result.quarantined_views == 0


def test_summary_has_auc_with_ci_ece_and_brier_in_range(result):
    summary = result.summary()
    assert summary["n_exams"] == len(result.scores)
    assert summary["n_malignant"] == int(result.scores["cancer"].sum())
    for name in ("roc_auc", "ece", "brier"):
        metric = summary[name]
        assert 0.0 <= metric["value"] <= 1.0
        assert metric["lower"] <= metric["value"] + 1e-9 and metric["value"] <= metric["upper"] + 1e-9
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["summary"]["roc_auc"]["value"] == summary["roc_auc"]["value"]
    assert len(payload["scores"]) == summary["n_exams"]


def test_temperature_softens_probabilities_but_keeps_the_ranking(cohort, model, result):
    hot = evaluate_heldout(cohort, model, 4.0, PREPROCESS, n_boot=10)
    cold, warm = result.scores["prob_malignant"].to_numpy(), hot.scores["prob_malignant"].to_numpy()
    assert np.all(np.abs(warm - 0.5) <= np.abs(cold - 0.5) + 1e-9)
    assert np.array_equal(np.argsort(cold, kind="stable"), np.argsort(warm, kind="stable"))
    assert hot.summary()["roc_auc"]["value"] == pytest.approx(result.summary()["roc_auc"]["value"])
    assert hot.temperature == 4.0


def test_geometry_the_model_was_not_trained_on_is_refused(cohort, model):
    with pytest.raises(HeldoutError, match="model expects"):
        evaluate_heldout(cohort, model, 1.0, PreprocessConfig(strategy="mip", height=40, width=32))
    with pytest.raises(HeldoutError, match="model expects"):
        evaluate_heldout(cohort, model, 1.0, PreprocessConfig(strategy="sampled", height=48, width=32, n_slices=2))


def test_cohort_without_labels_or_with_one_class_is_refused(cohort, model, tmp_path):
    import shutil

    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(cohort, unlabelled)
    (unlabelled / LABELS_CSV).unlink()
    with pytest.raises(HeldoutError, match="no labels"):
        evaluate_heldout(unlabelled, model, 1.0, PREPROCESS)
    normal_only = tmp_path / "normal"
    generate_cohort(normal_only, CohortConfig(studies=2, seed=1, rows=48, cols=40, slices=4, slices_max=5,
                                              cancer_fraction=0.0, benign_fraction=0.0, actionable_fraction=0.0))  # fmt: skip
    with pytest.raises(HeldoutError, match="both classes"):
        evaluate_heldout(normal_only, model, 1.0, PREPROCESS)
