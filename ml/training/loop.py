"""The training loop: AdamW, warm-up + cosine schedule, validation, early stopping, checkpoints."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ml.training.checkpoint import save_checkpoint, unwrap
from ml.training.config import TrainConfig
from ml.training.dataset import MALIGNANT_CLASS, class_weights
from ml.training.distributed import DistContext, current_context, gather_objects
from ml.training.errors import ConfigError
from ml.training.losses import auto_pos_weight, bce_loss, focal_loss, multiclass_loss
from ml.training.sampling import ShardedSampler

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    """What :func:`train` returns. ``model`` holds the last epoch's weights (unwrapped)."""

    history: list[dict[str, float]]
    best_epoch: int
    best_auc: float
    best_brier: float
    best_auc_path: Path | None
    best_calibration_path: Path | None
    stopped_early: bool
    model: nn.Module = field(repr=False)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available (this rank's device under DDP), else CPU."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device='cuda' but CUDA is not available")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def exam_scores(exam_logits: torch.Tensor) -> torch.Tensor:
    """P(malignant) per exam: sigmoid for C=1, softmax's Cancer column for C=4."""
    if exam_logits.shape[-1] == 1:
        return torch.sigmoid(exam_logits[:, 0].float())
    return torch.softmax(exam_logits.float(), dim=-1)[:, MALIGNANT_CLASS]


def compute_loss(
    out: dict[str, torch.Tensor], batch: dict[str, Any], config: TrainConfig, pos_weight: float
) -> torch.Tensor:
    """Weighted sum of the view-level loss (present views only) and the exam-level loss."""
    mask, target, malignant = batch["view_mask"], batch["target"], batch["malignant"]
    views, exam = out["view"].float(), out["exam"].float()
    binary = exam.shape[-1] == 1

    def one(logits: torch.Tensor, cls: torch.Tensor, flag: torch.Tensor) -> torch.Tensor:
        if not binary:
            return multiclass_loss(logits, cls, config.focal_gamma if config.loss == "focal" else 0)
        if config.loss == "focal":
            return focal_loss(logits[..., 0], flag, config.focal_alpha, config.focal_gamma)
        return bce_loss(logits[..., 0], flag, pos_weight)

    loss = exam.new_zeros(())
    if config.view_loss_weight > 0:
        per_view_cls = target[:, None].expand_as(mask)[mask]
        per_view_flag = malignant[:, None].expand_as(mask)[mask]
        loss = loss + config.view_loss_weight * one(views[mask], per_view_cls, per_view_flag)
    if config.exam_loss_weight > 0:
        loss = loss + config.exam_loss_weight * one(exam, target, malignant)
    return loss


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
    }


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset,
    config: TrainConfig,
    context: DistContext,
    *,
    train: bool,
    device: torch.device,
) -> DataLoader:
    """A DataLoader with this rank's shard: shuffled/weighted for training, ordered otherwise."""
    weights = None
    if train and config.sampler == "weighted":
        weights = class_weights(np.asarray(dataset.targets))  # type: ignore[attr-defined]
    sampler = ShardedSampler(
        len(dataset),  # type: ignore[arg-type]
        weights=weights,
        shuffle=train,
        seed=config.seed,
        rank=context.rank,
        world_size=context.world_size,
    )
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=False,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(config.seed),
    )


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if config.amp_bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def recompute_batchnorm(
    model: nn.Module, loader: DataLoader, config: TrainConfig, device: torch.device, max_batches: int
) -> int:
    """Precise BatchNorm: set every BatchNorm's running statistics to their plain average
    over the first ``max_batches`` batches of ``loader`` under the current weights.

    The exponential running averages lag behind weights that move fast (few, large steps),
    which shifts eval-mode outputs and so their calibration.  Returns the batches used
    (0 when the model has no BatchNorm); momenta and the train/eval mode are restored.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or max_batches < 1:
        return 0
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    used = 0
    for batch in loader:
        if used >= max_batches:
            break
        batch = _to_device(batch, device)
        with _autocast(config, device):
            model(batch["x"], batch["view_mask"])
        used += 1
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)
    return used


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    config: TrainConfig,
    pos_weight: float,
    device: torch.device,
    context: DistContext | None = None,
) -> dict[str, float]:
    """Exam-level loss, ROC-AUC (NaN with one class) and Brier score, gathered over ranks."""
    from sklearn.metrics import roc_auc_score

    context = context or DistContext()
    was_training = model.training
    model.eval()
    losses, scores, labels = [], [], []
    for batch in loader:
        batch = _to_device(batch, device)
        with _autocast(config, device):
            out = model(batch["x"], batch["view_mask"])
        size = len(batch["malignant"])
        losses.append((compute_loss(out, batch, config, pos_weight).item() * size, size))
        scores.append(exam_scores(out["exam"]).cpu().numpy())
        labels.append(batch["malignant"].cpu().numpy())
    model.train(was_training)
    parts = gather_objects(
        (losses, np.concatenate(scores or [np.empty(0)]), np.concatenate(labels or [np.empty(0)])),
        context,
    )
    all_losses = [item for part in parts for item in part[0]]
    score = np.concatenate([part[1] for part in parts])
    label = np.concatenate([part[2] for part in parts])
    total = sum(n for _, n in all_losses)
    auc = float(roc_auc_score(label, score)) if len(np.unique(label)) == 2 else float("nan")
    return {
        "loss": sum(v for v, _ in all_losses) / max(total, 1),
        "auc": auc,
        "brier": float(np.mean((score - label) ** 2)) if label.size else float("nan"),
        "n": float(label.size),
    }


def _prepare_model(
    model: nn.Module, config: TrainConfig, device: torch.device, context: DistContext
) -> nn.Module:
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if context.enabled:
        model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.find_unused_parameters,
        )
    if config.compile:
        model = torch.compile(model)
    return model


def train(
    model: nn.Module,
    train_ds: Dataset,
    val_ds: Dataset,
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train ``model`` (contract of ``ml.models``) and return history and best checkpoints.

    Seeds everything from ``config.seed`` (seed before building the model too, for identical
    initial weights). Under ``torchrun`` (process group initialised by the caller, see
    :func:`ml.training.distributed.init_distributed`) the model is DDP-wrapped, each rank reads
    its shard, validation results are gathered, and only rank 0 writes checkpoints and calls
    ``on_epoch(epoch, metrics)``.
    """
    from tqdm.auto import tqdm

    seed_everything(config.seed)
    context = current_context()
    device = resolve_device(config.device)
    net = _prepare_model(model, config, device, context)
    train_loader = make_loader(train_ds, config, context, train=True, device=device)
    val_loader = make_loader(val_ds, config, context, train=False, device=device)

    pos_weight = (
        auto_pos_weight(np.asarray(train_ds.malignant))  # type: ignore[attr-defined]
        if config.pos_weight == "auto"
        else float(config.pos_weight)
    )
    steps_per_epoch = math.ceil(len(train_loader) / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    warmup = config.warmup_steps + round(config.warmup_epochs * steps_per_epoch)
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup, total_steps, config.min_lr_ratio)
    )
    folder = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    history: list[dict[str, float]] = []
    best = {"epoch": -1, "auc": -math.inf, "loss": math.inf, "brier": math.inf}
    best_paths: dict[str, Path | None] = {"auc": None, "calibration": None}
    stale, stopped_early = 0, False

    for epoch in range(config.epochs):
        for part in (train_ds, train_loader.sampler):
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)
        net.train()
        started, seen, loss_sum = time.perf_counter(), 0, torch.zeros((), device=device)
        show_progress = config.progress and context.is_main
        batches = tqdm(
            train_loader,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not show_progress,
            leave=False,
        )
        n_batches = len(train_loader)
        for index, batch in enumerate(batches):
            group_start = index - index % config.grad_accum
            group_size = min(config.grad_accum, n_batches - group_start)
            last_in_group = index == group_start + group_size - 1
            batch = _to_device(batch, device)
            sync = contextlib.nullcontext()
            if context.enabled and not last_in_group:
                sync = net.no_sync()  # type: ignore[operator]
            with sync:
                with _autocast(config, device):
                    out = net(batch["x"], batch["view_mask"])
                loss = compute_loss(out, batch, config, pos_weight)
                (loss / group_size).backward()
            if last_in_group:
                if config.grad_clip:
                    nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            size = len(batch["malignant"])
            seen += size
            loss_sum = loss_sum + loss.detach().float() * size  # no per-step device sync
            if show_progress and index % 10 == 0:
                batches.set_postfix(loss=f"{loss.item():.4f}")
        loss_mean = float(loss_sum) / max(seen, 1)
        elapsed = time.perf_counter() - started
        if config.precise_bn_batches:
            recompute_batchnorm(unwrap(net), train_loader, config, device, config.precise_bn_batches)
        val = evaluate(unwrap(net), val_loader, config, pos_weight, device, context)
        metrics = {
            "epoch": float(epoch),
            "train_loss": loss_mean,
            "val_loss": val["loss"],
            "val_auc": val["auc"],
            "val_brier": val["brier"],
            "lr": optimizer.param_groups[0]["lr"],
            "train_images_per_s": seen * context.world_size / max(elapsed, 1e-9),
        }
        history.append(metrics)
        # NaN (a single-class validation set) never beats a real value.
        auc = -math.inf if math.isnan(val["auc"]) else val["auc"]
        brier = math.inf if math.isnan(val["brier"]) else val["brier"]
        # A tie in AUC (e.g. a small validation split separated perfectly) goes to the lower loss.
        improved = epoch == 0 or auc > best["auc"] or (auc == best["auc"] and val["loss"] < best["loss"])
        if improved:
            best.update(epoch=epoch, auc=auc, loss=val["loss"])
            stale = 0
        else:
            stale += 1
        better_calibrated = epoch == 0 or brier < best["brier"]
        if better_calibrated:
            best["brier"] = brier
        if folder is not None and context.is_main:
            meta = {"epoch": epoch, "metrics": metrics, "train_config": config.to_dict()}
            if improved:
                best_paths["auc"] = save_checkpoint(net, folder / "best_auc", meta)
            if better_calibrated:
                best_paths["calibration"] = save_checkpoint(net, folder / "best_calibration", meta)
        if on_epoch is not None and context.is_main:
            on_epoch(epoch, metrics)
        patience = config.early_stopping_patience
        if patience is not None and stale >= patience:
            stopped_early = epoch < config.epochs - 1
            break

    return TrainResult(
        history=history,
        best_epoch=int(best["epoch"]),
        best_auc=float(best["auc"]),
        best_brier=float(best["brier"]),
        best_auc_path=best_paths["auc"],
        best_calibration_path=best_paths["calibration"],
        stopped_early=stopped_early,
        model=unwrap(net),
    )
