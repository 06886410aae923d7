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

Prints photos/s and the ratios real/bound and teacher time/student time, and CPU seconds per
photo (this process and its reaped pool workers): on a shared machine, wall-clock rates say
how much CPU the scheduler gave the run (with autogroup scheduling, all processes of one
session share one session's share, so a second worker cannot add CPU when other sessions keep
the cores busy), while CPU per photo says what the pool costs over the bare loop.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
FAIRFACE = REPO.parent / "shared" / "data" / "fairface"


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (pool workers), user + system."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def measured(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``fn(*args)``."""
    c0 = cpu_seconds()
    wall = fn(*args)
    return wall, cpu_seconds() - c0


def bare_loop(est, paths) -> float:
    """Seconds for detector + alignment + JPEG + student, one photo at a time, in this process."""
    from agedistill_core.inference.predict import frame_faces
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
    from agedistill_core.inference.predict import AgeEstimator, default_workers
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
    bare, bare_cpu = measured(bare_loop, student, paths)
    real1, real1_cpu = measured(through_predict, student, paths, 1)
    realn, realn_cpu = measured(through_predict, student, paths, n)
    teachern, teachern_cpu = measured(through_predict, teacher, paths, n)
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
    ms = lambda c: 1e3 * c / k  # noqa: E731
    print(f"CPU ms per photo: bare loop {ms(bare_cpu):.0f}, predict 1 worker {ms(real1_cpu):.0f}, "
          f"{n} workers {ms(realn_cpu):.0f} (bare/pool = {bare_cpu / realn_cpu:.2f}), teacher at {n} workers "
          f"{ms(teachern_cpu):.0f} (teacher/student = {teachern_cpu / realn_cpu:.2f}x)")
    print(f"on {n} free cores the pool would reach about {n * 1e3 / ms(realn_cpu):.1f} photos/s "
          f"(the bound: {n * 1e3 / ms(bare_cpu):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
