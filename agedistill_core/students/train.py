"""Stage 4: train one student on the label table (SPEC section 4 protocol).

SGD (momentum is a parameter), the architecture's learning rate multiplied by
``lr_gamma`` every ``lr_step_epochs`` epochs, SPEC augmentation, the
best-validation-loss checkpoint kept as ``best.pt``, and ``last.pt`` written
atomically after every epoch so a killed run resumes where it stopped (model,
optimizer, scheduler, epoch and RNG states): resuming gives the same weights
as an uninterrupted run (tests/students/test_train_protocol.py).

Runs under ``torchrun --nproc_per_node K`` too (gloo on CPU, nccl on GPUs):
each process trains on its equal-length shard of every epoch, DDP averages
gradients, and rank 0 alone writes checkpoints and logs::

    torchrun --standalone --nproc_per_node 2 -m agedistill_core.cli --profile P train

Metrics go to
``metrics.csv`` / ``metrics.png`` and, when ``torch.utils.tensorboard`` can be
imported (the ``tensorboard`` package), to ``tb/`` as TensorBoard events.
"""
from __future__ import annotations

import csv
import json
import io
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from agedistill_core.settings import Settings
from agedistill_core.shards import atomic_write_text
from agedistill_core.students.augment import AugmentConfig
from agedistill_core.students.checkpoint import load_checkpoint, load_into, restore_rng, save_checkpoint
from agedistill_core.students.data import FaceDataset, iter_batches, quiet_opencv_threads
from agedistill_core.teacher.vmage import FaceSet, load_splits
from agedistill_core.students.distributed import all_reduce_mean, barrier, epoch_indices, init_distributed
from agedistill_core.students.losses import agreement_weights, band_weights, make_loss
from agedistill_core.students.zoo import STUDENTS, create_student

METRICS = ["epoch", "lr", "steps", "train_loss", "train_mae", "val_loss", "val_mae", "seconds", "faces_per_s"]


def run_name(settings: Settings, arch: str) -> str:
    """Folder name of a training run: the architecture, plus what differs from the default recipe."""
    s = settings.students
    parts = [arch]
    if s.label_source != "teacher":
        parts.append("gt")
    if s.loss != "paper":
        parts.append(s.loss)
    if s.weighting != "none":
        parts.append(s.weighting)
    if s.balance != "none":
        parts.append(s.balance)
    if s.sources:
        parts.append("+".join(s.sources))
    if s.max_train_faces is not None:
        parts.append(f"n{s.max_train_faces}")
    if s.init_checkpoint:
        parts.append("ft")
    if s.seed is not None:
        parts.append(f"s{s.seed}")
    if s.tag:
        parts.append(str(s.tag))
    return "-".join(parts)


def run_dir(settings: Settings, arch: str) -> Path:
    return settings.students_dir / run_name(settings, arch)


def _subsample(faces: FaceSet, limit: int | None, seed: int) -> FaceSet:
    if limit is None or len(faces) <= limit:
        return faces
    idx = np.sort(np.random.default_rng([seed, 7]).permutation(len(faces))[:limit])
    return faces.subset(idx)


def make_optimizer(model: torch.nn.Module, settings: Settings, arch: str):
    """SGD at the architecture's rate (or ``students.lr``) and the SPEC step schedule:
    the rate is multiplied by ``lr_gamma`` every ``lr_step_epochs`` epochs
    (``scheduler.step()`` once per epoch)."""
    cfg = settings.students
    lr = cfg.lr if cfg.lr is not None else STUDENTS.get(arch).lr
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.lr_schedule == "cosine":  # per epoch, from lr down to 0 at the last epoch
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)
    return optimizer, scheduler


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
            self.writer.add_scalar(key, row[key], row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def train_student(settings: Settings, arch: str, *, resume: bool = True,
                  log: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Train ``arch`` on the label table; returns a summary with the best checkpoint path."""
    spec = STUDENTS.get(arch)
    cfg = settings.students
    dist_info = init_distributed()
    out = run_dir(settings, arch)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads > 0:  # on a busy machine 1 thread can beat oversubscribed spinning ones
        torch.set_num_threads(cfg.threads)
    seed = cfg.seed if cfg.seed is not None else settings.seed
    torch.manual_seed(seed)
    quiet_opencv_threads()

    splits = load_splits(settings, ("train", "val"), cfg.label_source, cfg.sources)  # crop shards read once
    train = _subsample(splits["train"], cfg.max_train_faces,
                       settings.seed)  # the profile's seed: the same faces whatever the training seed
    val = splits["val"]
    loss_fn = make_loss(cfg.loss)
    model = create_student(arch, loss_fn.n_outputs, cfg.pretrained_dir)
    init_head(model, train)
    if cfg.init_checkpoint:
        init_path = Path(cfg.init_checkpoint).expanduser()
        if not init_path.is_absolute():  # relative to params.yaml, like every path in it
            init_path = settings.params_path.parent / init_path
        init_from_checkpoint(model, str(init_path), arch)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(dist_info.device, memory_format=memory_format)
    if dist_info.distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    batch_size = cfg.batch_size or spec.batch_size
    optimizer, scheduler = make_optimizer(model, settings, arch)
    lr = optimizer.param_groups[0]["lr"]
    aug = AugmentConfig(enabled=cfg.augment)
    threads = torch.get_num_threads()
    input_size = cfg.input_size or spec.input_size
    train_ds = FaceDataset(train, input_size, settings.faces.margin, aug, seed,
                           threads=threads, channels_last=cfg.channels_last)
    val_ds = FaceDataset(val, input_size, settings.faces.margin, AugmentConfig(enabled=False),
                         threads=threads, channels_last=cfg.channels_last)
    weights_all = face_weights(cfg, train)

    config = {"arch": arch, "timm": spec.timm_name, "input_size": input_size, "lr": lr,
              "batch_size": batch_size, "n_outputs": loss_fn.n_outputs, "students": asdict(cfg),
              "profile": settings.profile, "seed": seed,
              "data": {"train": train.fingerprint(), "val": val.fingerprint(),
                       "train_faces": len(train), "val_faces": len(val)},
              "faces": asdict(settings.faces)}
    start_epoch, best_val, history = 0, math.inf, []
    last = out / "last.pt"
    if resume and last.is_file():
        ckpt = load_checkpoint(last)
        if same_recipe(ckpt["config"], config):
            load_into(ckpt, model=model, optimizer=optimizer, scheduler=scheduler)
            restore_rng(ckpt)
            start_epoch, best_val = int(ckpt["epoch"]) + 1, float(ckpt["best_val"])
            history = list((ckpt.get("extra") or {}).get("history", []))
            if dist_info.is_main:
                log(f"{arch}: resuming after epoch {start_epoch} from {last}")
        elif dist_info.is_main:
            what = ("other training data (the label table or the sources changed)"
                    if ckpt["config"].get("data") != config["data"] else "other settings")
            log(f"{arch}: {last} was trained with {what}; starting afresh")

    tb = _TensorBoard(out / "tb", dist_info.is_main)
    steps_total = sum(int(r.get("steps", 0)) for r in history)

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        lr_used = optimizer.param_groups[0]["lr"]
        train_ds.set_epoch(epoch)
        if converged(history, cfg):
            if dist_info.is_main:
                log(f"{arch}: converged after epoch {epoch} (val loss flat for {cfg.patience} epochs "
                    f"after two rate decays); stopping")
            break
        # DistributedSampler orders epoch e by seed + e: spread the training seeds apart so that
        # seed 1 does not replay seed 0's next epoch
        idx = epoch_indices(len(train_ds), dist_info.rank, dist_info.world_size, epoch, seed * 1_000_003)
        model.train()
        tot_loss = tot_err = seen = 0.0
        steps = 0
        batches = iter_batches(train_ds, idx, batch_size, cfg.workers)
        bar = _bar(batches, f"{arch} epoch {epoch + 1}/{cfg.epochs}", progress and dist_info.is_main,
                   total=(len(idx) + batch_size - 1) // batch_size)
        for b, (x, age, probs, spread) in enumerate(bar):
            x, age, probs = x.to(dist_info.device), age.to(dist_info.device), probs.to(dist_info.device)
            w = None
            if weights_all is not None:
                w = weights_all[idx[b * batch_size:(b + 1) * batch_size]].to(dist_info.device)
            out_t, loss = train_step(model, loss_fn, optimizer, x, age,
                                     probs if train.target_probs is not None else None, w)
            steps += 1
            with torch.no_grad():
                n = len(age)
                tot_loss += float(loss) * n
                tot_err += float((loss_fn.ages(out_t) - age).abs().sum())
                seen += n
        scheduler.step()
        train_loss = all_reduce_mean(tot_loss / max(seen, 1))
        train_mae = all_reduce_mean(tot_err / max(seen, 1))
        val_loss, val_mae = evaluate_split(model, loss_fn, val_ds, max(batch_size, 256), cfg.workers,
                                           dist_info.device)
        seconds = time.perf_counter() - t0
        steps_total += steps
        row = dict(epoch=epoch + 1, lr=lr_used, steps=steps, train_loss=train_loss, train_mae=train_mae, val_loss=val_loss, val_mae=val_mae,
                   seconds=seconds, faces_per_s=seen * dist_info.world_size / seconds)
        history.append(row)
        improved = val_loss < best_val  # every rank tracks it (same weights, same val set)
        if improved:
            best_val = val_loss
        if dist_info.is_main:
            if improved:
                save_checkpoint(out / "best.pt", model=model, epoch=epoch, best_val=best_val, config=config,
                                extra={"val_mae": val_mae})
            save_checkpoint(last, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch,
                            best_val=best_val, config=config, extra={"history": history})
            write_metrics(out, history)
            tb.log(row)
            log(f"{arch} epoch {epoch + 1}/{cfg.epochs}: train MAE {train_mae:.2f}, "
                f"val MAE {val_mae:.2f} (loss {val_loss:.2f}), {row['faces_per_s']:.0f} faces/s")
    tb.close()
    if dist_info.is_main and history:
        plot_metrics(out, history, arch)
    barrier()  # rank 0 has written best.pt before anyone reads it
    best = load_checkpoint(out / "best.pt") if (out / "best.pt").is_file() else None
    return {"arch": arch, "run": run_name(settings, arch), "dir": str(out), "checkpoint": str(out / "best.pt"),
            "epochs": len(history), "steps": steps_total, "rank": dist_info.rank,
            "world_size": dist_info.world_size, "best_val_loss": best_val,
            "best_val_mae": (best or {}).get("extra", {}).get("val_mae") if best else None,
            "train_faces": len(train), "val_faces": len(val)}


def converged(history: list[dict], cfg) -> bool:
    """Whether training has converged: ``patience`` set, the rate decayed at least twice, and
    the best validation loss is at least ``patience`` epochs old (improvements under 0.1% ignored)."""
    if cfg.patience is None or len(history) < max(2 * cfg.lr_step_epochs, cfg.patience) + 1:
        return False
    losses = [r["val_loss"] for r in history]
    best_before = min(losses[:-cfg.patience])
    return min(losses[-cfg.patience:]) > best_before * (1 - 1e-3)


def train_step(model, loss_fn, optimizer, x, age, probs=None, weight=None):
    """One SGD step on a batch: forward, loss, backward, update.  Returns (outputs, loss)."""
    out = model(x)
    loss = loss_fn(out, age, probs, weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return out, loss


def same_recipe(saved: dict, current: dict) -> bool:
    """Whether a checkpoint may be resumed: everything equal but the epoch count."""
    strip = lambda c: {**c, "students": {k: v for k, v in c.get("students", {}).items()  # noqa: E731
                                        if k not in ("epochs", "workers", "threads", "cache_crops", "channels_last",
                                                     "patience")}}
    return _plain(strip(saved)) == _plain(strip(current))


def _plain(obj):
    return json.loads(json.dumps(obj, default=str))


def init_from_checkpoint(model: torch.nn.Module, path: str, arch: str) -> None:
    """Start from another run's weights (e.g. a distilled student, then fine-tune on ground truth)."""
    from agedistill_core.errors import CheckpointError

    ckpt = load_checkpoint(path)
    saved = ckpt["config"].get("arch")
    if saved != arch:
        raise CheckpointError(f"students.init_checkpoint {path} holds a {saved} student, not {arch}; "
                              f"point it at a {arch} checkpoint")
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"students.init_checkpoint {path} does not fit this {arch} head "
                              f"({str(exc).splitlines()[0][:160]}); use a checkpoint trained with the same loss") from None


@torch.no_grad()
def init_head(model: torch.nn.Module, faces: FaceSet) -> None:
    """Start the head at the training set's age prior.

    A one-output head gets zero weights and the mean target age as bias (a
    capped-ReLU output that starts below 0 would never get a gradient); a
    101-way head gets the log of the mean target distribution.
    """
    head = model.get_classifier()
    if not isinstance(head, torch.nn.Linear):
        return
    if head.out_features == 1:
        head.weight.mul_(0.01)
        head.bias.fill_(float(np.nanmean(faces.target_age)))
    elif head.out_features == 101:
        if faces.target_probs is not None:
            prior = faces.target_probs.mean(0)
        else:
            prior = np.bincount(np.clip(np.round(faces.target_age), 0, 100).astype(int), minlength=101)
        prior = np.asarray(prior, np.float64) + 1e-3
        head.weight.mul_(0.01)
        head.bias.copy_(torch.as_tensor(np.log(prior / prior.sum()), dtype=head.bias.dtype))


def face_weights(cfg, train: FaceSet) -> torch.Tensor | None:
    """Per-face loss weights of the recipe (``weighting``, ``balance``), mean 1; None = uniform."""
    w = np.ones(len(train), np.float64)
    if cfg.weighting == "agreement":
        w *= agreement_weights(train.age_spread, tau=agreement_tau(train.age_spread))
    if cfg.balance != "none":
        w *= band_weights(train.target_age, power=1.0 if cfg.balance == "band" else 0.5)
    if cfg.weighting == "none" and cfg.balance == "none":
        return None
    return torch.as_tensor(w / w.mean(), dtype=torch.float32)


def agreement_tau(spread: np.ndarray) -> float:
    """Agreement-weight temperature: the median teacher spread of the training faces
    (so a face of typical disagreement weighs exp(-1) of a unanimous one)."""
    med = float(np.median(spread)) if len(spread) else 0.0
    return med if med > 0 else 1.0


@torch.no_grad()
def evaluate_split(model, loss_fn, ds: FaceDataset, batch_size: int, workers: int, device) -> tuple[float, float]:
    model.eval()
    idx = np.arange(len(ds))
    tot_loss = tot_err = 0.0
    for x, age, probs, _ in iter_batches(ds, idx, batch_size, workers):
        x, age, probs = x.to(device), age.to(device), probs.to(device)
        out = model(x)
        tot_loss += float(loss_fn(out, age, probs if ds.faces.target_probs is not None else None)) * len(age)
        tot_err += float((loss_fn.ages(out) - age).abs().sum())
    n = max(len(ds), 1)
    return tot_loss / n, tot_err / n


def _bar(it, desc: str, enabled: bool, total: int | None = None):
    if not enabled:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, desc=desc, leave=False, unit="batch", total=total)


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
    axes[1].set(title=f"{title}: MAE to targets (years)", xlabel="epoch")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "metrics.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
