"""JPEG 2000 decode throughput of DBT-sized frames: CPU (1 and N processes) against the GPU, in one run.

Writes a Breast Tomosynthesis file of ``--frames`` synthetic 2457x1996 10-bit frames (JPEG 2000
lossless; ``--small`` makes them 614x499), then decodes them through :mod:`ml.decoders`:

- CPU, one process: :class:`~ml.decoders.CpuDecoder` on every frame once;
- CPU, N processes: a warm pool of ``--workers`` spawned processes, one frame per task
  (each task reads the header and decodes one frame, as a preprocessing worker does);
- GPU: the nvImageCodec decoder at batch 1, 8 and 32 on ``--gpu-frames`` frames (the file's
  frames cycled), every decoded frame compared with the CPU output (bit-exact or exit 1).

Figures are end to end (codestream read from the file, decode, device-to-host copy, dtype
conversion).  Without a usable GPU it prints the CPU figures and why the GPU is unavailable.

    python bench/bench_gpu_decode.py [--frames 8] [--workers N] [--gpu-frames 64] [--small] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ml.decoders import CpuDecoder, gpu_decoder
from ml.dicomio import read_header
from ml.synth.bto import BtoMeta, derived_uid, write_bto

FULL_SIZE = (2457, 1996)  # Duke BCS-DBT frame size (rows, cols)
SMALL_SIZE = (614, 499)
GPU_BATCHES = (1, 8, 32)


def dbt_like_frames(frames: int, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """10-bit frames: half-ellipse of tissue against the chest wall, low-frequency texture, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    inside = ((yy - rows / 2) / (rows * 0.45)) ** 2 + (xx / (cols * 0.8)) ** 2 <= 1
    coarse = rng.normal(size=(frames, rows // 32 + 1, cols // 32 + 1))
    texture = np.kron(coarse, np.ones((1, 32, 32)))[:, :rows, :cols]
    vol = np.where(inside[None], 500 + 120 * texture, 30) + rng.normal(0, 12, (frames, rows, cols))
    return np.clip(vol, 0, 1023).astype(np.uint16)


def decode_one_digest(path: str, index: int) -> str:
    """Pool task: read the header, decode frame ``index`` on the CPU, return its sha256."""
    frame = CpuDecoder().decode(path, read_header(path), [index])[0]
    return hashlib.sha256(frame.tobytes()).hexdigest()


def cpu_pool_rate(path: str, frames: int, workers: int) -> tuple[float, list[str]]:
    """Frames/s of a warm ``workers``-process pool over ``max(frames, 2 * workers)`` one-frame tasks."""
    tasks = [i % frames for i in range(max(frames, 2 * workers))]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(decode_one_digest, [path] * workers, [i % frames for i in range(workers)]))  # warm-up
        start = time.perf_counter()
        digests = list(pool.map(decode_one_digest, [path] * len(tasks), tasks))
        elapsed = time.perf_counter() - start
    return len(tasks) / elapsed, digests[:frames]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8, help="distinct frames in the test file")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="CPU processes")
    parser.add_argument("--gpu-frames", type=int, default=64, help="frames decoded per GPU measurement")
    parser.add_argument("--small", action="store_true", help=f"{SMALL_SIZE[0]}x{SMALL_SIZE[1]} frames")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    rows, cols = SMALL_SIZE if args.small else FULL_SIZE
    results: dict[str, object] = {"rows": rows, "cols": cols, "frames": args.frames, "workers": args.workers}

    with tempfile.TemporaryDirectory() as tmp:
        volume = dbt_like_frames(args.frames, rows, cols)
        meta = BtoMeta("DBT-P00001", derived_uid("gpu-bench", 1), derived_uid("gpu-bench", 2), dt.date(2024, 1, 1), "L", "CC")
        path = str(write_bto(Path(tmp) / "1-1.dcm", volume, meta, transfer_syntax="jpeg2000"))
        header = read_header(path)
        print(f"{args.frames} JPEG 2000 lossless frames of {rows}x{cols}, 10 bits, {os.path.getsize(path) / 2**20:.1f} MiB")

        start = time.perf_counter()
        cpu_frames = CpuDecoder().decode(path, header, range(args.frames))
        cpu_one = args.frames / (time.perf_counter() - start)
        if not np.array_equal(cpu_frames, volume):
            print("error: the CPU decode differs from the written frames", file=sys.stderr)
            return 1
        cpu_pool, digests = cpu_pool_rate(path, args.frames, args.workers)
        expected = [hashlib.sha256(f.tobytes()).hexdigest() for f in cpu_frames]
        if digests != expected:
            print("error: the process pool decoded different frames", file=sys.stderr)
            return 1
        rates = [("CPU, 1 process", cpu_one), (f"CPU, {args.workers} processes", cpu_pool)]
        results.update(cpu_1_process=cpu_one, cpu_n_processes=cpu_pool)

        decoder, reason = gpu_decoder()
        if decoder is not None:
            indices = [i % args.frames for i in range(args.gpu_frames)]
            decoder.decode(path, header, indices[: max(GPU_BATCHES)])  # warm-up (allocations, kernels)
            for batch in GPU_BATCHES:
                decoder.batch_size = batch
                start = time.perf_counter()
                got = decoder.decode(path, header, indices)
                rate = len(indices) / (time.perf_counter() - start)
                if got.dtype != cpu_frames.dtype or not np.array_equal(got, cpu_frames[indices]):
                    print(f"error: GPU batch {batch} is not bit-exact with the CPU", file=sys.stderr)
                    return 1
                rates.append((f"GPU, batch {batch}", rate))
                results[f"gpu_batch_{batch}"] = rate
        results["gpu_unavailable"] = reason

    print(f"\n{'path':<24}{'frames/s':>10}{'66-frame volume':>18}")
    for label, rate in rates:
        print(f"{label:<24}{rate:>10.2f}{66 / rate:>16.2f} s")
    if decoder is None:
        print(f"\nGPU unavailable: {reason}")
    else:
        best = max(rate for label, rate in rates if label.startswith("GPU"))
        print(f"\nGPU (best batch) / CPU {args.workers} processes = {best / cpu_pool:.1f}x")
        print(f"GPU (best batch) / CPU 1 process = {best / cpu_one:.1f}x  (all GPU frames bit-exact with the CPU)")
    print(f"CPU {args.workers} processes / 1 process = {cpu_pool / cpu_one:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
