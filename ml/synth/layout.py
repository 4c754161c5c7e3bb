"""The Duke BCS-DBT on-disk layout: folder names, path columns and CSV files."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ml.atomic import write_text_atomic

ROOT_FOLDER = "Breast-Cancer-Screening-DBT"
ANONYMISED_DATE = "01-01-2000"
FILE_PATHS_CSV = "BCS-DBT file-paths-train-v2.csv"
LABELS_CSV = "BCS-DBT labels-train-v2.csv"
BOXES_CSV = "BCS-DBT boxes-train-v2.csv"
FILE_PATHS_COLUMNS = ("PatientID", "StudyUID", "View", "descriptive_path", "classic_path")
LABELS_COLUMNS = ("PatientID", "StudyUID", "View", "Normal", "Actionable", "Benign", "Cancer")
BOXES_COLUMNS = (
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
)


def descriptive_path(
    patient_id: str,
    study_id: str,
    description: str,
    study_instance_uid: str,
    series_number: int,
    series_instance_uid: str,
    na_folder: bool = False,
) -> str:
    """``descriptive_path`` as in the file-paths CSV (``na_folder``: the on-disk ``-NA-`` form)."""
    study = f"{ANONYMISED_DATE}-{study_id}-{description}-{study_instance_uid[-5:]}"
    series = f"{series_number}.000000-{'NA-' if na_folder else ''}{series_instance_uid[-5:]}"
    return f"{ROOT_FOLDER}/{patient_id}/{study}/{series}/1-1.dcm"


def classic_path(patient_id: str, study_instance_uid: str, series_instance_uid: str) -> str:
    """``classic_path``: patient / StudyInstanceUID / SeriesInstanceUID / 1-1.dcm."""
    return f"{ROOT_FOLDER}/{patient_id}/{study_instance_uid}/{series_instance_uid}/1-1.dcm"


def write_csv(
    path: str | os.PathLike[str], columns: Sequence[str], rows: Iterable[Mapping[str, object]]
) -> Path:
    """Write rows (dicts keyed by ``columns``) as a CSV with ``\\n`` line ends, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="raise"
    )
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buffer.getvalue())
