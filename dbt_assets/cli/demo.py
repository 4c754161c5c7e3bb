"""``tomosight demo``: the main job end to end on embedded defaults.

Generate a synthetic Duke-layout cohort, catalogue it (every file ingested or
quarantined, validated against the ``filepaths`` contract), detect lesion
candidates with the classical baseline, and evaluate them with the DBTex FROC
metric: report JSON, FROC plot and contact sheet under ``--home``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="synthetic cohort -> catalogue -> detect -> FROC report")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("TOMOSIGHT_HOME", "demo_home")))
    parser.add_argument("--studies", type=int, default=40, help="synthetic studies to generate")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for detection")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ml.catalog import catalog_cohort, find_duke_csvs
    from ml.froc import evaluate
    from ml.froc_plot import plot_froc
    from ml.synth import CohortConfig, generate_cohort, write_contact_sheet
    from schemas import BoxPredictions, FilePaths, write_parquet

    home: Path = args.home
    cohort_dir, tables, reports = home / "cohort", home / "tables", home / "reports"
    for folder in (tables, reports):
        folder.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    config = CohortConfig(studies=args.studies, seed=args.seed)
    summary = generate_cohort(cohort_dir, config, workers=args.workers, overwrite=True, progress=True)
    write_contact_sheet(cohort_dir, reports / "contact_sheet.png")
    timings["generate"] = time.perf_counter() - start
    print(f"[1/4] cohort: {summary}")

    start = time.perf_counter()
    csvs = find_duke_csvs(cohort_dir)
    catalogued, quarantined = catalog_cohort(cohort_dir, csvs.filepaths)
    write_parquet(catalogued, tables / "filepaths.parquet", FilePaths)
    quarantined.write_parquet(tables / "quarantine.parquet")
    timings["catalogue"] = time.perf_counter() - start
    print(f"[2/4] catalogue: {len(catalogued)} volumes ingested, {len(quarantined)} quarantined")

    start = time.perf_counter()
    predictions = detect_cohort(catalogued, args.workers)
    write_parquet(predictions, tables / "box_predictions.parquet", BoxPredictions)
    submission = reports / "predictions.csv"
    predictions.select("PatientID", "StudyUID", "View", "X", "Width", "Y", "Height", "Z", "Depth", "Score").write_csv(
        submission
    )
    timings["detect"] = time.perf_counter() - start
    print(f"[3/4] detect: {len(predictions)} candidate boxes on {len(catalogued)} volumes")

    start = time.perf_counter()
    result = evaluate(csvs.labels, csvs.boxes, submission)
    plot_froc(result, reports / "froc.png")
    timings["evaluate"] = time.perf_counter() - start
    report = {**result.to_dict(), "volumes": len(catalogued), "quarantined": len(quarantined), "seconds": timings}
    (reports / "froc.json").write_text(json.dumps(report, indent=2, default=float))
    print(f"[4/4] FROC (DBTex): mean sensitivity {result.mean_sensitivity:.3f}; "
          f"at 1/2/3/4 FPs {[round(v, 3) for v in result.sensitivity_at_fps.values()]}; "
          f"at 2 FPs over all volumes {result.sensitivity_at_2_fps_all:.3f}")
    print(f"reports in {reports}: froc.json, froc.png, contact_sheet.png, predictions.csv")
    return 0


def detect_cohort(catalogued, workers: int):
    """Run the blob detector over every catalogued volume, in ``workers`` processes."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    import polars as pl
    from tqdm import tqdm

    from ml.blob_detector import detect_volume

    rows = catalogued.select("PatientID", "StudyUID", "View", "dicom_uri").rows(named=True)
    with ProcessPoolExecutor(max(workers, 1), mp_context=get_context("spawn")) as pool:
        futures = pool.map(detect_volume, [r["dicom_uri"] for r in rows], [r["View"] for r in rows], chunksize=4)
        frames = [
            boxes.with_columns(*(pl.lit(row[k]).alias(k) for k in ("PatientID", "StudyUID", "View")))
            for row, boxes in tqdm(zip(rows, futures), total=len(rows), desc="detect", unit="volume")
        ]
    return pl.concat(frames) if frames else pl.DataFrame()
