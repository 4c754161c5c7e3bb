"""Contrast-to-noise ratio (CNR) of a cohort's lesions, per lesion kind.

A view with one lesion is rendered three times from its own seed: without noise with and
without the lesion (the difference is exactly the lesion's signal, since the anatomy is
drawn first from the same generator), and with noise without the lesion (the background a
reader has to find it in).  Per view:

- ``slice``: mean signal over the lesion core (where the signal is at least half its peak)
  on the lesion's central slice, over the standard deviation of the breast pixels of that
  slice (anatomical texture plus quantum noise);
- ``mip``: the same on maximum intensity projections over all slices (what a MIP model sees).

Run ``python -m ml.synth.cnr --rows 128 --cols 104 --slices 8 --slices-max 12 --lesion-contrast 2.5
--malignant-contrast 2`` (the demo cohort) for the table of medians.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import defaultdict

import numpy as np

from ml.synth.cohort import DUKE_ROWS
from ml.synth.config import CohortConfig
from ml.synth.plan import plan_cohort
from ml.synth.volume import AIR_LEVEL, ViewSpec, render_view

BREAST_LEVEL = 4 * AIR_LEVEL
"""Pixels brighter than this (in the lesion-free, noise-free view) count as breast."""


def _cnr(signal: np.ndarray, background: np.ndarray, breast: np.ndarray) -> float:
    core = signal >= 0.5 * signal.max()
    return float(signal[core].mean() / max(float(background[breast].std()), 1e-9))


def measure_cnr(config: CohortConfig, views_per_kind: int = 20) -> dict[str, dict[str, float]]:
    """Median slice and MIP CNR per lesion kind over up to ``views_per_kind`` one-lesion views."""
    found: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for study in plan_cohort(config):
        for volume in study.volumes:
            if len(volume.lesions) != 1 or len(found[volume.lesions[0].kind]) >= views_per_kind:
                continue
            spec = ViewSpec(
                rows=config.rows, cols=config.cols, frames=volume.frames,
                laterality=volume.view[0].upper(), view=volume.view[1:].upper(),
                density=volume.density, lesions=volume.lesions, noise=config.noise,
                contrast=config.lesion_contrast, malignant_contrast=config.malignant_contrast,
                pixel_mm=0.1 * DUKE_ROWS / config.rows, slice_mm=volume.slice_mm,
            )  # fmt: skip

            def render(**changes: object) -> np.ndarray:
                view = dataclasses.replace(spec, **changes)
                return render_view(view, np.random.default_rng(list(volume.seed))).volume.astype(np.float64)

            clean, free = render(noise=0.0), render(noise=0.0, lesions=())
            noisy_free = render(lesions=())
            signal = clean - free
            if signal.max() <= 0:
                continue
            z = int(np.argmax(signal.max(axis=(1, 2))))
            breast = free[z] > BREAST_LEVEL
            mip_signal = clean.max(axis=0) - free.max(axis=0)
            found[volume.lesions[0].kind].append(
                (
                    _cnr(signal[z], noisy_free[z], breast),
                    _cnr(mip_signal, noisy_free.max(axis=0), free.max(axis=0) > BREAST_LEVEL),
                )
            )
    return {
        kind: {"views": len(v), "slice": float(np.median([s for s, _ in v])), "mip": float(np.median([m for _, m in v]))}
        for kind, v in sorted(found.items())
    }


def main(argv: list[str] | None = None) -> None:
    """Print the CNR table of a cohort configuration."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=CohortConfig.rows)
    parser.add_argument("--cols", type=int, default=CohortConfig.cols)
    parser.add_argument("--slices", type=int, default=CohortConfig.slices)
    parser.add_argument("--slices-max", type=int, default=CohortConfig.slices_max)
    parser.add_argument("--lesion-contrast", type=float, default=1.0)
    parser.add_argument("--malignant-contrast", type=float, default=1.0)
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--views-per-kind", type=int, default=20)
    args = parser.parse_args(argv)
    config = CohortConfig(
        studies=args.studies, seed=args.seed, rows=args.rows, cols=args.cols, slices=args.slices,
        slices_max=max(args.slices, args.slices_max), lesion_contrast=args.lesion_contrast, malignant_contrast=args.malignant_contrast,
    )  # fmt: skip
    print("| lesion kind | views | CNR (central slice) | CNR (MIP) |\n|---|---|---|---|")
    for kind, row in measure_cnr(config, args.views_per_kind).items():
        print(f"| {kind} | {row['views']} | {row['slice']:.1f} | {row['mip']:.1f} |")


if __name__ == "__main__":
    main()
