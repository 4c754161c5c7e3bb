"""ml.qc: every bad input becomes a reason code, good files pass, duplicates are found."""

from __future__ import annotations

import datetime as dt
import shutil
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from ml.qc import QcResult, find_duplicate_sop_instances, qc_file
from ml.synth.bto import BtoMeta, derived_uid, write_bto

FRAMES, ROWS, COLS = 5, 48, 40
PIXEL_DATA_HEADER = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"  # encapsulated, little endian


def write(
    tmp_path: Path, name: str = "good.dcm", syntax: str = "jpeg2000", shape=(FRAMES, ROWS, COLS)
) -> Path:
    vol = np.random.default_rng(0).integers(0, 1024, shape, dtype=np.uint16)
    uids = derived_uid("study", name), derived_uid("series", name)
    meta = BtoMeta("DBT-P00001", *uids, dt.date(2024, 3, 1), "L", "CC")
    return write_bto(tmp_path / name, vol, meta, transfer_syntax=syntax)


def rewrite(path: Path, **attributes: object) -> Path:
    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(path)
    return path


def corrupt_frame(path: Path, frame: int) -> None:
    """Overwrite the start of ``frame``'s encapsulated fragment (same length, so offsets hold)."""
    data = bytearray(path.read_bytes())
    pos = data.index(PIXEL_DATA_HEADER) + len(PIXEL_DATA_HEADER)
    for _ in range(frame + 1):  # skip the Basic Offset Table and the fragments before
        (length,) = struct.unpack("<L", data[pos + 4 : pos + 8])
        pos += 8 + length
    data[pos + 8 : pos + 24] = b"\x13" * 16
    path.write_bytes(bytes(data))


def assert_failed(result: QcResult, reason: str, path: Path, match: str | None = None) -> None:
    assert (result.passed, result.reason) == (False, reason), result
    assert result.detail and str(path) not in result.detail and path.name not in result.detail
    if match:
        assert match in result.detail, result.detail


def test_good_file_passes_and_records_its_header(tmp_path):
    path = write(tmp_path)
    result = qc_file(path)
    assert (result.passed, result.reason, result.detail) == (True, None, None)
    assert (result.header.frames, result.header.rows, result.header.columns) == (FRAMES, ROWS, COLS)
    row = result.record()
    assert row["passed"] is True and row["Frames"] == FRAMES and row["BitsStored"] == 10
    assert qc_file(write(tmp_path, "ls.dcm", syntax="jpegls")).passed


def test_not_dicom(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("this is not an image")
    result = qc_file(path)
    assert_failed(result, "not_dicom", path, "not a DICOM file")
    assert result.header is None and result.record()["reason"] == "not_dicom"


def test_truncated_in_pixel_data_and_in_its_element_header(tmp_path):
    data = write(tmp_path).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:-500])
    assert_failed(qc_file(cut), "truncated", cut, "past the end")
    cut.write_bytes(data[: data.index(PIXEL_DATA_HEADER) + 10])
    assert_failed(qc_file(cut), "truncated", cut, "file ends inside")


def test_secondary_capture_and_ct_are_refused(tmp_path):
    sc_uid = "1.2.840.10008.5.1.4.1.1.7"
    path = write(tmp_path)
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sc_uid
    ds.save_as(path)
    assert_failed(qc_file(path), "unsupported_sop_class", path, "Secondary Capture")
    assert qc_file(path, sop_classes=None).passed
    assert qc_file(path, sop_classes=[sc_uid]).passed
    ct = Path(get_testdata_file("CT_small.dcm", download=False))
    assert_failed(qc_file(ct), "unsupported_sop_class", ct, "CT Image Storage")


def test_corrupt_central_codestream_fails_and_other_frames_are_not_decoded(tmp_path):
    central = write(tmp_path, "central.dcm")
    corrupt_frame(central, FRAMES // 2)
    assert_failed(qc_file(central), "corrupt_codestream", central, "cannot decode")
    assert qc_file(central).header is not None  # the header was fine: kept for the log
    first = write(tmp_path, "first.dcm")
    corrupt_frame(first, 0)
    assert qc_file(first).passed  # QC decodes one frame only, by design


def test_frame_count_mismatch(tmp_path):
    for syntax in ("jpeg2000", "explicit"):
        path = rewrite(write(tmp_path, f"{syntax}.dcm", syntax=syntax), NumberOfFrames=FRAMES + 2)
        expected = f"NumberOfFrames is {FRAMES + 2}"
        assert_failed(qc_file(path), "frame_count_mismatch", path, expected)


def test_too_large(tmp_path):
    path = write(tmp_path)
    limit = FRAMES * ROWS * COLS * 2 - 1
    assert_failed(qc_file(path, max_volume_bytes=limit), "volume_too_large", path)
    huge = write(tmp_path, "huge.dcm", syntax="explicit")
    rewrite(huge, Rows=60000, Columns=60000, NumberOfFrames=5000)
    assert_failed(qc_file(huge), "volume_too_large", huge, "exceeds the limit")


def test_tiny_geometry_and_bad_bit_depth(tmp_path):
    tiny = write(tmp_path, "tiny.dcm", syntax="explicit", shape=(2, 16, 24))
    assert_failed(qc_file(tiny), "tiny_geometry", tiny, "16 rows x 24 columns")
    assert qc_file(tiny, min_size=16).passed
    bits = rewrite(write(tmp_path, "bits.dcm", syntax="explicit"), BitsStored=17)
    assert_failed(qc_file(bits), "bad_bit_depth", bits, "BitsStored 17")


def test_missing_pixel_data_and_unreadable_paths(tmp_path):
    path = write(tmp_path, syntax="explicit")
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    assert_failed(qc_file(path), "no_pixel_data", path)
    missing = tmp_path / "missing.dcm"
    assert_failed(qc_file(missing), "unreadable", missing, "FileNotFoundError")
    assert_failed(qc_file(tmp_path), "unreadable", tmp_path, "IsADirectoryError")


def test_duplicate_sop_instances_across_a_batch(tmp_path):
    a = write(tmp_path, "a.dcm")
    b = write(tmp_path, "b.dcm")
    copy = shutil.copy(a, tmp_path / "copy-of-a.dcm")
    broken = tmp_path / "broken.dcm"
    broken.write_text("no")
    results = [qc_file(p) for p in (a, b, copy, broken, a)]
    uid = pydicom.dcmread(a).SOPInstanceUID
    assert find_duplicate_sop_instances(r.header for r in results) == {uid: [0, 2, 4]}
    assert find_duplicate_sop_instances([results[0].header, results[1].header, None]) == {}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("JPEG-lossy.dcm", "unsupported_transfer_syntax"),
        ("MR_truncated.dcm", "truncated"),
        ("JPEG2000-embedded-sequence-delimiter.dcm", "corrupt_codestream"),
        ("meta_missing_tsyntax.dcm", "not_dicom"),
    ],
)
def test_real_bad_files_give_their_reason(name, reason):
    path = Path(get_testdata_file(name, download=False))
    assert_failed(qc_file(path, sop_classes=None), reason, path)
