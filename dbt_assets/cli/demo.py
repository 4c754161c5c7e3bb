"""``tomosight demo``: the main job end to end on embedded defaults.

Generate a synthetic Duke-layout cohort (unless ``--dataset`` / ``TOMOSIGHT_DATASET``
names a real one), then materialize the whole asset graph in process: ingestion with
QC and de-identification, annotations, preprocessing, splits, model training and
registration, predictions, evaluation and FROC reports, and the DuckDB views.  A second
synthetic cohort from another generator seed (``<home>/heldout``), never seen in training,
is then scored with the champion model into ``reports/heldout.json``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

MIN_HELDOUT_STUDIES = 8
DEMO_STUDIES = 160
DEMO_ROWS, DEMO_COLS = 128, 104  # the demo model's input size, so no resampling is needed
DEMO_SLICES, DEMO_SLICES_MAX = 8, 12  # frames per volume vary between the two
DEMO_LESION_CONTRAST = 2.5
DEMO_MALIGNANT_CONTRAST = 2.0  # cancers denser than benign findings: see README "Model quality"
HELDOUT_SEED_OFFSET = 1000  # the held-out cohort's generator seed is --seed + this
CHAMPION_URI = "models:/tomosight-dbt@champion"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="synthetic (or your) Duke-format cohort -> the whole asset graph")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("TOMOSIGHT_HOME", "demo_home")))
    parser.add_argument("--dataset", default=os.environ.get("TOMOSIGHT_DATASET"), help="use this dataset folder")
    parser.add_argument("--studies", type=int, default=DEMO_STUDIES, help="synthetic studies to generate")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rows", type=int, default=DEMO_ROWS, help="synthetic image rows")
    parser.add_argument("--cols", type=int, default=DEMO_COLS, help="synthetic image columns")
    parser.add_argument("--slices", type=int, default=DEMO_SLICES, help="synthetic frames per volume (the fewest)")
    parser.add_argument("--slices-max", type=int, default=DEMO_SLICES_MAX, help="synthetic frames per volume (the most)")
    parser.add_argument("--lesion-contrast", type=float, default=DEMO_LESION_CONTRAST, help="synthetic lesion contrast multiplier")
    parser.add_argument("--malignant-contrast", type=float, default=DEMO_MALIGNANT_CONTRAST,
                        help="extra contrast multiplier of synthetic malignant lesions")
    parser.add_argument("--heldout-studies", type=int, help="held-out synthetic studies (default: twice --studies, >= 8; 0: none)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for generation")
    parser.set_defaults(func=run)


def synthetic_dataset(args: argparse.Namespace, home: Path, *, name: str = "dataset", studies: int | None = None, seed: int | None = None) -> Path:
    """Generate a demo cohort under ``<home>/<name>`` (same seed, same bytes)."""
    from ml.synth import CohortConfig, generate_cohort, write_contact_sheet

    config = CohortConfig(
        studies=studies or args.studies, seed=args.seed if seed is None else seed, rows=args.rows, cols=args.cols,
        slices=args.slices, slices_max=max(args.slices, args.slices_max),
        lesion_contrast=args.lesion_contrast, malignant_contrast=args.malignant_contrast,
    )  # fmt: skip
    dataset = home / name
    summary = generate_cohort(dataset, config, workers=args.workers, overwrite=True, progress=True)
    if name == "dataset":
        write_contact_sheet(dataset, home / "contact_sheet.png")
    print(f"synthetic {name}: {summary.files} volumes, {summary.boxes} boxes, studies {summary.studies_per_class}")
    return dataset


def score_heldout(settings, cohort: Path, workers: int) -> str | None:
    """Score ``cohort`` with the champion (validation temperature); write ``reports/heldout.json``."""
    import json

    from dbt_assets.assets.preprocessing import PreprocessingConfig
    from dbt_assets.definitions import build_resources
    from ml.heldout import HeldoutError, evaluate_heldout
    from resources.pyfunc_model import load_classifier

    resources = build_resources(settings)
    resources["mlflow"].configure()
    net, temperature = load_classifier(CHAMPION_URI)
    try:
        result = evaluate_heldout(cohort, net, temperature, PreprocessingConfig().to_library(), workers=workers)
    except HeldoutError as exc:
        print(f"held-out:      not evaluated ({exc})")
        return None
    summary = result.summary()
    auc, ece, brier = (summary[k] for k in ("roc_auc", "ece", "brier"))
    print(f"held-out:      {summary['n_exams']} exams ({summary['n_malignant']} malignant), "
          f"ROC-AUC {auc['value']:.3f} [{auc['lower']:.3f}, {auc['upper']:.3f}], ECE {ece['value']:.3f}, "
          f"Brier {brier['value']:.3f}, temperature {temperature:.2f}")  # fmt: skip
    payload = json.dumps({"model_uri": CHAMPION_URI, "cohort": str(cohort), **result.to_dict()}, indent=2, default=float)
    return resources["store"].put_bytes("reports/heldout.json", payload.encode("utf-8"))


def run(args: argparse.Namespace) -> int:
    from dbt_assets.cli.materialize import print_summary
    from dbt_assets.materialize import materialize_graph, report_summary
    from dbt_assets.settings import load_settings

    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    dataset = Path(args.dataset).resolve() if args.dataset else synthetic_dataset(args, home)
    heldout_studies = max(2 * args.studies, MIN_HELDOUT_STUDIES) if args.heldout_studies is None else args.heldout_studies
    heldout = None
    if not args.dataset and heldout_studies > 0:
        heldout = synthetic_dataset(args, home, name="heldout", studies=heldout_studies, seed=args.seed + HELDOUT_SEED_OFFSET)
    os.environ["TOMOSIGHT_HOME"] = str(home)
    os.environ["TOMOSIGHT_SOURCE_URI"] = str(dataset)
    settings = load_settings()
    result = materialize_graph(settings)
    print_summary(settings, report_summary(settings))
    print(f"reports:       {settings.store_uri}/reports (evaluation.json, model_card.md, roc/pr/reliability/froc PNGs)")
    if heldout is not None and result.success and (uri := score_heldout(settings, heldout, args.workers)):
        print(f"held-out:      {uri}")
    for failure in result.failed_steps + result.failed_checks:
        print(f"FAILED {failure}")
    return 0 if result.success and not result.failed_checks else 1
