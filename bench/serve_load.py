"""Bounded load test of the clinician endpoint on loopback, with dynamic batching on and off.

A home with a registered champion is built with ``tomosight demo`` (a small synthetic cohort of
tiny images by default; ``--studies/--rows/--cols/--slices`` for larger) or reused with
``--home``. A real OIDC issuer runs on loopback (RSA key, JWKS endpoint) and signs a radiologist
token. The real server (``tomosight serve``, a subprocess) is started twice in one run: batching
ON (``--max-batch-size``, ``--batch-timeout``) and OFF (max batch size 1). Each time, after
``/readyz`` answers 200 and a warm-up, a fixed number of requests is sent at each concurrency
(closed loop: every client sends its next request when its previous one is answered), for
``POST /v1/predict`` with ``{"study_uid": ...}`` and for multipart uploads of the study's four
DICOM files, cycling over the studies that have all four views. Then the server is stopped
with SIGINT.

Per cell: p50/p95/p99 latency (client side, request sent to response read), throughput
(requests / wall time of the cell) and errors (any answer but a 200 that names the study and a
model version, and any transport error). Exit status 1 if there was any error (warm-up
included) or a server did not stop cleanly.

CPU default (tiny):  OMP_NUM_THREADS=1 .venv/bin/python bench/serve_load.py
Reuse a home:        .venv/bin/python bench/serve_load.py --home demo_home --json serve_load.json
GPU node:            .venv/bin/python bench/serve_load.py --accelerator cuda --studies 24 \\
    --rows 512 --cols 416 --slices 16 --requests 256
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support: the loopback OIDC issuer and the server runner

from dbt_assets.settings import load_settings  # noqa: E402
from resources.object_store import ObjectStore  # noqa: E402
from serving.errors import RequestError  # noqa: E402
from serving.views import four_views  # noqa: E402
from tests.support.oidc import LocalIssuer  # noqa: E402
from tests.support.serving_server import running_server  # noqa: E402

KINDS = ("study_uid", "upload")
MODES = ("batching_on", "batching_off")
PREDICT_PATH = "/v1/predict"
TOKEN_LIFETIME_S = 4 * 3600  # longer than any run: an expired token would read as load errors

Upload = list[tuple[str, tuple[str, bytes, str]]]


@dataclass
class Workload:
    """What one request of each kind sends, cycling over the complete studies."""

    studies: list[str]
    uploads: list[Upload]
    upload_uids: list[str]  # StudyInstanceUID of each upload's files: what its answer must name

    def request(self, kind: str, index: int) -> tuple[str, dict[str, Any]]:
        """``(study UID the answer must name, httpx keyword arguments)`` of request ``index``."""
        position = index % len(self.studies)
        if kind == "study_uid":
            study = self.studies[position]
            return study, {"json": {"study_uid": study}}
        return self.upload_uids[position], {"files": self.uploads[position]}


@dataclass
class Cell:
    """The measurements of one (mode, kind, concurrency)."""

    mode: str
    kind: str
    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    versions: Counter = field(default_factory=Counter)
    wall_s: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.latencies_s) / self.wall_s

    def summary(self) -> dict[str, Any]:
        ms = np.asarray(self.latencies_s) * 1000.0
        p50, p95, p99 = (round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99))
        return {
            "mode": self.mode, "kind": self.kind, "concurrency": self.concurrency,
            "requests": len(ms), "errors": sum(self.errors.values()),
            "errors_by_reason": dict(self.errors), "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
            "mean_ms": round(float(ms.mean()), 1), "throughput_rps": round(self.throughput, 2),
            "wall_s": round(self.wall_s, 2), "model_versions": dict(self.versions),
        }  # fmt: skip


def _problem(answer: httpx.Response, expected_study: str) -> str | None:
    """Why ``answer`` is an error (None when it is a proper prediction for the study)."""
    if answer.status_code != 200:
        return str(answer.status_code)
    try:
        body = answer.json()
    except ValueError:
        return "200 without JSON"
    if not body.get("model_version") or not isinstance(body.get("prob_malignant"), float):
        return "200 without a prediction"
    if body.get("study_uid") != expected_study:
        return "200 for another study"
    return None


async def run_cell(url: str, token: str, workload: Workload, cell: Cell, requests: int,
                   timeout_s: float) -> Cell:  # fmt: skip
    """Send ``requests`` requests from ``cell.concurrency`` closed-loop clients; fill ``cell``."""
    numbers = itertools.count()
    limits = httpx.Limits(max_connections=cell.concurrency,
                          max_keepalive_connections=cell.concurrency)  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                 timeout=timeout_s) as client:  # fmt: skip

        async def client_loop() -> None:
            while (index := next(numbers)) < requests:
                expected, kwargs = workload.request(cell.kind, index)
                started = time.perf_counter()
                try:
                    answer = await client.post(PREDICT_PATH, **kwargs)
                    problem = _problem(answer, expected)
                except httpx.HTTPError as exc:
                    problem = type(exc).__name__
                cell.latencies_s.append(time.perf_counter() - started)
                if problem is None:
                    cell.versions[answer.json()["model_version"]] += 1
                else:
                    cell.errors[problem] += 1

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(cell.concurrency)))
        cell.wall_s = time.perf_counter() - started
    return cell


def build_home(args: argparse.Namespace, folder: Path) -> Path:
    """A fresh home with a registered champion, through ``tomosight demo`` (log in ``folder``)."""
    home, log = folder / "home", folder / "demo.log"
    command = [str(Path(sys.executable).with_name("tomosight")), "demo", "--home", str(home),
               "--studies", str(args.studies), "--rows", str(args.rows), "--cols", str(args.cols),
               "--slices", str(args.slices), "--seed", str(args.seed), "--heldout-studies", "0",
               "--workers", "1"]  # fmt: skip
    print(f"building a home: {args.studies} studies of {args.rows}x{args.cols}, "
          f"{args.slices}+ frames (log: {log})", flush=True)  # fmt: skip
    started = time.perf_counter()
    with open(log, "wb") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                              env={**os.environ, "TOMOSIGHT_HOME": str(home)})  # fmt: skip
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"tomosight demo failed ({done.returncode}):\n{tail}")
    print(f"home built in {time.perf_counter() - started:.0f} s", flush=True)
    return home


def load_workload(home: Path, limit: int) -> Workload:
    """Up to ``limit`` studies of the home with all four screening views, and their files."""
    settings = load_settings({**os.environ, "TOMOSIGHT_HOME": str(home)})
    store = ObjectStore(base_uri=settings.store_uri, endpoint_url=settings.s3_endpoint_url)
    found: dict[str, dict[str, str]] = {}
    for info in store.list_info("tables/filepaths/"):
        if info.key.endswith(".parquet"):
            table = store.read_parquet(info.key).select("StudyUID", "View", "dicom_uri")
            for study, view, uri in table.iter_rows():
                found.setdefault(study, {})[view] = uri
    workload = Workload([], [], [])
    for study in sorted(found):
        try:
            views = four_views(found[study])  # the server's own rule
        except RequestError:
            continue  # a study without all four views is a 422 by design, not load
        files = [("files", (f"{view}.dcm", store.get_bytes(uri), "application/dicom"))
                 for view, uri in views]  # fmt: skip
        header = pydicom.dcmread(io.BytesIO(files[0][1][1]), stop_before_pixels=True)
        workload.studies.append(study)
        workload.uploads.append(files)
        workload.upload_uids.append(str(header.StudyInstanceUID))
        if len(workload.studies) == limit:
            break
    if not workload.studies:
        raise SystemExit(f"no study with all four views in {settings.store_uri}/tables/filepaths")
    return workload


def serve_args(args: argparse.Namespace, mode: str) -> list[str]:
    """``tomosight serve`` options of one mode (the runner adds --home and --port)."""
    found = ["--accelerator", args.accelerator, "--workers", str(args.workers)]
    if mode == "batching_on":
        found += ["--max-batch-size", str(args.max_batch_size),
                  "--batch-timeout", str(args.batch_timeout)]  # fmt: skip
    else:
        found += ["--max-batch-size", "1"]
    if args.no_explain:
        found.append("--no-explain")
    return found


def measure_mode(args: argparse.Namespace, mode: str, home: Path, issuer: LocalIssuer,
                 workload: Workload, folder: Path) -> tuple[list[Cell], dict[str, Any]]:
    """Start the server in ``mode``, warm it up, measure every (kind, concurrency), stop it."""
    token = issuer.mint(subject="load-bench", roles=("radiologist",), expires_in=TOKEN_LIFETIME_S)
    log = folder / f"server-{mode}.log"
    info: dict[str, Any] = {"serve_args": serve_args(args, mode)}
    if args.workdir:
        info["log"] = str(log)
    cells: list[Cell] = []
    warmup: Counter = Counter()
    started = time.perf_counter()
    with running_server(home, info["serve_args"], issuer.env(), log) as server:
        info["ready_after_s"] = round(time.perf_counter() - started, 1)
        print(f"[{mode}] ready after {info['ready_after_s']} s", flush=True)
        for kind in KINDS:
            cell = Cell(mode, kind, args.warmup_concurrency)
            warmup.update(asyncio.run(run_cell(server.url, token, workload, cell, args.warmup,
                                               args.timeout)).errors)  # fmt: skip
        for kind, concurrency in itertools.product(KINDS, args.concurrency):
            cell = asyncio.run(run_cell(server.url, token, workload, Cell(mode, kind, concurrency),
                                        args.requests, args.timeout))  # fmt: skip
            cells.append(cell)
            row = cell.summary()
            print(f"[{mode}] {kind:9s} c={concurrency:<3d} {row['throughput_rps']:7.2f} req/s  "
                  f"p50 {row['p50_ms']:8.1f} ms  p99 {row['p99_ms']:8.1f} ms  "
                  f"errors {row['errors']}", flush=True)  # fmt: skip
        process = server.process
    info["warmup_errors"] = dict(warmup)
    info["exit_code"] = process.returncode  # 0: LitServe's graceful shutdown; -9: it was killed
    if warmup or any(c.errors for c in cells):
        tail = log.read_text(errors="replace")[-3000:]
        print(f"[{mode}] server log tail:\n{tail}", file=sys.stderr)
    return cells, info


def ratios(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """Batching-on / batching-off throughput per (kind, concurrency), both from this run."""
    rate = {(c.mode, c.kind, c.concurrency): c.throughput for c in cells}
    return [{"kind": kind, "concurrency": conc,
             "ratio": round(rate[(mode, kind, conc)] / rate[("batching_off", kind, conc)], 2)}
            for (mode, kind, conc) in rate
            if mode == "batching_on" and ("batching_off", kind, conc) in rate]  # fmt: skip


def print_table(rows: list[dict[str, Any]], ratio_rows: list[dict[str, Any]]) -> None:
    """The cells and the ratios as a plain-text table."""
    header = (f"{'mode':13s} {'kind':9s} {'conc':>4s} {'reqs':>5s} {'err':>4s} "
              f"{'p50 ms':>9s} {'p95 ms':>9s} {'p99 ms':>9s} {'req/s':>8s}")  # fmt: skip
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        print(f"{r['mode']:13s} {r['kind']:9s} {r['concurrency']:4d} {r['requests']:5d} "
              f"{r['errors']:4d} {r['p50_ms']:9.1f} {r['p95_ms']:9.1f} {r['p99_ms']:9.1f} "
              f"{r['throughput_rps']:8.2f}")  # fmt: skip
    print("\nthroughput ratio, batching on / off (same run):")
    for r in ratio_rows:
        print(f"  {r['kind']:9s} c={r['concurrency']:<3d} {r['ratio']:.2f}x")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--home", type=Path, help="reuse this home (a registered champion, e.g. after make demo)")
    add("--workdir", type=Path, help="keep the home built and the server logs here")
    add("--studies", type=int, default=8, help="synthetic studies when building a home")
    add("--rows", type=int, default=64, help="synthetic image rows")
    add("--cols", type=int, default=52, help="synthetic image columns")
    add("--slices", type=int, default=4, help="synthetic frames per volume (at least)")
    add("--seed", type=int, default=7)
    add("--max-studies", type=int, default=16, help="complete studies the requests cycle over")
    add("--requests", type=int, default=64, help="measured requests per cell")
    add("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    add("--warmup", type=int, default=8, help="warm-up requests per kind and mode")
    add("--warmup-concurrency", type=int, default=4)
    add("--max-batch-size", type=int, default=8, help="batching ON: largest dynamic batch")
    add("--batch-timeout", type=float, default=0.01, help="batching ON: seconds to fill a batch")
    add("--workers", type=int, default=1, help="inference processes per device")
    add("--accelerator", default="cpu", choices=("cpu", "cuda"))
    add("--no-explain", action="store_true", help="serve without Grad-CAM overlays and ROIs")
    add("--timeout", type=float, default=300.0, help="client timeout per request, seconds")
    add("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.max_batch_size < 2:
        parser.error("--max-batch-size must be >= 2 (batching OFF is always measured with 1)")
    if min(args.concurrency) < 1 or args.requests < 1 or args.warmup < 0:
        parser.error("--concurrency and --requests must be >= 1, --warmup >= 0")
    return args


def main() -> int:
    args = parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    cells: list[Cell] = []
    servers: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="serve-load-") as scratch:
        folder = (args.workdir or Path(scratch)).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        home = args.home.resolve() if args.home else build_home(args, folder)
        workload = load_workload(home, args.max_studies)
        body_kib = np.mean([sum(len(f[1][1]) for f in u) for u in workload.uploads]) / 1024
        print(f"{len(workload.studies)} complete studies; uploads of {body_kib:.0f} KiB on average",
              flush=True)  # fmt: skip
        with LocalIssuer() as issuer:
            for mode in MODES:
                found, servers[mode] = measure_mode(args, mode, home, issuer, workload, folder)
                cells += found
    rows, ratio_rows = [c.summary() for c in cells], ratios(cells)
    print_table(rows, ratio_rows)
    errors = sum(r["errors"] for r in rows) + sum(sum(s["warmup_errors"].values())
                                                  for s in servers.values())  # fmt: skip
    unclean = [mode for mode, s in servers.items() if s["exit_code"] != 0]
    load_after = [round(x, 2) for x in os.getloadavg()]
    result = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1_5_15": {"start": load_before, "end": load_after}},
        "studies": len(workload.studies), "servers": servers, "cells": rows,
        "ratios": ratio_rows, "errors": errors, "unclean_stops": unclean,
    }  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nerrors: {errors}" + ("  (FAILED: every request must get a 200)" if errors else ""))
    if unclean:
        print(f"FAILED: the server did not stop cleanly in {unclean} (exit codes in the JSON)")
    return 1 if errors or unclean else 0


if __name__ == "__main__":
    raise SystemExit(main())
