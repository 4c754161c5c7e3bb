"""Uploaded DICOM files -> one study's view files on local disk, or a typed error.

Each file is written to a private temporary folder and its header checked with
:func:`ml.dicomio.read_header` (the ingestion's reader): not DICOM -> 415; another modality or
SOP class, an unreadable or unsupported file -> 422.  The files must belong to one study and
each must say its view (laterality + ViewCodeSequence or ViewPosition); two files for one view
are refused.  Messages name files by their position in the upload, never by patient data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ml.dicomio import DicomError, NotDicomError, UnsupportedSopClassError, read_header
from serving.errors import RequestError

ACCEPTED_MODALITY = "MG"


@dataclass(frozen=True)
class UploadedStudy:
    """One study's uploaded files: its StudyInstanceUID and ``{Duke view name: path}``."""

    study_uid: str
    paths: dict[str, Path]


def read_upload(files: Sequence[bytes], folder: str | Path) -> UploadedStudy:
    """Write ``files`` under ``folder``, check them, and group them by view."""
    if not files:
        raise RequestError(422, "the upload holds no file: send the study's DICOM files in the form field 'files'", "no_files")
    paths: dict[str, Path] = {}
    studies: set[str] = set()
    for number, data in enumerate(files, start=1):
        path = Path(folder) / f"upload-{number:03d}.dcm"
        path.write_bytes(data)
        view, study = _check_file(path, number)
        if view in paths:
            message = f"file {number} is a second file for view {view.upper()}: upload one file per view"
            raise RequestError(422, message, "duplicate_view")
        paths[view] = path
        studies.add(study)
    if len(studies) > 1:
        raise RequestError(422, f"the files belong to {len(studies)} studies: upload one study per request", "several_studies")
    return UploadedStudy(studies.pop(), paths)


def _check_file(path: Path, number: int) -> tuple[str, str]:
    """``(Duke view name, StudyInstanceUID)`` of one uploaded file, or a RequestError."""
    try:
        header = read_header(path)
    except NotDicomError:
        raise RequestError(415, f"file {number} is not a DICOM file (Part 10, 'DICM' preamble expected)", "not_dicom") from None
    except UnsupportedSopClassError as exc:
        raise RequestError(422, f"file {number} is of the wrong modality: {exc.detail}", "wrong_modality") from None
    except DicomError as exc:
        raise RequestError(422, f"file {number} cannot be read ({exc.reason}): {exc.detail}", exc.reason) from None
    modality = str(header.dataset.get("Modality", "") or "").upper()
    if modality != ACCEPTED_MODALITY:
        message = f"file {number} is of the wrong modality: {modality or 'none'} (expected {ACCEPTED_MODALITY})"
        raise RequestError(422, message, "wrong_modality")
    if not header.laterality or not header.view:
        message = f"file {number} does not say its view: laterality and ViewCodeSequence (or ViewPosition) are needed"
        raise RequestError(422, message, "unknown_view")
    if not header.study_instance_uid:
        raise RequestError(422, f"file {number} has no StudyInstanceUID", "no_study_uid")
    return f"{header.laterality}{header.view}".lower(), header.study_instance_uid
