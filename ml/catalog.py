"""Catalogue a Duke BCS-DBT style cohort: resolve each volume's file, read its header, hash it.

Every row of the file-paths CSV ends up either catalogued (one row of the
``filepaths`` contract) or quarantined with a reason; nothing is dropped.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ml.density import breast_composition
from ml.dicomio import DicomError, read_header

SERIES_FOLDER = re.compile(r"^(?P<number>\d+\.\d+)-(?P<uid5>\d{5})$")


@dataclass(frozen=True)
class DukeCsvs:
    """The three CSVs of a Duke-layout cohort (labels and boxes may be absent)."""

    filepaths: Path
    labels: Path | None
    boxes: Path | None


def find_duke_csvs(root: str | Path, split: str = "train") -> DukeCsvs:
    """Locate ``BCS-DBT {file-paths,labels,boxes}-<split>[-v2].csv`` under ``root``."""
    root = Path(root)

    def find(kind: str) -> Path | None:
        for name in (f"BCS-DBT {kind}-{split}-v2.csv", f"BCS-DBT {kind}-{split}.csv"):
            if (root / name).is_file():
                return root / name
        return None

    filepaths = find("file-paths")
    if filepaths is None:
        raise FileNotFoundError(f"{root}: no 'BCS-DBT file-paths-{split}[-v2].csv'")
    return DukeCsvs(filepaths, find("labels"), find("boxes"))


def resolve_volume_path(root: str | Path, descriptive_path: str, classic_path: str | None = None) -> Path:
    """Find a volume on disk from its CSV paths.

    Tries the descriptive path, then its ``-NA-`` form (newer NBIA downloads write
    ``18377.000000-NA-92351`` where the CSV says ``18377.000000-92351``), then the
    classic path.  Raises FileNotFoundError listing every path tried.
    """
    root = Path(root)
    candidates = [root / descriptive_path]
    parts = Path(descriptive_path).parts
    if len(parts) >= 2 and (match := SERIES_FOLDER.match(parts[-2])):
        na_folder = f"{match['number']}-NA-{match['uid5']}"
        candidates.append(root.joinpath(*parts[:-2], na_folder, parts[-1]))
    if classic_path:
        candidates.append(root / classic_path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"volume not found; tried {[str(c) for c in candidates]}")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def catalog_cohort(root: str | Path, filepaths_csv: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read every volume's header listed in a file-paths CSV.

    Returns ``(catalogued, quarantined)``: catalogued rows follow the ``filepaths``
    contract (``dicom_uri`` is the resolved local path); quarantined rows carry
    PatientID, StudyUID, View, ``path``, ``reason`` (a short code) and ``detail``.
    """
    listing = pl.read_csv(filepaths_csv, infer_schema=False)
    catalogued: list[dict[str, object]] = []
    quarantined: list[dict[str, object]] = []
    for row in listing.iter_rows(named=True):
        keys = {k: row[k] for k in ("PatientID", "StudyUID", "View")}
        try:
            path = resolve_volume_path(root, row["descriptive_path"], row.get("classic_path"))
            header = read_header(path)
        except FileNotFoundError as exc:
            quarantined.append({**keys, "path": row["descriptive_path"], "reason": "missing_file", "detail": str(exc)})
            continue
        except DicomError as exc:
            quarantined.append({**keys, "path": row["descriptive_path"], "reason": exc.reason, "detail": exc.detail})
            continue
        catalogued.append(
            {
                **keys,
                "dicom_uri": str(path),
                "StudyDate": header.study_date,
                "vendor": header.manufacturer,
                "density": breast_composition(header.dataset),
                "rows": header.rows,
                "columns": header.columns,
                "frames": header.frames,
                "sha256": sha256_file(path),
                "descriptive_path": row["descriptive_path"],
                "classic_path": row.get("classic_path"),
            }
        )
    catalog_schema = {
        "PatientID": pl.String, "StudyUID": pl.String, "View": pl.String, "dicom_uri": pl.String,
        "StudyDate": pl.Date, "vendor": pl.String, "density": pl.String, "rows": pl.Int64, "columns": pl.Int64,
        "frames": pl.Int64, "sha256": pl.String, "descriptive_path": pl.String, "classic_path": pl.String,
    }  # fmt: skip
    quarantine_schema = {k: pl.String for k in ("PatientID", "StudyUID", "View", "path", "reason", "detail")}
    return pl.DataFrame(catalogued, schema=catalog_schema), pl.DataFrame(quarantined, schema=quarantine_schema)
