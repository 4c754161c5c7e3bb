"""``tomosight synth``: write a synthetic DBT cohort in the Duke BCS-DBT layout."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time

_QUIRKS = (
    ("flipped", "volumes stored rotated 180 degrees in-plane (per volume; default 0.15)"),
    ("monochrome1", "studies stored MONOCHROME1, pixels inverted (fails dciodvfy)"),
    ("no-window", "studies without a Frame VOI LUT (no WC/WW)"),
    ("no-frame-laterality", "studies with laterality only in pixels (fails dciodvfy)"),
    ("vendor-extras", "studies with ImageLaterality/ViewPosition/PatientOrientation"),
    ("per-frame-window", "studies with WC/WW per frame instead of shared"),
    ("na-folder", "volumes whose series folder carries '-NA-' on disk (per volume)"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth`` sub-command."""
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic DBT cohort (BTO DICOM + Duke CSVs)",
        description="Write a synthetic DBT cohort in the exact Duke BCS-DBT layout.",
    )
    parser.add_argument(
        "out_dir", help="output folder (gets Breast-Cancer-Screening-DBT/, CSVs, cohort.json)"
    )
    parser.add_argument("--studies", type=int, default=40, help="number of studies (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--rows", type=int, default=256, help="image rows (default 256)")
    parser.add_argument("--cols", type=int, default=208, help="image columns (default 208)")
    parser.add_argument(
        "--slices", type=int, help="slices per volume (fixed unless --slices-max; default 16..24)"
    )
    parser.add_argument(
        "--slices-max", type=int, help="largest slice count (volumes vary between the two)"
    )
    parser.add_argument("--cancer-fraction", type=float, default=0.25)
    parser.add_argument("--benign-fraction", type=float, default=0.25)
    parser.add_argument("--actionable-fraction", type=float, default=0.10)
    parser.add_argument(
        "--density", type=float, default=0.35, help="mean fibroglandular fraction (0..1)"
    )
    parser.add_argument("--noise", type=float, default=1.0, help="quantum-noise scale (0 = none)")
    parser.add_argument(
        "--lesion-contrast", type=float, default=1.0, help="lesion contrast multiplier"
    )
    parser.add_argument(
        "--malignant-contrast",
        type=float,
        default=1.0,
        help="extra contrast multiplier of malignant lesions (cancers denser than benign findings)",
    )
    parser.add_argument(
        "--start-date",
        type=dt.date.fromisoformat,
        default=dt.date(2024, 1, 1),
        help="first StudyDate, YYYY-MM-DD (default 2024-01-01)",
    )
    parser.add_argument(
        "--days", type=int, default=7, help="study dates spread over this many days"
    )
    parser.add_argument(
        "--transfer-syntax", default="jpeg2000", choices=["jpeg2000", "jpegls", "rle", "explicit"]
    )
    for name, text in _QUIRKS:
        parser.add_argument(
            f"--{name}-fraction",
            type=float,
            default=0.15 if name == "flipped" else 0.0,
            help=f"fraction of {text}",
        )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="worker processes (default: min(4, CPUs))",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a cohort already in OUT_DIR"
    )
    parser.add_argument("--contact-sheet", metavar="FILE.png", help="also draw a PNG contact sheet")
    parser.set_defaults(func=run)


def _config(args: argparse.Namespace):
    from ml.synth.config import CohortConfig

    slices = args.slices if args.slices is not None else CohortConfig.slices
    slices_max = (
        args.slices_max
        if args.slices_max is not None
        else (args.slices if args.slices is not None else CohortConfig.slices_max)
    )
    quirks = {
        f"{name.replace('-', '_')}_fraction": getattr(args, f"{name.replace('-', '_')}_fraction")
        for name, _ in _QUIRKS
    }
    return CohortConfig(
        studies=args.studies,
        seed=args.seed,
        rows=args.rows,
        cols=args.cols,
        slices=slices,
        slices_max=slices_max,
        cancer_fraction=args.cancer_fraction,
        benign_fraction=args.benign_fraction,
        actionable_fraction=args.actionable_fraction,
        density=args.density,
        noise=args.noise,
        lesion_contrast=args.lesion_contrast,
        malignant_contrast=args.malignant_contrast,
        start_date=args.start_date,
        days=args.days,
        transfer_syntax=args.transfer_syntax,
        **quirks,
    )


def run(args: argparse.Namespace) -> int:
    """Generate the cohort, print a summary, optionally draw the contact sheet."""
    from ml.synth.cohort import CohortExistsError, generate_cohort
    from ml.synth.config import CohortConfigError

    try:
        config = _config(args)
    except CohortConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"error: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        summary = generate_cohort(
            args.out_dir, config, workers=args.workers, overwrite=args.overwrite, progress=True
        )
    except CohortExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    print(
        f"wrote {summary.files} files, {summary.boxes} boxes, {summary.patients} patients "
        f"to {summary.out_dir} in {seconds:.1f} s"
    )
    print(f"{'class':<11}{'studies':>8}{'volumes':>9}")
    for cls, studies in summary.studies_per_class.items():
        print(f"{cls:<11}{studies:>8}{summary.volumes_per_class[cls]:>9}")
    if args.contact_sheet:
        from ml.synth.contact_sheet import write_contact_sheet

        print(f"contact sheet: {write_contact_sheet(summary.out_dir, args.contact_sheet)}")
    return 0
