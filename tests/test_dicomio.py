"""ml.dicomio: Duke reference semantics, the general loader, and typed errors."""

from __future__ import annotations

import datetime as dt
import io
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from skimage.exposure import rescale_intensity

from ml import dicomio
from ml.dicomio import (
    CorruptCodestreamError,
    DicomError,
    FrameCountMismatchError,
    MissingWindowError,
    NoPixelDataError,
    NotDicomError,
    TruncatedDicomError,
    UnsupportedSopClassError,
    UnsupportedTransferSyntaxError,
    VolumeTooLargeError,
    dcmread_image,
    draw_box,
    load_view,
    read_boxes,
    read_frames,
    read_header,
)
from ml.synth.bto import BtoMeta, derived_uid, write_bto

FRAMES, ROWS, COLS = 5, 48, 40


def breast_volume(side: str = "L", seed: int = 0) -> np.ndarray:
    """A small 10-bit volume with bright tissue against the chest wall on ``side``."""
    rng = np.random.default_rng(seed)
    vol = rng.integers(0, 60, (FRAMES, ROWS, COLS)).astype(np.uint16)
    ramp = np.linspace(900, 100, COLS).astype(np.uint16)  # bright at column 0
    vol[:, 4:-4, :] += ramp[None, None, :]
    vol = np.minimum(vol, 1023)
    return vol if side == "L" else np.ascontiguousarray(vol[:, :, ::-1])


def meta(laterality: str = "L", view: str = "CC", **kwargs) -> BtoMeta:
    return BtoMeta(
        "DBT-P00001",
        derived_uid("study", laterality, view),
        derived_uid("series", laterality, view),
        dt.date(2024, 3, 1),
        laterality,
        view,
        **kwargs,
    )


def write(tmp_path: Path, vol: np.ndarray, name: str = "1-1.dcm", syntax: str = "explicit", **kwargs) -> Path:
    return write_bto(tmp_path / name, vol, meta(**kwargs), transfer_syntax=syntax)


def reference_rescale(pixels: np.ndarray, wc: float, ww: float) -> np.ndarray:
    """Window step of the reference, with scikit-image as the oracle and float32 bounds."""
    wc32, ww32 = np.float32(wc), np.float32(ww)
    lo = (np.float32(2) * wc32 - ww32) / np.float32(2)
    hi = (np.float32(2) * wc32 + ww32) / np.float32(2)
    return rescale_intensity(pixels, in_range=(float(lo), float(hi)), out_range="dtype")


# ---------------------------------------------------------------- Duke reference semantics


@pytest.mark.parametrize("syntax", ["explicit", "jpeg2000"])
def test_dcmread_image_matches_reference_window_and_dtype(tmp_path, syntax):
    vol = breast_volume("L")
    path = write(tmp_path, vol, syntax=syntax)
    out = dcmread_image(path, "lcc")
    assert out.dtype == np.uint16 and out.shape == vol.shape
    np.testing.assert_array_equal(out, reference_rescale(vol, 512.0, 1024.0))


def test_dcmread_image_rotates_180_when_pixels_disagree_with_view(tmp_path):
    vol = breast_volume("L")
    path = write(tmp_path, vol)
    left = dcmread_image(path, "lmlo")
    right = dcmread_image(path, "rmlo")
    np.testing.assert_array_equal(right, left[:, ::-1, ::-1])  # both axes, slice order kept


def test_dcmread_image_decides_flip_per_call_on_index_frame(tmp_path):
    vol = breast_volume("L")
    vol[3] = vol[3, :, ::-1]  # frame 3 looks like a right breast
    path = write(tmp_path, vol)
    full = dcmread_image(path, "lcc")
    np.testing.assert_array_equal(full, reference_rescale(vol, 512, 1024))  # decided on frame 0
    frame3 = dcmread_image(path, "lcc", index=3)
    np.testing.assert_array_equal(frame3, reference_rescale(vol[3], 512, 1024)[::-1, ::-1])
    np.testing.assert_array_equal(dcmread_image(path, "lcc", index=1), full[1])


def test_dcmread_image_tie_counts_as_left(tmp_path):
    vol = np.full((2, 8, 6), 300, dtype=np.uint16)
    vol[:, 2, 2] = 900
    path = write(tmp_path, vol)
    np.testing.assert_array_equal(dcmread_image(path, "lcc"), reference_rescale(vol, 512, 1024))
    np.testing.assert_array_equal(dcmread_image(path, "rcc"), reference_rescale(vol, 512, 1024)[:, ::-1, ::-1])


def test_dcmread_image_uses_float32_bounds_for_decimal_windows(tmp_path):
    vol = np.random.default_rng(3).integers(0, 1024, (2, 64, 52)).astype(np.uint16)
    vol[:, :, 0] = 1023
    path = write(tmp_path, vol, window_center=511.3, window_width=1017.7)
    out = dcmread_image(path, "lcc")
    np.testing.assert_array_equal(out, reference_rescale(vol, 511.3, 1017.7))
    lo64 = (2 * 511.3 - 1017.7) / 2
    float64_result = rescale_intensity(vol, in_range=(lo64, (2 * 511.3 + 1017.7) / 2), out_range="dtype")
    assert (float64_result != out).any(), "float64 bounds should differ somewhere, or the test proves nothing"


def test_dcmread_image_equal_bounds_give_clipped_constant(tmp_path):
    vol = breast_volume("L")
    path = write(tmp_path, vol)
    ds = pydicom.dcmread(path)
    voi = ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
    voi.WindowCenter, voi.WindowWidth = 300, 0
    ds.save_as(path)
    np.testing.assert_array_equal(dcmread_image(path, "lcc"), np.full(vol.shape, 300, dtype=np.uint16))


def test_dcmread_image_multivalued_window_uses_first(tmp_path):
    vol = breast_volume("L")
    path = write(tmp_path, vol)
    ds = pydicom.dcmread(path)
    voi = ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
    voi.WindowCenter, voi.WindowWidth = [400, 600], [800, 200]
    ds.save_as(path)
    np.testing.assert_array_equal(dcmread_image(path, "lcc"), reference_rescale(vol, 400, 800))


def test_dcmread_image_without_window_is_a_typed_error(tmp_path):
    path = write(tmp_path, breast_volume(), window_center=None, window_width=None)
    with pytest.raises(MissingWindowError, match="WindowCenter"):
        dcmread_image(path, "lcc")


def test_read_boxes_joins_and_checks_both_files(tmp_path):
    boxes = tmp_path / "boxes.csv"
    paths = tmp_path / "paths.csv"
    boxes.write_text(
        "PatientID,StudyUID,View,Subject,Slice,X,Y,Width,Height,Class,AD,VolumeSlices\r\n"
        "DBT-P1,DBT-S1,rmlo,0,16,1116,1724,218,105,benign,0,49\r\n"
        "DBT-P2,DBT-S2,lcc,0,3,10,20,30,40,cancer,1,8\r\n"
    )
    paths.write_text(
        "PatientID,StudyUID,View,descriptive_path,classic_path\n"
        "DBT-P1,DBT-S1,rmlo,a/1-1.dcm,b/1-1.dcm\n"
        "DBT-P1,DBT-S1,rcc,c/1-1.dcm,d/1-1.dcm\n"
    )
    joined = read_boxes(boxes, paths)
    assert isinstance(joined, pd.DataFrame)
    assert len(joined) == 1 and joined.iloc[0]["descriptive_path"] == "a/1-1.dcm"
    assert joined.iloc[0]["Slice"] == 16
    paths.write_text("PatientID,View,descriptive_path\nDBT-P1,rmlo,a\n")
    with pytest.raises(ValueError, match=r"paths\.csv.*StudyUID"):
        read_boxes(boxes, paths)


def test_draw_box_paints_reference_bands_in_place():
    image = np.zeros((50, 60), dtype=np.uint16)
    image[0, 0] = 7
    out = draw_box(image, x=10, y=5, width=20, height=30, lw=3)
    assert out is image
    expected = np.zeros_like(image)
    expected[0, 0] = 7
    expected[5:8, 10:30] = 7
    expected[32:35, 10:30] = 7
    expected[5:35, 10:13] = 7
    expected[5:35, 27:30] = 7
    np.testing.assert_array_equal(out, expected)


def test_draw_box_clips_without_wrapping_or_shifting():
    image = np.zeros((20, 20), dtype=np.uint8)
    draw_box(image, x=-5, y=-5, width=10, height=8, color=9, lw=4)
    assert image[:, 10:].sum() == 0 and image[10:, :].sum() == 0  # nothing wrapped to the far side
    assert image[0, 4] == 9 and image[0, 5] == 0  # box ends at x = -5 + 10, not shifted to 10
    assert image[3:, :].sum() == 0  # and at y = -5 + 8


def test_draw_box_scalar_colour_on_multichannel_paints_first_channel():
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    draw_box(image, 1, 1, 6, 6, color=200, lw=1)
    assert image[1, 3].tolist() == [200, 0, 0]


# ---------------------------------------------------------------- general loader


def test_read_header_reads_geometry_tags_and_no_pixels(tmp_path):
    path = write(tmp_path, breast_volume("R"), laterality="R", view="MLO", syntax="jpeg2000")
    header = read_header(path)
    assert (header.frames, header.rows, header.columns) == (FRAMES, ROWS, COLS)
    assert header.bits_stored == 10 and header.photometric == "MONOCHROME2"
    assert header.laterality == "R" and header.laterality_source == "FrameLaterality"
    assert header.view == "MLO" and header.has_fg_window
    assert header.study_date == dt.date(2024, 3, 1)
    assert "PixelData" not in header.dataset
    assert "PatientID" not in header.log_fields() and "PatientName" not in header.log_fields()


@pytest.mark.parametrize("syntax", ["explicit", "jpeg2000", "jpegls", "rle"])
def test_read_frames_decodes_requested_frames_losslessly(tmp_path, syntax):
    vol = breast_volume("L", seed=5)
    path = write(tmp_path, vol, syntax=syntax)
    np.testing.assert_array_equal(read_frames(path, [3, 1]), vol[[3, 1]])
    np.testing.assert_array_equal(read_frames(path), vol)


def test_read_frames_decodes_only_what_it_is_asked_for(tmp_path):
    vol = breast_volume("L", seed=1)
    path = write(tmp_path, vol, syntax="jpeg2000")
    corrupt_fragment(path, frame=4)
    np.testing.assert_array_equal(read_frames(path, [2]), vol[[2]])  # frame 4 never touched
    with pytest.raises(CorruptCodestreamError):
        read_frames(path, [4])


def test_read_frames_in_processes_equals_sequential(tmp_path):
    vol = breast_volume("L", seed=2)
    path = write(tmp_path, vol, syntax="jpeg2000")
    np.testing.assert_array_equal(read_frames(path, workers=2), vol)


def test_load_view_windows_from_shared_and_per_frame_groups(tmp_path):
    vol = breast_volume("L")
    shared = load_view(write(tmp_path, vol, "a.dcm"), "all")
    per_frame = load_view(write(tmp_path, vol, "b.dcm", windows_per_frame=True, window_center=300.0), "all")
    assert shared.window.source == "shared" and per_frame.window.source == "per-frame"
    expected = np.clip((vol.astype(np.float64) - 511.5) / 1023 + 0.5, 0, 1)
    np.testing.assert_allclose(shared.pixels, expected, atol=1e-6)
    assert per_frame.window.center == 300.0
    assert shared.pixels.dtype == np.float32 and shared.frame_indices == tuple(range(FRAMES))


def test_load_view_inverts_monochrome1(tmp_path):
    vol = breast_volume("L")
    mono2 = load_view(write(tmp_path, vol, "m2.dcm"), "central")
    mono1 = load_view(write(tmp_path, vol, "m1.dcm", photometric="MONOCHROME1"), "central")
    assert mono1.header.photometric == "MONOCHROME1"
    np.testing.assert_allclose(mono1.pixels, mono2.pixels, atol=1e-6)
    assert not mono1.orientation.flipped  # pixel rule sees bright tissue after inversion


def test_load_view_without_window_uses_stored_range(tmp_path):
    vol = breast_volume("L")
    view = load_view(write(tmp_path, vol, window_center=None, window_width=None), [2])
    assert view.window is None
    np.testing.assert_allclose(view.pixels[0], vol[2] / 1023.0, atol=1e-6)


def test_load_view_orients_rotated_files_and_records_disagreement(tmp_path):
    vol = breast_volume("R")
    canonical = load_view(write(tmp_path, vol, "r.dcm", laterality="R"), "all")
    assert not canonical.orientation.flipped and not canonical.orientation.disagreement
    stored_rotated = np.ascontiguousarray(vol[:, ::-1, ::-1])
    rotated = load_view(write(tmp_path, stored_rotated, "rot.dcm", laterality="R", rotated_180=True), "all")
    assert rotated.orientation.flipped and rotated.orientation.disagreement
    assert rotated.orientation.source == "FrameLaterality" and rotated.orientation.pixel_side == "L"
    np.testing.assert_allclose(rotated.pixels, canonical.pixels)


def test_load_view_falls_back_to_pixels_and_accepts_an_override(tmp_path):
    vol = breast_volume("R")
    path = write(tmp_path, vol, laterality="R", frame_laterality=False)
    view = load_view(path, "central")
    assert view.orientation.source == "pixels" and view.orientation.laterality == "R"
    assert view.header.laterality is None
    forced = load_view(path, "central", laterality="lcc")
    assert forced.orientation.source == "argument" and forced.orientation.flipped


def test_load_view_reads_vendor_extras_and_strategies(tmp_path):
    path = write(tmp_path, breast_volume("L"), vendor_extras=True, view="MLO")
    assert read_header(path).view == "MLO"
    assert load_view(path, "slab", slab=3).frame_indices == (1, 2, 3)
    assert load_view(path, "sampled", n_slices=2).frame_indices == (1, 3)


# ---------------------------------------------------------------- typed errors


def corrupt_fragment(path: Path, frame: int) -> None:
    """Overwrite the start of ``frame``'s JPEG 2000 fragment with garbage (same length)."""
    data = bytearray(path.read_bytes())
    start = data.index(struct.pack("<HHHH", 0x7FE0, 0x0010, *struct.unpack("<H H", b"OB\x00\x00")))
    pos = start + 12
    item = 0
    while True:
        _, _, length = struct.unpack("<HHL", data[pos : pos + 8])
        if item == frame + 1:  # item 0 is the Basic Offset Table
            data[pos + 8 : pos + 8 + 16] = b"\x13" * 16
            break
        pos += 8 + length
        item += 1
    path.write_bytes(bytes(data))


def test_every_error_derives_from_dicom_error():
    for cls in (
        NotDicomError,
        TruncatedDicomError,
        NoPixelDataError,
        UnsupportedSopClassError,
        UnsupportedTransferSyntaxError,
        CorruptCodestreamError,
        FrameCountMismatchError,
        VolumeTooLargeError,
        MissingWindowError,
    ):
        assert issubclass(cls, DicomError) and cls.reason != DicomError.reason


def test_not_dicom(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("this is not an image")
    with pytest.raises(NotDicomError, match="not a DICOM file"):
        read_header(path)


def test_truncated_in_pixel_data_and_in_header(tmp_path):
    path = write(tmp_path, breast_volume(), syntax="jpeg2000")
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 500])
    with pytest.raises(TruncatedDicomError, match="past the end|ends without"):
        read_header(cut)
    cut.write_bytes(data[:400])
    with pytest.raises(DicomError):
        read_header(cut)


def test_no_pixel_data(tmp_path):
    path = write(tmp_path, breast_volume())
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(NoPixelDataError, match="no Pixel Data"):
        read_header(path)


def test_unsupported_sop_classes(tmp_path):
    with pytest.raises(UnsupportedSopClassError, match="CT Image Storage"):
        read_header(get_testdata_file("CT_small.dcm", download=False))
    path = write(tmp_path, breast_volume())
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.save_as(path)
    with pytest.raises(UnsupportedSopClassError, match="Secondary Capture"):
        read_header(path)
    assert read_header(path, sop_classes=None).frames == FRAMES


def test_corrupt_codestream(tmp_path):
    path = write(tmp_path, breast_volume(), syntax="jpeg2000")
    corrupt_fragment(path, frame=0)
    with pytest.raises(CorruptCodestreamError, match="cannot decode"):
        load_view(path, [0])


def test_frame_count_mismatch_encapsulated_and_native(tmp_path):
    for syntax in ("jpeg2000", "explicit"):
        path = write(tmp_path, breast_volume(), f"{syntax}.dcm", syntax=syntax)
        ds = pydicom.dcmread(path)
        ds.NumberOfFrames = FRAMES + 3
        ds.save_as(path)
        with pytest.raises(FrameCountMismatchError, match=f"NumberOfFrames is {FRAMES + 3}"):
            read_header(path)


def test_header_too_large_is_refused_before_decoding(tmp_path):
    path = write(tmp_path, breast_volume())
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 60000, 60000, 5000
    ds.save_as(path)
    with pytest.raises(VolumeTooLargeError, match="exceeds the limit"):
        read_frames(path, [0])
    small = write(tmp_path, breast_volume(), "small.dcm")
    with pytest.raises(VolumeTooLargeError):
        read_header(small, max_volume_bytes=FRAMES * ROWS * COLS * 2 - 1)


def test_file_objects_work_for_the_reference_loader(tmp_path):
    vol = breast_volume("L")
    path = write(tmp_path, vol)
    with open(path, "rb") as fh:
        buffered = io.BytesIO(fh.read())
    np.testing.assert_array_equal(dcmread_image(buffered, "lcc", index=2), dcmread_image(path, "lcc", index=2))


# ---------------------------------------------------------------- real files shipped by pydicom-data


def shipped(name: str) -> str:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} missing: install the test extra (pydicom-data)"
    return path


@pytest.mark.parametrize(
    ("compressed", "uncompressed"),
    [("RG1_J2KR.dcm", "RG1_UNCR.dcm"), ("RG3_J2KR.dcm", "RG3_UNCR.dcm"), ("MR2_J2KR.dcm", "MR2_UNCR.dcm")],
)
def test_real_jpeg2000_lossless_files_decode_like_their_uncompressed_twins(compressed, uncompressed):
    np.testing.assert_array_equal(
        read_frames(shipped(compressed), sop_classes=None), read_frames(shipped(uncompressed), sop_classes=None)
    )


@pytest.mark.parametrize(
    "name",
    ["emri_small_jpeg_2k_lossless.dcm", "emri_small_jpeg_ls_lossless.dcm", "emri_small_RLE.dcm", "emri_small_big_endian.dcm"],
)
def test_real_multiframe_codecs_decode_like_the_uncompressed_file(name):
    expected = read_frames(shipped("emri_small.dcm"), sop_classes=None)
    np.testing.assert_array_equal(read_frames(shipped(name), [0, 9], sop_classes=None), expected[[0, 9]])


def test_real_monochrome1_with_top_level_window_is_inverted():
    path = shipped("RG1_UNCR.dcm")
    view = load_view(path, "central", sop_classes=None)
    raw = read_frames(path, sop_classes=None)[0].astype(np.float64)
    assert view.window.source == "top-level" and view.header.photometric == "MONOCHROME1"
    expected = 1.0 - np.clip((raw - (15000 - 0.5)) / (30000 - 1) + 0.5, 0, 1)
    if view.orientation.flipped:
        expected = expected[::-1, ::-1]
    np.testing.assert_allclose(view.pixels[0], expected, atol=1e-6)


def test_real_enhanced_ct_window_from_shared_functional_group():
    view = load_view(shipped("eCT_Supplemental.dcm"), [1], sop_classes=None)
    assert view.window.source == "shared" and (view.window.center, view.window.width) == (49.0, 102.0)
    assert view.orientation.source == "pixels"  # FrameLaterality is U


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("JPEG-lossy.dcm", UnsupportedTransferSyntaxError),
        ("MR_truncated.dcm", TruncatedDicomError),
        ("JPEG2000-embedded-sequence-delimiter.dcm", CorruptCodestreamError),
        ("meta_missing_tsyntax.dcm", NotDicomError),
    ],
)
def test_real_bad_files_raise_typed_errors(name, error):
    with pytest.raises(error):
        read_frames(shipped(name), sop_classes=None)
