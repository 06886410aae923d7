"""Stage 4: train one student on the label table (SPEC section 4 protocol).

SGD (momentum is a parameter), the architecture's learning rate multiplied by
``lr_gamma`` every ``lr_step_epochs`` epochs, SPEC augmentation, the
best-validation-loss checkpoint kept as ``best.pt``, and ``last.pt`` written
atomically after every epoch so a killed run resumes where it stopped (model,
optimizer, scheduler, epoch and RNG states): resuming gives the same weights
as an uninterrupted run (tests/students/test_train_protocol.py).  The loop is the
one training engine's (``students.engine.fit``), which fine-tuning uses too.

``students.init_from`` (older name ``init_checkpoint``) warm-starts from another
student's weights (a new run with its own schedule); the checkpoints record the total
epochs behind their weights.  ``students.teacher_in_loop`` replaces the label table's
targets by the teacher's labels of the very augmented (and, with ``students.mixup``,
mixed) view the student sees, computed beside the step in the batch thread.

Runs under ``torchrun --nproc_per_node K`` too (gloo on CPU, nccl on GPUs):
each process trains on its equal-length shard of every epoch, DDP averages
gradients, and rank 0 alone writes checkpoints and logs::

    torchrun --standalone --nproc_per_node 2 -m agedistill_core.cli --profile P train

A resume with another number of processes or another global batch is refused.
Metrics go to ``metrics.csv`` / ``metrics.png`` and, when ``torch.utils.tensorboard``
can be imported (the ``tensorboard`` package), to ``tb/`` as TensorBoard events.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import torch

from agedistill_core.errors import CheckpointError, ConfigError
from agedistill_core.settings import Settings, StudentSettings
from agedistill_core.settings.sections import HASHED_WHEN_SET
from agedistill_core.shards import file_sha1
from agedistill_core.students.augment import AugmentConfig
from agedistill_core.students.checkpoint import load_checkpoint
from agedistill_core.students.data import FaceDataset, quiet_opencv_threads
from agedistill_core.students.distributed import init_distributed
from agedistill_core.students import engine
from agedistill_core.students.engine import (METRICS, Run, evaluate, fit, plot_metrics,  # noqa: F401
                                             same_recipe, total_epochs, train_step, write_metrics)
from agedistill_core.students.losses import (GROUP_LOSSES, agreement_weights, band_weights, blend_ground_truth,
                                             make_loss)
from agedistill_core.students.zoo import STUDENTS, create_student
from agedistill_core.labeltable import FaceSet, load_splits

LOG = logging.getLogger("agedistill.students.train")

# What a run's folder name hashes: the recipe fields that change the weights (beside the
# readable parts) and the profile's data.  Two recipes that differ in any never share a folder.
RECIPE_KEYS = ("epochs", "lr", "lr_factor", "lr_step_epochs", "lr_gamma", "lr_schedule", "batch_size", "momentum",
               "weight_decay", "input_size", "augment", "loss", "teacher_in_loop", "mixup", "folds")


def student_defaults() -> dict:
    """The students section's defaults (resume compares older checkpoints with them)."""
    return _jsonable(asdict(StudentSettings()))


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def recipe_hash(settings: Settings) -> str:
    """6 hex digits of the recipe fields and the data behind a run (``RECIPE_KEYS``, the warm
    start, the profile's dataset, split and faces)."""
    s = settings.students
    payload = {"students": {k: getattr(s, k) for k in RECIPE_KEYS}, "init": s.init_path,
               # the warm start's content: a new model shipped to the same path starts a new run folder
               "init_sha1": file_sha1(init_path(settings)),
               "data": {k: asdict(getattr(settings, k)) for k in ("dataset", "split", "faces")}}
    # fields added after runs existed, only when set: the runs from before a field keep their folders
    defaults = StudentSettings()
    for key in ("max_age", *HASHED_WHEN_SET["students"]):
        if getattr(s, key) != getattr(defaults, key):
            payload[key] = getattr(s, key)
    text = json.dumps(_jsonable(payload), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:6]


def _readable(settings: Settings, arch: str) -> list[str]:
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
    if s.gt_weight:
        parts.append(f"gt{s.gt_weight:g}")
    if s.resize != "bilinear":
        parts.append(s.resize)
    if s.sources:
        parts.append("+".join(s.sources))
    if s.max_train_faces is not None:
        parts.append(f"n{s.max_train_faces}")
    if s.max_age is not None:
        parts.append(f"le{s.max_age:g}")
    if s.init_path:
        parts.append("ft")
    if s.seed is not None:
        parts.append(f"s{s.seed}")
    if s.tag:
        parts.append(str(s.tag))
    return parts


def run_name(settings: Settings, arch: str) -> str:
    """Folder name of a training run: the architecture and what differs from the default recipe
    (readable), then a short hash of the recipe and the data (``recipe_hash``), so that two
    different recipes never share a folder, e.g. ``mn3_small-s1-3f9a0c``."""
    return "-".join(_readable(settings, arch) + [recipe_hash(settings)])


def legacy_run_name(settings: Settings, arch: str) -> str:
    """The folder name before the recipe hash (runs started by older code resume from there)."""
    return "-".join(_readable(settings, arch))


def run_dir(settings: Settings, arch: str) -> Path:
    return settings.students_dir / run_name(settings, arch)


def _subsample(faces: FaceSet, limit: int | None, seed: int) -> FaceSet:
    if limit is None or len(faces) <= limit:
        return faces
    idx = np.sort(np.random.default_rng([seed, 7]).permutation(len(faces))[:limit])
    return faces.subset(idx)


def _age_filter(faces: FaceSet, max_age: float | None) -> FaceSet:
    """Only the faces whose target age is known and <= ``max_age`` (None: all of them)."""
    if max_age is None:
        return faces
    keep = np.flatnonzero(np.isfinite(faces.target_age) & (faces.target_age <= max_age))
    return faces.subset(keep)


def _with_ground_truth(faces: FaceSet, weight: float) -> FaceSet:
    """``students.gt_weight``: the faces' targets with their real ages mixed in (``blend_ground_truth``)."""
    if not weight or faces.target_probs is None:
        return faces
    age, probs = blend_ground_truth(faces.target_age, faces.target_probs, faces.gt_age, weight)
    return replace(faces, target_age=age, target_probs=probs)


def base_lr(settings: Settings, arch: str) -> float:
    """``students.lr`` (or the architecture's SPEC rate) x ``students.lr_factor``."""
    cfg = settings.students
    return float(cfg.lr if cfg.lr is not None else STUDENTS.get(arch).lr) * float(cfg.lr_factor)


def make_optimizer(model: torch.nn.Module, settings: Settings, arch: str):
    """SGD at ``base_lr`` and the SPEC step schedule: the rate is multiplied by ``lr_gamma``
    every ``lr_step_epochs`` epochs (``scheduler.step()`` once per epoch), or cosine to 0."""
    cfg = settings.students
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr(settings, arch), momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    if cfg.lr_schedule == "cosine":  # per epoch, from lr down to 0 at the last epoch
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)
    return optimizer, scheduler


def init_path(settings: Settings) -> Path | None:
    """The warm-start checkpoint (``students.init_from`` or ``init_checkpoint``), relative to params.yaml."""
    cfg = settings.students
    if cfg.init_from and cfg.init_checkpoint and cfg.init_from != cfg.init_checkpoint:
        raise ConfigError(f"{settings.profile}: students.init_from ({cfg.init_from}) and its older name "
                          f"students.init_checkpoint ({cfg.init_checkpoint}) disagree; keep init_from only")
    if not cfg.init_path:
        return None
    path = Path(cfg.init_path).expanduser()
    return path if path.is_absolute() else settings.params_path.parent / path


def train_student(settings: Settings, arch: str, *, resume: bool = True,
                  progress: bool = True) -> dict:
    """Train ``arch`` on the label table; returns a summary with the best checkpoint path.

    Messages go to the ``agedistill.students`` loggers (and to ``log`` when given)."""
    spec = STUDENTS.get(arch)
    cfg = settings.students
    if cfg.loss in GROUP_LOSSES:
        raise ConfigError(f"{settings.profile}: students.loss {cfg.loss} is a group head: it needs age groups, "
                          f"which the label table has not; run it with "
                          f"`agedistill finetune --profile {settings.profile}`")
    dist_info = init_distributed()
    out = run_dir(settings, arch)
    if cfg.threads > 0:  # on a busy machine 1 thread can beat oversubscribed spinning ones
        torch.set_num_threads(cfg.threads)
    seed = cfg.seed if cfg.seed is not None else settings.seed
    torch.manual_seed(seed)
    quiet_opencv_threads()

    splits = load_splits(settings, ("train", "val"), cfg.label_source, cfg.sources)  # crop shards read once
    train = _subsample(_age_filter(splits["train"], cfg.max_age), cfg.max_train_faces,
                       settings.seed)  # the profile's seed: the same faces whatever the training seed
    val = _age_filter(splits["val"], cfg.max_age)
    train, val = (_with_ground_truth(f, cfg.gt_weight) for f in (train, val))
    if not len(train) or not len(val):
        raise ConfigError(f"{settings.profile}: no {'training' if not len(train) else 'validation'} face has a "
                          f"target age <= students.max_age ({cfg.max_age}); raise max_age or check students.sources")
    loss_fn = make_loss(cfg.loss)
    loss_fn.uses_probs = train.target_probs is not None or cfg.teacher_in_loop
    warm = init_path(settings)
    model = create_student(arch, loss_fn.n_outputs, cfg.pretrained_dir, warm_start=warm is not None)
    init_head(model, train)
    epochs_before = 0
    if warm is not None:
        ckpt = load_checkpoint(warm)
        # another head (e.g. the 13-way children head from a 1-output student): the body only
        same_head = int(ckpt["config"].get("n_outputs", 1)) == loss_fn.n_outputs
        epochs_before = init_from_checkpoint(model, str(warm), arch, head=same_head, ckpt=ckpt)
        if not same_head:
            LOG.info("%s: %s has a %s-output head, this loss %d: its body only, a new head",
                     arch, warm, ckpt["config"].get("n_outputs", 1), loss_fn.n_outputs)
        LOG.info("%s: warm start from %s (%d epochs behind it)", arch, warm, epochs_before)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(dist_info.device, memory_format=memory_format)
    if dist_info.distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    batch_size = cfg.batch_size or spec.batch_size
    optimizer, scheduler = make_optimizer(model, settings, arch)
    lr = optimizer.param_groups[0]["lr"]
    aug = AugmentConfig.from_setting(cfg.augment)
    threads = torch.get_num_threads()
    input_size = cfg.input_size or spec.input_size
    train_ds = FaceDataset(train, input_size, settings.faces.margin, aug, seed,
                           threads=threads, channels_last=cfg.channels_last, resize=cfg.resize)
    val_ds = FaceDataset(val, input_size, settings.faces.margin, AugmentConfig(enabled=False),
                         threads=threads, channels_last=cfg.channels_last, resize=cfg.resize)
    if cfg.teacher_in_loop:
        from agedistill_core.students.consistent import TeacherInLoop
        train_ds = TeacherInLoop(train_ds, settings, mixup=float(cfg.mixup), seed=seed)

    config = {"arch": arch, "timm": spec.timm_name, "input_size": input_size, "lr": lr,
              "batch_size": batch_size, "n_outputs": loss_fn.n_outputs, "students": asdict(cfg),
              "profile": settings.profile, "seed": seed,
              "data": {"train": train.fingerprint(), "val": val.fingerprint(),
                       "train_faces": len(train), "val_faces": len(val)},
              "faces": asdict(settings.faces)}
    if warm is not None:  # which weights it started from, whatever later lands at that path (the card says so)
        config["init_sha1"] = file_sha1(warm)
    legacy = settings.students_dir / legacy_run_name(settings, arch) / "last.pt"
    run = Run(name=arch, out=out, config=config, epochs=cfg.epochs, batch_size=batch_size, seed=seed,
              dist=dist_info, workers=cfg.workers, eval_batch_size=256, lr_step_epochs=cfg.lr_step_epochs,
              patience=cfg.patience, epochs_before=epochs_before, weights=face_weights(cfg, train),
              resume_from=legacy if legacy.is_file() else None)
    summary = fit(model, loss_fn, optimizer, scheduler, train_ds, val_ds, run, resume=resume,
                  defaults=student_defaults(), progress=progress)
    return {"arch": arch, "run": run_name(settings, arch), **summary,
            "train_faces": len(train), "val_faces": len(val)}


def converged(history: list[dict], cfg) -> bool:
    """``engine.converged`` with the students settings' ``patience`` and ``lr_step_epochs``."""
    return engine.converged(history, cfg.patience, cfg.lr_step_epochs)


def init_from_checkpoint(model: torch.nn.Module, path: str, arch: str, *, head: bool = True,
                         ckpt: dict | None = None) -> int:
    """Start from another run's weights (warm start, or fine-tuning); the epochs behind them.

    ``head`` False keeps the model's own (new) classifier: fine-tuning a group head loads
    only the body.  ``ckpt``: the checkpoint at ``path``, already loaded."""
    ckpt = ckpt if ckpt is not None else load_checkpoint(path)
    saved = ckpt["config"].get("arch")
    if saved != arch:
        raise CheckpointError(f"students.init_from {path} holds a {saved} student, not {arch}; "
                              f"point it at a {arch} checkpoint")
    state = ckpt["model"]
    if not head:
        mine = model.state_dict()
        classifier = {f"{model.pretrained_cfg.get('classifier', 'classifier')}.{k}"
                      for k in model.get_classifier().state_dict()}
        state = {k: (mine[k] if k in classifier else v) for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"students.init_from {path} does not fit this {arch} head "
                              f"({str(exc).splitlines()[0][:160]}); use a checkpoint trained with the same loss") from None
    return total_epochs(ckpt)


@torch.no_grad()
def init_head(model: torch.nn.Module, faces: FaceSet) -> None:
    """Start the head at the training set's age prior.

    A one-output head gets zero weights and the mean target age as bias (a
    capped-ReLU output that starts below 0 would never get a gradient); a
    101-way head gets the log of the mean target distribution; another head
    over ages (the 13-way children head) the log of its targets' histogram.
    """
    head = model.get_classifier()
    if not isinstance(head, torch.nn.Linear):
        return
    if head.out_features == 1:
        head.weight.mul_(0.01)
        head.bias.fill_(float(np.nanmean(faces.target_age)))
    else:
        n = head.out_features
        if n == 101 and faces.target_probs is not None:
            prior = faces.target_probs.mean(0)
        else:
            ages = faces.target_age[np.isfinite(faces.target_age)]
            prior = np.bincount(np.clip(np.round(ages), 0, n - 1).astype(int), minlength=n)
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
