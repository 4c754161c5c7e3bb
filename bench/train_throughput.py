"""Training throughput: the project's training step against a raw timm loop, as a ratio.

Project: ``ml.training.train`` for two epochs on an ``ExamDataset`` reading memory-mapped
float16 ``.npy`` tensors through a DataLoader, with an ``ml.models`` classifier (one slice per
view, 4 views per exam). The second epoch is measured; the first is warm-up (and compilation).
Raw: the same timm backbone (1 channel, one logit) trained with AdamW + BCE on random tensors
already on the device. Images = backbone images (views); ``--batch`` counts images per step,
so the project runs ``batch / 4`` exams per step.

CPU default (tiny):  OMP_NUM_THREADS=1 .venv/bin/python bench/train_throughput.py
GPU configuration:   .venv/bin/python bench/train_throughput.py --device cuda \\
    --backbone convnext_tiny --size 512 512 --batch 64 --steps 30 --bf16 --channels-last \\
    --workers 8 [--compile]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import timm
import torch
import torch.nn.functional as F

from ml.models import ModelConfig, create_model
from ml.training import ExamDataset, TrainConfig, seed_everything, train

VIEWS = ("lcc", "lmlo", "rcc", "rmlo")


def write_exams(
    root: Path, n_exams: int, size: tuple[int, int], seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``n_exams`` studies with all four views as float16 .npy, half of them malignant."""
    rng = np.random.default_rng(seed)
    manifest, labels = [], []
    for i in range(n_exams):
        study, cancer = f"1.9.{i}", i % 2
        for view in VIEWS:
            path = root / f"{study}_{view}.npy"
            np.save(path, rng.random((1, *size), dtype=np.float32).astype(np.float16))
            manifest.append({"StudyUID": study, "View": view, "slice_strategy": "central",
                             "height": size[0], "width": size[1], "n_slices": 1,
                             "tensor_uri": str(path)})
            labels.append({"PatientID": f"P{i}", "StudyUID": study, "View": view,
                           "Normal": 1 - cancer, "Actionable": 0, "Benign": 0, "Cancer": cancer})
    return pl.DataFrame(manifest), pl.DataFrame(labels)


def project_throughput(args: argparse.Namespace, root: Path) -> float:
    """Images/s of the project's second training epoch (``train_images_per_s`` x 4 views)."""
    exams_per_step = max(1, args.batch // len(VIEWS))
    manifest, labels = write_exams(root, exams_per_step * args.steps, tuple(args.size), args.seed)
    train_ds = ExamDataset(manifest, labels)
    val_ds = ExamDataset(manifest.head(len(VIEWS) * 2), labels.head(len(VIEWS) * 2))
    seed_everything(args.seed)
    model = create_model(ModelConfig(
        backbone=args.backbone, slice_pooling="none", input_size=tuple(args.size),
        n_slices=1, slice_strategy="central",
    ))
    config = TrainConfig(epochs=2, batch_size=exams_per_step, lr=1e-4, device=args.device,
                         amp_bf16=args.bf16, channels_last=args.channels_last, compile=args.compile,
                         num_workers=args.workers, progress=False, seed=args.seed)
    result = train(model, train_ds, val_ds, config)
    return result.history[-1]["train_images_per_s"] * len(VIEWS)


def raw_throughput(args: argparse.Namespace) -> float:
    """Images/s of a bare timm loop on in-memory tensors (same backbone, size, batch)."""
    device = torch.device(args.device)
    seed_everything(args.seed)
    model = timm.create_model(args.backbone, pretrained=False, in_chans=1, num_classes=1).to(device)
    memory = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)
    step_model = torch.compile(model) if args.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.rand(args.batch, 1, *args.size, device=device).to(memory_format=memory)
    target = (torch.arange(args.batch, device=device) % 2).float()

    def step() -> None:
        bf16 = args.bf16 and device.type == "cuda"
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = step_model(images)[:, 0]
        loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.batch * args.steps / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 104), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=8, help="images per step (multiple of 4)")
    parser.add_argument("--steps", type=int, default=20, help="measured steps")
    parser.add_argument("--warmup", type=int, default=3, help="raw loop warm-up steps")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (project)")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    if args.batch % len(VIEWS):
        parser.error("--batch must be a multiple of 4 (four views per exam)")
    raw = raw_throughput(args)
    with tempfile.TemporaryDirectory() as folder:
        project = project_throughput(args, Path(folder))
    result = {"backbone": args.backbone, "size": list(args.size), "batch": args.batch,
              "steps": args.steps, "device": args.device, "bf16": args.bf16,
              "channels_last": args.channels_last, "compile": args.compile, "workers": args.workers,
              "raw_images_per_s": round(raw, 2), "project_images_per_s": round(project, 2),
              "ratio": round(project / raw, 3)}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
