"""Tests for ml.evaluation: metrics against hand computations and scikit-learn, patient-level
bootstrap, subgroups, temperature scaling, operating points, k-fold, plots, model card."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

import ml.evaluation as ev
from ml.evaluation.metrics import metrics_unchecked


def _cohort(n_patients: int, seed: int, exams_per_patient: int = 2, separation: float = 1.5):
    """Patients with one label each and noisy logits; returns (logits, labels, patient_ids)."""
    rng = np.random.default_rng(seed)
    patient_label = rng.integers(0, 2, n_patients)
    patients = np.repeat(np.arange(n_patients), exams_per_patient)
    labels = patient_label[patients]
    logits = separation * (2 * labels - 1) + rng.normal(0, 1.5, labels.size)
    return logits, labels, np.array([f"P{p:04d}" for p in patients])


# ---------------------------------------------------------------- metrics


def test_roc_auc_hand_example_with_ties():
    # positive 0.4 beats negative 0.1 and ties negative 0.4 (1/2); positive 0.8 beats both: 3.5 / 4
    assert ev.roc_auc([0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1]) == pytest.approx(0.875, abs=1e-12)


def test_average_precision_hand_example():
    # (R, P) after each threshold: (.5, 1), (.5, .5), (1, 2/3), (1, .5) -> .5 * 1 + .5 * 2/3
    ap = ev.average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    assert ap == pytest.approx(0.5 + 1 / 3, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_ranking_metrics_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 80)
    scores = np.round(rng.random(80), 1)  # many ties
    assert ev.roc_auc(scores, labels) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    assert ev.average_precision(scores, labels) == pytest.approx(
        skm.average_precision_score(labels, scores), abs=1e-12
    )
    fpr, tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    curve = ev.binary_curve(scores, labels)
    np.testing.assert_allclose(curve.fpr, fpr)
    np.testing.assert_allclose(curve.tpr, tpr)


def test_sensitivity_at_specificity_hand_example():
    negatives = np.arange(10) / 10 + 0.05  # 0.05 .. 0.95
    positives = np.array([0.3, 0.9, 0.97, 0.99])
    scores = np.r_[negatives, positives]
    labels = np.r_[np.zeros(10), np.ones(4)]
    # spec >= .90 allows one false positive (0.95): threshold 0.9 catches 0.9, 0.97, 0.99
    assert ev.sensitivity_at_specificity(scores, labels, 0.90) == pytest.approx(0.75)
    # spec >= .95 allows none: threshold 0.97 catches 0.97, 0.99
    assert ev.sensitivity_at_specificity(scores, labels, 0.95) == pytest.approx(0.5)
    assert ev.sensitivity_at_specificity(scores, labels, 0.0) == 1.0


def test_calibration_metrics_hand_examples():
    p = np.array([0.1, 0.2, 0.7, 0.9])
    y = np.array([0, 1, 1, 1])
    assert ev.brier_score(p, y) == pytest.approx((0.01 + 0.64 + 0.09 + 0.01) / 4)
    # two bins: [0, .5): mean p .15, rate .5 -> .35 * 2/4; [.5, 1]: mean p .8, rate 1 -> .2 * 2/4
    assert ev.expected_calibration_error(p, y, n_bins=2) == pytest.approx(0.275)
    assert ev.log_loss(p, y) == pytest.approx(skm.log_loss(y, p))
    counts, mean_p, rate = ev.reliability_bins([0.0, 1.0, 1.0], [0, 1, 0], n_bins=4)
    assert counts.tolist() == [1, 0, 0, 2]  # 1.0 falls in the last bin
    assert np.isnan(mean_p[1]) and rate[3] == pytest.approx(0.5)


def test_compute_metrics_consistent_with_single_metric_functions():
    logits, labels, _ = _cohort(60, seed=4)
    p = ev.sigmoid(logits)
    out = ev.compute_metrics(p, labels, ece_bins=15)
    assert out["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, p))
    assert out["pr_auc"] == pytest.approx(skm.average_precision_score(labels, p))
    assert out["brier"] == pytest.approx(skm.brier_score_loss(labels, p))
    assert out["ece"] == pytest.approx(ev.expected_calibration_error(p, labels, 15))
    assert out["sens_at_spec_0.95"] == pytest.approx(ev.sensitivity_at_specificity(p, labels, 0.95))
    one_class = ev.compute_metrics([0.2, 0.4], [0, 0])
    assert one_class["roc_auc"] is None and one_class["brier"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("scores", "labels", "call"),
    [
        ([0.1, 0.2], [0, 2], ev.roc_auc),
        ([0.1, np.nan], [0, 1], ev.roc_auc),
        ([0.1, 0.2], [1, 1], ev.roc_auc),
        ([0.1, 1.2], [0, 1], ev.brier_score),
        ([0.1, 0.2, 0.3], [0, 1], ev.log_loss),
    ],
)
def test_bad_inputs_raise_typed_error(scores, labels, call):
    with pytest.raises(ev.EvaluationError):
        call(scores, labels)


# ---------------------------------------------------------------- bootstrap and report


def test_patient_resampling_keeps_each_patients_exams_together():
    patients = np.array(["a", "a", "a", "b", "c", "c", "d"])
    exam_patient = np.unique(patients, return_inverse=True)[1]
    resamples = list(ev.patient_bootstrap_indices(patients, 50, seed=7))
    for idx in resamples:
        times = np.bincount(idx, minlength=patients.size)  # copies of each exam
        for p in range(4):
            assert len(set(times[exam_patient == p])) == 1  # all exams of a patient equally often
        per_patient = np.array([times[exam_patient == p][0] for p in range(4)])
        assert per_patient.sum() == 4  # as many patients drawn as there are
    again = list(ev.patient_bootstrap_indices(patients, 50, seed=7))
    assert all(np.array_equal(a, b) for a, b in zip(resamples, again, strict=True))
    assert len({tuple(r) for r in resamples}) > 1


def test_bootstrap_ci_contains_estimate_and_narrows_with_more_patients():
    widths = []
    for n_patients in (40, 400):
        logits, labels, patients = _cohort(n_patients, seed=1)
        report = ev.evaluate_scores(ev.sigmoid(logits), labels, patients, n_boot=200, seed=3)
        for m in report.overall.metrics.values():
            assert m.lower <= m.value <= m.upper
        auc = report.overall.metrics["roc_auc"]
        widths.append(auc.upper - auc.lower)
        assert report.overall.n_patients == n_patients and report.overall.n_exams == 2 * n_patients
    assert widths[1] < widths[0] / 2


def test_single_class_resamples_are_skipped_and_counted():
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.9])
    y = np.array([0, 0, 0, 0, 1])
    report = ev.evaluate_scores(p, y, ["a", "b", "c", "d", "e"], n_boot=100, seed=0)
    o = report.overall
    assert 0 < o.n_boot_skipped < 100 and o.n_boot_used + o.n_boot_skipped == 100
    only_negatives = ev.evaluate_scores([0.1, 0.2], [0, 0], ["a", "b"], n_boot=30)
    assert only_negatives.overall.metrics["roc_auc"].value is None
    assert only_negatives.overall.metrics["brier"].lower is None  # no usable resamples
    assert only_negatives.overall.n_boot_skipped == 30


def test_subgroups_match_metrics_on_the_subset_and_report_is_json_ready():
    logits, labels, patients = _cohort(80, seed=2)
    p = ev.sigmoid(logits)
    view = np.where(np.arange(p.size) % 2 == 0, "cc", "mlo")
    vendor = np.array([None if i % 5 == 0 else "Hologic" for i in range(p.size)], dtype=object)
    groups = {"view": view, "vendor": vendor}
    report = ev.evaluate_scores(p, labels, patients, groups=groups, n_boot=50, seed=1)
    assert set(report.subgroups["view"]) == {"cc", "mlo"}
    assert set(report.subgroups["vendor"]) == {"Hologic", "unknown"}
    cc = view == "cc"
    expected = metrics_unchecked(p[cc], labels[cc], (0.90, 0.95), 10)
    got = {k: m.value for k, m in report.subgroups["view"]["cc"].metrics.items()}
    assert got == pytest.approx(expected)
    payload = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert payload["overall"]["metrics"]["roc_auc"]["value"] == pytest.approx(ev.roc_auc(p, labels))
    assert payload["settings"]["resampling"] == "patient"
    same = ev.evaluate_scores(p, labels, patients, groups=groups, n_boot=50, seed=1)
    assert same.to_dict() == report.to_dict()
    with pytest.raises(ev.EvaluationError):
        ev.evaluate_scores(p, labels, patients, groups={"view": view[:-1]}, n_boot=5)


# ---------------------------------------------------------------- temperature scaling


def test_temperature_scaling_recovers_known_temperature_and_lowers_ece():
    rng = np.random.default_rng(11)
    true_logits = rng.normal(0.0, 2.0, 20_000)
    labels = (rng.random(true_logits.size) < ev.sigmoid(true_logits)).astype(int)
    overconfident = 2.5 * true_logits  # a model whose logits are 2.5x too large
    t = ev.fit_temperature(overconfident, labels)
    assert t == pytest.approx(2.5, rel=0.05)
    before = ev.expected_calibration_error(ev.sigmoid(overconfident), labels)
    scaled = ev.sigmoid(ev.apply_temperature(overconfident, t))
    after = ev.expected_calibration_error(scaled, labels)
    assert before > 0.05 and after < before / 3
    assert ev.binary_nll(overconfident / t, labels) < ev.binary_nll(overconfident, labels)


def test_temperature_stays_finite_when_validation_is_separated_perfectly():
    logits = np.array([-4.0, -3.0, -2.5, -2.0, -1.0, 1.5, 2.0, 3.5])
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    t = ev.fit_temperature(logits, labels)
    assert 0.3 < t < 1.0  # sharper than the model, but the plain likelihood would push T to its 1e-3 bound
    assert ev.fit_temperature(logits, labels, prior_sd=100.0) < t / 5  # a weaker prior lets it run
    p = ev.sigmoid(ev.apply_temperature(logits, t))
    assert p[labels == 1].min() < 0.999 and p[labels == 0].max() > 0.001


def test_temperature_leaves_a_calibrated_confident_model_alone_on_a_small_split():
    # A model whose logits are already calibrated and well separated, seen through 30-exam
    # validation splits (the demo's size): the fit must not soften it.
    rng = np.random.default_rng(5)
    temperatures = []
    for _ in range(40):
        y = (rng.random(30) < 0.25).astype(int)
        z = np.where(y == 1, rng.normal(7.0, 2.0, 30), rng.normal(-4.5, 1.5, 30))
        y = (rng.random(30) < ev.sigmoid(z)).astype(int)  # labels drawn from the model's own probabilities
        if 0 < y.sum() < y.size:
            temperatures.append(ev.fit_temperature(z, y))
    assert 0.75 < float(np.median(temperatures)) < 1.25


def test_temperature_helpers_and_errors():
    assert ev.sigmoid([0.0, 1000.0, -1000.0]).tolist() == [0.5, 1.0, 0.0]
    np.testing.assert_allclose(ev.sigmoid(ev.logit([0.2, 0.7])), [0.2, 0.7])
    with pytest.raises(ev.EvaluationError):
        ev.apply_temperature([1.0], 0.0)
    with pytest.raises(ev.EvaluationError):
        ev.fit_temperature([1.0, 2.0], [1, 1])
    with pytest.raises(ev.EvaluationError, match="prior_sd"):
        ev.fit_temperature([1.0, -2.0], [1, 0], prior_sd=0.0)


# ---------------------------------------------------------------- operating points

OP_SCORES = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
OP_LABELS = np.array([0, 0, 1, 0, 1, 0, 1, 1])


def test_operating_point_thresholds_hand_example():
    # J by threshold: .9 .25, .8 .5, .7 .25, .6 .5, .4 .25, .3 .5, .2 .25, .1 0 -> highest tie
    assert ev.youden_threshold(OP_SCORES, OP_LABELS) == 0.8
    assert ev.threshold_at_specificity(OP_SCORES, OP_LABELS, 0.75) == 0.6  # one FP (0.7) allowed
    assert ev.threshold_at_sensitivity(OP_SCORES, OP_LABELS, 1.0) == 0.3
    assert ev.threshold_at_specificity(OP_SCORES, OP_LABELS, 1.0) == 0.8
    m = ev.threshold_metrics(OP_SCORES, OP_LABELS, 0.6)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 1, 1, 3)
    assert m["ppv"] == 0.75 and m["npv"] == 0.75
    assert ev.threshold_metrics(OP_SCORES, OP_LABELS, None)["sensitivity"] == 0.0


def test_operating_points_dual_threshold_bands():
    points = ev.operating_points(
        OP_SCORES, OP_LABELS, target_specificity=0.75, low_sensitivity=1.0, high_specificity=1.0
    )
    assert points["youden"]["threshold"] == 0.8
    assert points["youden"]["sensitivity"] == 0.5 and points["youden"]["specificity"] == 1.0
    assert points["target_specificity"]["threshold"] == 0.6
    triage = points["triage"]
    assert triage["low"]["threshold"] == 0.3 and triage["high"]["threshold"] == 0.8
    bands = triage["bands"]
    assert [bands[b]["exams"] for b in ("auto_clear", "review", "suspicious")] == [2, 4, 2]
    assert [bands[b]["cancers"] for b in ("auto_clear", "review", "suspicious")] == [0, 2, 2]
    json.dumps(points, allow_nan=False)


def test_dual_threshold_never_crosses():
    points = ev.operating_points(OP_SCORES, OP_LABELS, low_sensitivity=0.25, high_specificity=0.5)
    triage = points["triage"]
    assert triage["low"]["threshold"] == 0.9 and triage["high"]["threshold"] == 0.9
    assert triage["bands"]["review"]["exams"] == 0


# ---------------------------------------------------------------- k-fold aggregation


def test_aggregate_folds_mean_and_t_interval():
    folds = [
        {"roc_auc": 0.8, "ece": None, "log_loss": 0.8},
        {"roc_auc": 0.9, "ece": 0.05, "log_loss": 0.9},
        {"roc_auc": 1.0, "ece": 0.07, "log_loss": 1.0},
    ]
    out = ev.aggregate_folds(folds)
    half = 4.302652729911275 * 0.1 / np.sqrt(3)  # t(0.975, df=2) * sd / sqrt(k)
    auc = out["roc_auc"]
    assert auc["mean"] == pytest.approx(0.9) and auc["sd"] == pytest.approx(0.1)
    # A probability-scale metric's interval stops at 1; log-loss is unbounded above.
    assert (auc["lower"], auc["upper"]) == pytest.approx((0.9 - half, 1.0))
    assert (out["log_loss"]["lower"], out["log_loss"]["upper"]) == pytest.approx((0.9 - half, 0.9 + half))
    assert out["ece"]["n_folds"] == 2 and out["ece"]["mean"] == pytest.approx(0.06)
    with pytest.raises(ev.EvaluationError):
        ev.aggregate_folds([])


def test_evaluate_folds_from_predictions():
    folds = []
    for seed in range(3):
        logits, labels, _ = _cohort(30, seed=seed)
        folds.append((ev.sigmoid(logits), labels))
    out = ev.evaluate_folds(folds)
    aucs = [skm.roc_auc_score(y, p) for p, y in folds]
    assert [f["roc_auc"] for f in out["folds"]] == pytest.approx(aucs)
    assert out["aggregate"]["roc_auc"]["mean"] == pytest.approx(np.mean(aucs))


# ---------------------------------------------------------------- plots and model card


def _assert_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0  # something was drawn


def test_plots_are_valid_pngs_written_atomically(tmp_path):
    logits, labels, patients = _cohort(40, seed=5)
    p = ev.sigmoid(logits)
    calibrated = ev.sigmoid(ev.apply_temperature(logits, ev.fit_temperature(logits, labels)))
    paths = [
        ev.plot_roc(
            p, labels, tmp_path / "roc.png", auc_ci=(0.8, 0.9), patient_ids=patients, n_boot=30
        ),
        ev.plot_pr(p, labels, tmp_path / "pr.png", ap_ci=(0.7, 0.9)),
        ev.plot_reliability(p, labels, tmp_path / "reliability.png", calibrated=calibrated),
    ]
    for path in paths:
        _assert_png(path)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["pr.png", "reliability.png", "roc.png"]


def test_model_card_contains_the_numbers_it_was_given(tmp_path):
    logits, labels, patients = _cohort(50, seed=6)
    p = ev.sigmoid(logits)
    side = np.where(np.arange(p.size) % 2 == 0, "left", "right")
    report = ev.evaluate_scores(p, labels, patients, groups={"laterality": side}, n_boot=50, seed=2)
    points = ev.operating_points(p, labels)
    card = ev.model_card(
        report,
        model_name="tomosight-dbt",
        version="7",
        config={"backbone": "resnet18", "fusion": "max"},
        data={"train exams": 123, "dataset sha256": "abc123"},
        calibration={"temperature": 1.8765, "ece_before": 0.0812, "ece_after": 0.0234},
        operating_points=points,
        caveats=["Validated on one vendor only."],
    )
    headings = ("Intended use", "Data", "Metrics", "Calibration", "Operating points", "Caveats")
    for heading in (*headings, "Versions"):
        assert f"## {heading}" in card
    auc = report.overall.metrics["roc_auc"]
    assert f"{auc.value:.3f} ({auc.lower:.3f}-{auc.upper:.3f})" in card
    left = report.subgroups["laterality"]["left"].metrics["ece"]
    assert f"| left | {report.subgroups['laterality']['left'].n_exams} |" in card
    assert f"{left.value:.3f} ({left.lower:.3f}-{left.upper:.3f})" in card
    assert "1.8765" in card and "0.0234" in card and "abc123" in card and "resnet18" in card
    assert f"{points['youden']['threshold']:.4f}" in card
    assert "synthetic" in card and "number of views" in card
    assert "Validated on one vendor only." in card
    assert "clinical use" in card and "tomosight-dbt 7" in card
    written = ev.write_model_card(tmp_path / "card.md", card)
    assert written.read_text(encoding="utf-8") == card
