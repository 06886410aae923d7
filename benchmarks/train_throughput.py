"""Training throughput: the real input pipeline vs the same model fed random tensors.

    .venv/bin/python benchmarks/train_throughput.py [--arch mn3_small] [--faces 512] [--batch 64]
        [--steps 6] [--rounds 3] [--workers 0] [--threads 0] [--cache]

Real UTKFace faces (../shared/data/utkface/crop_part1; falls back to crops of
scikit-image's astronaut when absent) are stored as the pipeline stores them
(160 px JPEG crops), then timed three ways:

* ``data only``: FaceDataset (JPEG decode + SPEC 4 augmentation) through a
  DataLoader, no model;
* ``pipeline``: the training step (forward, backward, SGD) fed by that loader;
* ``bound``: the same training step on random tensors of the same shape.

Pipeline and bound alternate for ``--rounds`` rounds (the machine is shared:
interleaving cancels drift); medians are reported.  ratio = pipeline / bound
(goal >= 0.9).  ``--cache`` keeps decoded crops as uint8 arrays (decode once).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agedistill_core.images import encode_jpeg, read_image  # noqa: E402
from agedistill_core.faces import extract_face  # noqa: E402
from agedistill_core.students.augment import AugmentConfig  # noqa: E402
from agedistill_core.students.data import FaceDataset, FaceSet, collate  # noqa: E402
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="mn3_small")
    p.add_argument("--faces", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=6, help="training steps per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--cache", action="store_true", help="cache decoded crops as uint8 arrays")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    spec = STUDENTS.get(a.arch)
    faces = real_faces(a.faces)
    ds = FaceDataset(faces, spec.input_size, 0.2, AugmentConfig(enabled=True), seed=0, cache_decoded=a.cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_student(a.arch, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    model.train()

    def step(x, y):
        loss = (model(x).squeeze(1) - y).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def loader(epoch):
        ds.set_epoch(epoch)
        return torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.workers,
                                           collate_fn=collate, drop_last=True,
                                           persistent_workers=False)

    def run_pipeline(epoch) -> float:
        n, t0, it = 0, time.perf_counter(), iter(loader(epoch))
        for _ in range(a.steps):
            try:
                x, y, _, _ = next(it)
            except StopIteration:
                it = iter(loader(epoch + 1000))
                x, y, _, _ = next(it)
            step(x, y)
            n += len(y)
        return n / (time.perf_counter() - t0)

    x_rand = torch.randn(a.batch, 3, spec.input_size, spec.input_size)
    y_rand = torch.rand(a.batch) * 90

    def run_bound() -> float:
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step(x_rand, y_rand)
        return a.steps * a.batch / (time.perf_counter() - t0)

    def run_data(epoch) -> float:
        n, t0 = 0, time.perf_counter()
        for x, *_ in loader(epoch):
            n += len(x)
        return n / (time.perf_counter() - t0)

    step(x_rand, y_rand)  # warm-up
    if a.cache:
        run_data(10_000)  # fill the cache once (the first epoch of a real run)
    data_rate = statistics.median(run_data(r) for r in range(2))
    pipe, bound = [], []
    for r in range(a.rounds):
        pipe.append(run_pipeline(r))
        bound.append(run_bound())
    pm, bm = statistics.median(pipe), statistics.median(bound)
    print(f"\n{a.arch} @ {spec.input_size}px, batch {a.batch}, {a.steps} steps x {a.rounds} rounds, "
          f"torch threads {torch.get_num_threads()}, workers {a.workers}, cache {a.cache}\n")
    print("| what | images/s |\n|---|---|")
    print(f"| data only (decode + augment + collate) | {data_rate:.0f} |")
    print(f"| pipeline (real faces, augmentation on) | {pm:.1f} |")
    print(f"| bound (random tensors, same shape) | {bm:.1f} |")
    print(f"\nratio pipeline / bound = {pm / bm:.3f} (goal >= 0.9); rounds: pipeline "
          f"{', '.join(f'{v:.1f}' for v in pipe)}; bound {', '.join(f'{v:.1f}' for v in bound)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
