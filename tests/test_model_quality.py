"""The demo recipe learns the synthetic lesions: held-out AUC well above chance on tiny images.

A scaled-down copy of `tomosight demo`'s defaults (cohort contrasts, MIP preprocessing, the
``dbt_cpu_mip`` model, its training settings) trained on one generator seed and scored on
another, through the same library calls the asset graph makes.
"""

from __future__ import annotations

import polars as pl
import pytest
import torch

from dbt_assets.assets.model import TrainingConfig
from dbt_assets.cli.demo import DEMO_LESION_CONTRAST, DEMO_MALIGNANT_CONTRAST
from ml.catalog import catalog_cohort, find_duke_csvs
from ml.evaluation import roc_auc
from ml.inference import predict_exams
from ml.models import create_model
from ml.preprocess import PreprocessConfig, preprocess_many
from ml.synth import CohortConfig, generate_cohort
from ml.training import ExamDataset, TrainConfig, default_augment, load_checkpoint, seed_everything, train

SIZE = dict(rows=64, cols=52, slices=4, slices_max=5, transfer_syntax="explicit")
PREPROCESS = PreprocessConfig(strategy="mip", height=64, width=52)


def cohort(root, studies: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Generate and preprocess a demo-contrast cohort: (manifest, labels)."""
    config = CohortConfig(studies=studies, seed=seed, lesion_contrast=DEMO_LESION_CONTRAST,
                          malignant_contrast=DEMO_MALIGNANT_CONTRAST, **SIZE)  # fmt: skip
    generate_cohort(root, config)
    csvs = find_duke_csvs(root)
    catalogued, _ = catalog_cohort(root, csvs.filepaths)
    items = [(r["dicom_uri"], r["View"], root / f"{i}.npy") for i, r in enumerate(catalogued.iter_rows(named=True))]
    rows = preprocess_many(items, PREPROCESS)
    manifest = catalogued.select("StudyUID", "View").with_columns(
        tensor_uri=pl.Series([str(r["tensor_path"]) for r in rows]), n_slices=pl.lit(1), height=pl.lit(64), width=pl.lit(52)
    )  # fmt: skip
    labels = pl.read_csv(csvs.labels).with_columns(pl.col("PatientID", "StudyUID", "View").cast(pl.String))
    return manifest, labels


def test_demo_recipe_learns_the_lesions_of_another_seed(tmp_path):
    torch.set_num_threads(1)
    train_m, train_l = cohort(tmp_path / "train", 56, seed=1)
    held_m, held_l = cohort(tmp_path / "heldout", 48, seed=1001)
    demo = TrainingConfig()
    seed_everything(0)
    net = create_model(demo.model_name, input_size=(64, 52))
    config = TrainConfig(epochs=15, batch_size=demo.batch_size, lr=demo.lr, warmup_epochs=demo.warmup_epochs,
                         sampler=demo.sampler, pos_weight=demo.pos_weight, device="cpu", progress=False,
                         checkpoint_dir=str(tmp_path / "ckpt"))  # fmt: skip
    data = ExamDataset(train_m, train_l, augment=default_augment(), seed=0)
    result = train(net, data, ExamDataset(train_m, train_l), config)
    _, exams = predict_exams(load_checkpoint(result.best_auc_path), held_m)
    truth = held_l.group_by("StudyUID").agg(pl.col("Cancer").max())
    scored = exams.join(truth, on="StudyUID")
    assert scored.height == held_l["StudyUID"].n_unique()
    assert scored["Cancer"].sum() >= 8
    assert roc_auc(scored["prob_malignant"].to_numpy(), scored["Cancer"].to_numpy()) >= 0.8
