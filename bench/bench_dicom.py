"""Frame-level decoding vs whole-volume decoding of a JPEG 2000 tomosynthesis volume.

Writes a 60-frame 1024x1024 10-bit JPEG 2000 lossless BTO file (breast-like content),
then times, in one run: the header read, the central slice (general loader and the
Duke-compatible reader with ``index``), and decoding every frame (1 and N processes,
and the reference behaviour of decoding the whole volume on every call).

    python bench/bench_dicom.py [--frames 60] [--size 1024] [--workers 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ml.dicomio import dcmread_image, load_view, read_frames, read_header
from ml.synth.bto import BtoMeta, derived_uid, write_bto


def phantom(frames: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth breast-like 10-bit volume: half-disc of tissue, low-frequency texture, noise."""
    rng = np.random.default_rng(seed)
    rows = cols = size
    yy, xx = np.mgrid[0:rows, 0:cols]
    inside = ((yy - rows / 2) / (rows * 0.45)) ** 2 + (xx / (cols * 0.9)) ** 2 <= 1
    coarse = rng.normal(size=(frames, rows // 32 + 1, cols // 32 + 1))
    texture = np.kron(coarse, np.ones((1, 32, 32)))[:, :rows, :cols]
    vol = np.where(inside[None], 500 + 120 * texture, 30) + rng.normal(0, 12, (frames, rows, cols))
    return np.clip(vol, 0, 1023).astype(np.uint16)


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Minimum wall time of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        volume = phantom(args.frames, args.size)
        meta = BtoMeta("DBT-P00001", derived_uid("bench", 1), derived_uid("bench", 2), dt.date(2024, 1, 1), "L", "CC")
        start = time.perf_counter()
        path = write_bto(Path(tmp) / "1-1.dcm", volume, meta, transfer_syntax="jpeg2000")
        encode = time.perf_counter() - start
        mid = args.frames // 2
        print(f"volume {volume.shape} JPEG 2000 lossless, {path.stat().st_size / 1e6:.1f} MB, encoded in {encode:.1f} s")

        header = best_of(lambda: read_header(path), 20)
        central = best_of(lambda: read_frames(path, [mid]), 5)
        central_view = best_of(lambda: load_view(path, "central"), 5)
        duke_index = best_of(lambda: dcmread_image(path, "lcc", index=mid), 5)
        whole = best_of(lambda: read_frames(path), 1)
        whole_parallel = best_of(lambda: read_frames(path, workers=args.workers), 1)
        duke_whole = best_of(lambda: dcmread_image(path, "lcc")[mid], 1)
        assert np.array_equal(read_frames(path, [mid])[0], volume[mid])

    rows = [
        ("header only (read_header)", header),
        ("central frame, raw (read_frames [mid])", central),
        ("central frame, windowed + oriented (load_view)", central_view),
        ("central frame, Duke dcmread_image(index=mid)", duke_index),
        ("all frames, 1 process (read_frames)", whole),
        (f"all frames, {args.workers} processes (read_frames workers={args.workers})", whole_parallel),
        ("reference: Duke dcmread_image() whole volume, then [mid]", duke_whole),
    ]
    print(f"\n{'operation':<62} {'seconds':>9}")
    for label, seconds in rows:
        print(f"{label:<62} {seconds:>9.4f}")
    print("\nratios measured in this run:")
    print(f"  whole-volume decode / central-frame read       = {whole / central:6.1f}x")
    print(f"  Duke reference (whole) / Duke with index       = {duke_whole / duke_index:6.1f}x")
    print(f"  1 process / {args.workers} processes (whole volume)        = {whole / whole_parallel:6.2f}x")


if __name__ == "__main__":
    main()
