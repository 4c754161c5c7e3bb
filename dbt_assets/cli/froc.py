"""``tomosight froc``: score detection predictions with the DBTex FROC metric."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml.froc import FrocResult


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``froc`` sub-command."""
    parser = subparsers.add_parser(
        "froc",
        help="DBTex FROC metric of detection predictions",
        description=(
            "Evaluate box predictions against Duke BCS-DBT ground truth exactly like the DBTex "
            "challenge: mean sensitivity at 1-4 FPs per positive volume, and sensitivity at "
            "2 FPs per volume over all volumes."
        ),
    )
    parser.add_argument("labels", help="labels CSV (or file-paths CSV): one row per volume")
    parser.add_argument("boxes", help="GT boxes CSV")
    parser.add_argument(
        "predictions",
        help="predictions CSV: StudyUID,View,X,Width,Y,Height,Z,Depth,Score",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw the FROC curves to a PNG")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate, optionally plot, and print the metrics; 2 on bad input."""
    from ml.froc import FrocInputError, evaluate

    try:
        result = evaluate(args.labels, args.boxes, args.predictions)
    except FrocInputError as exc:
        print(f"tomosight froc: error: {exc}", file=sys.stderr)
        return 2
    if args.plot:
        from ml.froc_plot import plot_froc

        try:
            plot_froc(result, args.plot)
        except OSError as exc:
            print(f"tomosight froc: error: cannot write plot {args.plot}: {exc}", file=sys.stderr)
            return 2
    print(json.dumps(result.to_dict()) if args.json else format_table(result))
    return 0


def format_table(result: FrocResult) -> str:
    """The metrics as an aligned two-column table, with the counts behind them."""
    rows = [("mean sensitivity, 1-4 FPs/volume (positive)  [primary]", result.mean_sensitivity)]
    rows += [
        (f"sensitivity at {key} FP{'s' if key != '1' else ''}/volume (positive)", value)
        for key, value in result.sensitivity_at_fps.items()
    ]
    rows.append(
        ("sensitivity at 2 FPs/volume (all)  [tie-breaker]", result.sensitivity_at_2_fps_all)
    )
    width = max(len(name) for name, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    lines += [f"{name:<{width}}  {value:.4f}" for name, value in rows]
    lines.append(
        f"\n{result.n_predictions} predictions, {result.n_true_positives} true positives, "
        f"{result.n_boxes} GT boxes, {result.curve_all.n_volumes} volumes "
        f"({result.curve_positive.n_volumes} positive)"
    )
    return "\n".join(lines)
