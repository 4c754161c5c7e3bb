"""ml.catalog (resolve, hash, quarantine) and ml.blob_detector (baseline candidates)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pytest

from ml.blob_detector import BlobDetectorConfig, detect_blobs, detect_volume
from ml.catalog import catalog_cohort, find_duke_csvs, resolve_volume_path
from ml.synth.bto import BtoMeta, derived_uid, write_bto


def tissue_volume(frames: int = 6, rows: int = 96, cols: int = 80, seed: int = 0) -> np.ndarray:
    """Left-breast-like 10-bit volume: tissue on the left, air on the right, mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    tissue = ((yy - rows / 2) / (rows * 0.48)) ** 2 + (xx / (cols * 0.85)) ** 2 <= 1
    vol = np.where(tissue, 420.0, 10.0)[None] + rng.normal(0, 6, (frames, rows, cols))
    return np.clip(vol, 0, 1023).astype(np.uint16)


def write_volume(path: Path, vol: np.ndarray, study: str, view: str) -> Path:
    meta = BtoMeta("DBT-P00001", derived_uid(study), derived_uid(study, view), dt.date(2024, 2, 3), view[0].upper(), view[1:].upper())
    return write_bto(path, vol, meta, transfer_syntax="explicit")


def test_resolve_volume_path_tries_na_folder_then_classic(tmp_path):
    descriptive = "Breast-Cancer-Screening-DBT/DBT-P1/01-01-2000-DBT-S1-x-12345/18377.000000-92351/1-1.dcm"
    on_disk = tmp_path / "Breast-Cancer-Screening-DBT/DBT-P1/01-01-2000-DBT-S1-x-12345/18377.000000-NA-92351/1-1.dcm"
    on_disk.parent.mkdir(parents=True)
    on_disk.write_bytes(b"x")
    assert resolve_volume_path(tmp_path, descriptive) == on_disk
    classic = tmp_path / "c/1-1.dcm"
    classic.parent.mkdir()
    classic.write_bytes(b"y")
    on_disk.unlink()
    assert resolve_volume_path(tmp_path, descriptive, "c/1-1.dcm") == classic
    with pytest.raises(FileNotFoundError, match="tried"):
        resolve_volume_path(tmp_path, "nowhere/1-1.dcm", "neither/1-1.dcm")


def test_catalog_accounts_for_every_listed_volume(tmp_path):
    good = write_volume(tmp_path / "a/1-1.dcm", tissue_volume(), "S1", "lcc")
    (tmp_path / "b").mkdir()
    (tmp_path / "b/1-1.dcm").write_text("not dicom")
    csv = tmp_path / "BCS-DBT file-paths-train-v2.csv"
    csv.write_text(
        "PatientID,StudyUID,View,descriptive_path,classic_path\n"
        "DBT-P1,DBT-S1,lcc,a/1-1.dcm,\n"
        "DBT-P1,DBT-S1,lmlo,b/1-1.dcm,\n"
        "DBT-P1,DBT-S1,rcc,missing/1-1.dcm,\n"
    )
    assert find_duke_csvs(tmp_path).filepaths == csv
    catalogued, quarantined = catalog_cohort(tmp_path, csv)
    assert len(catalogued) + len(quarantined) == 3
    row = catalogued.row(0, named=True)
    assert row["View"] == "lcc" and row["frames"] == 6 and row["StudyDate"] == dt.date(2024, 2, 3)
    assert row["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    assert sorted(quarantined["reason"].to_list()) == ["missing_file", "not_dicom"]


def test_blob_detector_finds_a_bright_mass_first():
    vol = tissue_volume(frames=4, seed=1).astype(np.float64)
    yy, xx = np.mgrid[0 : vol.shape[1], 0 : vol.shape[2]]
    blob = 300 * np.exp(-((yy - 40) ** 2 + (xx - 25) ** 2) / (2 * 3.0**2))
    vol[2] += blob
    pixels = np.clip(vol / 1023.0, 0, 1).astype(np.float32)
    boxes = detect_blobs(pixels, (0, 4, 8, 12), BlobDetectorConfig(max_detections=3))
    best = boxes.sort("Score", descending=True).row(0, named=True)
    assert best["X"] <= 25 <= best["X"] + best["Width"] and best["Y"] <= 40 <= best["Y"] + best["Height"]
    assert best["Z"] + best["Depth"] / 2 == 8
    assert 0 < best["Score"] < 1 and best["Score"] > boxes["Score"].min()


def test_detect_volume_reads_sampled_frames_in_the_duke_frame(tmp_path):
    vol = tissue_volume(frames=8, seed=2).astype(np.float64)
    yy, xx = np.mgrid[0 : vol.shape[1], 0 : vol.shape[2]]
    vol[3:5] += 300 * np.exp(-((yy - 50) ** 2 + (xx - 20) ** 2) / (2 * 3.0**2))
    stored = np.clip(vol, 0, 1023).astype(np.uint16)[:, ::-1, ::-1]  # stored rotated: reference flips it back
    path = write_volume(tmp_path / "1-1.dcm", np.ascontiguousarray(stored), "S2", "lcc")
    boxes = detect_volume(str(path), "lcc", BlobDetectorConfig(n_slices=8, max_detections=2))
    best = boxes.sort("Score", descending=True).row(0, named=True)
    assert best["X"] <= 20 <= best["X"] + best["Width"] and best["Y"] <= 50 <= best["Y"] + best["Height"]
