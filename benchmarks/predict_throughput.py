"""Throughput of `agedistill predict` against its bound, and the student's end-to-end speed-up.

    python benchmarks/predict_throughput.py [--photos 100] [--workers N]

In one run, on the same FairFace photos (../shared/data/fairface, sorted):

* bound: the same detector, alignment, JPEG round trip and student called in a bare loop in
  this process (no pool, no rows) -> photos/s on one core; the bound at N workers is that
  rate times min(N, cores);
* real: ``AgeEstimator.predict_paths`` (what ``agedistill predict`` runs) at 1 worker and at
  N workers (default: all cores), pool start-up included;
* the teacher (``--teacher``: the profile's, its labelling path) through the same
  ``predict_paths`` at N workers, so student vs teacher is end to end on the same photos.

Prints photos/s and the ratios real/bound and teacher time/student time.  The machine's load
average is printed too: on a shared machine, compare ratios from one run, not rates.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
FAIRFACE = REPO.parent / "shared" / "data" / "fairface"


def bare_loop(est, paths) -> float:
    """Seconds for detector + alignment + JPEG + student, one photo at a time, in this process."""
    from agedistill_core.evaluate.predict import frame_faces
    from agedistill_core.images import encode_jpeg, read_image

    det, aligner, cfg = est._detector, est._aligner, est.faces
    t0 = time.perf_counter()
    for p in paths:
        faces = [f for f in frame_faces(read_image(p), cfg, detector=det, aligner=aligner) if f.crop is not None]
        est.model.predict_jpegs([encode_jpeg(f.crop, cfg.jpeg_quality) for f in faces])
    return time.perf_counter() - t0


def through_predict(est, paths, workers: int) -> float:
    t0 = time.perf_counter()
    n = sum(1 for _ in est.predict_paths(paths, workers=workers, progress=False))
    assert n == len(paths)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    from agedistill_core.evaluate.predict import AgeEstimator, default_workers
    from agedistill_core.settings import load_settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=100)
    ap.add_argument("--workers", type=int, default=0, help="0: all cores")
    args = ap.parse_args(argv)
    paths = sorted(FAIRFACE.glob("*.jpg"))[:args.photos]
    if not paths:
        print(f"no photos in {FAIRFACE}", file=sys.stderr)
        return 2
    n = args.workers or default_workers()
    cores = default_workers()
    cv2.setNumThreads(1)
    load0 = os.getloadavg()
    student = AgeEstimator(threads=1)
    settings = load_settings(None, REPO / "params.yaml")
    settings = replace(settings, teacher=replace(settings.teacher, threads=1))
    teacher = AgeEstimator(teacher=True, settings=settings, faces=student.faces)  # the same framing
    bare_loop(student, paths[:3])  # warm up: models loaded, caches hot
    bare = bare_loop(student, paths)
    real1 = through_predict(student, paths, 1)
    realn = through_predict(student, paths, n)
    teachern = through_predict(teacher, paths, n)
    load1 = os.getloadavg()
    k = len(paths)
    rate = lambda s: k / s  # noqa: E731
    print(f"photos: {k} FairFace photos; workers: {n}; cores: {cores}; "
          f"load average (1 min) {load0[0]:.1f} at start, {load1[0]:.1f} at end")
    print(f"bound (bare loop, one process): {rate(bare):.2f} photos/s; at {n} workers: "
          f"{rate(bare) * min(n, cores):.2f} photos/s")
    print(f"predict, 1 worker:  {rate(real1):.2f} photos/s  real/bound = {bare / real1:.2f}")
    print(f"predict, {n} workers: {rate(realn):.2f} photos/s  real/bound = {rate(realn) / (rate(bare) * min(n, cores)):.2f}"
          f"  speed-up over 1 worker = {real1 / realn:.2f}x")
    print(f"teacher through predict, {n} workers: {rate(teachern):.2f} photos/s; "
          f"student end-to-end speed-up over the teacher = {teachern / realn:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
