"""Generate a synthetic cohort in the exact Duke BCS-DBT layout (DICOM files, CSVs, manifest)."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ml.atomic import write_text_atomic
from ml.density import category_from_fraction
from ml.synth.bto import BtoMeta, write_bto
from ml.synth.config import CohortConfig
from ml.synth.layout import (
    BOXES_COLUMNS,
    BOXES_CSV,
    FILE_PATHS_COLUMNS,
    FILE_PATHS_CSV,
    LABELS_COLUMNS,
    LABELS_CSV,
    ROOT_FOLDER,
    classic_path,
    descriptive_path,
    write_csv,
)
from ml.synth.plan import CLASSES, StudyPlan, VolumePlan, plan_cohort
from ml.synth.volume import ViewSpec, render_view

MANIFEST = "cohort.json"
DUKE_ROWS = 2457  # Duke rows at 0.1 mm; smaller images keep the physical size


class CohortExistsError(FileExistsError):
    """Raised when the output folder already holds a cohort and overwriting was not asked for."""


@dataclass(frozen=True)
class CohortSummary:
    """What was written."""

    out_dir: Path
    patients: int
    studies_per_class: dict[str, int]
    volumes_per_class: dict[str, int]
    files: int
    boxes: int


def _meta(
    config: CohortConfig, study: StudyPlan, vol: VolumePlan, window: tuple[float, float]
) -> BtoMeta:
    quirks = study.quirks
    return BtoMeta(
        patient_id=study.patient_id,
        study_instance_uid=study.study_instance_uid,
        series_instance_uid=vol.series_instance_uid,
        study_date=study.study_date,
        laterality=vol.view[0].upper(),
        view=vol.view[1:].upper(),
        window_center=window[0] if quirks.window else None,
        window_width=window[1] if quirks.window else None,
        photometric=quirks.photometric,
        frame_laterality=quirks.frame_laterality,
        vendor_extras=quirks.vendor_extras,
        windows_per_frame=quirks.windows_per_frame,
        rotated_180=vol.flipped,
        series_number=vol.series_number,
        pixel_spacing_mm=round(0.1 * DUKE_ROWS / config.rows, 4),
        slice_spacing_mm=round(vol.slice_mm, 4),
        study_description=study.description,
        patient_name=study.patient_name,
        patient_birth_date=study.birth_date,
        institution_name=study.institution,
        referring_physician_name=f"SYNTH^REFERRER{study.index % 7 + 1}",
        accession_number=study.accession,
        device_serial_number=study.device_serial,
        breast_composition=category_from_fraction(vol.density),
    )


def write_study(out_dir: Path, config: CohortConfig, study: StudyPlan) -> list[dict[str, Any]]:
    """Render and write every view of one study; return one record per volume."""
    records = []
    for vol in study.volumes:
        spec = ViewSpec(
            rows=config.rows,
            cols=config.cols,
            frames=vol.frames,
            laterality=vol.view[0].upper(),
            view=vol.view[1:].upper(),
            density=vol.density,
            lesions=vol.lesions,
            noise=config.noise,
            contrast=config.lesion_contrast,
            malignant_contrast=config.malignant_contrast,
            pixel_mm=0.1 * DUKE_ROWS / config.rows,
            slice_mm=vol.slice_mm,
        )
        rendered = render_view(spec, np.random.default_rng(list(vol.seed)))
        stored = rendered.volume[:, ::-1, ::-1] if vol.flipped else rendered.volume
        path_args = (
            study.patient_id,
            study.study_id,
            study.description,
            study.study_instance_uid,
            vol.series_number,
            vol.series_instance_uid,
        )
        on_disk = descriptive_path(*path_args, na_folder=vol.na_folder)
        meta = _meta(config, study, vol, (rendered.window_center, rendered.window_width))
        write_bto(out_dir / on_disk, np.ascontiguousarray(stored), meta, config.transfer_syntax)
        records.append(
            {
                "study": study,
                "view": vol.view,
                "frames": vol.frames,
                "descriptive_path": descriptive_path(*path_args),
                "classic_path": classic_path(
                    study.patient_id, study.study_instance_uid, vol.series_instance_uid
                ),
                "on_disk": on_disk,
                "flipped": vol.flipped,
                "boxes": rendered.boxes,
            }
        )
    return records


def _csv_rows(records: list[dict[str, Any]]) -> tuple[list[dict], list[dict], list[dict]]:
    paths, labels, boxes = [], [], []
    for rec in records:
        study: StudyPlan = rec["study"]
        key = {"PatientID": study.patient_id, "StudyUID": study.study_id, "View": rec["view"]}
        paths.append(
            {
                **key,
                "descriptive_path": rec["descriptive_path"],
                "classic_path": rec["classic_path"],
            }
        )
        labels.append({**key, **{c.capitalize(): int(study.label == c) for c in CLASSES}})
        for box in rec["boxes"]:
            boxes.append(
                {
                    **key,
                    "Subject": study.subject,
                    "Slice": box.slice,
                    "X": box.x,
                    "Y": box.y,
                    "Width": box.width,
                    "Height": box.height,
                    "Class": box.cls,
                    "AD": box.ad,
                    "VolumeSlices": rec["frames"],
                }
            )
    return paths, labels, boxes


def _manifest(config: CohortConfig, summary: CohortSummary, records: list[dict[str, Any]]) -> str:
    volumes = [
        {
            "PatientID": rec["study"].patient_id,
            "StudyUID": rec["study"].study_id,
            "View": rec["view"],
            "path": rec["on_disk"],
            "label": rec["study"].label,
            "frames": rec["frames"],
            "study_date": rec["study"].study_date.isoformat(),
            "flipped": rec["flipped"],
            "quirks": asdict(rec["study"].quirks),
        }
        for rec in records
    ]
    body = {
        "generator": "tomosight ml.synth",
        "config": config.to_dict(),
        "summary": {k: v for k, v in asdict(summary).items() if k != "out_dir"},
        "volumes": volumes,
    }
    return json.dumps(body, indent=2) + "\n"


def _prepare(out_dir: Path, overwrite: bool) -> None:
    existing = [
        p
        for p in (ROOT_FOLDER, FILE_PATHS_CSV, LABELS_CSV, BOXES_CSV, MANIFEST)
        if (out_dir / p).exists()
    ]
    if existing and not overwrite:
        raise CohortExistsError(
            f"{out_dir} already holds a cohort ({', '.join(existing)}); "
            "pass overwrite=True (CLI: --overwrite)"
        )
    for name in existing:
        target = out_dir / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _run(
    job: Callable[[StudyPlan], list[dict[str, Any]]], plans: list[StudyPlan], workers: int
) -> Iterator[list[dict[str, Any]]]:
    """Apply ``job`` to every plan, in order, in this process or in spawned worker processes."""
    if workers == 1:
        yield from map(job, plans)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield from pool.map(job, plans)


def generate_cohort(
    out_dir: str | Path,
    config: CohortConfig,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool | Callable[[int], object] = False,
) -> CohortSummary:
    """Write a cohort under ``out_dir`` and return its summary.

    ``workers`` > 1 renders studies in that many spawned processes; the output is identical
    for any worker count. ``progress``: True shows a tqdm bar (volumes); a callable is called
    with the number of volumes of each finished study.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir)
    _prepare(out, overwrite)
    plans = plan_cohort(config)
    records: list[dict[str, Any]] = []
    with tqdm(
        total=sum(len(p.volumes) for p in plans),
        unit="vol",
        desc="synth",
        disable=progress is not True,
    ) as bar:
        for recs in _run(partial(write_study, out, config), plans, workers):
            records += recs
            bar.update(len(recs))
            if callable(progress):
                progress(len(recs))

    paths, labels, boxes = _csv_rows(records)
    write_csv(out / FILE_PATHS_CSV, FILE_PATHS_COLUMNS, paths)
    write_csv(out / LABELS_CSV, LABELS_COLUMNS, labels)
    write_csv(out / BOXES_CSV, BOXES_COLUMNS, boxes)
    summary = CohortSummary(
        out_dir=out,
        patients=len({p.patient_id for p in plans}),
        studies_per_class={c: Counter(p.label for p in plans)[c] for c in CLASSES},
        volumes_per_class={c: Counter(r["study"].label for r in records)[c] for c in CLASSES},
        files=len(records),
        boxes=len(boxes),
    )
    write_text_atomic(out / MANIFEST, _manifest(config, summary, records))
    return summary
