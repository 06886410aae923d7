"""Teacher labelling throughput: the full path vs the bare forward passes.

full   = ``labels.label_crops`` (the code ``label_shard`` runs) on N real
         UTKFace crops stored as JPEG like the crops stage stores them:
         decode (prefetched in a thread) + resize + 8 variants + prepare +
         forward + re-binning / voting.
bound  = only the members' forward passes on pre-decoded, pre-prepared
         tensors of the same faces x variants, same batch size.
ratio  = full faces/s / bound faces/s (goal >= 0.85).

    .venv/bin/python benchmarks/teacher_throughput.py [--n 1024] [--variants 8] [--batch-size 64]

Timings on a shared machine are noisy: each figure is the best of --repeats.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from agedistill_core.faces import extract_face
from agedistill_core.images import encode_jpeg, read_image
from agedistill_core.teacher.label import label_crops
from agedistill_core.settings import TeacherSettings
from agedistill_core.teacher import build_teacher
from agedistill_core.teacher.variants import make_variants

UTK = Path(__file__).resolve().parents[1].parent / "shared/data/utkface/crop_part1"


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--variants", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--crop-size", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not UTK.is_dir():
        raise SystemExit(f"needs real faces in ../shared/data/utkface/crop_part1 ({UTK} missing)")
    files = sorted(UTK.glob("*.jpg"))[: args.n]
    jpegs = [encode_jpeg(extract_face(read_image(f), None, size=args.crop_size, margin=0.2).crop) for f in files]
    ids = [f.name for f in files]
    teacher = build_teacher(replace(TeacherSettings(), variants=args.variants, batch_size=args.batch_size))
    n = len(jpegs)
    print(f"{n} faces, {args.variants} variants, batch {args.batch_size}, {os.cpu_count()} CPUs, "
          f"members: {[m.name for m in teacher.members]}")

    # bound: forward passes only, on tensors prepared beforehand
    from agedistill_core.images import decode_image

    crops = np.stack([teacher.members[0].resize(decode_image(j)[None])[0] for j in jpegs])
    prepared = []
    for lo in range(0, n, args.batch_size):
        v = make_variants(crops[lo:lo + args.batch_size], args.variants)
        v = v.reshape((-1,) + v.shape[2:])
        prepared.append([m.prepare(v) for m in teacher.members])

    def bound():
        for xs in prepared:
            for m, x in zip(teacher.members, xs):
                m.forward(x)

    bound()  # warm-up
    t_bound = best_of(bound, args.repeats)
    results = {}
    for prefetch in (True, False):
        label_crops(teacher, jpegs[: args.batch_size * 2], ids[: args.batch_size * 2], batch_size=args.batch_size, prefetch=prefetch)
        results[prefetch] = best_of(lambda: label_crops(teacher, jpegs, ids, batch_size=args.batch_size,
                                                        prefetch=prefetch), args.repeats)
    fb = n / t_bound
    print(f"bound (forward only)      : {fb:8.1f} faces/s  ({1000 * t_bound / n / args.variants:.2f} ms per face-variant)")
    for prefetch, t in results.items():
        f = n / t
        print(f"full path, prefetch={str(prefetch):5s}: {f:8.1f} faces/s  ratio {f / fb:.3f}")


if __name__ == "__main__":
    main()
