"""``tomosight demo``: the main job end to end on embedded defaults.

Generate a synthetic Duke-layout cohort (unless ``--dataset`` / ``TOMOSIGHT_DATASET``
names a real one), then materialize the whole asset graph in process: ingestion with
QC and de-identification, annotations, preprocessing, splits, model training and
registration, predictions, evaluation and FROC reports, and the DuckDB views.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="synthetic (or your) Duke-format cohort -> the whole asset graph")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("TOMOSIGHT_HOME", "demo_home")))
    parser.add_argument("--dataset", default=os.environ.get("TOMOSIGHT_DATASET"), help="use this dataset folder")
    parser.add_argument("--studies", type=int, default=40, help="synthetic studies to generate")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rows", type=int, help="synthetic image rows (default: the generator's)")
    parser.add_argument("--cols", type=int, help="synthetic image columns")
    parser.add_argument("--slices", type=int, help="synthetic frames per volume")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for generation")
    parser.set_defaults(func=run)


def synthetic_dataset(args: argparse.Namespace, home: Path) -> Path:
    """Generate the demo cohort under ``<home>/dataset`` (same seed, same bytes)."""
    from ml.synth import CohortConfig, generate_cohort, write_contact_sheet

    sizes = {k: getattr(args, k) for k in ("rows", "cols", "slices") if getattr(args, k) is not None}
    config = CohortConfig(studies=args.studies, seed=args.seed, **sizes)
    dataset = home / "dataset"
    summary = generate_cohort(dataset, config, workers=args.workers, overwrite=True, progress=True)
    write_contact_sheet(dataset, home / "contact_sheet.png")
    print(f"synthetic cohort: {summary.files} volumes, {summary.boxes} boxes, studies {summary.studies_per_class}")
    return dataset


def run(args: argparse.Namespace) -> int:
    from dbt_assets.cli.materialize import print_summary
    from dbt_assets.materialize import materialize_graph, report_summary
    from dbt_assets.settings import load_settings

    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    dataset = Path(args.dataset).resolve() if args.dataset else synthetic_dataset(args, home)
    os.environ["TOMOSIGHT_HOME"] = str(home)
    os.environ["TOMOSIGHT_SOURCE_URI"] = str(dataset)
    settings = load_settings()
    result = materialize_graph(settings)
    print_summary(settings, report_summary(settings))
    print(f"reports:       {settings.store_uri}/reports (evaluation.json, model_card.md, roc/pr/reliability/froc PNGs)")
    for failure in result.failed_steps + result.failed_checks:
        print(f"FAILED {failure}")
    return 0 if result.success and not result.failed_checks else 1
