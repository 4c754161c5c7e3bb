"""ml.training: dataset, augmentations, losses, loop, checkpoints, DDP and the CLI."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from ml.models import create_model
from ml.training import (
    Compose,
    ConfigError,
    DatasetError,
    ExamDataset,
    RandomAffine,
    RandomFlip,
    RandomIntensity,
    ShardedSampler,
    TrainConfig,
    bce_loss,
    class_weights,
    default_augment,
    focal_loss,
    load_checkpoint,
    multiclass_loss,
    save_checkpoint,
    seed_everything,
    train,
)
from ml.training.loop import recompute_batchnorm, warmup_cosine

torch.set_num_threads(1)
CLASSES = ("Normal", "Actionable", "Benign", "Cancer")
SIZE = 32


def write_cohort(
    root: Path, n_studies: int = 12, slices: int = 1, seed: int = 0, extra_repeat: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Tiny tensors + manifest + labels; cancer views carry a bright square (learnable)."""
    rng = np.random.default_rng(seed)
    manifest, labels = [], []
    for i in range(n_studies):
        study, patient = f"1.2.{i}", f"P{i // 2}"
        cls = CLASSES[(0, 3, 2, 3, 1, 0)[i % 6]]
        views = ["lcc", "lmlo", "rcc", "rmlo"] if cls in ("Normal", "Actionable") else (
            ["lcc", "lmlo"] if i % 2 else ["rcc", "rmlo"]
        )
        if extra_repeat and i == 0:
            views = [*views, "rmlo1"]
        for view in views:
            image = rng.normal(0.3, 0.05, (slices, SIZE, SIZE))
            if cls == "Cancer" and view != "rmlo1":
                r, c = rng.integers(4, SIZE - 12, size=2)
                image[:, r : r + 8, c : c + 8] = 0.95
            path = root / f"{study}_{view}.npy"
            np.save(path, np.clip(image, 0, 1).astype(np.float16))
            manifest.append(
                {"StudyUID": study, "View": view,
                 "slice_strategy": "sampled" if slices > 1 else "central",
                 "height": SIZE, "width": SIZE, "n_slices": slices, "tensor_uri": str(path)}
            )
            labels.append({"PatientID": patient, "StudyUID": study, "View": view,
                           **{c: int(c == cls) for c in CLASSES}})
    return pl.DataFrame(manifest), pl.DataFrame(labels)


def tiny_model(seed: int = 0, **overrides) -> torch.nn.Module:
    seed_everything(seed)
    return create_model("dbt_tiny", input_size=(SIZE, SIZE), **overrides)


def quick_config(tmp_path: Path | None = None, **overrides) -> TrainConfig:
    values = dict(epochs=2, batch_size=4, lr=3e-3, progress=False, device="cpu",
                  checkpoint_dir=str(tmp_path) if tmp_path else None)
    return TrainConfig(**{**values, **overrides})


# ---------------------------------------------------------------- dataset


def test_dataset_shapes_masks_and_labels(tmp_path):
    manifest, labels = write_cohort(tmp_path, n_studies=6, slices=3, extra_repeat=True)
    ds = ExamDataset(manifest, labels, n_slices=3)
    assert len(ds) == 6
    item = ds[0]
    assert item["x"].shape == (4, 3, SIZE, SIZE) and item["x"].dtype == torch.float32
    assert item["view_mask"].tolist() == [True, True, True, True]
    assert item["target"].item() == 0 and item["malignant"].item() == 0.0
    # The "rmlo1" repeat is ignored: slot 3 holds the plain "rmlo" tensor.
    rmlo = np.load(tmp_path / "1.2.0_rmlo.npy").astype(np.float32)
    np.testing.assert_array_equal(item["x"][3].numpy(), rmlo)
    cancer = ds[1]  # study 1: cancer, left breast only
    assert cancer["view_mask"].tolist() == [True, True, False, False]
    assert cancer["target"].item() == 3 and cancer["malignant"].item() == 1.0
    assert torch.count_nonzero(cancer["x"][2:]) == 0
    np.testing.assert_array_equal(ds.targets, [0, 3, 2, 3, 1, 0])


def test_dataset_rejects_bad_input(tmp_path):
    manifest, labels = write_cohort(tmp_path, n_studies=3)
    with pytest.raises(DatasetError, match="slices"):
        ExamDataset(manifest, labels, n_slices=4)
    mixed = labels.with_columns(
        pl.when((pl.col("StudyUID") == "1.2.0") & (pl.col("View") == "lcc"))
        .then(1).otherwise(pl.col("Cancer")).alias("Cancer"),
        pl.when((pl.col("StudyUID") == "1.2.0") & (pl.col("View") == "lcc"))
        .then(0).otherwise(pl.col("Normal")).alias("Normal"),
    )
    with pytest.raises(DatasetError, match="different classes"):
        ExamDataset(manifest, mixed)
    with pytest.raises(DatasetError, match="no study"):
        ExamDataset(manifest, labels.with_columns(("x" + pl.col("StudyUID")).alias("StudyUID")))
    s3 = manifest.with_columns(pl.lit("s3://bucket/t.npy").alias("tensor_uri"))
    with pytest.raises(DatasetError, match="not local"):
        ExamDataset(s3, labels)[0]


def test_class_weights_and_sharded_sampler():
    targets = np.array([0, 0, 0, 0, 0, 0, 3, 3])
    weights = class_weights(targets)
    assert weights[targets == 0].sum() == pytest.approx(weights[targets == 3].sum())
    drawn = list(ShardedSampler(8, weights=weights * 0 + (targets == 3), seed=1))
    assert set(drawn) <= {6, 7} and len(drawn) == 8
    shards = [list(ShardedSampler(7, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 4 and set(shards[0] + shards[1]) == set(range(7))
    sampler = ShardedSampler(50, seed=3)
    first = list(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(50))
    ordered = [list(ShardedSampler(5, shuffle=False, rank=r, world_size=2)) for r in range(2)]
    assert ordered == [[0, 2, 4], [1, 3]]


# ---------------------------------------------------------------- augmentations


def test_augmentations_are_seeded_and_identical_across_slices():
    rng = np.random.default_rng(0)
    one = rng.random((1, 24, 20)).astype(np.float32)
    view = np.repeat(one, 3, axis=0)
    augment = default_augment()
    a = augment(view, (0, 0, 5, 1))
    b = augment(view, (0, 0, 5, 1))
    c = augment(view, (0, 1, 5, 1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == view.shape and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    np.testing.assert_array_equal(a[0], a[1])
    np.testing.assert_array_equal(a[0], a[2])


def test_flip_and_identity_affine():
    view = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
    np.testing.assert_array_equal(RandomFlip(p=1.0)(view), view[:, ::-1])
    np.testing.assert_array_equal(RandomFlip(p=0.0)(view), view)
    identity = RandomAffine(degrees=0, scale=0, translate=0)
    np.testing.assert_allclose(identity(view), view, atol=1e-4)
    # In pixel units the drawn matrix is a pure rotation (no shear on non-square images).
    rotate = RandomAffine(degrees=30, scale=0, translate=0, seed=4)
    theta = rotate.matrix(8, 16)[:, :2].double()
    to_pixels = torch.diag(torch.tensor([16 / 2, 8 / 2], dtype=torch.float64))
    pixel = to_pixels @ theta @ torch.linalg.inv(to_pixels)
    torch.testing.assert_close(pixel @ pixel.T, torch.eye(2, dtype=torch.float64))
    assert abs(pixel[0, 1].item()) > 0.01  # it did rotate


def test_intensity_keeps_range_and_composes_deterministically():
    view = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8)
    out = Compose([RandomIntensity(gamma=0.5, contrast=0.5, brightness=0.3)])(view, 7)
    assert out.min() >= 0.0 and out.max() <= 1.0 and not np.allclose(out, view)
    again = Compose([RandomIntensity(gamma=0.5, contrast=0.5, brightness=0.3)])(view, 7)
    np.testing.assert_array_equal(out, again)


def test_dataset_augmentation_preserves_mask_and_is_reproducible(tmp_path):
    manifest, labels = write_cohort(tmp_path, n_studies=4)
    ds = ExamDataset(manifest, labels, augment=default_augment(), seed=5)
    first = ds[1]
    assert first["view_mask"].tolist() == [True, True, False, False]
    assert torch.count_nonzero(first["x"][2:]) == 0
    torch.testing.assert_close(ds[1]["x"], first["x"], rtol=0, atol=0)
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["x"], first["x"])


# ---------------------------------------------------------------- losses and schedule


def test_losses_match_references():
    logits = torch.tensor([-2.0, 0.5, 3.0, -0.1])
    target = torch.tensor([0.0, 1.0, 1.0, 0.0])
    plain = F.binary_cross_entropy_with_logits(logits, target)
    assert focal_loss(logits, target, alpha=-1, gamma=0) == pytest.approx(plain.item())
    p = torch.sigmoid(logits)
    manual = -(3.0 * target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()
    assert bce_loss(logits, target, pos_weight=3.0) == pytest.approx(manual.item(), rel=1e-5)
    # Focal loss down-weights the easy example (logit 3 on a positive) most.
    easy = focal_loss(logits[2:3], target[2:3], alpha=-1, gamma=2)
    hard = focal_loss(logits[1:2], target[1:2], alpha=-1, gamma=2)
    assert easy / F.binary_cross_entropy_with_logits(logits[2:3], target[2:3]) < (
        hard / F.binary_cross_entropy_with_logits(logits[1:2], target[1:2])
    )
    multi = torch.tensor([[2.0, 0.1, -1.0, 0.3], [0.0, 0.0, 0.0, 4.0]])
    cls = torch.tensor([0, 3])
    assert multiclass_loss(multi, cls) == pytest.approx(F.cross_entropy(multi, cls).item())
    assert multiclass_loss(multi, cls, gamma=2) < multiclass_loss(multi, cls)


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 4, 20) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(4, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(12, 4, 20) == pytest.approx(0.5)
    assert warmup_cosine(20, 4, 20, min_ratio=0.1) == pytest.approx(0.1)


def test_train_config_validates_with_hints():
    with pytest.raises(ConfigError, match="did you mean 'focal'"):
        TrainConfig(loss="focl")
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        TrainConfig.from_dict({"batch_sise": 4})
    with pytest.raises(ConfigError):
        TrainConfig(grad_accum=0)
    config = TrainConfig(pos_weight=2.5, epochs=3)
    assert TrainConfig.from_dict(config.to_dict()) == config


# ---------------------------------------------------------------- training loop


def test_model_overfits_a_handful_of_exams(tmp_path):
    manifest, labels = write_cohort(tmp_path, n_studies=8)
    ds = ExamDataset(manifest, labels)
    calls = []
    result = train(
        tiny_model(), ds, ds, quick_config(tmp_path / "ckpt", epochs=12, warmup_steps=2),
        on_epoch=lambda epoch, metrics: calls.append((epoch, metrics["val_auc"])),
    )
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.history[-1]["val_auc"] == 1.0 and result.best_auc == 1.0
    tied = [h for h in result.history if h["val_auc"] == 1.0]  # ties in AUC go to the lowest loss
    assert result.best_epoch == min(tied, key=lambda h: h["val_loss"])["epoch"]
    assert [c[0] for c in calls] == list(range(12))
    assert (result.best_auc_path / "model.safetensors").is_file()
    assert (result.best_calibration_path / "config.json").is_file()
    meta = json.loads((result.best_auc_path / "config.json").read_text())
    assert meta["training"]["epoch"] == result.best_epoch
    assert meta["model"]["input_size"] == [SIZE, SIZE]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    return write_cohort(root, n_studies=10, slices=2)


def test_seeding_makes_runs_identical(cohort):
    manifest, labels = cohort

    def run():
        ds = ExamDataset(manifest, labels, augment=default_augment(), seed=3)
        config = quick_config(epochs=2, sampler="weighted", grad_accum=2, seed=3, loss="focal")
        model = tiny_model(seed=3, n_slices=2, slice_strategy="sampled", slice_pooling="mean")
        return train(model, ds, ExamDataset(manifest, labels), config)

    first, second = run(), run()
    def metrics(result):
        return [{k: v for k, v in h.items() if k != "train_images_per_s"} for h in result.history]

    assert metrics(first) == metrics(second)
    pairs = zip(first.model.state_dict().items(), second.model.state_dict().items())
    for (name, a), (_, b) in pairs:
        assert torch.equal(a, b), name


def test_early_stopping_triggers(cohort):
    manifest, labels = cohort
    ds = ExamDataset(manifest, labels)
    config = quick_config(epochs=10, lr=1e-12, early_stopping_patience=2)
    model = tiny_model(n_slices=2, slice_strategy="sampled", slice_pooling="max")
    for module in model.modules():  # frozen BatchNorm statistics: neither AUC nor loss can improve
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.0
    result = train(model, ds, ds, config)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 0


def test_precise_batchnorm_matches_the_batch_statistics(cohort):
    manifest, labels = cohort
    ds = ExamDataset(manifest, labels)
    model = tiny_model(n_slices=2, slice_strategy="sampled", slice_pooling="mean")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    loader = torch.utils.data.DataLoader(ds, batch_size=len(ds))
    batch = next(iter(loader))

    def eval_and_train_outputs() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            model.eval()
            evaluated = model(batch["x"], batch["view_mask"])["exam"]
            model.train()
            return evaluated, model(batch["x"], batch["view_mask"])["exam"]

    for norm in norms:  # stale statistics, as after a few large steps
        norm.running_mean.fill_(3.0)
        norm.running_var.fill_(9.0)
    stale, _ = eval_and_train_outputs()
    assert recompute_batchnorm(model, loader, quick_config(), torch.device("cpu"), max_batches=5) == 1
    assert all(n.momentum == 0.1 for n in norms) and model.training
    evaluated, trained = eval_and_train_outputs()
    # eval mode now normalises with this batch's own statistics (up to the n / (n - 1) of the variance)
    assert (stale - trained).abs().max() > 0.1
    torch.testing.assert_close(evaluated, trained, rtol=0, atol=0.02)
    net = tiny_model(n_slices=2, slice_strategy="sampled", slice_pooling="mean")
    result = train(net, ds, ds, quick_config(precise_bn_batches=2, epochs=1))
    assert math.isfinite(result.history[0]["val_loss"])
    with pytest.raises(ConfigError):
        quick_config(precise_bn_batches=-1)


def test_multiclass_training_runs(cohort):
    manifest, labels = cohort
    ds = ExamDataset(manifest, labels)
    model = tiny_model(num_classes=4, n_slices=2, slice_strategy="sampled", slice_pooling="mean")
    result = train(model, ds, ds, quick_config(epochs=1, view_loss_weight=0.0))
    assert math.isfinite(result.history[0]["val_loss"]) and 0 <= result.history[0]["val_auc"] <= 1


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, cohort):
    manifest, labels = cohort
    ds = ExamDataset(manifest, labels)
    model = tiny_model(n_slices=2, slice_strategy="sampled", slice_pooling="attention")
    model = train(model, ds, ds, quick_config(epochs=1)).model.eval()
    folder = save_checkpoint(model, tmp_path / "ckpt", {"note": "x"})
    loaded = load_checkpoint(folder)
    batch = torch.stack([ds[i]["x"] for i in range(4)])
    mask = torch.stack([ds[i]["view_mask"] for i in range(4)])
    with torch.no_grad():
        expected, actual = model(batch, mask), loaded(batch, mask)
    for key in ("view", "breast", "exam"):
        assert torch.equal(expected[key], actual[key]), key
    assert loaded.config == model.config


# ---------------------------------------------------------------- CLI and DDP


def write_tables(root: Path, cohort_dir: Path) -> list[str]:
    manifest, labels = write_cohort(cohort_dir, n_studies=12)
    studies = labels.select("PatientID", "StudyUID").unique().sort("StudyUID")
    splits = studies.with_columns(
        pl.when(pl.col("PatientID").is_in(["P4", "P5"])).then(pl.lit("val"))
        .otherwise(pl.lit("train")).alias("split")
    )
    paths = []
    for name, frame in (("manifest", manifest), ("labels", labels), ("splits", splits)):
        path = root / f"{name}.parquet"
        frame.write_parquet(path)
        paths += [f"--{name}", str(path)]
    return paths


def test_cli_trains_and_writes_checkpoints(tmp_path, capsys):
    from dbt_assets.cli import main

    tables = write_tables(tmp_path, tmp_path)
    config = json.dumps({"train": {"epochs": 2, "batch_size": 4, "device": "cpu"}})
    out = str(tmp_path / "out")
    code = main(["train", *tables, "--config", config, "--out", out, "--no-progress"])
    assert code == 0
    summary = json.loads((tmp_path / "out" / "history.json").read_text())
    assert len(summary["history"]) == 2 and summary["n_train"] == 8 and summary["n_val"] == 4
    assert "best epoch" in capsys.readouterr().out
    model = load_checkpoint(tmp_path / "out" / "best_auc")
    assert model.config.input_size == (SIZE, SIZE)
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        main(["train", *tables, "--config", '{"trian": {}}', "--out", str(tmp_path / "o2")])


def test_torchrun_two_processes_gloo(tmp_path):
    tables = write_tables(tmp_path, tmp_path)
    config = json.dumps({"train": {"epochs": 2, "batch_size": 2, "device": "cpu"}})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "ml.training",
               *tables, "--config", config,
               "--out", str(tmp_path / "out"), "--no-progress"]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60,
                              cwd=Path(__file__).resolve().parents[1])
    except subprocess.TimeoutExpired:
        pytest.skip("torchrun did not finish within 60 s on this machine")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("best epoch") == 1  # only rank 0 reports
    summary = json.loads((tmp_path / "out" / "history.json").read_text())
    assert len(summary["history"]) == 2 and summary["n_val"] == 4
    assert load_checkpoint(tmp_path / "out" / "best_auc") is not None
    assert time.perf_counter() - started < 60
