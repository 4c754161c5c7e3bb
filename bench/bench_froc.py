"""Time the vectorised DBTex FROC (``ml.froc.evaluate``) against the per-prediction reference.

Builds a seeded, DBTex-sized random case (default: 100,000 predictions on 2,000
volumes, about 300 GT boxes), writes it as CSVs, runs both implementations from
those files, checks that every metric and curve point is identical and prints the
timings and their ratio.  Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_froc.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from froc_reference import reference_evaluate  # noqa: E402

from ml.froc import evaluate  # noqa: E402

VIEWS = ("lcc", "lmlo", "rcc", "rmlo")


def build_case(
    folder: Path, n_predictions: int, n_volumes: int, n_positive: int, seed: int
) -> dict[str, int]:
    """Write labels.csv, boxes.csv and preds.csv under ``folder``; return their sizes."""
    rng = np.random.default_rng(seed)
    study = np.arange(n_volumes) // len(VIEWS)
    view = np.array(VIEWS)[np.arange(n_volumes) % len(VIEWS)]
    uid = np.char.add("DBT-S", np.char.zfill(study.astype(str), 5))
    labels = {"PatientID": np.char.replace(uid, "S", "P"), "StudyUID": uid, "View": view}
    pl.DataFrame(labels).write_csv(folder / "labels.csv")

    # GT: one box on most positive volumes, two or three on a few (train-v2 proportions).
    positive = rng.choice(n_volumes, n_positive, replace=False)
    per_volume = rng.choice([1, 2, 3], n_positive, p=[0.89, 0.10, 0.01])
    box_volume = np.repeat(positive, per_volume)
    n_boxes = box_volume.size
    volume_slices = rng.integers(24, 115, n_volumes)
    width = np.exp(rng.uniform(np.log(58), np.log(796), n_boxes)).astype(int)
    height = np.clip(width * rng.uniform(0.6, 1.5, n_boxes), 55, 865).astype(int)
    boxes = pl.DataFrame({
        "StudyUID": uid[box_volume], "View": view[box_volume],
        "Slice": (volume_slices[box_volume] * rng.uniform(0.1, 0.9, n_boxes)).astype(int),
        "X": rng.integers(0, 1996 - width), "Y": rng.integers(0, 2457 - height),
        "Width": width, "Height": height, "VolumeSlices": volume_slices[box_volume],
    })
    boxes.write_csv(folder / "boxes.csv")

    # Detections near GT (about 3 per box, jittered, high scores) plus false positives anywhere.
    n_near = min(n_predictions // 10, 3 * n_boxes)
    target = rng.integers(0, n_boxes, n_near)
    g = boxes[target]
    jitter = rng.normal(0, 0.4, (n_near, 2)) * np.c_[g["Width"], g["Height"]]
    n_far = n_predictions - n_near
    far_volume = rng.integers(0, n_volumes, n_far)
    pw = rng.integers(40, 400, n_predictions)
    ph = rng.integers(40, 400, n_predictions)
    depth = rng.integers(1, 12, n_predictions)
    cx = np.r_[(g["X"] + g["Width"] / 2).to_numpy() + jitter[:, 0], rng.uniform(0, 1996, n_far)]
    cy = np.r_[(g["Y"] + g["Height"] / 2).to_numpy() + jitter[:, 1], rng.uniform(0, 2457, n_far)]
    cz = np.r_[
        g["Slice"].to_numpy() + rng.normal(0, 8, n_near),
        volume_slices[far_volume] * rng.random(n_far),
    ]
    volume = np.r_[box_volume[target], far_volume]
    preds = pl.DataFrame({
        "PatientID": np.char.replace(uid[volume], "S", "P"),
        "StudyUID": uid[volume],
        "View": view[volume],
        "X": (cx - pw / 2).astype(int), "Width": pw, "Y": (cy - ph / 2).astype(int), "Height": ph,
        "Z": (cz - depth / 2).astype(int), "Depth": depth,
        "Score": np.round(np.r_[rng.beta(5, 2, n_near), rng.beta(2, 5, n_far)], 6),
    }).sample(fraction=1.0, shuffle=True, seed=seed)
    preds.write_csv(folder / "preds.csv")
    return {"volumes": n_volumes, "positive volumes": n_positive, "boxes": n_boxes,
            "predictions": preds.height}


def main() -> int:
    """Build the case, time both implementations, compare them and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=100_000)
    parser.add_argument("--volumes", type=int, default=2_000)
    parser.add_argument("--positive", type=int, default=270, help="volumes with GT boxes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="runs of the vectorised version")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sizes = build_case(folder, args.predictions, args.volumes, args.positive, args.seed)
        paths = (folder / "labels.csv", folder / "boxes.csv", folder / "preds.csv")
        print("case:", ", ".join(f"{v:,} {k}" for k, v in sizes.items()), f"(seed {args.seed})")

        timings = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = evaluate(*paths)
            timings.append(time.perf_counter() - start)
        frames = [pl.read_csv(path) for path in paths]
        in_memory = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            evaluate(*frames)
            in_memory.append(time.perf_counter() - start)
        start = time.perf_counter()
        reference = reference_evaluate(*paths)
        loop_s = time.perf_counter() - start

    all_points, positive_points = (
        list(zip(curve.fps.tolist(), curve.sensitivity.tolist()))
        for curve in (result.curve_all, result.curve_positive)
    )
    identical = (
        result.mean_sensitivity == reference["mean_sensitivity"]
        and dict(result.sensitivity_at_fps) == reference["sensitivity_at_fps"]
        and result.sensitivity_at_2_fps_all == reference["sensitivity_at_2_fps_all"]
        and all_points == reference["curve_all"]
        and positive_points == reference["curve_positive"]
    )
    if not identical:
        print("MISMATCH between vectorised and reference results", file=sys.stderr)
        return 1
    best, first = min(timings), timings[0]
    print(f"true positives: {result.n_true_positives:,}; metrics: {result.to_dict()}")
    print(f"curve points: all {len(all_points):,}, positive {len(positive_points):,}")
    print(f"cores: {os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"vectorised evaluate: best {best:.3f} s, first run {first:.3f} s ({args.repeats} runs)")
    print(f"  same on DataFrames already in memory: best {min(in_memory):.3f} s")
    print(f"per-prediction loop: {loop_s:.1f} s")
    print(
        f"speed-up: {loop_s / best:.0f}x (best), {loop_s / first:.0f}x (first run); "
        "results identical"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
