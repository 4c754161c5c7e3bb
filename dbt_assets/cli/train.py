"""``tomosight train``: train a model on the preprocessed tensors of the asset tables."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command (same arguments as ``torchrun -m ml.training``)."""
    from ml.training.entry import add_arguments

    parser = subparsers.add_parser(
        "train",
        help="train a classifier on preprocessed tensors (manifest, labels, splits Parquet)",
        description=(
            "Train on the 'train' split, validate on 'val' every epoch, keep the best-AUC and "
            "best-calibration checkpoints in --out. Multi-GPU: "
            "torchrun --nproc_per_node=N -m ml.training <same arguments>."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train and report the best epoch."""
    from ml.training.entry import run_from_args

    return run_from_args(args)
