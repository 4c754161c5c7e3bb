"""Tests of the synthetic DBT generator: BTO writer, Duke layout, pixels, boxes, quirks, CLI."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.pixels import pixel_array

from ml.synth.bto import (
    BTO_SOP_CLASS_UID,
    TRANSFER_SYNTAXES,
    BtoError,
    BtoMeta,
    derived_uid,
    write_bto,
)
from ml.synth.cnr import measure_cnr
from ml.synth.cohort import CohortExistsError, generate_cohort
from ml.synth.config import CohortConfig, CohortConfigError
from ml.synth.layout import BOXES_CSV, FILE_PATHS_CSV, LABELS_CSV
from ml.synth.lesions import insert_lesion, lesion_template
from ml.synth.phantom import power_law_field
from ml.synth.plan import plan_cohort

TINY = dict(rows=64, cols=52, slices=8, slices_max=8)
VIEWS = {"lcc", "lmlo", "rcc", "rmlo"}


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def cohort_tables(
    root: Path,
) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    return (
        read_csv(root / FILE_PATHS_CSV)[1],
        read_csv(root / LABELS_CSV)[1],
        read_csv(root / BOXES_CSV)[1],
    )


def duke_volume(path: Path, view: str) -> np.ndarray:
    """Duke reference steps 1, 2 and 4 (decode, pixel laterality on frame 0, 180-degree flip)."""
    ds = dcmread(path)
    vol = ds.pixel_array.astype(np.int64)
    if ds.PhotometricInterpretation == "MONOCHROME1":  # a loader inverts before the pixel rule
        vol = (1 << ds.BitsStored) - 1 - vol
    side = "R" if vol[0][:, 0].sum() < vol[0][:, -1].sum() else "L"
    return vol[:, ::-1, ::-1] if side != view[0].upper() else vol


def meta(**kw) -> BtoMeta:
    base = dict(
        patient_id="DBT-P00001",
        study_instance_uid=derived_uid("t", "study"),
        series_instance_uid=derived_uid("t", "series"),
        study_date=dt.date(2024, 3, 1),
        laterality="L",
        view="CC",
    )
    return BtoMeta(**{**base, **kw})


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Six tiny studies with every class and some flipped volumes."""
    out = tmp_path_factory.mktemp("cohort")
    config = CohortConfig(
        studies=6,
        seed=3,
        cancer_fraction=0.34,
        benign_fraction=0.33,
        actionable_fraction=0.17,
        repeat_patient_fraction=0.5,
        flipped_fraction=0.4,
        days=3,
        **TINY,
    )
    generate_cohort(out, config)
    return out


@pytest.fixture(scope="module")
def lesion_cohort(tmp_path_factory) -> Path:
    """Positive studies only, high-contrast lesions, half of the volumes stored rotated."""
    out = tmp_path_factory.mktemp("lesions")
    config = CohortConfig(
        studies=8,
        seed=11,
        cancer_fraction=0.5,
        benign_fraction=0.5,
        actionable_fraction=0.0,
        flipped_fraction=0.5,
        lesion_contrast=3.0,
        noise=0.5,
        rows=96,
        cols=78,
        slices=10,
        slices_max=12,
        transfer_syntax="jpegls",
    )
    generate_cohort(out, config)
    return out


# --- BTO writer -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TRANSFER_SYNTAXES))
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_each_transfer_syntax_round_trips_losslessly(tmp_path, name, photometric):
    vol = np.random.default_rng(0).integers(0, 1024, (3, 40, 34), dtype=np.uint16)
    path = write_bto(tmp_path / "x.dcm", vol, meta(photometric=photometric), transfer_syntax=name)
    ds = dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES[name]
    expected = vol if photometric == "MONOCHROME2" else 1023 - vol
    np.testing.assert_array_equal(ds.pixel_array, expected)


def test_writer_rejects_bad_input(tmp_path):
    vol = np.zeros((2, 8, 8), np.uint16)  # too small for jpeg2000, fine otherwise
    with pytest.raises(BtoError, match="uint16"):
        write_bto(tmp_path / "a.dcm", vol.astype(np.int32), meta())
    with pytest.raises(BtoError, match="exceeds 1023"):
        write_bto(tmp_path / "a.dcm", vol + 1024, meta())
    with pytest.raises(BtoError, match="3-D"):
        write_bto(tmp_path / "a.dcm", vol[0], meta())
    with pytest.raises(BtoError, match="jpeg2000 needs rows and cols >= 32"):
        write_bto(tmp_path / "a.dcm", vol, meta())
    with pytest.raises(BtoError, match="Did you mean 'jpegls'"):
        write_bto(tmp_path / "a.dcm", vol, meta(), transfer_syntax="jpegl")
    with pytest.raises(BtoError, match="laterality"):
        meta(laterality="B")
    with pytest.raises(BtoError, match="both"):
        meta(window_center=None)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_writer_quirk_switches(tmp_path):
    vol = np.full((2, 32, 32), 100, np.uint16)
    plain = dcmread(write_bto(tmp_path / "p.dcm", vol, meta(window_center=None, window_width=None)))
    assert "FrameVOILUTSequence" not in plain.SharedFunctionalGroupsSequence[0]
    assert all("FrameVOILUTSequence" not in item for item in plain.PerFrameFunctionalGroupsSequence)
    per_frame = dcmread(
        write_bto(tmp_path / "f.dcm", vol, meta(windows_per_frame=True, window_center=300.5))
    )
    assert "FrameVOILUTSequence" not in per_frame.SharedFunctionalGroupsSequence[0]
    assert [
        float(i.FrameVOILUTSequence[0].WindowCenter)
        for i in per_frame.PerFrameFunctionalGroupsSequence
    ] == [300.5] * 2
    extras = dcmread(
        write_bto(tmp_path / "e.dcm", vol, meta(vendor_extras=True, laterality="R", view="MLO"))
    )
    assert (extras.ImageLaterality, extras.ViewPosition) == ("R", "MLO")
    assert list(extras.PatientOrientation) == [
        "P",
        "F",
    ]  # right breast: rows run towards the chest wall
    no_lat = dcmread(write_bto(tmp_path / "n.dcm", vol, meta(frame_laterality=False)))
    assert "FrameLaterality" not in no_lat.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0]
    assert "Laterality" not in no_lat and "ImageLaterality" not in no_lat


# --- Duke layout and CSVs ----------------------------------------------------------------------


def test_csv_headers_are_exactly_dukes(cohort):
    assert read_csv(cohort / FILE_PATHS_CSV)[0] == [
        "PatientID",
        "StudyUID",
        "View",
        "descriptive_path",
        "classic_path",
    ]
    assert read_csv(cohort / LABELS_CSV)[0] == [
        "PatientID",
        "StudyUID",
        "View",
        "Normal",
        "Actionable",
        "Benign",
        "Cancer",
    ]
    assert read_csv(cohort / BOXES_CSV)[0] == [
        "PatientID",
        "StudyUID",
        "View",
        "Subject",
        "Slice",
        "X",
        "Y",
        "Width",
        "Height",
        "Class",
        "AD",
        "VolumeSlices",
    ]
    assert b"\r\n" not in (cohort / LABELS_CSV).read_bytes()


def test_paths_follow_duke_layout(cohort):
    paths, labels, _ = cohort_tables(cohort)
    assert [(r["StudyUID"], r["View"]) for r in paths] == [
        (r["StudyUID"], r["View"]) for r in labels
    ]
    for row in paths:
        assert re.fullmatch(r"DBT-P\d{5}", row["PatientID"]) and re.fullmatch(
            r"DBT-S\d{5}", row["StudyUID"]
        )
        ds = dcmread(cohort / row["descriptive_path"], stop_before_pixels=True)
        study_uid, series_uid = ds.StudyInstanceUID, ds.SeriesInstanceUID
        assert (
            study_uid.startswith("1.2.826.0.1.3680043.8.498.") and ds.PatientID == row["PatientID"]
        )
        match = re.fullmatch(
            r"Breast-Cancer-Screening-DBT/(DBT-P\d{5})/01-01-2000-(DBT-S\d{5})-(.+)-(\d{5})/(\d+)\.000000-(\d{5})/1-1\.dcm",
            row["descriptive_path"],
        )
        assert match, row["descriptive_path"]
        assert match.group(1, 2) == (row["PatientID"], row["StudyUID"])
        assert match.group(3) == ds.StudyDescription
        assert (match.group(4), match.group(6)) == (study_uid[-5:], series_uid[-5:])
        assert int(match.group(5)) == ds.SeriesNumber
        assert (
            row["classic_path"]
            == f"Breast-Cancer-Screening-DBT/{row['PatientID']}/{study_uid}/{series_uid}/1-1.dcm"
        )
        assert not (cohort / row["classic_path"]).exists()  # written once, at the descriptive path
    files = list((cohort / "Breast-Cancer-Screening-DBT").rglob("*.dcm"))
    assert len(files) == len(paths)
    manifest = json.loads((cohort / "cohort.json").read_text())
    assert manifest["config"]["studies"] == 6 and len(manifest["volumes"]) == len(paths)


def test_labels_views_and_boxes_are_consistent(cohort):
    _, labels, boxes = cohort_tables(cohort)
    boxed = {(b["StudyUID"], b["View"]) for b in boxes}
    studies: dict[str, list[dict[str, str]]] = {}
    for row in labels:
        studies.setdefault(row["StudyUID"], []).append(row)
        assert row["View"] in VIEWS
        assert sum(int(row[c]) for c in ("Normal", "Actionable", "Benign", "Cancer")) == 1
    classes = set()
    for rows in studies.values():
        flags = {tuple(r[c] for c in ("Normal", "Actionable", "Benign", "Cancer")) for r in rows}
        assert len(flags) == 1  # the class is per study
        views = {r["View"] for r in rows}
        cls = ("normal", "actionable", "benign", "cancer")[next(iter(flags)).index("1")]
        classes.add(cls)
        if cls in ("normal", "actionable"):
            assert views == VIEWS and not any((r["StudyUID"], r["View"]) in boxed for r in rows)
        else:
            assert all(
                (r["StudyUID"], r["View"]) in boxed for r in rows
            )  # every positive view is boxed
            study_boxes = [b for b in boxes if b["StudyUID"] == rows[0]["StudyUID"]]
            assert {b["Class"] for b in study_boxes} == {cls}
            assert {b["View"] for b in study_boxes} == views
    assert classes == {"normal", "actionable", "benign", "cancer"}
    assert boxed <= {(r["StudyUID"], r["View"]) for r in labels}


def test_boxes_lie_inside_the_volume(cohort):
    paths, _, boxes = cohort_tables(cohort)
    where = {(r["StudyUID"], r["View"]): r["descriptive_path"] for r in paths}
    assert boxes
    for box in boxes:
        ds = dcmread(cohort / where[(box["StudyUID"], box["View"])], stop_before_pixels=True)
        x, y, w, h, z = (int(box[k]) for k in ("X", "Y", "Width", "Height", "Slice"))
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= ds.Columns and y + h <= ds.Rows
        assert 0 <= z < int(box["VolumeSlices"]) == ds.NumberOfFrames
        assert box["AD"] in ("0", "1") and box["Subject"] in ("0", "2")


def test_dicom_attributes(cohort):
    paths, _, _ = cohort_tables(cohort)
    for row in paths:
        ds = dcmread(cohort / row["descriptive_path"])
        shared = ds.SharedFunctionalGroupsSequence[0]
        assert ds.SOPClassUID == BTO_SOP_CLASS_UID == ds.file_meta.MediaStorageSOPClassUID
        assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES["jpeg2000"]
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PhotometricInterpretation) == (
            16,
            10,
            9,
            "MONOCHROME2",
        )
        assert ds.NumberOfFrames == 8 and len(ds.PerFrameFunctionalGroupsSequence) == 8
        voi = shared.FrameVOILUTSequence[0]
        assert float(voi.WindowWidth) > 0 and 0 < float(voi.WindowCenter) < 1024
        assert shared.FrameAnatomySequence[0].FrameLaterality == row["View"][0].upper()
        code = ds.ViewCodeSequence[0]
        assert (code.CodingSchemeDesignator, code.CodeValue) == (
            "SCT",
            "399162004" if row["View"].endswith("cc") else "399368009",
        )
        assert "Laterality" not in ds
        assert int(ds.pixel_array.max()) < 1024
        # planted PHI for de-identification tests
        assert re.fullmatch(r"SYNTH\^PATIENT\d{5}", str(ds.PatientName))
        assert (
            ds.PatientBirthDate
            and ds.InstitutionName
            and ds.AccessionNumber
            and ds.DeviceSerialNumber
        )
        nested = (
            ds.PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0].FrameReferenceDateTime
        )
        assert nested.startswith(ds.StudyDate)


def test_study_dates_spread_and_repeat_patients(tmp_path):
    config = CohortConfig(
        studies=30, seed=2, start_date=dt.date(2024, 5, 1), days=5, repeat_patient_fraction=0.5
    )
    plans = plan_cohort(config)
    dates = [p.study_date for p in plans]
    assert (
        min(dates) >= dt.date(2024, 5, 1)
        and max(dates) <= dt.date(2024, 5, 5)
        and len(set(dates)) >= 3
    )
    per_patient: dict[str, list[dt.date]] = {}
    for plan in plans:
        per_patient.setdefault(plan.patient_id, []).append(plan.study_date)
    assert any(len(d) > 1 for d in per_patient.values())
    assert all(d == sorted(d) for d in per_patient.values())
    counts = {
        c: sum(p.label == c for p in plans) for c in ("normal", "actionable", "benign", "cancer")
    }
    assert counts == {"normal": 12, "actionable": 3, "benign": 8, "cancer": 7} or counts == {
        "normal": 12,
        "actionable": 3,
        "benign": 7,
        "cancer": 8,
    }


# --- pixels, lesions, boxes ----------------------------------------------------------------


def focus_gain(vol: np.ndarray, region: tuple[slice, slice], z: int, far: int) -> float:
    """How much brighter the brightest tenth of ``region`` is on slice ``z`` than on slice ``far``.

    The brightest pixels, not the whole box: scattered benign calcifications cover little of it.
    """
    at_z, at_far = vol[z][region], vol[far][region]
    brightest = at_z >= np.percentile(at_z, 90)
    return float(at_z[brightest].mean() - at_far[brightest].mean())


def test_boxes_match_lesions_after_duke_flip(lesion_cohort):
    """Reference pixel rule + conditional 180-degree rotation puts each lesion inside its box.

    At its box Slice the box region is brighter than the same region a few slices away, where
    the lesion is out of focus; in the wrongly rotated frame most boxes show no such gain.
    """
    paths, _, boxes = cohort_tables(lesion_cohort)
    where = {(r["StudyUID"], r["View"]): r["descriptive_path"] for r in paths}
    manifest = json.loads((lesion_cohort / "cohort.json").read_text())
    assert any(v["flipped"] for v in manifest["volumes"]) and not all(
        v["flipped"] for v in manifest["volumes"]
    )
    assert len(boxes) >= 8
    wrong_frame_hits = 0
    for box in boxes:
        vol = duke_volume(
            lesion_cohort / where[(box["StudyUID"], box["View"])], box["View"]
        ).astype(float)
        x, y, w, h, z = (int(box[k]) for k in ("X", "Y", "Width", "Height", "Slice"))
        far = z + 4 if z + 4 < vol.shape[0] else z - 4
        region = (slice(y, y + h), slice(x, x + w))
        assert focus_gain(vol, region, z, far) > 150, box
        assert vol[z][region].max() > np.percentile(vol[z][vol[z] > 100], 90), box
        wrong_frame_hits += focus_gain(vol[:, ::-1, ::-1], region, z, far) > 150
    assert wrong_frame_hits < len(boxes) / 2


def test_tissue_is_brighter_than_air_on_the_chest_wall_side(cohort):
    paths, _, _ = cohort_tables(cohort)
    manifest = {
        (v["StudyUID"], v["View"]): v
        for v in json.loads((cohort / "cohort.json").read_text())["volumes"]
    }
    for row in paths:
        stored = pixel_array(cohort / row["descriptive_path"], index=0).astype(np.int64)
        chest_left = stored[:, 0].sum() > stored[:, -1].sum()
        is_left = row["View"].startswith("l")
        assert chest_left == (is_left != manifest[(row["StudyUID"], row["View"])]["flipped"])


def test_background_has_power_law_spectrum_and_slow_slice_change():
    field, detail = power_law_field(
        12, 128, 128, beta=3.0, z_scale=1.5, rng=np.random.default_rng(0)
    )
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(field[6]))) ** 2
    yy, xx = np.indices(spectrum.shape)
    radius = np.hypot(yy - 64, xx - 64).astype(int)
    power = np.bincount(radius.ravel(), spectrum.ravel()) / np.bincount(radius.ravel())
    f = np.arange(4, 40)
    slope = np.polyfit(np.log(f), np.log(power[f]), 1)[0]
    assert -3.5 < slope < -2.5
    corr = [np.corrcoef(field[4].ravel(), field[4 + d].ravel())[0, 1] for d in (1, 6)]
    assert corr[0] > 0.85 and corr[1] < corr[0]
    assert abs(float(detail.mean())) < 1e-3


def test_lesion_is_sharpest_at_its_central_slice():
    tissue = np.zeros((9, 48, 48), np.float32)
    template = lesion_template("mass_spiculated", 6.0, np.random.default_rng(1))
    insert_lesion(tissue, template, row=24, col=24, z0=4, half_depth=2.0, contrast=1.0)
    peaks = tissue.max(axis=(1, 2))
    assert peaks.argmax() == 4 and peaks[4] > peaks[2] > peaks[0] and peaks[4] > peaks[6] > peaks[8]
    edges = [np.abs(np.diff(tissue[z], axis=1)).max() for z in (4, 6)]
    assert edges[0] > 2 * edges[1]  # blurred out of plane


# --- quirks, determinism, validity -----------------------------------------------------------


def test_quirks_present_when_asked(tmp_path):
    config = CohortConfig(
        studies=2,
        seed=4,
        cancer_fraction=0,
        benign_fraction=0,
        actionable_fraction=0,
        monochrome1_fraction=1,
        no_frame_laterality_fraction=1,
        vendor_extras_fraction=1,
        per_frame_window_fraction=1,
        flipped_fraction=1,
        na_folder_fraction=1,
        **TINY,
    )
    generate_cohort(tmp_path, config)
    paths, _, _ = cohort_tables(tmp_path)
    for row in paths:
        listed = tmp_path / row["descriptive_path"]
        assert not listed.exists()  # the CSV lists the path without "-NA-", as Duke does
        folder = listed.parent
        on_disk = folder.parent / re.sub(r"\.000000-", ".000000-NA-", folder.name) / "1-1.dcm"
        ds = dcmread(on_disk)
        assert ds.PhotometricInterpretation == "MONOCHROME1"
        assert "FrameLaterality" not in ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0]
        assert ds.ImageLaterality == row["View"][0].upper()
        assert "FrameVOILUTSequence" in ds.PerFrameFunctionalGroupsSequence[0]
        # MONOCHROME1 and rotated: after inversion the chest wall sits on the far side
        frame = 1023 - ds.pixel_array[0].astype(np.int64)
        assert (frame[:, 0].sum() > frame[:, -1].sum()) == row["View"].startswith("r")
    config_no_window = CohortConfig(studies=1, seed=4, no_window_fraction=1, **TINY)
    generate_cohort(tmp_path / "nw", config_no_window)
    row = cohort_tables(tmp_path / "nw")[0][0]
    ds = dcmread(tmp_path / "nw" / row["descriptive_path"], stop_before_pixels=True)
    assert "FrameVOILUTSequence" not in ds.SharedFunctionalGroupsSequence[0]


def test_same_seed_same_cohort_other_seed_differs(tmp_path):
    config = CohortConfig(studies=2, seed=9, **TINY)
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_cohort(first, config)
    generate_cohort(second, config)
    generate_cohort(other, CohortConfig(studies=2, seed=10, **TINY))
    for name in (FILE_PATHS_CSV, LABELS_CSV, BOXES_CSV, "cohort.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (first / FILE_PATHS_CSV).read_bytes() != (other / FILE_PATHS_CSV).read_bytes()
    rows_a, rows_c = cohort_tables(first)[0], cohort_tables(other)[0]
    for row in rows_a:
        a = dcmread(first / row["descriptive_path"])
        b = dcmread(second / row["descriptive_path"])
        np.testing.assert_array_equal(a.pixel_array, b.pixel_array)
        assert a.SOPInstanceUID == b.SOPInstanceUID
    pix_a = dcmread(first / rows_a[0]["descriptive_path"]).pixel_array
    pix_c = dcmread(other / rows_c[0]["descriptive_path"]).pixel_array
    assert pix_a.shape != pix_c.shape or not np.array_equal(pix_a, pix_c)


def test_worker_processes_give_identical_files(tmp_path):
    config = CohortConfig(studies=2, seed=5, **TINY)
    generate_cohort(tmp_path / "one", config, workers=1)
    generate_cohort(tmp_path / "two", config, workers=2)
    files = sorted(
        p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file()
    )
    assert files
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel


def test_existing_cohort_is_not_overwritten_silently(tmp_path):
    config = CohortConfig(studies=1, seed=1, **TINY)
    generate_cohort(tmp_path, config)
    with pytest.raises(CohortExistsError):
        generate_cohort(tmp_path, config)
    summary = generate_cohort(tmp_path, CohortConfig(studies=1, seed=2, **TINY), overwrite=True)
    assert len(list((tmp_path / "Breast-Cancer-Screening-DBT").rglob("*.dcm"))) == summary.files


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(cancer_fraction=0.8, benign_fraction=0.5), "exceed 1"),
        (dict(flipped_fraction=1.5), "flipped_fraction"),
        (dict(slices=10, slices_max=8), "slices"),
        (dict(transfer_syntax="jpeg200"), "Did you mean 'jpeg2000'"),
        (dict(rows=16), "rows"),
        (dict(malignant_contrast=0.0), "malignant_contrast"),
    ],
)
def test_config_validation(bad, message):
    with pytest.raises(CohortConfigError, match=message):
        CohortConfig(**bad)


def test_config_round_trips_through_dict():
    config = CohortConfig(studies=3, start_date=dt.date(2023, 2, 1), vendor_extras_fraction=0.5)
    assert CohortConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(CohortConfigError, match="unknown"):
        CohortConfig.from_dict({"studys": 3})


def test_cnr_scales_with_the_contrast_knobs_and_malignant_contrast_only_hits_cancers():
    lesions = dict(studies=24, seed=4, rows=64, cols=52, slices=6, slices_max=6, cancer_fraction=0.5,
                   benign_fraction=0.5, actionable_fraction=0.0, second_lesion_fraction=0.0)  # fmt: skip
    base = measure_cnr(CohortConfig(**lesions), views_per_kind=3)
    brighter = measure_cnr(CohortConfig(**lesions, malignant_contrast=2.0), views_per_kind=3)
    everything = measure_cnr(CohortConfig(**lesions, lesion_contrast=2.0), views_per_kind=3)
    assert {"mass_spiculated", "mass_benign"} <= set(base)
    for kind, row in base.items():
        assert row["views"] >= 1 and row["slice"] > 0.3 and row["mip"] > 0
        assert everything[kind]["slice"] > 1.5 * row["slice"]
        if kind in ("mass_spiculated", "distortion", "calc_malignant"):
            assert brighter[kind]["slice"] > 1.5 * row["slice"]
        else:
            assert brighter[kind] == row  # benign lesions render exactly as before


def test_default_files_pass_dciodvfy(cohort, tmp_path):
    tool = shutil.which("dciodvfy")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("dciodvfy (Debian dicom3tools) is required in CI")
        pytest.skip("dciodvfy not installed")
    paths, _, _ = cohort_tables(cohort)
    flipped = {
        (v["StudyUID"], v["View"])
        for v in json.loads((cohort / "cohort.json").read_text())["volumes"]
        if v["flipped"]
    }
    chosen = paths[:3] + [r for r in paths if (r["StudyUID"], r["View"]) in flipped][:1]
    files = [cohort / r["descriptive_path"] for r in chosen]
    files.append(
        write_bto(
            tmp_path / "vendor.dcm", np.zeros((2, 32, 32), np.uint16), meta(vendor_extras=True)
        )
    )
    for path in files:
        result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
        report = result.stdout + result.stderr
        assert "BreastTomosynthesisImage" in report
        assert not [line for line in report.splitlines() if line.startswith("Error")], report
    broken = write_bto(
        tmp_path / "broken.dcm", np.zeros((2, 32, 32), np.uint16), meta(frame_laterality=False)
    )
    report = subprocess.run([tool, str(broken)], capture_output=True, text=True, timeout=60).stderr
    assert "FrameLaterality" in report  # the documented, deliberate violation is detected


# --- CLI and contact sheet ---------------------------------------------------------------------


def test_cli_writes_cohort_summary_and_contact_sheet(tmp_path, capsys):
    from dbt_assets.cli import synth

    parser = argparse.ArgumentParser(prog="tomosight")
    synth.register(parser.add_subparsers(dest="command", required=True))
    out, png = tmp_path / "cohort", tmp_path / "sheet.png"
    args = parser.parse_args(
        [
            "synth",
            str(out),
            "--studies",
            "4",
            "--seed",
            "1",
            "--rows",
            "64",
            "--cols",
            "52",
            "--slices",
            "8",
            "--cancer-fraction",
            "0.5",
            "--transfer-syntax",
            "rle",
            "--workers",
            "1",
            "--contact-sheet",
            str(png),
        ]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    labels = cohort_tables(out)[1]
    assert f"wrote {len(labels)} files" in printed and "cancer" in printed
    manifest = json.loads((out / "cohort.json").read_text())
    assert manifest["config"]["transfer_syntax"] == "rle" and manifest["config"]["slices_max"] == 8
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    args = parser.parse_args(["synth", str(out), "--studies", "1"])
    assert args.func(args) == 2  # refuses to overwrite
    args = parser.parse_args(["synth", str(tmp_path / "x"), "--cancer-fraction", "2"])
    assert args.func(args) == 2
