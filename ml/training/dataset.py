"""Exam-level dataset over the preprocessed memory-mapped ``.npy`` tensors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from ml.training.errors import DatasetError

VIEW_ORDER: tuple[str, ...] = ("lcc", "lmlo", "rcc", "rmlo")
CLASS_COLUMNS: tuple[str, ...] = ("Normal", "Actionable", "Benign", "Cancer")
MALIGNANT_CLASS = CLASS_COLUMNS.index("Cancer")

Augment = Callable[[np.ndarray, tuple[int, ...]], np.ndarray]


def canonical_view(view: str) -> str | None:
    """``"rmlo1"`` -> ``"rmlo"``; ``None`` for anything that is not one of VIEW_ORDER."""
    name = view[:4].lower()
    return name if name in VIEW_ORDER else None


def local_path(uri: str) -> Path:
    """The file path of a local tensor URI (plain path or ``file://``); S3 URIs are refused."""
    if "://" in uri and not uri.startswith("file://"):
        raise DatasetError(f"tensor URI {uri!r} is not local; download it first")
    return Path(uri.removeprefix("file://"))


def exam_table(labels: pl.DataFrame) -> pl.DataFrame:
    """One row per study: StudyUID, PatientID, target (class index), malignant (0/1)."""
    missing = {"StudyUID", "PatientID", *CLASS_COLUMNS} - set(labels.columns)
    if missing:
        raise DatasetError(f"labels lack columns {sorted(missing)}")
    target = sum(pl.col(c).cast(pl.Int64) * i for i, c in enumerate(CLASS_COLUMNS))
    per_view = labels.select("StudyUID", "PatientID", target.alias("target"))
    exams = per_view.group_by("StudyUID").agg(
        pl.col("PatientID").first(),
        pl.col("target").first(),
        pl.col("target").n_unique().alias("n"),
    )
    bad = exams.filter(pl.col("n") > 1)["StudyUID"].to_list()
    if bad:
        raise DatasetError(f"studies with different classes on different views: {bad[:5]}")
    return exams.drop("n").with_columns(
        (pl.col("target") == MALIGNANT_CLASS).cast(pl.Int64).alias("malignant")
    ).sort("StudyUID")


def view_paths(manifest: pl.DataFrame, path_column: str) -> dict[str, list[str | None]]:
    """StudyUID -> tensor path per VIEW_ORDER slot (first of any digit-suffixed repeats)."""
    missing = {"StudyUID", "View", path_column} - set(manifest.columns)
    if missing:
        raise DatasetError(f"manifest lacks columns {sorted(missing)}")
    table: dict[str, list[str | None]] = {}
    for study, view, uri in manifest.sort("StudyUID", "View").select(
        "StudyUID", "View", path_column
    ).iter_rows():
        slot = canonical_view(view)
        if slot is None:
            continue
        paths = table.setdefault(study, [None] * len(VIEW_ORDER))
        index = VIEW_ORDER.index(slot)
        if paths[index] is None:
            paths[index] = uri
    return table


class ExamDataset(Dataset):
    """One item per study: ``x`` (4, S, H, W) float32, ``view_mask`` (4,), labels.

    Only studies present in both ``manifest`` and ``labels`` are kept (sorted by StudyUID).
    Missing views are zeros with ``view_mask`` False. ``augment(view, key)`` gets one present
    view (S, H, W) and a key ``(seed, epoch, index, slot)`` to seed its generators from, so an
    item's augmentation does not depend on worker count or order; :meth:`set_epoch` moves it on.
    """

    def __init__(
        self,
        manifest: pl.DataFrame,
        labels: pl.DataFrame,
        *,
        n_slices: int | None = None,
        augment: Augment | None = None,
        seed: int = 0,
        path_column: str = "tensor_uri",
    ) -> None:
        paths = view_paths(manifest, path_column)
        exams = exam_table(labels).filter(pl.col("StudyUID").is_in(list(paths)))
        if exams.height == 0:
            raise DatasetError("no study appears in both the manifest and the labels")
        self.exams = exams
        self.paths = [paths[s] for s in exams["StudyUID"]]
        self.shape = self._item_shape(manifest, n_slices)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def _item_shape(self, manifest: pl.DataFrame, n_slices: int | None) -> tuple[int, int, int]:
        """(S, H, W) shared by every view: from the manifest columns, else from one tensor."""
        if {"n_slices", "height", "width"} <= set(manifest.columns):
            shapes = manifest.select("n_slices", "height", "width").unique().rows()
            if len(shapes) != 1:
                raise DatasetError(f"views differ in (n_slices, height, width): {shapes[:4]}")
            shape = tuple(int(v) for v in shapes[0])
        else:
            first = next(p for paths in self.paths for p in paths if p is not None)
            shape = tuple(np.load(local_path(first), mmap_mode="r").shape)
        if n_slices is not None and shape[0] != n_slices:
            raise DatasetError(f"tensors have {shape[0]} slices, expected n_slices={n_slices}")
        return shape  # type: ignore[return-value]

    def __len__(self) -> int:
        return self.exams.height

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentation draws of ``epoch``."""
        self.epoch = int(epoch)

    @property
    def targets(self) -> np.ndarray:
        """Class index of every item (0..3: normal, actionable, benign, cancer)."""
        return self.exams["target"].to_numpy()

    @property
    def malignant(self) -> np.ndarray:
        """Cancer flag of every item."""
        return self.exams["malignant"].to_numpy()

    def _read(self, uri: str) -> np.ndarray:
        array = np.load(local_path(uri), mmap_mode="r")
        if array.shape != self.shape:
            raise DatasetError(f"{uri}: shape {array.shape}, expected {self.shape}")
        return np.asarray(array, dtype=np.float32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        x = np.zeros((len(VIEW_ORDER), *self.shape), dtype=np.float32)
        mask = np.zeros(len(VIEW_ORDER), dtype=bool)
        for slot, uri in enumerate(self.paths[index]):
            if uri is None:
                continue
            view = self._read(uri)
            if self.augment is not None:
                view = self.augment(view, (self.seed, self.epoch, int(index), slot))
            x[slot], mask[slot] = view, True
        row = self.exams.row(index, named=True)
        return {
            "x": torch.from_numpy(x),
            "view_mask": torch.from_numpy(mask),
            "target": torch.tensor(row["target"], dtype=torch.int64),
            "malignant": torch.tensor(row["malignant"], dtype=torch.float32),
            "study_uid": row["StudyUID"],
            "patient_id": row["PatientID"],
        }


def class_weights(targets: np.ndarray) -> np.ndarray:
    """Per-item sampling weight 1 / (count of its class), so each class is drawn equally often."""
    targets = np.asarray(targets)
    _, inverse, counts = np.unique(targets, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse].astype(np.float64)
