"""Hyperparameter search: search space, pruning, and ``hpo_job`` end to end on a tiny cohort."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dagster as dg
import numpy as np
import optuna
import polars as pl
import pytest
import torch

from ml.training import ConfigError, ExamDataset, TrainConfig
from ml.training.search import (
    SearchError,
    SearchSpace,
    complete,
    input_width,
    run_trial,
    suggest,
    trial_reporter,
)
from tests.support.cohort_home import materialized_home

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)
CLASSES = ("Normal", "Actionable", "Benign", "Cancer")
TINY_SPACE = SearchSpace(heights=(32, 48))


class FakeTrial:
    """Records what the search asks; answers from fixed choices and a pruning flag."""

    def __init__(self, prune_at: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.reports: list[tuple[int, float]] = []
        self.prune_at = prune_at

    def suggest_categorical(self, name, choices):
        self.calls.append((name, tuple(choices)))
        return choices[-1]

    def suggest_float(self, name, low, high, *, log=False):
        self.calls.append((name, low, high, log))
        return math.sqrt(low * high)

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return self.prune_at is not None and len(self.reports) > self.prune_at


def tiny_provider(root: Path, *, one_class_val: bool = False, studies: int = 8):
    """``DataProvider`` writing (1, h, w) tensors: cancer views carry a bright square (val = train)."""

    def provide(strategy: str, height: int, width: int):
        rng = np.random.default_rng(0)
        folder = root / f"{strategy}_{height}x{width}"
        folder.mkdir(parents=True, exist_ok=True)
        manifest, labels = [], []
        for i in range(studies):
            cls = CLASSES[(0, 3)[i % 2]]
            for view in ("lcc", "lmlo") if cls == "Cancer" else ("lcc", "lmlo", "rcc", "rmlo"):
                image = rng.normal(0.3, 0.05, (1, height, width))
                if cls == "Cancer":
                    image[:, 4:14, 4:14] = 0.95
                path = folder / f"{i}_{view}.npy"
                np.save(path, np.clip(image, 0, 1).astype(np.float16))
                manifest.append({"StudyUID": f"S{i}", "View": view, "slice_strategy": strategy, "height": height,
                                 "width": width, "n_slices": 1, "tensor_uri": str(path)})  # fmt: skip
                labels.append({"PatientID": f"P{i}", "StudyUID": f"S{i}", "View": view, **{c: int(c == cls) for c in CLASSES}})
        manifest, labels = pl.DataFrame(manifest), pl.DataFrame(labels)
        val_labels = labels.filter(pl.col("Normal") == 1) if one_class_val else labels
        return ExamDataset(manifest, labels), ExamDataset(manifest, val_labels)

    return provide


def base_config(tmp_path: Path, epochs: int = 3) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=4, lr=1e-3, device="cpu", progress=False, checkpoint_dir=str(tmp_path / "ckpt"))


def test_suggest_covers_the_space_and_derives_width():
    trial = FakeTrial()
    params = suggest(trial)
    assert [c[0] for c in trial.calls] == ["slice_strategy", "height", "lr", "fusion"]
    assert trial.calls[0][1] == ("central", "slab_mip", "mip") and trial.calls[3][1] == ("max", "concat", "attention")
    assert trial.calls[2][3] is True  # log-uniform learning rate
    assert params == {"slice_strategy": "mip", "height": 512, "width": 416, "lr": pytest.approx(math.sqrt(1e-5 * 3e-3)), "fusion": "attention"}
    assert input_width(256) == 208 and input_width(128) == 104
    assert complete({"slice_strategy": "central", "height": 32, "lr": 0.1, "fusion": "max"})["width"] == 26


def test_real_optuna_trials_stay_in_the_space():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    drawn = [suggest(study.ask(), TINY_SPACE) for _ in range(12)]
    assert {p["slice_strategy"] for p in drawn} <= set(TINY_SPACE.strategies)
    assert {p["fusion"] for p in drawn} <= set(TINY_SPACE.fusions)
    assert all(p["height"] in (32, 48) and p["width"] == round(p["height"] * 0.8125) for p in drawn)
    assert all(1e-5 <= p["lr"] <= 3e-3 for p in drawn)
    assert len({p["lr"] for p in drawn}) == 12


def test_search_space_rejects_bad_choices():
    with pytest.raises(ConfigError, match="sampled"):
        SearchSpace(strategies=("sampled",))
    with pytest.raises(ConfigError, match="fusion"):
        SearchSpace(fusions=("maxx",))
    with pytest.raises(ConfigError, match="lr_range"):
        SearchSpace(lr_range=(1e-2, 1e-4))


def test_trial_trains_reports_every_epoch_and_keeps_a_checkpoint(tmp_path):
    trial = FakeTrial()
    params = {"slice_strategy": "central", "height": 32, "lr": 3e-3, "fusion": "concat"}
    seen: list[int] = []
    outcome = run_trial(params, tiny_provider(tmp_path), base_config(tmp_path), report=trial_reporter(trial),
                        model_name="dbt_tiny", on_epoch=lambda epoch, m: seen.append(epoch))  # fmt: skip
    assert seen == [0, 1, 2] and [step for step, _ in trial.reports] == [0, 1, 2]
    assert outcome.value == max(v for _, v in trial.reports) and 0 <= outcome.value <= 1
    assert (outcome.checkpoint / "model.safetensors").is_file()
    config = json.loads((outcome.checkpoint / "config.json").read_text())
    assert config["model"]["fusion"] == "concat" and config["model"]["input_size"] == [32, 26]
    assert config["training"]["train_config"]["lr"] == 3e-3


def test_pruning_raises_trial_pruned(tmp_path):
    trial = FakeTrial(prune_at=0)
    params = {"slice_strategy": "mip", "height": 32, "lr": 1e-3, "fusion": "max"}
    with pytest.raises(optuna.TrialPruned):
        run_trial(params, tiny_provider(tmp_path), base_config(tmp_path), report=trial_reporter(trial), model_name="dbt_tiny")
    assert len(trial.reports) == 1  # stopped after the first epoch


def test_median_pruner_stops_a_trial_below_the_median(tmp_path):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    space = {"slice_strategy": optuna.distributions.CategoricalDistribution(["mip"])}
    study.add_trial(optuna.trial.create_trial(params={"slice_strategy": "mip"}, distributions=space, value=1.5,
                                              intermediate_values={0: 1.5, 1: 1.5}))  # fmt: skip  (AUC can't reach 1.5)
    trial = study.ask()
    params = {"slice_strategy": "mip", "height": 32, "lr": 1e-3, "fusion": "max"}
    with pytest.raises(optuna.TrialPruned):
        run_trial(params, tiny_provider(tmp_path), base_config(tmp_path), report=trial_reporter(trial), model_name="dbt_tiny")
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert study.trials[-1].state == optuna.trial.TrialState.PRUNED and list(study.trials[-1].intermediate_values) == [0]


def test_one_class_validation_is_a_search_error(tmp_path):
    params = {"slice_strategy": "central", "height": 32, "lr": 1e-3, "fusion": "max"}
    reports = []
    with pytest.raises(SearchError, match="one class"):
        run_trial(params, tiny_provider(tmp_path, one_class_val=True), base_config(tmp_path, epochs=1),
                  report=lambda epoch, auc: reports.append(auc) or False, model_name="dbt_tiny")  # fmt: skip
    assert reports == []  # an undefined AUC is never reported to the pruner


# ------------------------------------------------------------------- the Dagster job


@pytest.fixture(scope="module")
def cohort_home(tmp_path_factory):
    """A home with `filepaths`, `exam_labels` and `splits` tables for 8 synthetic studies."""
    with materialized_home(tmp_path_factory.mktemp("hpo") / "home", ("filepaths", "quarantine", "exam_labels")) as found:
        yield found


def test_hpo_job_runs_trials_in_nested_mlflow_runs_and_registers_the_best(cohort_home):
    from mlflow.tracking import MlflowClient

    settings, defs, instance = cohort_home
    study_config = {"study_name": "tiny", "n_trials": 2, "epochs": 2, "seed": 2, "model_name": "dbt_tiny",
                    "heights": [32, 48], "batch_size": 4, "device": "cpu", "pruner_startup_trials": 1}  # fmt: skip
    run_config = {"ops": {"hpo_study": {"config": study_config}, "hpo_best": {"config": {"register_best": True, "n_boot": 20}}},
                  "loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # fmt: skip
    result = defs.resolve_job_def("hpo_job").execute_in_process(run_config=run_config, instance=instance)
    assert result.success

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{settings.home / 'optuna.db'}")
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert len(study.trials) == 2 and all(t.state in done for t in study.trials)
    assert len({(t.params["slice_strategy"], t.params["height"]) for t in study.trials}) == 2  # distinct sampler seeds

    record = result.output_for_node("hpo_best")
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    children = client.search_runs(
        [client.get_experiment_by_name("tomosight").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{record['parent_run_id']}'",
    )
    assert len(children) == 2
    by_trial = {int(run.data.tags["optuna_trial"]): run for run in children}
    for trial in study.trials:
        run = by_trial[trial.number]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.params["slice_strategy"] == trial.params["slice_strategy"]
        assert run.data.tags["optuna_state"] == trial.state.name
        history = client.get_metric_history(run.info.run_id, "val_auc")
        assert [m.step for m in history] == sorted(trial.intermediate_values)

    best = study.best_trial
    assert record["best_trial"] == best.number and record["best_val_auc"] == best.value
    assert record["best_params"]["width"] == round(record["best_params"]["height"] * 0.8125)
    assert record["best_mlflow_run_id"] == best.user_attrs["mlflow_run_id"]
    parent = client.get_run(record["parent_run_id"])
    assert parent.data.tags["best_trial"] == str(best.number)
    assert parent.data.tags["best_slice_strategy"] == best.params["slice_strategy"]
    assert parent.data.metrics["best_val_auc"] == pytest.approx(best.value)
    stored = json.loads((settings.home / "store/reports/hpo/tiny.json").read_text())
    assert stored["best_trial"] == best.number and stored["states"]["COMPLETE"] + stored["states"]["PRUNED"] == 2

    version = client.get_model_version_by_alias("tomosight-dbt", "challenger")
    assert str(version.version) == record["model_version"] and version.run_id == record["best_mlflow_run_id"]


def test_trials_are_gpu_pods_and_the_storage_is_a_secret_in_production(tmp_path):
    from dbt_assets.definitions import build_definitions
    from dbt_assets.k8s import GPU_STEP_TAGS
    from dbt_assets.settings import load_settings

    env = {"TOMOSIGHT_PROFILE": "production", "TOMOSIGHT_HOME": str(tmp_path), "TOMOSIGHT_SOURCE_URI": str(tmp_path),
           "TOMOSIGHT_STORE_URI": "s3://tomosight-test/store", "MLFLOW_TRACKING_URI": "http://127.0.0.1:9/mlflow"}  # fmt: skip
    defs = build_definitions(load_settings(env))
    job = defs.resolve_job_def("hpo_job")
    assert job.executor_def.name == "k8s"
    tags = {node.name: dict(node.tags) for node in job.graph.nodes}
    assert json.loads(tags["hpo_trial"]["dagster-k8s/config"]) == GPU_STEP_TAGS["dagster-k8s/config"]
    assert "dagster-k8s/config" not in tags["hpo_study"] and "dagster-k8s/config" not in tags["hpo_best"]
    url = defs.resources["hpo_storage"].url
    assert isinstance(url, dg.EnvVar) and url.env_var_name == "TOMOSIGHT_OPTUNA_STORAGE"  # never shown in the UI
