"""The one training engine: ``train_one_epoch``, ``evaluate`` and ``fit``.

Shaped like torchvision's ``references/classification/train.py``.  Distillation and
ground-truth training (``students.train.train_student``) and fine-tuning
(``evaluate.finetune``: an age head, a softmax over age groups, an ordinal head) all call
``fit``, so they share:

* checkpoints: ``best.pt`` (best validation loss; the last epoch when there is no
  validation set) and ``last.pt`` after every epoch, atomically (model, optimizer,
  scheduler, epoch, RNG): a killed run resumes where it stopped and ends with the same
  weights as an uninterrupted one;
* resume rules: a checkpoint of another recipe or other data starts afresh (logged), one of
  another world size or global batch is refused (``CheckpointError``: its data order and
  steps would differ);
* bookkeeping: ``total_epochs`` (the warm-start checkpoint's epochs plus this run's) in every
  checkpoint's ``extra``; ``metrics.csv`` / ``metrics.png`` and, when tensorboard imports,
  ``tb/``;
* progress (``agedistill_core.progress``): a tqdm bar on a terminal, otherwise a log line
  every quarter epoch or 30 s (with throughput and time left), and one line per epoch.

Logs go to ``logging.getLogger("agedistill.students.engine")`` (a Dagster run captures the
``agedistill`` loggers through its instance's ``python_logs``).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from agedistill_core.errors import CheckpointError
from agedistill_core.progress import EVERY_S as PROGRESS_EVERY_S
from agedistill_core.progress import Progress
from agedistill_core.shards import atomic_write_text
from agedistill_core.students.checkpoint import load_checkpoint, load_into, restore_rng, save_checkpoint
from agedistill_core.students.data import iter_batches
from agedistill_core.students.distributed import DistInfo, all_reduce_mean, barrier, epoch_indices

LOG = logging.getLogger("agedistill.students.engine")
METRICS = ["epoch", "lr", "steps", "train_loss", "train_mae", "val_loss", "val_mae", "seconds", "faces_per_s"]
# settings that change nothing a run computes: a checkpoint may be resumed across them
RUNTIME_KEYS = ("epochs", "workers", "threads", "cache_crops", "channels_last", "patience")


# --- one epoch ----------------------------------------------------------------------------

def train_step(model, loss_fn, optimizer, x, target, probs=None, weight=None):
    """One SGD step on a batch: forward, loss, backward, update.  Returns (outputs, loss)."""
    out = model(x)
    loss = loss_fn(out, target, probs, weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return out, loss


def train_one_epoch(model, loss_fn, optimizer, batches: Iterable, device, *, weights: torch.Tensor | None = None,
                    idx: np.ndarray | None = None, batch_size: int = 0) -> dict:
    """Train over ``batches`` of ``(x, target, probs, spread)``; the rank's means of loss and MAE.

    ``weights`` (per face of the whole training set) are picked by ``idx`` (this epoch's
    order) and ``batch_size``; ``probs`` are passed to the loss only when it uses them
    (``loss_fn.uses_probs``, set by the caller).
    """
    model.train()
    tot_loss = tot_err = seen = 0.0
    steps = 0
    use_probs = getattr(loss_fn, "uses_probs", False)
    for b, (x, target, probs, _spread) in enumerate(batches):
        x, target = x.to(device), target.to(device)
        probs = probs.to(device) if use_probs else None
        w = None
        if weights is not None:
            w = weights[idx[b * batch_size:(b + 1) * batch_size]].to(device)
        out, loss = train_step(model, loss_fn, optimizer, x, target, probs, w)
        steps += 1
        with torch.no_grad():
            n = len(target)
            tot_loss += float(loss) * n
            tot_err += float((loss_fn.ages(out) - target).abs().sum())
            seen += n
    return {"loss": tot_loss / max(seen, 1), "mae": tot_err / max(seen, 1), "steps": steps, "seen": seen}


@torch.no_grad()
def predict(model, ds, batch_size: int, workers: int, device) -> torch.Tensor:
    """The model's raw outputs for every face of ``ds`` (no augmentation), in order."""
    model.eval()
    out = [model(x.to(device)).float().cpu() for x, *_ in iter_batches(ds, np.arange(len(ds)), batch_size, workers)]
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def evaluate(model, loss_fn, ds, batch_size: int, workers: int, device) -> tuple[float, float]:
    """Mean loss and MAE (|``loss_fn.ages`` - target|: years, or groups for a group head) over ``ds``."""
    model.eval()
    idx = np.arange(len(ds))
    tot_loss = tot_err = 0.0
    use_probs = getattr(loss_fn, "uses_probs", False)
    for x, target, probs, _ in iter_batches(ds, idx, batch_size, workers):
        x, target = x.to(device), target.to(device)
        out = model(x)
        tot_loss += float(loss_fn(out, target, probs.to(device) if use_probs else None)) * len(target)
        tot_err += float((loss_fn.ages(out) - target).abs().sum())
    n = max(len(ds), 1)
    return tot_loss / n, tot_err / n


# --- the run ------------------------------------------------------------------------------

@dataclass
class Run:
    """What ``fit`` trains and where: everything but the model's construction."""
    name: str                         # for messages (the architecture, "fold 2", ...)
    out: Path                         # the run folder
    config: dict                      # recorded in every checkpoint; resume compares it
    epochs: int
    batch_size: int                   # per rank
    seed: int
    dist: DistInfo
    workers: int = 0
    eval_batch_size: int = 256
    lr_step_epochs: int = 20          # for ``converged``
    patience: int | None = None
    epochs_before: int = 0            # epochs of the warm-start checkpoint (total_epochs bookkeeping)
    weights: torch.Tensor | None = None
    resume_from: Path | None = None   # an older run folder's last.pt to resume when ``out`` has none
    extra_best: dict = field(default_factory=dict)


def check_world(saved: dict, current: dict, path: Path) -> None:
    """Refuse to resume with another world size or global batch (one line, with the fix)."""
    def world(c: dict) -> tuple[int, int]:
        ws = int(c.get("world_size") or 1)
        return ws, int(c.get("global_batch") or ws * int(c.get("batch_size") or 0))

    (ws0, gb0), (ws1, gb1) = world(saved), world(current)
    if (ws0, gb0) != (ws1, gb1):
        raise CheckpointError(
            f"{path} was trained by {ws0} process(es) with a global batch of {gb0}; this run has {ws1} with "
            f"{gb1}: its data order and steps would differ. Resume with {ws0} process(es) and a global batch of "
            f"{gb0}, or start a new run (set students.tag, or move {path.parent} away)")


def same_recipe(saved: dict, current: dict, defaults: dict | None = None) -> bool:
    """Whether a checkpoint may be resumed: everything equal but the runtime settings.

    ``defaults`` (the students section's defaults) fills the fields an older checkpoint
    predates; ``init_from`` and its older name ``init_checkpoint`` count as one.
    """
    def norm(c: dict) -> dict:
        st = {**(defaults or {}), **c.get("students", {})}
        st["init_checkpoint"] = st.get("init_from") or st.get("init_checkpoint")
        st["init_from"] = None
        st = {k: v for k, v in st.items() if k not in RUNTIME_KEYS}
        rest = {k: v for k, v in c.items()
                if k not in ("students", "world_size", "global_batch", "epochs_before", "init_sha1")}
        return _plain({**rest, "students": st})

    return norm(saved) == norm(current)


def _plain(obj):
    return json.loads(json.dumps(obj, default=str))


def converged(history: list[dict], patience: int | None, lr_step_epochs: int) -> bool:
    """Whether training has converged: ``patience`` set, the rate decayed at least twice, and
    the best validation loss is at least ``patience`` epochs old (improvements under 0.1% ignored)."""
    if patience is None or len(history) < max(2 * lr_step_epochs, patience) + 1:
        return False
    losses = [r["val_loss"] for r in history]
    best_before = min(losses[:-patience])
    return min(losses[-patience:]) > best_before * (1 - 1e-3)


def fit(model, loss_fn, optimizer, scheduler, train_ds, val_ds, run: Run, *, resume: bool = True,
        defaults: dict | None = None, progress: bool = True) -> dict:
    """Train ``model`` for ``run.epochs`` epochs (resuming ``run.out/last.pt``); a summary.

    ``train_ds`` / ``val_ds``: ``FaceDataset``-like (``len``, ``set_epoch``, ``batch(idx)`` ->
    ``(x, target, probs, spread)``); ``val_ds`` None: no validation, ``best.pt`` is the last
    epoch.  Each rank trains on its equal-length shard of every epoch (DDP averages the
    gradients); rank 0 alone writes checkpoints, metrics and messages.
    """
    say = LOG.info
    main = run.dist.is_main
    out, name = run.out, run.name
    out.mkdir(parents=True, exist_ok=True)
    config = {**run.config, "world_size": run.dist.world_size, "global_batch": run.dist.world_size * run.batch_size,
              "epochs_before": run.epochs_before}
    if main:  # the run's resolved settings beside its outputs (as timm writes args.yaml)
        atomic_write_text(out / "config.json", json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
    start_epoch, best_val, history = 0, math.inf, []
    last = out / "last.pt"
    source = last if last.is_file() else run.resume_from
    if resume and source is not None and source.is_file():
        ckpt = load_checkpoint(source)
        if same_recipe(ckpt["config"], config, defaults):
            check_world(ckpt["config"], config, source)
            load_into(ckpt, model=model, optimizer=optimizer, scheduler=scheduler)
            restore_rng(ckpt)
            start_epoch, best_val = int(ckpt["epoch"]) + 1, float(ckpt["best_val"])
            history = list((ckpt.get("extra") or {}).get("history", []))
            if main:
                say(f"{name}: resuming after epoch {start_epoch} from {source}")
        elif main:
            what = ("other training data (the label table or the sources changed)"
                    if ckpt["config"].get("data") != config.get("data") else "other settings")
            say(f"{name}: {source} was trained with {what}; starting afresh")

    tb = _TensorBoard(out / "tb", main)
    steps_total = sum(int(r.get("steps", 0)) for r in history)
    world = run.dist.world_size
    for epoch in range(start_epoch, run.epochs):
        if converged(history, run.patience, run.lr_step_epochs):
            if main:
                say(f"{name}: converged after epoch {epoch} (val loss flat for {run.patience} epochs "
                    f"after two rate decays); stopping")
            break
        t0 = time.perf_counter()
        lr_used = optimizer.param_groups[0]["lr"]
        train_ds.set_epoch(epoch)
        # DistributedSampler orders epoch e by seed + e: spread the training seeds apart so that
        # seed 1 does not replay seed 0's next epoch
        idx = epoch_indices(len(train_ds), run.dist.rank, world, epoch, run.seed * 1_000_003)
        n_batches = (len(idx) + run.batch_size - 1) // run.batch_size
        bar = Progress(n_batches, f"{name} epoch {epoch + 1}/{run.epochs}", "step", logger=LOG,
                       enabled=progress and main, every_s=PROGRESS_EVERY_S, scale=run.batch_size, scale_unit="face")
        batches = bar.wrap(iter_batches(train_ds, idx, run.batch_size, run.workers))
        stats = train_one_epoch(model, loss_fn, optimizer, batches, run.dist.device, weights=run.weights, idx=idx,
                                batch_size=run.batch_size)
        scheduler.step()
        train_loss, train_mae = all_reduce_mean(stats["loss"]), all_reduce_mean(stats["mae"])
        if val_ds is not None:
            val_loss, val_mae = evaluate(model, loss_fn, val_ds, max(run.batch_size, run.eval_batch_size),
                                         run.workers, run.dist.device)
        else:
            val_loss = val_mae = math.nan
        seconds = time.perf_counter() - t0
        steps_total += stats["steps"]
        row = dict(epoch=epoch + 1, lr=lr_used, steps=stats["steps"], train_loss=train_loss, train_mae=train_mae,
                   val_loss=val_loss, val_mae=val_mae, seconds=seconds, faces_per_s=stats["seen"] * world / seconds)
        history.append(row)
        improved = val_ds is None or val_loss < best_val  # every rank tracks it (same weights, same val set)
        if improved and val_ds is not None:
            best_val = val_loss
        if main:
            total = {"total_epochs": run.epochs_before + epoch + 1}
            if improved:
                save_checkpoint(out / "best.pt", model=model, epoch=epoch, best_val=best_val, config=config,
                                extra={"val_mae": val_mae, **total, **run.extra_best})
            save_checkpoint(last, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch,
                            best_val=best_val, config=config, extra={"history": history, **total})
            write_metrics(out, history)
            tb.log(row)
            val = f"val MAE {val_mae:.2f} (loss {val_loss:.2f}), " if val_ds is not None else ""
            say(f"{name} epoch {epoch + 1}/{run.epochs}: train MAE {train_mae:.2f}, {val}"
                f"{row['faces_per_s']:.0f} faces/s")
    tb.close()
    if main and history:
        plot_metrics(out, history, name)
    barrier()  # rank 0 has written best.pt before anyone reads it
    best = load_checkpoint(out / "best.pt") if (out / "best.pt").is_file() else None
    return {"dir": str(out), "checkpoint": str(out / "best.pt"), "epochs": len(history), "steps": steps_total,
            "rank": run.dist.rank, "world_size": world, "best_val_loss": best_val,
            "best_val_mae": (best or {}).get("extra", {}).get("val_mae") if best else None,
            "total_epochs": run.epochs_before + len(history)}


def total_epochs(ckpt: dict) -> int:
    """Epochs behind a checkpoint's weights, across warm starts (older checkpoints: its own)."""
    extra = ckpt.get("extra") or {}
    if extra.get("total_epochs") is not None:
        return int(extra["total_epochs"])
    return int((ckpt.get("config") or {}).get("epochs_before") or 0) + int(ckpt.get("epoch", -1)) + 1


# --- metrics ------------------------------------------------------------------------------

class _TensorBoard:
    """TensorBoard scalars when ``torch.utils.tensorboard`` imports; otherwise nothing, quietly."""

    def __init__(self, folder: Path, enabled: bool):
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception:  # tensorboard not installed
                return
            self.writer = SummaryWriter(log_dir=str(folder))

    def log(self, row: dict) -> None:
        if self.writer is None:
            return
        for key in ("lr", "train_loss", "train_mae", "val_loss", "val_mae", "faces_per_s"):
            if not (isinstance(row[key], float) and math.isnan(row[key])):
                self.writer.add_scalar(key, row[key], row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_metrics(out: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRICS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(out / "metrics.csv", buf.getvalue())


def plot_metrics(out: Path, history: list[dict], title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot(ep, [r["train_loss"] for r in history], label="train")
    axes[0].plot(ep, [r["val_loss"] for r in history], label="val")
    axes[0].set(title=f"{title}: loss", xlabel="epoch")
    axes[1].plot(ep, [r["train_mae"] for r in history], label="train")
    axes[1].plot(ep, [r["val_mae"] for r in history], label="val")
    axes[1].set(title=f"{title}: MAE to targets", xlabel="epoch")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "metrics.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
