"""Fine-tuning a distilled student on the benchmark protocols of SPEC section 5, through the
one training engine (``students.engine.fit``): the same checkpoints, resume, metrics,
progress and validated settings as distillation.

A fine-tuning run is a profile: its data set (``dataset.name``/``root``) and its recipe
(``students``): ``init_from`` (the distilled student), ``loss``, ``epochs``, ``lr`` x
``lr_factor``, ``batch_size``, ``momentum``, ``folds``, ``seed``, ``threads``.

* group protocol (``students.loss: groups`` or ``ordinal``), on a data set with age groups
  (``fairface``: 9 groups; ``adience``: 8 groups and its 5 official folds): per fold, the
  student's one-output head is replaced by a new head (``groups``: a softmax over the groups,
  SPEC 5; ``ordinal``: cumulative logits, CORN), the body starts from ``init_from``, the
  model trains on the other folds and is tested on this one (top-1, 1-off).  FairFace has no
  folds: ``students.folds`` fixed-seed folds stratified by group.  The zero-shot student
  (``init_from`` as it is, its age mapped to a group) and the profile's teacher are scored on
  the same faces.
* age protocol (any other loss) on APPA-REAL / LAP (``appa_real``): fine-tune the age head on
  train+valid, test on test: MAE to the apparent age, epsilon-error, MAE to the real age,
  before (zero-shot) and after.

Faces are framed exactly as ``init_from`` records (its ``faces`` settings: detector, alignment,
crop size, margin, JPEG quality) by the crops stage's own framing (``faces.crops``), so a
dlib5-aligned student is fine-tuned and tested on dlib5-aligned faces, as ``predict`` frames
them.  Each fold is a run folder ``<workdir>/students/<run>/fold<k>/`` (best.pt, last.pt,
metrics.csv/png); ``result.json`` beside them holds the table.  The models fine-tuned here are
never the shipped default.

    agedistill finetune --profile fairface_groups [--json out.json]
    agedistill finetune fairface --root ../shared/data/fairface \\
        --checkpoint models/mn3_small_distilled/best.pt [--loss ordinal] [--epochs 35]
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from agedistill_core.errors import ConfigError, DataError
from agedistill_core.inference.student import checkpoint_resize
from agedistill_core.ages import ADIENCE_GROUPS, FAIRFACE_GROUPS, adience_edges, age_to_group
from agedistill_core.metrics import epsilon_error, group_accuracy, mae
from agedistill_core.settings import FaceSettings, Settings, load_settings
from agedistill_core.progress import Progress
from agedistill_core.shards import atomic_write_text
from agedistill_core.students.augment import AugmentConfig
from agedistill_core.students.checkpoint import load_checkpoint
from agedistill_core.students.data import FaceDataset, quiet_opencv_threads
from agedistill_core.students.distributed import init_distributed
from agedistill_core.students.engine import Run, fit, predict, total_epochs
from agedistill_core.students.losses import GROUP_LOSSES, make_loss
from agedistill_core.students.train import base_lr, init_from_checkpoint, init_path, make_optimizer, run_name
from agedistill_core.students.zoo import STUDENTS, create_student
from agedistill_core.labeltable import USABLE, FaceSet

LOG = logging.getLogger("agedistill.evaluate.finetune")


# --- groups of the data sets --------------------------------------------------------------

def data_groups(name: str) -> tuple[tuple[str, ...], Callable[[np.ndarray], np.ndarray]]:
    """The ordered age groups of data set ``name`` and the map from an age to its group."""
    if name == "fairface":
        return FAIRFACE_GROUPS, lambda ages: age_to_group(ages)
    if name == "adience":
        edges = adience_edges()
        return ADIENCE_GROUPS, lambda ages: age_to_group(ages, edges)
    raise ConfigError(f"data set {name!r} has no age groups; the group protocol (students.loss groups | ordinal) "
                      f"runs on fairface or adience")


def stratified_folds(groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold of each face: within each group a fixed-seed permutation, dealt round-robin into
    ``k`` folds (one running count across groups, so fold sizes differ by at most one)."""
    groups = np.asarray(groups)
    if k < 2:
        raise DataError(f"k-fold needs k >= 2 folds, got {k}")
    order = np.concatenate([np.flatnonzero(groups == g)[np.random.default_rng([seed, 5, int(g)]).permutation(
        int((groups == g).sum()))] for g in np.unique(groups)]) if len(groups) else np.zeros(0, np.int64)
    folds = np.empty(len(groups), np.int64)
    folds[order] = np.arange(len(groups)) % k
    return folds


# --- faces, framed as the checkpoint records ----------------------------------------------

def checkpoint_faces(config: dict, fallback: FaceSettings) -> FaceSettings:
    """The framing a checkpoint was trained on (its ``faces``), else ``fallback``."""
    recorded = config.get("faces")
    if not isinstance(recorded, dict):
        return fallback
    known = {f.name for f in fields(FaceSettings)}
    return replace(fallback, **{k: v for k, v in recorded.items() if k in known})


def frame_photos(root: Path, paths: list[str], faces: FaceSettings) -> tuple[list[bytes], list[int]]:
    """JPEG face crops of ``root/path`` framed by the crops stage (``faces.crops``) with
    ``faces``; and the indices of the photos that gave one (the others are counted, by status)."""
    from agedistill_core.faces.crops import crop_one

    jpegs, kept, skipped = [], [], {}
    with Progress(len(paths), f"framing {root}", "photo", logger=LOG) as bar:
        for i, rel in enumerate(paths):
            row = crop_one(Path(root) / rel, rel, faces)
            if row["status"] in USABLE and row["jpeg"] is not None:
                jpegs.append(row["jpeg"])
                kept.append(i)
            else:
                skipped[row["status"]] = skipped.get(row["status"], 0) + 1
            bar.update()
    if skipped:
        LOG.info(f"{sum(skipped.values())} of {len(paths)} photos under {root} give no face "
            f"({', '.join(f'{k} {v}' for k, v in sorted(skipped.items()))}); left out")
    if not jpegs:
        raise DataError(f"no usable face photos under {root}; check the image folders next to the label files")
    return jpegs, kept


def face_set(ids: list[str], jpegs: list[bytes], targets: np.ndarray) -> FaceSet:
    """A ``FaceSet`` whose target is ``targets`` (ages, or group indices) and nothing else."""
    n = len(jpegs)
    t = np.asarray(targets, np.float32)
    return FaceSet(list(ids), list(jpegs), t, None, np.zeros(n, np.float32), np.full(n, np.nan, np.float32), t)


# --- the run ----------------------------------------------------------------------------

class Finetune:
    """What every fold shares: the settings, the starting checkpoint, the framing, the head."""

    def __init__(self, settings: Settings, n_groups: int | None = None,
                 progress: bool = True):
        cfg = settings.students
        path = init_path(settings)
        if path is None:
            raise ConfigError(f"{settings.profile}: fine-tuning needs students.init_from (a distilled student's "
                              f"best.pt)")
        self.settings, self.path, self.progress = settings, path, progress
        self.say = LOG.info
        self.ckpt = load_checkpoint(path)
        c = self.ckpt["config"]
        self.arch, self.input_size = c["arch"], int(cfg.input_size or c["input_size"])
        self.faces = checkpoint_faces(c, settings.faces)
        self.resize = checkpoint_resize(c)   # framed and resized exactly as the checkpoint records
        self.loss = make_loss(cfg.loss, n_groups=n_groups) if cfg.loss in GROUP_LOSSES else make_loss(cfg.loss)
        self.loss.uses_probs = False
        self.seed = cfg.seed if cfg.seed is not None else settings.seed
        self.batch_size = cfg.batch_size or int(c.get("batch_size") or 128)
        self.out = settings.students_dir / run_name(settings, self.arch)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        quiet_opencv_threads()

    def dataset(self, faces: FaceSet, augment: bool) -> FaceDataset:
        policy = AugmentConfig.from_setting(self.settings.students.augment) if augment else AugmentConfig(enabled=False)
        return FaceDataset(faces, self.input_size, self.faces.margin, policy, self.seed, threads=torch.get_num_threads(),
                           resize=self.resize)

    def model(self) -> torch.nn.Module:
        """The student of ``init_from``: its whole network (age head), or its body under a new
        group head (initialised from the training seed)."""
        torch.manual_seed(self.seed)
        model = create_student(self.arch, self.loss.n_outputs, None, warm_start=True)  # weights: the checkpoint's
        init_from_checkpoint(model, str(self.path), self.arch, head=not hasattr(self.loss, "n_groups"),
                             ckpt=self.ckpt)
        return model.to(memory_format=torch.channels_last)

    def train(self, name: str, folder: str, train: FaceSet, data: dict) -> torch.nn.Module:
        """Fine-tune on ``train`` in ``out/<folder>`` (resuming there); the trained model."""
        cfg = self.settings.students
        model = self.model()
        optimizer, scheduler = make_optimizer(model, self.settings, self.arch)
        config = {"arch": self.arch, "timm": STUDENTS.get(self.arch).timm_name,
                  "input_size": self.input_size, "lr": optimizer.param_groups[0]["lr"], "batch_size": self.batch_size,
                  "n_outputs": self.loss.n_outputs, "students": {**asdict(cfg), "resize": self.resize},
                  "profile": self.settings.profile,
                  "seed": self.seed, "data": {"train": train.fingerprint(), "train_faces": len(train), **data},
                  "faces": asdict(self.faces), "init_from": str(self.path)}
        run = Run(name=name, out=self.out / folder, config=config, epochs=cfg.epochs, batch_size=self.batch_size,
                  seed=self.seed, dist=init_distributed(), workers=cfg.workers, lr_step_epochs=cfg.lr_step_epochs,
                  epochs_before=total_epochs(self.ckpt))
        fit(model, self.loss, optimizer, scheduler, self.dataset(train, True), None, run,
            progress=self.progress)
        return model

    def outputs(self, model, faces: FaceSet) -> torch.Tensor:
        return predict(model, self.dataset(faces, False), 256, 0, torch.device("cpu"))


def _zero_shot(path: Path, jpegs: list[bytes]) -> np.ndarray:
    """The starting student's ages, through ``predict``'s path (``inference.load_student``)."""
    from agedistill_core.inference.student import load_student

    return load_student(path).predict_jpegs(jpegs)


def _teacher_ages(settings: Settings, jpegs: list[bytes]) -> np.ndarray:
    """The profile's teacher's ages of the same crops (its labelling path)."""
    from agedistill_core.images import decode_image
    from agedistill_core.teacher.label import get_teacher

    teacher = get_teacher(settings)
    ages = []
    for i in range(0, len(jpegs), 64):
        crops = teacher.stack([decode_image(j) for j in jpegs[i:i + 64]])  # as the label stage
        ages.append(teacher.label(crops).age)
    return np.concatenate(ages)


def finetune_groups(settings: Settings, *, teacher: bool = True,
                    progress: bool = True) -> dict:
    """The group protocol on the profile's data set (see the module's doc); the table as a dict."""
    from agedistill_core.datasets import DATASETS

    name = settings.dataset.name
    if settings.dataset.sources:
        raise ConfigError(f"{settings.profile}: the group protocol runs on one data set, not on dataset.sources")
    group_names, to_group = data_groups(name)
    ft = Finetune(settings, len(group_names), progress)
    root = settings.data_root
    items = list(DATASETS.get(name)(root))
    if not items:
        raise DataError(f"no labelled photos under {root}")
    ft.say(f"{settings.profile}: {len(items)} {name} photos, framed as {ft.path} records "
           f"({ft.faces.detector}+{ft.faces.align}, {ft.faces.crop_size} px)")
    jpegs, kept = frame_photos(root, [it.path for it in items], ft.faces)
    items = [items[i] for i in kept]
    groups = np.array([group_names.index(it.age_group) for it in items])
    official = all(it.fold is not None for it in items)
    folds = (np.array([it.fold for it in items]) if official
             else stratified_folds(groups, settings.students.folds, ft.seed))
    zero = to_group(_zero_shot(ft.path, jpegs))
    teach = to_group(_teacher_ages(settings, jpegs)) if teacher else None
    ids = [it.path for it in items]
    per_fold = []
    tuned = np.full(len(items), -1)
    for k in sorted(set(folds.tolist())):
        test, train = np.flatnonzero(folds == k), np.flatnonzero(folds != k)
        if len(train) == 0 or len(test) == 0:
            continue
        tr = face_set([ids[i] for i in train], [jpegs[i] for i in train], groups[train])
        te = face_set([ids[i] for i in test], [jpegs[i] for i in test], groups[test])
        model = ft.train(f"{name} {settings.students.loss} fold {k}", f"fold{k}", tr,
                         {"fold": int(k), "test": te.fingerprint(), "test_faces": len(te)})
        pred = ft.loss.groups(ft.outputs(model, te)).numpy()
        tuned[test] = pred
        row = {"fold": int(k), "train_faces": int(len(train)), "test_faces": int(len(test))}
        row["top1"], row["one_off"] = group_accuracy(pred, groups[test])
        row["zero_shot_top1"], row["zero_shot_one_off"] = group_accuracy(zero[test], groups[test])
        if teach is not None:
            row["teacher_top1"], row["teacher_one_off"] = group_accuracy(teach[test], groups[test])
        per_fold.append(row)
        ft.say(f"{name} fold {k}: top-1 {row['top1']:.3f}, 1-off {row['one_off']:.3f} "
               f"(zero-shot {row['zero_shot_top1']:.3f} / {row['zero_shot_one_off']:.3f}; {len(test)} test faces)")
    if not per_fold:
        raise DataError(f"{name}: need at least two non-empty folds")
    keys = [k for k in per_fold[0] if k not in ("fold", "train_faces", "test_faces")]
    tested = tuned >= 0
    per_group = {}
    for g, gname in enumerate(group_names):  # top-1 per true group, over the test folds
        sel = tested & (groups == g)
        if sel.any():
            per_group[gname] = {"faces": int(sel.sum()), "top1": float((tuned[sel] == g).mean()),
                                "zero_shot_top1": float((zero[sel] == g).mean()),
                                **({"teacher_top1": float((teach[sel] == g).mean())} if teach is not None else {})}
    result = {"protocol": "groups", "profile": settings.profile, "data": name, "root": str(root),
              "head": settings.students.loss, "checkpoint": str(ft.path), "arch": ft.arch,
              "faces": f"{ft.faces.detector}+{ft.faces.align}", "n_groups": len(group_names),
              "groups": list(group_names), "faces_used": len(items), "official_folds": official,
              "epochs": settings.students.epochs, "lr": base_lr(settings, ft.arch),
              "batch_size": ft.batch_size, "seed": ft.seed, "run": str(ft.out),
              **{k: float(np.mean([f[k] for f in per_fold])) for k in keys}, "folds": per_fold,
              "per_group": per_group}
    atomic_write_text(ft.out / "result.json", json.dumps(result, indent=2))
    return result


def finetune_apparent_age(settings: Settings, *,
                          progress: bool = True) -> dict:
    """APPA-REAL / LAP: fine-tune the age head on train+valid, test on test (MAE and epsilon-error)."""
    from agedistill_core.datasets.appa_real import read_appa_real

    root = settings.data_root
    rows = read_appa_real(root)
    train_rows = [r for r in rows if r.split in ("train", "val")]
    test_rows = [r for r in rows if r.split == "test"]
    if not train_rows or not test_rows:
        raise DataError(f"{root}: need gt_avg_train.csv (and/or gt_avg_valid.csv) and gt_avg_test.csv rows")
    ft = Finetune(settings, None, progress)
    tr_jpegs, tr_kept = frame_photos(root, [r.path for r in train_rows], ft.faces)
    te_jpegs, te_kept = frame_photos(root, [r.path for r in test_rows], ft.faces)
    test = [test_rows[i] for i in te_kept]
    m = np.array([r.apparent_age for r in test])
    s = np.array([r.apparent_std for r in test])
    real = np.array([np.nan if r.real_age is None else r.real_age for r in test])

    def scores(ages):
        return {"mae_apparent": mae(ages, m), "epsilon_error": epsilon_error(ages, m, s), "mae_real": mae(ages, real)}

    zero = scores(_zero_shot(ft.path, te_jpegs))
    tr = face_set([train_rows[i].path for i in tr_kept], tr_jpegs, [train_rows[i].apparent_age for i in tr_kept])
    te = face_set([r.path for r in test], te_jpegs, m)
    model = ft.train("apparent age", "train_valid", tr, {"test": te.fingerprint(), "test_faces": len(te)})
    tuned = scores(ft.loss.ages(ft.outputs(model, te)).numpy())
    result = {"protocol": "appa_real", "profile": settings.profile, "checkpoint": str(ft.path), "arch": ft.arch,
              "train_faces": len(tr), "test_faces": len(te), "batch_size": ft.batch_size, "run": str(ft.out),
              "zero_shot": zero, **tuned}
    atomic_write_text(ft.out / "result.json", json.dumps(result, indent=2, default=_json_default))
    return result


def finetune(settings: Settings, *, teacher: bool = True,
             progress: bool = True) -> dict:
    """The profile's protocol: groups (``students.loss`` groups | ordinal) or apparent age."""
    if settings.students.loss in GROUP_LOSSES:
        return finetune_groups(settings, teacher=teacher, progress=progress)
    if settings.dataset.name == "appa_real":
        return finetune_apparent_age(settings, progress=progress)
    raise ConfigError(f"{settings.profile}: fine-tuning runs the group protocol (students.loss groups | ordinal, on "
                      f"fairface or adience) or the apparent-age one (dataset appa_real); this profile has loss "
                      f"{settings.students.loss} on {settings.dataset.name}")


# --- command line (`agedistill finetune`, arguments in agedistill_core.cli) -----------------------

def legacy_overrides(protocol: str, root: str, checkpoint: str, a: argparse.Namespace) -> dict:
    """Settings overrides of the older form ``finetune PROTOCOL --root R --checkpoint C``."""
    ckpt = load_checkpoint(checkpoint)
    st = ckpt["config"].get("students", {})
    students = {"init_from": str(Path(checkpoint).resolve()), "init_checkpoint": None, "epochs": 35,
                "lr_factor": 0.1, "lr_step_epochs": 100, "momentum": float(st.get("momentum") or 0.0),
                "loss": a.loss or ("groups" if protocol != "appa_real" else st.get("loss", "paper")),
                "tag": None, "sources": []}
    return {"dataset": {"name": protocol, "root": str(Path(root).resolve()), "sources": []},
            "workdir": str(Path("data") / f"finetune_{protocol}"), "students": students}


def command(a: argparse.Namespace) -> int:
    """``agedistill finetune``: the profile (``--profile``, with the options as overrides of its
    ``students``), or the older form ``finetune PROTOCOL --root R --checkpoint C``; the result as
    JSON on stdout (and in ``--json``)."""
    if a.protocol:
        if not (a.root and a.checkpoint):
            raise ConfigError(f"finetune {a.protocol} needs --root and --checkpoint (or use --profile)")
        over = legacy_overrides(a.protocol, a.root, a.checkpoint, a)
    elif a.profile:
        over = {"students": {"loss": a.loss}} if a.loss else {}
        if a.checkpoint:  # students.init_from
            over.setdefault("students", {}).update(init_from=str(Path(a.checkpoint).resolve()),
                                                   init_checkpoint=None)
    else:
        raise ConfigError("give --profile P (a profile with students.init_from), or PROTOCOL --root --checkpoint")
    st = over.setdefault("students", {})
    st.update({k: getattr(a, k) for k in ("epochs", "folds", "seed", "threads", "batch_size", "lr_step_epochs",
                                          "lr", "lr_factor", "momentum") if getattr(a, k) is not None})
    if a.no_augment:
        st["augment"] = False
    settings = load_settings(a.profile, a.params, over)
    result = finetune(settings, teacher=not a.no_teacher)
    text = json.dumps(result, indent=2, default=_json_default)
    if a.json:
        atomic_write_text(Path(a.json), text)
    print(text)
    return 0


def _json_default(v):
    return None if isinstance(v, float) and math.isnan(v) else str(v)
