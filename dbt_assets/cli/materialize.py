"""``tomosight materialize``: the whole asset graph in process on a dataset folder or the configured source."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("materialize", help="materialize every asset for every study date, in process")
    parser.add_argument("--home", type=Path, help="platform state folder (default: $TOMOSIGHT_HOME or ./demo_home)")
    parser.add_argument("--dataset", help="a Duke-format dataset folder or any folder/s3:// prefix of DICOM files")
    parser.add_argument("--partition", action="append", help="only these study dates (YYYY-MM-DD); repeatable")
    parser.add_argument("--from", dest="date_from", help="backfill only study dates on or after this day")
    parser.add_argument("--to", dest="date_to", help="backfill only study dates on or before this day")
    parser.set_defaults(func=run)


def apply_common_env(args: argparse.Namespace) -> None:
    """``--home`` and ``--dataset`` override the environment for this process."""
    if getattr(args, "home", None):
        os.environ["TOMOSIGHT_HOME"] = str(Path(args.home).resolve())
    if getattr(args, "dataset", None):
        os.environ["TOMOSIGHT_SOURCE_URI"] = str(args.dataset)


def run(args: argparse.Namespace) -> int:
    apply_common_env(args)
    from dbt_assets.materialize import materialize_graph, report_summary
    from dbt_assets.settings import load_settings

    settings = load_settings()
    result = materialize_graph(settings, partitions=args.partition, date_from=args.date_from, date_to=args.date_to)
    print_summary(settings, report_summary(settings))
    for failure in result.failed_steps + result.failed_checks:
        print(f"FAILED {failure}")
    return 0 if result.success else 1


def print_summary(settings, summary: dict) -> None:
    """Evaluation figures and where each artefact lives."""
    evaluation = summary.get("evaluation", {})
    test = (evaluation.get("test") or {}).get("overall")
    if test:
        def fmt(name: str) -> str:
            m = test["metrics"][name]
            bounds = f" [{m['lower']:.3f}, {m['upper']:.3f}]" if m["lower"] is not None else ""
            return f"{m['value']:.3f}{bounds}" if m["value"] is not None else "n/a"

        registered = evaluation.get("registered_temperature")
        print(f"test split ({test['n_exams']} exams, {test['n_positive']} cancers), model v{evaluation['model_version']}, "
              f"temperature {'n/a' if registered is None else f'{registered:.2f}'} (residual {evaluation['temperature']:.2f}):")  # fmt: skip
        print(f"  exam-level ROC-AUC {fmt('roc_auc')}  PR-AUC {fmt('pr_auc')}  ECE {fmt('ece')}  Brier {fmt('brier')}")
    elif evaluation:
        print(f"test split: one class only, no ROC ({evaluation.get('exams')})")
    froc = summary.get("froc")
    if froc:
        print(f"FROC (DBTex, blob baseline): mean sensitivity {froc['mean_sensitivity']:.3f}")
    print(f"object store:  {settings.store_uri} (raw/, processed/, tables/, reports/)")
    print(f"warehouse:     {settings.warehouse_path}  (tomosight sql \"SELECT * FROM exam_predictions\")")
    print(f"MLflow:        {settings.mlflow_tracking_uri}")
    print(f"Dagster:       {settings.home / 'dagster'}  (make ui)")
