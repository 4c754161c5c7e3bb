"""``tomosight trace STUDY_UID``: from an exam prediction back to its DICOM and its model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("trace", help="lineage of one exam prediction: DICOM files, model, MLflow run")
    parser.add_argument("study_uid", help="pseudonymous StudyUID as in the exam_predictions view")
    parser.add_argument("--model-version", help="default: the latest version that scored the study")
    parser.add_argument("--home", type=Path, help="platform state folder (default: $TOMOSIGHT_HOME or ./demo_home)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dbt_assets.cli.materialize import apply_common_env
    from dbt_assets.lineage import trace_prediction
    from dbt_assets.settings import load_settings

    apply_common_env(args)
    try:
        trace = trace_prediction(load_settings(), args.study_uid, args.model_version)
    except LookupError as exc:
        print(f"error: {exc}")
        return 2
    print(json.dumps(trace, indent=2, default=str))
    return 0
