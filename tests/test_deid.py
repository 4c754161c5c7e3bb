"""ml.deid: keyed pseudonyms, per-patient date shifts, Annex E removal, valid output."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from ml.deid import (
    BASIC_PROFILE,
    KEPT_UID_KEYWORDS,
    DeidError,
    date_shift_days,
    deidentify,
    deidentify_file,
    pseudonym,
    pseudonym_uid,
    shift_da,
    shift_dt,
)
from ml.dicomio import NotDicomError, load_view, read_header
from ml.synth.bto import BtoMeta, derived_uid, write_bto

SECRET = b"tomosight-test-secret-0123456789"
OTHER_SECRET = b"another-secret-of-32-bytes-here!"
FRAMES, ROWS, COLS = 3, 40, 32
PHI = {
    "patient_name": "SYNTH^PATIENT^ALICE",
    "patient_birth_date": dt.date(1961, 7, 23),
    "institution_name": "SYNTHETIC BREAST CENTER NORTH",
    "referring_physician_name": "SYNTH^REFERRER^BOB",
    "accession_number": "SYNTH4242",
    "device_serial_number": "SN-SYNTH-7777",
}


def volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1024, (FRAMES, ROWS, COLS), dtype=np.uint16)


def bto_meta(
    patient: str = "DBT-P00001",
    study: int = 1,
    day: dt.date = dt.date(2024, 3, 1),
    view: str = "CC",
    laterality: str = "L",
    **kwargs,
) -> BtoMeta:
    return BtoMeta(
        patient,
        derived_uid("study", patient, study),
        derived_uid("series", patient, study, laterality, view),
        day,
        laterality,
        view,
        **{**PHI, **kwargs},
    )


def write(tmp_path: Path, name: str = "in.dcm", syntax: str = "jpeg2000", **kwargs) -> Path:
    return write_bto(tmp_path / name, volume(), bto_meta(**kwargs), transfer_syntax=syntax)


def elements(ds: Dataset, path: str = "") -> Iterator[tuple[str, pydicom.DataElement]]:
    """Every element of ``ds`` (file meta first), nested items included, with a readable path."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and not path:
        yield from elements(meta, "meta.")
    for elem in ds:
        here = f"{path}{elem.keyword or elem.tag}"
        yield here, elem
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                yield from elements(item, f"{here}[{i}].")


def planted_strings(path: Path) -> list[str]:
    """The identifying strings written into the synthetic input (names, ids, UIDs, dates)."""
    ds = pydicom.dcmread(path)
    return [
        "SYNTH^PATIENT",
        "ALICE",
        "SYNTH^REFERRER",
        "19610723",
        "SYNTHETIC BREAST CENTER",
        "SN-SYNTH-7777",
        "SYNTH4242",
        "DBT-P00001",
        "20240301",
        "breast tomosynthesis",
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        ds.FrameOfReferenceUID,
    ]


def days_between(before: str, after: str) -> int:
    def day(text: str) -> dt.datetime:
        return dt.datetime.strptime(text[:8], "%Y%m%d")

    return (day(after) - day(before)).days


# --------------------------------------------------------------------- keyed values


def test_pseudonyms_are_keyed_stable_and_readable():
    patient = pseudonym(SECRET, "patient", "DBT-P00001")
    assert re.fullmatch(r"P-[0-9a-f]{12}", patient)
    assert re.fullmatch(r"S-[0-9a-f]{12}", pseudonym(SECRET, "study", "DBT-S00001"))
    assert pseudonym(SECRET, "patient", "DBT-P00001") == patient
    assert pseudonym(OTHER_SECRET, "patient", "DBT-P00001") != patient
    assert pseudonym(SECRET, "patient", "DBT-P00002") != patient
    assert pseudonym(SECRET, "study", "DBT-P00001")[2:] != patient[2:]  # kinds are separate domains
    assert len({pseudonym(SECRET, "patient", f"DBT-P{i:05d}") for i in range(500)}) == 500
    with pytest.raises(DeidError, match="Did you mean 'patient'"):
        pseudonym(SECRET, "pateint", "x")
    with pytest.raises(DeidError, match="at least 16 bytes"):
        pseudonym(b"short", "patient", "x")
    with pytest.raises(DeidError, match="must be bytes"):
        pseudonym("a text secret of enough length", "patient", "x")  # type: ignore[arg-type]


def test_pseudonym_uids_are_valid_stable_2_25_uids():
    source = derived_uid("study", 1)
    uid = pseudonym_uid(SECRET, source)
    assert re.fullmatch(r"2\.25\.[1-9][0-9]*", uid) and len(uid) <= 64
    assert UID(uid).is_valid and int(uid[5:]) < 2**128
    assert pseudonym_uid(SECRET, source) == uid
    assert pseudonym_uid(OTHER_SECRET, source) != uid
    assert pseudonym_uid(SECRET, derived_uid("study", 2)) != uid
    lengths = [len(pseudonym_uid(SECRET, str(i))) for i in range(200)]
    assert max(lengths) <= 44


def test_date_shift_is_per_patient_negative_and_spread():
    shifts = [date_shift_days(SECRET, f"DBT-P{i:05d}") for i in range(300)]
    assert all(-730 <= s <= -1 for s in shifts)
    assert len(set(shifts)) > 200  # independent offsets, not a handful of values
    assert min(shifts) < -600 and max(shifts) > -130
    assert date_shift_days(SECRET, "DBT-P00001") == shifts[1]
    assert [date_shift_days(OTHER_SECRET, f"DBT-P{i:05d}") for i in range(20)] != shifts[:20]


def test_shift_da_and_dt_keep_format_precision_and_time():
    assert shift_da("20240301", -1) == "20240229"  # leap day
    assert shift_da("2024.03.01", -366) == "20230301"  # old ACR-NEMA form
    assert shift_da("00050110", -9) == "00050101"  # four-digit year kept
    assert shift_dt("20240301093015.123456+0100", -1) == "20240229093015.123456+0100"
    assert shift_dt("20240301", -1) == "20240229"
    assert shift_dt("202403", -1) == "202402"
    assert shift_dt("2024", -1) == "2023"
    assert shift_dt("2024+0100", -1) == "2023+0100"
    for bad in ("2024-03-01", "20240230", "2024031", "hello"):
        with pytest.raises(ValueError):
            shift_da(bad, -1)
    for bad in ("202413", "2024031", "2024x", "x2024"):
        with pytest.raises(ValueError):
            shift_dt(bad, -1)


def test_profile_table_is_well_formed():
    for keyword, action in BASIC_PROFILE.items():
        tag = tag_for_keyword(keyword)
        assert tag is not None, keyword
        vr = dictionary_VR(tag)
        if action in ("Z", "D"):
            assert vr in ("SQ", "PN", "LO", "SH", "UC", "DA"), (keyword, vr)
        assert action != "D" or vr != "SQ", keyword
    assert all(dictionary_VR(tag_for_keyword(k)) == "UI" for k in KEPT_UID_KEYWORDS)


# --------------------------------------------------------------------- removal


def test_no_planted_identifier_survives_in_elements_or_bytes(tmp_path):
    src = write(tmp_path)
    planted = planted_strings(src)
    dst = tmp_path / "out" / "deid.dcm"
    deidentify_file(src, dst, SECRET)
    ds = pydicom.dcmread(dst)
    for where, elem in elements(ds):
        if elem.keyword == "PixelData":
            continue
        text = str(elem.value)
        leaks = [p for p in planted if p.lower() in text.lower()]
        assert not leaks, f"{where} = {text!r} leaks {leaks}"
    data = dst.read_bytes()
    assert not [p for p in planted if p.encode() in data]
    assert data[:128] == b"\x00" * 128
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107", "113108"]
    assert ds.PatientBirthDate == ds.AccessionNumber == ds.ReferringPhysicianName == ""
    assert ds.DeviceSerialNumber == "DEIDENTIFIED"  # type 1 in Enhanced General Equipment
    assert "InstitutionName" not in ds and "StudyDescription" not in ds
    assert ds.PatientSex == "F"  # Retain Patient Characteristics


def with_extra_phi(path: Path) -> Dataset:
    """The synthetic file plus the PHI a vendor file can carry elsewhere (nested, private, meta)."""
    ds = pydicom.dcmread(path)
    ds.preamble = b"EVE HOLT PREAMBLE".ljust(128, b"\x00")
    ds.file_meta.SourceApplicationEntityTitle = "EVEMAMMO01"
    ds.OperatorsName = "EVE^OPERATOR"
    ds.PerformingPhysicianName = "EVE^PERFORMER"
    ds.InstitutionAddress = "1 EVE STREET"
    ds.StationName = "EVESTATION"
    ds.SeriesDescription = "EVE R CC"
    ds.ImageComments = "patient Eve Holt, call 555-0100"
    ds.PatientAddress = "1 EVE STREET"
    ds.PatientAge = "064Y"
    ds.TimezoneOffsetFromUTC = "+0100"
    ds.AcquisitionDateTime = "202403"
    with pytest.warns(UserWarning, match="Invalid value for VR DA"):
        ds.SeriesDate = "2024XX01"  # unparseable: emptied, not kept
    ds.DateOfLastCalibration = ["20240101", "20240215"]
    other = Dataset()
    other.PatientID = "EVE-OTHER-ID"
    ds.OtherPatientIDsSequence = Sequence([other])
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = derived_uid("eve", "referenced")
    ref.ReferencedFrameNumber = 1
    ds.ReferencedImageSequence = Sequence([ref])
    content = ds.PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0]
    content.VerifyingObserverName = "EVE^NESTED"
    block = ds.private_block(0x0009, "EVE VENDOR", create=True)
    block.add_new(0x01, "LO", "EVE HOLT PRIVATE")
    ds.add_new(0x60000010, "US", 16)  # overlay rows (overlays are forbidden in BTO)
    ds.add_new(0x60003000, "OW", b"EVE!" * 8)
    return ds


def test_nested_private_meta_and_free_text_identifiers_are_removed(tmp_path):
    src = write(tmp_path)
    ds = with_extra_phi(src)
    result = deidentify(ds, SECRET)
    out = result.dataset
    for where, elem in elements(out):
        if elem.keyword != "PixelData":
            assert "EVE" not in str(elem.value).upper(), where
    assert not any(elem.tag.is_private for _, elem in elements(out))
    assert not [e for _, e in elements(out) if e.tag.group == 0x6000]
    assert "SourceApplicationEntityTitle" not in out.file_meta
    assert out.preamble == b"\x00" * 128
    assert out.PatientAge == "064Y"
    assert "TimezoneOffsetFromUTC" not in out and out.SeriesDate == ""
    shift = result.shift_days
    assert out.AcquisitionDateTime == (dt.date(2024, 3, 1) + dt.timedelta(shift)).strftime("%Y%m")
    assert list(out.DateOfLastCalibration) == [
        (dt.date(2024, 1, 1) + dt.timedelta(shift)).strftime("%Y%m%d"),
        (dt.date(2024, 2, 15) + dt.timedelta(shift)).strftime("%Y%m%d"),
    ]
    ref = out.ReferencedImageSequence[0]
    assert ref.ReferencedSOPClassUID == ds.SOPClassUID
    assert ref.ReferencedSOPInstanceUID == pseudonym_uid(SECRET, derived_uid("eve", "referenced"))
    assert ds.OperatorsName == "EVE^OPERATOR" and ds.PatientID == "DBT-P00001"  # input untouched
    assert "OtherPatientIDsSequence" in ds
    assert ds.file_meta.SourceApplicationEntityTitle == "EVEMAMMO01"


# --------------------------------------------------------------------- dates


def test_every_date_moves_by_the_patient_offset_nested_ones_included(tmp_path):
    src = write(tmp_path)
    result = deidentify_file(src, tmp_path / "out.dcm", SECRET)
    assert result.shift_days == date_shift_days(SECRET, "DBT-P00001")
    before = dict(elements(pydicom.dcmread(src)))
    after = dict(elements(pydicom.dcmread(tmp_path / "out.dcm")))
    checked = 0
    for where, elem in before.items():
        if elem.VR not in ("DA", "DT") or elem.keyword == "PatientBirthDate":
            continue
        moved = str(after[where].value)
        assert days_between(str(elem.value), moved) == result.shift_days, where
        assert moved[8:] == str(elem.value)[8:], where  # time of day kept
        checked += 1
    nested = [w for w in before if w.endswith("FrameReferenceDateTime")]
    assert len(nested) == FRAMES and checked == 2 + FRAMES  # StudyDate, ContentDate + per frame
    assert after["StudyTime"].value == before["StudyTime"].value


def test_studies_of_one_patient_keep_their_interval_and_patients_differ(tmp_path):
    first = write(tmp_path, "a.dcm", study=1, day=dt.date(2024, 3, 1))
    second = write(tmp_path, "b.dcm", study=2, day=dt.date(2025, 2, 14))
    other = write(tmp_path, "c.dcm", patient="DBT-P00002", study=1, day=dt.date(2024, 3, 1))
    sources = (first, second, other)
    results = [deidentify_file(p, tmp_path / f"out-{p.name}", SECRET) for p in sources]
    dates = [pydicom.dcmread(tmp_path / f"out-{p.name}").StudyDate for p in sources]
    assert results[0].shift_days == results[1].shift_days != results[2].shift_days
    assert days_between(dates[0], dates[1]) == 350
    patients = [r.patient_pseudonym for r in results]
    assert patients[0] == patients[1] != patients[2]
    assert results[0].study_pseudonym != results[1].study_pseudonym


# --------------------------------------------------------------------- UIDs and kept attributes


def test_uids_are_consistent_across_the_files_of_a_study(tmp_path):
    cc = write(tmp_path, "cc.dcm", view="CC")
    mlo = write(tmp_path, "mlo.dcm", view="MLO")
    ins = [pydicom.dcmread(p) for p in (cc, mlo)]
    for p in (cc, mlo):
        deidentify_file(p, tmp_path / f"out-{p.name}", SECRET)
    outs = [pydicom.dcmread(tmp_path / f"out-{p.name}") for p in (cc, mlo)]
    study = pseudonym_uid(SECRET, ins[0].StudyInstanceUID)
    assert outs[0].StudyInstanceUID == outs[1].StudyInstanceUID == study
    assert outs[0].SeriesInstanceUID != outs[1].SeriesInstanceUID
    for before, after in zip(ins, outs):
        for keyword in ("SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            assert after[keyword].value == pseudonym_uid(SECRET, before[keyword].value)
        assert after.file_meta.MediaStorageSOPInstanceUID == after.SOPInstanceUID
        assert after.SOPClassUID == before.SOPClassUID == after.file_meta.MediaStorageSOPClassUID
        assert after.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID
        old = {str(e.value) for _, e in elements(before) if e.VR == "UI"}
        new = {str(e.value) for _, e in elements(after) if e.VR == "UI"}
        meta = before.file_meta
        kept = {before.SOPClassUID, meta.TransferSyntaxUID, meta.ImplementationClassUID}
        assert old & new == kept


def test_laterality_view_window_geometry_and_pixels_are_kept(tmp_path):
    src = write(
        tmp_path,
        laterality="R",
        view="MLO",
        vendor_extras=True,
        windows_per_frame=True,
        window_center=300.0,
    )
    dst = tmp_path / "out.dcm"
    deidentify_file(src, dst, SECRET)
    before, after = pydicom.dcmread(src), pydicom.dcmread(dst)
    for keyword in (
        "ImageLaterality",
        "ViewPosition",
        "ViewCodeSequence",
        "BitsStored",
        "PhotometricInterpretation",
        "PresentationLUTShape",
        "BreastImplantPresent",
        "Manufacturer",
        "ManufacturerModelName",
        "SharedFunctionalGroupsSequence",
        "PixelData",
    ):
        assert after[keyword] == before[keyword], keyword
    frames = zip(after.PerFrameFunctionalGroupsSequence, before.PerFrameFunctionalGroupsSequence)
    for a, b in frames:
        assert a.PlanePositionSequence == b.PlanePositionSequence
        assert a.FrameVOILUTSequence == b.FrameVOILUTSequence
    h_before, h_after = read_header(src), read_header(dst)
    assert (h_after.laterality, h_after.view, h_after.has_fg_window) == ("R", "MLO", True)
    assert h_after.laterality_source == h_before.laterality_source
    np.testing.assert_array_equal(load_view(dst, "all").pixels, load_view(src, "all").pixels)


@pytest.mark.parametrize("syntax", ["jpeg2000", "explicit"])
def test_pixel_data_bytes_are_identical(tmp_path, syntax):
    src = write(tmp_path, syntax=syntax)
    deidentify_file(src, tmp_path / "out.dcm", SECRET)
    assert pydicom.dcmread(tmp_path / "out.dcm").PixelData == pydicom.dcmread(src).PixelData


# --------------------------------------------------------------------- keys, determinism, errors


def test_caller_keys_override_the_dataset_keys(tmp_path):
    ds = pydicom.dcmread(write(tmp_path))
    result = deidentify(ds, SECRET, patient_id="DBT-P00099", study_id="DBT-S00042")
    assert result.patient_pseudonym == pseudonym(SECRET, "patient", "DBT-P00099")
    assert result.study_pseudonym == pseudonym(SECRET, "study", "DBT-S00042")
    assert result.shift_days == date_shift_days(SECRET, "DBT-P00099")
    out = result.dataset
    assert out.PatientID == result.patient_pseudonym
    assert out.PatientName.family_name == result.patient_pseudonym
    assert out.StudyID == result.study_pseudonym
    default = deidentify(ds, SECRET)
    assert default.patient_pseudonym == pseudonym(SECRET, "patient", "DBT-P00001")
    assert default.study_pseudonym == pseudonym(SECRET, "study", ds.StudyInstanceUID)


def test_output_is_byte_identical_across_runs_and_keyed(tmp_path):
    src = write(tmp_path)
    runs = [tmp_path / "one.dcm", tmp_path / "two.dcm", tmp_path / "other.dcm"]
    deidentify_file(src, runs[0], SECRET)
    deidentify_file(src, runs[1], SECRET)
    deidentify_file(src, runs[2], OTHER_SECRET)
    assert runs[0].read_bytes() == runs[1].read_bytes()
    assert runs[0].read_bytes() != runs[2].read_bytes()


def test_bad_input_gives_typed_errors_and_writes_nothing(tmp_path):
    src = write(tmp_path)
    ds = pydicom.dcmread(src)
    del ds.PatientID
    with pytest.raises(DeidError, match="pass patient_id="):
        deidentify(ds, SECRET)
    assert deidentify(ds, SECRET, patient_id="DBT-P00001").patient_pseudonym.startswith("P-")
    with pytest.raises(DeidError, match="at least 16 bytes"):
        deidentify_file(src, tmp_path / "short.dcm", b"")
    text = tmp_path / "notes.dcm"
    text.write_text("not an image")
    with pytest.raises(NotDicomError):
        deidentify_file(text, tmp_path / "never.dcm", SECRET)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.dcm", "notes.dcm"]


def test_deidentified_file_passes_dciodvfy(tmp_path):
    tool = shutil.which("dciodvfy")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("dciodvfy (Debian dicom3tools) is required in CI")
        pytest.skip("dciodvfy not installed")
    dst = tmp_path / "out.dcm"
    deidentify_file(write(tmp_path), dst, SECRET)
    result = subprocess.run([tool, str(dst)], capture_output=True, text=True, timeout=60)
    report = (result.stdout + result.stderr).splitlines()
    assert "BreastTomosynthesisImage" in report
    assert not [line for line in report if line.startswith(("Error", "Warning"))], report
