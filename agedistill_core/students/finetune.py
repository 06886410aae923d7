"""Fine-tuning a distilled student on the benchmark protocols of SPEC section 5.

* ``finetune_apparent_age`` - APPA-REAL / LAP layout (``datasets/appa_real.py``):
  fine-tune the regression student on train+valid, test on test; MAE to the
  apparent age, epsilon-error, and MAE to the real age; the zero-shot numbers
  (before fine-tuning) are reported too.
* ``finetune_adience`` - Adience (``datasets/adience.py``): the 1-output head is
  replaced by an 8-way softmax (cross-entropy), the learning rate is the
  student's / 10, 35 epochs; train on 4 official folds, test on the 5th; top-1
  and 1-off averaged over the 5 rotations.
* ``finetune_fairface`` - the same group protocol on FairFace's 9 groups with
  ``k`` folds drawn by a fixed seed (FairFace has no official folds).

Photos are turned into face crops once (``detector`` ``none`` when the images
already are face crops, e.g. Adience's aligned faces) and kept as uint8 arrays
in memory; training then augments them as in SPEC 4.

    python -m agedistill_core.students.finetune adience --root DATA/adience \\
        --checkpoint data/utkface/students/mn3_small/best.pt [--epochs 35] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from agedistill_core.errors import AgedistillError, DataError, UnreadableImage
from agedistill_core.evaluate.metrics import epsilon_error, group_accuracy, mae
from agedistill_core.students.augment import AugmentConfig, augment_face, to_tensor

Log = Callable[[str], None]


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 35               # SPEC 5 (Adience): 35 epochs
    lr_factor: float = 0.1         # SPEC 5: the student's learning rate / 10
    lr: float | None = None        # explicit rate (overrides lr_factor)
    lr_step_epochs: int | None = None  # None: constant rate; else x lr_gamma every so many epochs
    lr_gamma: float = 0.2
    momentum: float | None = None  # None: as the student was trained
    batch_size: int | None = None  # None: as the student was trained
    augment: bool = True
    detector: str = "none"         # face detector for the photos; none = images are face crops
    margin: float = 0.2
    crop_size: int = 160
    min_score: float = 0.5
    folds: int = 5                 # FairFace k-fold
    seed: int = 0
    threads: int = 0               # torch threads; 0 = default
    workers: int = 0


# --- faces ---------------------------------------------------------------------------

def load_crops(root: Path, paths: list[str], cfg: FinetuneConfig, log: Log = print) -> tuple[list[np.ndarray], list[int]]:
    """Face crops of ``root/path`` (uint8, ``crop_size`` square); indices of the photos that gave one."""
    from agedistill_core.faces import extract_face, make_detector
    from agedistill_core.images import read_image

    det = make_detector(cfg.detector)
    crops, kept, skipped = [], [], 0
    for i, rel in enumerate(paths):
        try:
            fc = extract_face(read_image(Path(root) / rel), det, size=cfg.crop_size, margin=cfg.margin,
                              min_score=cfg.min_score, whole_image_fallback=True)
        except UnreadableImage as exc:
            skipped += 1
            if skipped <= 5:
                log(f"{exc}; skipped")
            continue
        if fc.crop is None:
            skipped += 1
            continue
        crops.append(fc.crop)
        kept.append(i)
    if skipped:
        log(f"{skipped} of {len(paths)} photos under {root} skipped (unreadable or no face)")
    if not crops:
        raise DataError(f"no usable face photos under {root}; check the image folders next to the label files")
    return crops, kept


class CropDataset(Dataset):
    """In-memory uint8 crops with targets; SPEC 4 augmentation, deterministic per (seed, epoch, index)."""

    def __init__(self, crops: list[np.ndarray], targets: np.ndarray, size: int, margin: float,
                 augment: AugmentConfig, seed: int = 0):
        self.crops, self.targets, self.size, self.margin, self.augment, self.seed = (
            crops, np.asarray(targets), size, margin, augment, seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        return augment_face(self.crops[i], self.size, self.margin, rng, self.augment), self.targets[i]


def _collate(items):
    imgs, targets = zip(*items)
    return to_tensor(np.stack(imgs)), torch.as_tensor(np.array(targets))


# --- model ---------------------------------------------------------------------------

@dataclass
class Start:
    model: torch.nn.Module
    arch: str
    input_size: int
    lr: float
    momentum: float
    batch_size: int
    loss_name: str


def start_from(checkpoint, n_classes: int | None, cfg: FinetuneConfig) -> Start:
    """The distilled student; with ``n_classes`` its head is replaced by a fresh ``n_classes``-way layer."""
    from agedistill_core.students.inference import load_student

    student = load_student(checkpoint)
    c = student.config
    model = student.model
    if n_classes is not None:
        torch.manual_seed(cfg.seed)
        model.reset_classifier(n_classes)
    students = c.get("students", {})
    base_lr = float(c.get("lr") or 0.005)
    lr = cfg.lr if cfg.lr is not None else base_lr * cfg.lr_factor
    momentum = cfg.momentum if cfg.momentum is not None else float(students.get("momentum") or 0.0)
    batch = cfg.batch_size or int(c.get("batch_size") or 128)
    return Start(model, student.arch, student.input_size, lr, momentum, batch, students.get("loss", "paper"))


def fit(start: Start, crops: list[np.ndarray], targets: np.ndarray, kind: str, cfg: FinetuneConfig,
        log: Log = print, label: str = "") -> torch.nn.Module:
    """Train ``start.model`` in place: ``kind`` ``age`` (the student's own loss) or ``group`` (cross-entropy)."""
    from agedistill_core.students.losses import make_loss

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    model = start.model
    loss_fn = make_loss(start.loss_name) if kind == "age" else torch.nn.CrossEntropyLoss()
    ds = CropDataset(crops, targets, start.input_size, cfg.margin, AugmentConfig(enabled=cfg.augment), cfg.seed)
    opt = torch.optim.SGD(model.parameters(), lr=start.lr, momentum=start.momentum)
    sched = (torch.optim.lr_scheduler.StepLR(opt, cfg.lr_step_epochs, cfg.lr_gamma) if cfg.lr_step_epochs else None)
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        ds.epoch = epoch
        order = np.random.default_rng([cfg.seed, epoch, 99]).permutation(len(ds)).tolist()
        loader = DataLoader(torch.utils.data.Subset(ds, order), batch_size=start.batch_size, shuffle=False,
                            num_workers=cfg.workers, collate_fn=_collate)
        model.train()
        tot, n = 0.0, 0
        for x, y in loader:
            out = model(x)
            loss = loss_fn(out, y.float()) if kind == "age" else loss_fn(out, y.long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(y)
            n += len(y)
        if sched is not None:
            sched.step()
        log(f"{label}epoch {epoch + 1}/{cfg.epochs}: loss {tot / max(n, 1):.3f} ({time.perf_counter() - t0:.1f} s)")
    return model


@torch.no_grad()
def outputs(model: torch.nn.Module, crops: list[np.ndarray], size: int, batch_size: int = 128) -> torch.Tensor:
    import cv2

    model.eval()
    out = []
    for i in range(0, len(crops), batch_size):
        batch = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_LINEAR) for c in crops[i:i + batch_size]])
        out.append(model(to_tensor(batch)).float())
    return torch.cat(out) if out else torch.zeros(0)


def predict_ages(start: Start, crops: list[np.ndarray]) -> np.ndarray:
    from agedistill_core.students.losses import make_loss

    return make_loss(start.loss_name).ages(outputs(start.model, crops, start.input_size)).numpy()


# --- protocols -----------------------------------------------------------------------

def finetune_apparent_age(checkpoint, root, cfg: FinetuneConfig = FinetuneConfig(), log: Log = print) -> dict:
    """APPA-REAL / LAP: fine-tune on train+valid, test on test (MAE and epsilon-error)."""
    from agedistill_core.datasets.appa_real import read_appa_real

    rows = read_appa_real(Path(root))
    train_rows = [r for r in rows if r.split in ("train", "val")]
    test_rows = [r for r in rows if r.split == "test"]
    if not train_rows or not test_rows:
        raise DataError(f"{root}: need gt_avg_train.csv (and/or gt_avg_valid.csv) and gt_avg_test.csv rows")
    tr_crops, tr_kept = load_crops(Path(root), [r.path for r in train_rows], cfg, log)
    te_crops, te_kept = load_crops(Path(root), [r.path for r in test_rows], cfg, log)
    test = [test_rows[i] for i in te_kept]
    m = np.array([r.apparent_age for r in test])
    s = np.array([r.apparent_std for r in test])
    real = np.array([np.nan if r.real_age is None else r.real_age for r in test])

    start = start_from(checkpoint, None, cfg)

    def scores(ages):
        return {"mae_apparent": mae(ages, m), "epsilon_error": epsilon_error(ages, m, s), "mae_real": mae(ages, real)}

    zero = scores(predict_ages(start, te_crops))
    fit(start, tr_crops, np.array([train_rows[i].apparent_age for i in tr_kept], np.float32), "age", cfg, log,
        "apparent age ")
    tuned = scores(predict_ages(start, te_crops))
    return {"protocol": "appa_real", "checkpoint": str(checkpoint), "arch": start.arch,
            "train_faces": len(tr_crops), "test_faces": len(te_crops), "lr": start.lr, "config": asdict(cfg),
            "zero_shot": zero, **tuned}


def finetune_groups(checkpoint, crops: list[np.ndarray], groups: np.ndarray, folds: np.ndarray, n_groups: int,
                    cfg: FinetuneConfig = FinetuneConfig(), log: Log = print, name: str = "groups") -> dict:
    """Group protocol: for each fold, a fresh ``n_groups``-way head, train on the others, test on it."""
    groups, folds = np.asarray(groups), np.asarray(folds)
    per_fold = []
    for k in sorted(set(folds.tolist())):
        test = np.flatnonzero(folds == k)
        train = np.flatnonzero(folds != k)
        if len(train) == 0 or len(test) == 0:
            continue
        start = start_from(checkpoint, n_groups, cfg)
        fit(start, [crops[i] for i in train], groups[train], "group", cfg, log, f"{name} fold {k}: ")
        pred = outputs(start.model, [crops[i] for i in test], start.input_size).argmax(1).numpy()
        top1, one_off = group_accuracy(pred, groups[test])
        per_fold.append({"fold": int(k), "train_faces": int(len(train)), "test_faces": int(len(test)),
                         "top1": top1, "one_off": one_off})
        log(f"{name} fold {k}: top-1 {top1:.3f}, 1-off {one_off:.3f} ({len(test)} test faces)")
    if not per_fold:
        raise DataError(f"{name}: need at least two non-empty folds")
    return {"protocol": name, "checkpoint": str(checkpoint), "n_groups": n_groups, "config": asdict(cfg),
            "top1": float(np.mean([f["top1"] for f in per_fold])),
            "one_off": float(np.mean([f["one_off"] for f in per_fold])), "folds": per_fold}


def finetune_adience(checkpoint, root, cfg: FinetuneConfig = FinetuneConfig(), log: Log = print) -> dict:
    from agedistill_core.datasets.adience import ADIENCE_GROUPS, read_adience

    rows, dropped = read_adience(Path(root))
    crops, kept = load_crops(Path(root), [r.path for r in rows], cfg, log)
    res = finetune_groups(checkpoint, crops, np.array([rows[i].group for i in kept]),
                          np.array([rows[i].fold for i in kept]), len(ADIENCE_GROUPS), cfg, log, "adience")
    return {**res, "dropped_labels": dropped}


def kfold(n: int, k: int, seed: int) -> np.ndarray:
    """Fold of each of ``n`` items: a fixed-seed permutation dealt round-robin into ``k`` folds."""
    if k < 2:
        raise DataError(f"k-fold needs k >= 2 folds, got {k}")
    folds = np.empty(n, np.int64)
    folds[np.random.default_rng([seed, 5]).permutation(n)] = np.arange(n) % k
    return folds


def finetune_fairface(checkpoint, root, cfg: FinetuneConfig = FinetuneConfig(), log: Log = print) -> dict:
    from agedistill_core.datasets.fairface import FAIRFACE_GROUPS, scan_fairface

    items = list(scan_fairface(Path(root)))
    crops, kept = load_crops(Path(root), [it.path for it in items], cfg, log)
    groups = np.array([FAIRFACE_GROUPS.index(items[i].age_group) for i in kept])
    return finetune_groups(checkpoint, crops, groups, kfold(len(kept), cfg.folds, cfg.seed), len(FAIRFACE_GROUPS),
                           cfg, log, "fairface")


PROTOCOLS = {"appa_real": finetune_apparent_age, "adience": finetune_adience, "fairface": finetune_fairface}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agedistill_core.students.finetune",
                                description="Fine-tune a distilled student on a SPEC 5 protocol.")
    p.add_argument("protocol", choices=sorted(PROTOCOLS))
    p.add_argument("--root", required=True, help="the data set folder (official layout)")
    p.add_argument("--checkpoint", required=True, help="a distilled student checkpoint (best.pt)")
    p.add_argument("--json", help="also write the result here")
    for f in ("epochs", "folds", "seed", "threads", "batch_size", "lr_step_epochs"):
        p.add_argument(f"--{f.replace('_', '-')}", type=int)
    for f in ("lr", "lr_factor", "momentum"):
        p.add_argument(f"--{f.replace('_', '-')}", type=float)
    p.add_argument("--detector", help="face detector for the photos (default none: images are face crops)")
    p.add_argument("--no-augment", action="store_true")
    args = p.parse_args(argv)
    over = {k: v for k, v in vars(args).items()
            if k in FinetuneConfig.__dataclass_fields__ and v is not None}
    cfg = replace(FinetuneConfig(), **over, augment=not args.no_augment)
    try:
        result = PROTOCOLS[args.protocol](args.checkpoint, args.root, cfg)
    except AgedistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v))
    if args.json:
        from agedistill_core.shards import atomic_write_text
        atomic_write_text(Path(args.json), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
