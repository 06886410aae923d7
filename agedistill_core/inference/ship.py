"""Ship a trained student: weights-only checkpoint, ONNX, and a model card with its numbers.

    agedistill ship --profile corpus \\
        --checkpoint data/corpus/students/mn3_small/best.pt --report results/report.json \\
        --out models/mn3_small_distilled

``--report`` is the JSON that ``agedistill report --json``
wrote for this checkpoint (its rows: MAE per evaluation set and age band,
FairFace groups).  Speed is measured here, in one run: the student on
onnxruntime against the profile's teacher (its whole labelling path), per face
at batch 1 and at batch 32, one thread each.  Writes ``best.pt`` (model and
config only: no optimizer, no RNG), ``model.onnx`` and ``MODEL_CARD.md``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from agedistill_core.errors import ConfigError
from agedistill_core.images import (NOISE_GATE, PHOTO_COLOUR_GATE, PHOTO_NOISE_GATE, SAME_ON_CLEAN_CROPS,
                                    VGGFACE2_MEAN_RGB)
from agedistill_core.inference.student import checkpoint_resize
from agedistill_core.settings import load_settings
from agedistill_core.shards import atomic_write_text
from agedistill_core.students.engine import total_epochs


def median_seconds(fn, reps: int) -> float:
    """Median wall time of ``reps`` calls of ``fn`` after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_speed(onnx_path: Path, input_size: int, settings, reps: int = 20) -> dict:
    """ms per face: student (onnxruntime, 1 thread) and the teacher's labelling path (1 thread)."""
    import onnxruntime as ort

    from agedistill_core.teacher.label import get_teacher

    torch.set_num_threads(1)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = {}
    rng = np.random.default_rng(0)
    teacher = get_teacher(replace(settings, teacher=replace(settings.teacher, threads=1)))
    size = max(teacher.input_sizes)  # what the label stage hands the teacher (decoding excluded on both sides)
    crops = rng.integers(0, 256, (32, size, size, 3), dtype=np.uint8)
    for batch in (1, 32):
        x = rng.standard_normal((batch, 3, input_size, input_size)).astype(np.float32)
        s, t = interleaved_seconds([lambda: sess.run(None, {name: x}),
                                    lambda: teacher.label(list(crops[:batch]))], reps)
        out[batch] = {"student_ms": s / batch * 1e3, "teacher_ms": t / batch * 1e3, "ratio": t / s}
    return out


def interleaved_seconds(fns, rounds: int, block_s: float = 0.02) -> list[float]:
    """Seconds per call of each of ``fns``, measured side by side: after a warm-up call, each is
    timed in blocks of as many calls as fill ``block_s`` (a 0.3 ms call is below the scheduler's
    noise, a block of 60 is not), the blocks of all ``fns`` alternate for ``rounds`` rounds (so a
    busy spell costs them alike), and each gets the median of its blocks' per-call times."""
    sizes = []
    for fn in fns:
        fn()
        t0 = time.perf_counter()
        fn()
        sizes.append(max(1, int(np.ceil(block_s / max(time.perf_counter() - t0, 1e-6)))))
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, n, out in zip(fns, sizes, times):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            out.append((time.perf_counter() - t0) / n)
    return [statistics.median(t) for t in times]


def _fmt(v, nd=2) -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{nd}f}"


def model_card(ckpt: dict, report: dict, speed: dict, settings, checkpoint: Path) -> str:
    cfg = ckpt["config"]
    st = cfg.get("students", {})
    data = cfg.get("data", {})
    run = checkpoint.parent.name
    rows = [r for r in report.get("by_source", []) if r.get("run") in (run, "teacher")]
    init = st.get("init_from") or st.get("init_checkpoint")
    sha1 = cfg.get("init_sha1")
    start = (f"warm-started from `{init}`" + (f" as it was then (sha1 {sha1[:12]})" if sha1 else "")
             if init else "from random weights (no ImageNet weights offline)")
    world = (f"; {cfg['world_size']} process(es), global batch {cfg.get('global_batch')}"
             if cfg.get("world_size") else "")
    groups = [r for r in report.get("rows", [])
              if (r.get("run") == run or r.get("kind") == "teacher") and r.get("group_top1") is not None]
    lines = [
        f"# {cfg['arch']} distilled age estimator ({run})",
        "",
        f"A {cfg['timm']} student ({cfg['input_size']} px input, {_head(cfg)}) trained {_teaching(st)}",
        "",
        "## Data",
        f"- Corpus: profile `{cfg['profile']}` of params.yaml, sources "
        f"{', '.join(s.id for s in settings.sources)}; {data.get('train_faces', '?')} training and "
        f"{data.get('val_faces', '?')} validation faces, labelled by the teacher "
        f"({', '.join(map(str, settings.teacher.members))}, {settings.teacher.variants} test-time variants, soft vote).",
        "- Kept out of training: the test splits of UTKFace crop_part1 and of a fixed-seed 20% of UTKFace rest.",
        f"- Framing (what `agedistill predict` does before the network): detector `{cfg.get('faces', {}).get('detector')}`, "
        f"alignment `{cfg.get('faces', {}).get('align')}`, {cfg.get('faces', {}).get('crop_size')} px crop with margin "
        f"{cfg.get('faces', {}).get('margin')}, resized to {cfg['input_size']} px ({_resize_words(cfg)}); RGB minus the VGGFace2 mean "
        f"{VGGFACE2_MEAN_RGB}.",
        "",
        "## Recipe",
        f"- Loss `{st.get('loss')}`, weighting `{st.get('weighting')}`, balance `{st.get('balance', 'none')}`; SGD lr "
        f"{cfg.get('lr')} {_schedule(st)}, momentum {st.get('momentum')}, "
        f"batch {cfg.get('batch_size')}, {_augmentation(st.get('augment', True))}, seed {cfg.get('seed')}; "
        f"{_gt_weight(st)}best validation loss kept "
        f"(epoch {int(ckpt.get('epoch', -1)) + 1} of this run); {start}.",
        f"- Epochs behind these weights: {total_epochs(ckpt)} in total "
        f"({int(cfg.get('epochs_before') or 0)} before this run's warm start, {int(ckpt.get('epoch', -1)) + 1} in it)"
        f"{world}.",
        "",
        "## Accuracy (test splits, MAE in years)",
        "",
        "`utkface`: the test split of UTKFace crop_part1; `utkface_rest`: a fixed-seed 20% of the other UTKFace "
        "faces; bands are of the real age.",
        "",
        "| model | set | faces | MAE to real age | MAE to teacher | 0-15 | 16-25 | 26-35 | 36-45 | 46-60 | 61+ |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("mae_to_ground_truth") is None:
            continue
        lines.append(f"| {r['run']} | {r['source']} | {r['test_faces']} | {_fmt(r['mae_to_ground_truth'])} | "
                     f"{_fmt(r['mae_to_teacher'])} | " + " | ".join(
                         _fmt(r.get(k)) for k in ("mae_0_15", "mae_16_25", "mae_26_35", "mae_36_45", "mae_46_60",
                                                  "mae_61_plus")) + " |")
    if groups:
        lines += ["", "FairFace (photos, 9 age groups; the predicted age mapped to its group, no fine-tuning):", "",
                  "| model | faces | top-1 | 1-off |", "|---|---|---|---|"]
        for r in groups:
            name = "teacher" if r.get("kind") == "teacher" else r["run"]
            lines.append(f"| {name} | {r['test_faces']} | {_fmt(r['group_top1'], 3)} | {_fmt(r['group_1off'], 3)} |")
    lines += ["", "## Speed (one CPU thread, per face; measured by `ship` in one run)", "",
              "| batch | student (onnxruntime) | teacher (labelling path) | student is faster by |", "|---|---|---|---|"]
    for b, v in speed.items():
        lines.append(f"| {b} | {v['student_ms']:.2f} ms | {v['teacher_ms']:.2f} ms | {v['ratio']:.1f}x |")
    lines += ["", "## Use", "", "```sh", "agedistill predict photo.jpg --format csv   # this model is the default",
              "```", "", "## Limits",
              *_teacher_limits(st),
              "- Trained from scratch on about 30k faces; a face the detector frames differently (profile views, "
              "heavy occlusion) may get a poor estimate.",
              "- Research use: the training faces (UTKFace, LFW, CelebA) are for non-commercial research.", ""]
    return "\n".join(lines)


def with_input_rule(ckpt: dict, rule: str | None, where: str) -> dict:
    """``ckpt`` to be run with input ``rule`` (``ship --resize``): only a rule that sees every clean crop as the
    training rule did (``images.SAME_ON_CLEAN_CROPS``); the training rule stays in ``students.trained_resize``."""
    trained = checkpoint_resize(ckpt["config"])
    if rule is None or rule == trained:
        return ckpt
    if rule not in SAME_ON_CLEAN_CROPS.get(trained, ()):
        allowed = ", ".join(SAME_ON_CLEAN_CROPS.get(trained, ())) or "none"
        raise ConfigError(f"{where} was trained with input resize {trained!r}; --resize {rule} would show it other "
                          f"inputs than it learned on (rules that agree with it on clean crops: {allowed}); retrain "
                          f"with students.resize: {rule} instead")
    students = {**ckpt["config"].get("students", {}), "resize": rule, "trained_resize": trained}
    return {**ckpt, "config": {**ckpt["config"], "students": students}}


def ship(profile: str, checkpoint: str, report: str, out: str, params: str | None = None,
         resize: str | None = None) -> Path:
    from agedistill_core.students.checkpoint import load_checkpoint
    from agedistill_core.inference.export import export_checkpoint

    settings = load_settings(profile, params)
    scored = json.loads(Path(report).read_text())
    splits = {r.get("split", "test") for r in scored.get("rows", [])}
    if splits - {"test"}:
        raise ConfigError(f"{report}: scored on the {', '.join(sorted(splits - {'test'}))} split; a model card "
                          f"reports the test splits: run `agedistill report` without --split")
    ckpt = with_input_rule(load_checkpoint(checkpoint), resize, checkpoint)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    slim = {k: ckpt[k] for k in ("format", "version", "model", "epoch", "best_val", "config") if k in ckpt}
    slim.update(optimizer=None, scheduler=None, rng=None, extra={"val_mae": (ckpt.get("extra") or {}).get("val_mae"),
                                                                  "total_epochs": total_epochs(ckpt)})
    from agedistill_core.shards import atomic_path
    with atomic_path(out_dir / "best.pt") as tmp:
        torch.save(slim, tmp)
    print(export_checkpoint(out_dir / "best.pt", out_dir / "model.onnx"), file=sys.stderr)
    speed = measure_speed(out_dir / "model.onnx", int(ckpt["config"]["input_size"]), settings)
    card = model_card(ckpt, scored, speed, settings, Path(checkpoint))
    atomic_write_text(out_dir / "MODEL_CARD.md", card)
    return out_dir


def _head(cfg: dict) -> str:
    n = int(cfg.get("n_outputs", 1))
    if n == 1:
        return "one output: the age in years"
    return f"{n} outputs: a softmax over ages 0..{n - 1}, the age is its expectation"


def _resize_words(cfg: dict) -> str:
    rule = checkpoint_resize(cfg)
    words = {"area": "area averaging: pixel noise averaged away",
             "area_denoise": "area averaging, after smoothing crops whose estimated pixel noise is above "
                             f"{NOISE_GATE:g} levels, and (in `predict`) photos whose face shows noise above "
                             f"{PHOTO_NOISE_GATE:g} levels in grey and {PHOTO_COLOUR_GATE:g} in colour, at the "
                             "photo's own scale (clean photos untouched)"}.get(rule, "bilinear")
    trained = (cfg.get("students") or {}).get("trained_resize")
    return words + (f"; trained with `{trained}` inputs, which are the same for every crop below that noise"
                    if trained and trained != rule else "")


def _real_age_share(st: dict) -> float:
    """``students.gt_weight`` of a checkpoint's settings (0 for those from before it)."""
    return float(st.get("gt_weight") or 0)


def _teaching(st: dict) -> str:
    """What the student learned (``label_source``, ``gt_weight`` of its ``students`` settings), in words."""
    if st.get("label_source", "teacher") != "teacher":
        return "on real ages: it learned the real ages of its training faces, no teacher (a ground-truth baseline)."
    w = _real_age_share(st)
    if not w:
        return "by knowledge distillation: it learned the teacher's ages on a corpus of faces, never the real ages."
    share = "its real age alone" if w == 1 else f"{w:.0%} its real age and {1 - w:.0%} the teacher's"
    return (f"by knowledge distillation with real ages: it learned the teacher's ages on a corpus of faces, except "
            f"that a face with a real age (those of UTKFace's training split) learned {share} (`gt_weight` {w:g}).")


def _teacher_limits(st: dict) -> list[str]:
    """The card's first limits: what the student's targets make of it."""
    if _real_age_share(st):
        return ["- Learned from one teacher (a small ONNX age network) on most faces, so it inherits much of the "
                "teacher's bias there; the real ages it learned are UTKFace's, so its UTKFace test scores are in "
                "the distribution of those labels, and FairFace is the check outside it.",
                "- Errors are largest for the elderly (see the per-band MAE above); an age is an estimate from "
                "the face, not an identity document."]
    return ["- Learned from one teacher (a small ONNX age network), so it inherits the teacher's biases; it is "
            "no better than the teacher on average.",
            "- Errors are largest for children and the elderly (see the per-band MAE above); ages are apparent "
            "ages as the teacher sees them, not identity documents."]


def _gt_weight(st: dict) -> str:
    w = _real_age_share(st)
    return f"real ages where known x{w:g} (`gt_weight`); " if w else ""


def _augmentation(augment) -> str:
    """``students.augment`` (true, false or a mapping of options) in words."""
    from agedistill_core.students.augment import AugmentConfig

    return AugmentConfig.from_setting(augment).describe()


def _schedule(st: dict) -> str:
    """The learning-rate schedule of a run's ``students`` settings, in words."""
    if st.get("lr_schedule") == "cosine":
        return f"on a cosine schedule to 0 over {st.get('epochs')} epochs"
    return f"x{st.get('lr_gamma')} every {st.get('lr_step_epochs')} epochs"


def command(a: argparse.Namespace) -> int:
    """``agedistill ship``: writes the folder, prints where."""
    print(f"shipped: {ship(a.profile, a.checkpoint, a.report, a.out, a.params, a.resize)}")
    return 0
