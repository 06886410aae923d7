"""Training throughput in steady state: the real path, its random-tensor bound, and bare timm.

    .venv/bin/python benchmarks/train_throughput.py [--arch mn3_small] [--faces 2048]
        [--warmup 6] [--steps 8] [--rounds 3] [--threads 0] [--quick]

Three things, measured side by side in one run, each after warm-up steps (the
first steps on a new shape are slow: they are never timed):

* ``real``: the project's training step (``students.train.train_step``: the
  student, its loss, SGD) fed by the project's input path: real UTKFace faces
  stored as the pipeline stores them (160 px JPEG crops), decoded once to the
  input size (``FaceDataset``; that one-off cost is printed apart), SPEC
  augmentation per face per epoch, batches built in a prefetch thread
  (``iter_batches``), channels-last as in training;
* ``bound``: the same step, same model, on random tensors of the same shape;
* ``bare timm``: a plain timm loop (``timm.create_model``, MSE, SGD) on random
  tensors, over a grid of threads x memory format x batch; the best is reported.

``real`` and ``bound`` alternate for ``--rounds`` rounds (the machine is shared:
interleaving cancels drift); medians are reported.  Goals: real / bound >= 0.9,
bound / best bare >= 0.8.

``--teacher-in-loop`` adds consistent teaching (``students.teacher_in_loop``,
``students/consistent.py``): the same real step fed by ``TeacherInLoop``, whose batch
thread builds each batch's augmented (and mixed, ``--mixup``) views and has the profile's
teacher (1 variant, 1 thread) label them beside the step; interleaved with the offline-label
step, it prints both img/s and their ratio, with the machine's load average.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agedistill_core.faces import extract_face  # noqa: E402
from agedistill_core.images import encode_jpeg, read_image  # noqa: E402
from agedistill_core.students.augment import AugmentConfig  # noqa: E402
from agedistill_core.students.data import FaceDataset, iter_batches, quiet_opencv_threads  # noqa: E402
from agedistill_core.labeltable import FaceSet  # noqa: E402
from agedistill_core.students.losses import make_loss  # noqa: E402
from agedistill_core.students.train import train_step  # noqa: E402
from agedistill_core.students.zoo import STUDENTS, create_student  # noqa: E402

UTKFACE = REPO.parent / "shared" / "data" / "utkface" / "crop_part1"


def real_faces(n: int, size: int = 160) -> FaceSet:
    if UTKFACE.is_dir():
        files = sorted(UTKFACE.glob("*.jpg"))[:n]
        rgbs = [read_image(f) for f in files]
        source = f"{len(files)} UTKFace faces"
    else:
        from skimage import data
        rgbs = [data.astronaut()[30:230, 130:330]] * n
        source = f"astronaut crop x{n} (../shared/data/utkface/crop_part1 missing)"
    jpegs = [encode_jpeg(extract_face(r, None, size=size, margin=0.2).crop) for r in rgbs]
    k = len(jpegs)
    ages = np.linspace(1, 90, k).astype(np.float32)
    print(f"input: {source}, stored as {size} px JPEG crops")
    return FaceSet([f"f{i}" for i in range(k)], jpegs, ages, None, np.zeros(k, np.float32), ages, ages)


def timed(step, batch: int, warmup: int, steps: int) -> float:
    """img/s of ``step()`` over ``steps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t0)


def project_model(arch: str, channels_last: bool):
    spec = STUDENTS.get(arch)
    loss_fn = make_loss("paper")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_student(arch, loss_fn.n_outputs)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr * 0.01, momentum=0.9)
    return model, loss_fn, opt


def bare_timm(arch: str, threads: int, channels_last: bool, batch: int, warmup: int, steps: int) -> float:
    import timm

    spec = STUDENTS.get(arch)
    torch.set_num_threads(threads)
    model = timm.create_model(spec.timm_name, pretrained=False, num_classes=1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    x = torch.randn(batch, 3, spec.input_size, spec.input_size).contiguous(memory_format=fmt)
    y = torch.rand(batch, 1) * 80

    def step():
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed(step, batch, warmup, steps)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="mn3_small")
    p.add_argument("--faces", type=int, default=2048)
    p.add_argument("--batch", type=int, default=None, help="default: the architecture's SPEC batch")
    p.add_argument("--warmup", type=int, default=6)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="threads for real/bound (0 = all cores)")
    p.add_argument("--quick", action="store_true", help="a smaller bare-timm grid")
    p.add_argument("--teacher-in-loop", action="store_true",
                   help="also measure training with the teacher labelling each view beside the step")
    p.add_argument("--mixup", type=float, default=0.4, help="mixup Beta(a, a) with --teacher-in-loop")
    p.add_argument("--profile", default="demo", help="whose teacher labels the views (--teacher-in-loop)")
    a = p.parse_args(argv)
    spec = STUDENTS.get(a.arch)
    batch = a.batch or spec.batch_size
    threads = a.threads or torch.get_num_threads()
    size = spec.input_size

    # -- bare timm grid (random tensors): the best this machine does ------------------------------
    grid = list(itertools.product(sorted({1, threads}), (False, True), sorted({64, batch})))
    if a.quick:
        grid = [(threads, True, batch)]
    bare = {}
    for t, cl, b in grid:
        bare[(t, cl, b)] = bare_timm(a.arch, t, cl, b, a.warmup, a.steps)
        print(f"bare timm {spec.timm_name}@{size}: {t} thread(s), {'channels_last' if cl else 'contiguous'}, "
              f"batch {b}: {bare[(t, cl, b)]:.0f} img/s")
    best_cfg = max(bare, key=bare.get)

    # -- the project's step: real faces vs random tensors, interleaved ---------------------------------
    torch.set_num_threads(threads)
    quiet_opencv_threads()  # as train_student does
    faces = real_faces(a.faces)
    t0 = time.perf_counter()
    ds = FaceDataset(faces, size, 0.2, AugmentConfig(enabled=True), seed=0, threads=threads)
    decode_s = time.perf_counter() - t0
    print(f"decode once to {size} px: {len(faces)} faces in {decode_s:.2f} s "
          f"({len(faces) / decode_s:.0f} faces/s, one-off per run)")
    model, loss_fn, opt = project_model(a.arch, channels_last=True)
    x_rand = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y_rand = torch.rand(batch) * 80

    def bound_step():
        train_step(model, loss_fn, opt, x_rand, y_rand)

    epoch = [0]
    stream = [None]

    def next_batch():
        while True:
            ds.set_epoch(epoch[0])
            idx = np.random.default_rng(epoch[0]).permutation(len(ds))
            idx = idx[: len(idx) - len(idx) % batch]
            yield from iter_batches(ds, idx, batch)
            epoch[0] += 1

    def real_step():
        x, age, _, _ = next(stream[0])
        train_step(model, loss_fn, opt, x, age)

    stream[0] = next_batch()
    # data only (no model): what the input path costs on its own
    data_only = timed(lambda: next(stream[0]), batch, 2, a.steps)
    reals, bounds = [], []
    for r in range(a.rounds):
        bounds.append(timed(bound_step, batch, a.warmup if r == 0 else 2, a.steps))
        reals.append(timed(real_step, batch, a.warmup if r == 0 else 2, a.steps))
        print(f"round {r + 1}: real {reals[-1]:.0f} img/s, bound {bounds[-1]:.0f} img/s")
    real, bound = statistics.median(reals), statistics.median(bounds)
    til = teacher_in_loop(a, ds, model, loss_fn, opt, batch) if a.teacher_in_loop else None
    best = bare[best_cfg]
    t, cl, b = best_cfg
    print()
    print(f"| {a.arch}@{size}, {threads} thread(s), batch {batch} | img/s | ratio |")
    print("|---|---|---|")
    print(f"| input path alone (augment + batch, no model) | {data_only:.0f} | |")
    print(f"| real (decoded faces, SPEC augmentation, train step) | {real:.0f} | real / bound = {real / bound:.2f} |")
    print(f"| bound (same step, random tensors) | {bound:.0f} | bound / best bare = {bound / best:.2f} |")
    print(f"| best bare timm ({t} thread(s), {'channels_last' if cl else 'contiguous'}, batch {b}) | {best:.0f} | "
          f"real / best bare = {real / best:.2f} |")
    if til is not None:
        offline, online, load = til
        print()
        print(f"| {a.arch}@{size}, {threads} torch thread(s) + teacher 1 thread, batch {batch}, "
              f"load average {load[0]:.2f} / {load[1]:.2f} before / after | img/s | ratio |")
        print("|---|---|---|")
        print(f"| offline labels (the label table's targets) | {offline:.0f} | |")
        print(f"| teacher in the loop (1 variant, mixup {a.mixup}) | {online:.0f} | "
              f"in-loop / offline = {online / offline:.2f} |")
    return 0


def teacher_in_loop(a, ds, model, loss_fn, opt, batch: int):
    """Median img/s of the real step on offline targets and with the teacher in the loop, interleaved."""
    import os

    from agedistill_core.settings import load_settings
    from agedistill_core.students.consistent import TeacherInLoop

    load_before = os.getloadavg()
    til = TeacherInLoop(ds, load_settings(a.profile), mixup=a.mixup, seed=0, threads=1)

    def stream(source):
        epoch = 0
        while True:
            source.set_epoch(epoch)
            idx = np.random.default_rng(epoch).permutation(len(source))
            idx = idx[: len(idx) - len(idx) % batch]
            yield from iter_batches(source, idx, batch)
            epoch += 1

    streams = {"offline": stream(ds), "online": stream(til)}

    def step(kind):
        x, age, _, _ = next(streams[kind])
        train_step(model, loss_fn, opt, x, age)

    offline, online = [], []
    for r in range(a.rounds):
        offline.append(timed(lambda: step("offline"), batch, a.warmup if r == 0 else 2, a.steps))
        online.append(timed(lambda: step("online"), batch, a.warmup if r == 0 else 2, a.steps))
        print(f"teacher round {r + 1}: offline {offline[-1]:.0f} img/s, teacher in the loop {online[-1]:.0f} img/s")
    return statistics.median(offline), statistics.median(online), (load_before[0], os.getloadavg()[0])


if __name__ == "__main__":
    sys.exit(main())
