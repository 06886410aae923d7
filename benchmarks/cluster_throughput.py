"""Labelling and LFW+C throughput through Celery with 1 worker and with 2 workers, in one run.

    .venv/bin/python benchmarks/cluster_throughput.py [--faces 1024] [--shard-size 64] [--threads 1]

For each worker count it makes its own workdir (so both do the same work from scratch): the
manifest and face crops of ``--faces`` real UTKFace faces in-process first (not timed; chips as
they are, no detector), then starts Redis and the workers (``agedistill_dag.cluster``) and
materialises through them, one run per partition and one run per worker at a time:

* labelling: the teacher soft labels of every shard (8 test-time variants, ``--threads`` per step);
* LFW+C: 4 corruptions x 2 severities of ``--lfwc-faces`` test faces.

A wave's time runs from submitting its first run to the end of its last.  Before it, untimed, the
same workers label and corrupt a small warm-up profile (one shard per worker), so every worker has
imported its libraries and loaded the teacher: the timed waves are steady state.  Prints faces/s per wave and worker count
and the ratio 2 workers / 1 worker.  Faces fall back to the demo corpus when ../shared/data is absent.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402

from agedistill_dag.cluster import DEMO_WORKERS, Cluster  # noqa: E402
from agedistill_dag.materialize import materialize_all  # noqa: E402

UTKFACE = ROOT.parent / "shared" / "data" / "utkface" / "crop_part1"
CORRUPTIONS = ["gaussian_noise", "defocus_blur", "jpeg", "pixelation"]
SEVERITIES = [1, 5]
WARM_FACES = 16


def write_params(folder: Path, args) -> Path:
    base = yaml.safe_load((ROOT / "params.yaml").read_text())["base"]
    dataset = ({"name": "utkface", "root": str(UTKFACE), "limit": args.faces} if UTKFACE.is_dir()
               else {"name": "demo", "root": str(folder / "raw")})
    profiles = {f"w{n}": {
        "workdir": str(folder / f"w{n}"), "shard_size": args.shard_size, "dataset": dataset,
        "faces": {"detector": "none", "align": "none", "crop_size": 112},
        "teacher": {"threads": args.threads},
        "corruptions": {"names": CORRUPTIONS, "severities": SEVERITIES, "max_faces": args.lfwc_faces}}
        for n in (1, 2)}
    for n in (1, 2):   # warm-up: one shard of WARM_FACES per worker
        warm = {**dataset, "limit": n * WARM_FACES} if "limit" in dataset else dataset
        profiles[f"warm{n}"] = {**profiles[f"w{n}"], "workdir": str(folder / f"warm{n}"), "dataset": warm,
                                "shard_size": WARM_FACES if "limit" in dataset else args.shard_size,
                                "corruptions": {"names": CORRUPTIONS, "severities": SEVERITIES,
                                                "max_faces": WARM_FACES}}
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump({"base": base, "profiles": profiles}))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=1024)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--lfwc-faces", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1, help="teacher threads per step (0 = all cores)")
    args = ap.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="agedistill-cluster-bench-"))
    params = str(write_params(folder, args))
    home = folder / "dagster_home"
    home.mkdir()
    rows = {}
    print(f"{os.cpu_count()} CPU cores; work in {folder}", flush=True)
    for n in (1, 2):
        profile = f"w{n}"
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for prof in (f"warm{n}", profile):
                materialize_all(prof, params, instance=instance, jobs=1, executor="in_process",
                                assets=["face_manifest", "face_crops"])
        with Cluster(home, workers=DEMO_WORKERS[:n], logdir=folder / f"logs{n}") as cluster:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                materialize_all(f"warm{n}", params, instance=instance, jobs=n, executor="celery",   # untimed
                                run_config=cluster.run_config(),
                                assets=["teacher_soft_labels", "vmage_table", "lfwc_images"])
                done = materialize_all(profile, params, instance=instance, jobs=n, executor="celery",
                                       run_config=cluster.run_config(),
                                       assets=["teacher_soft_labels", "vmage_table", "lfwc_images"])
                faces = {e.asset_materialization.asset_key.path[-1]: 0 for e in done.materializations()}
                for e in done.materializations():
                    m = e.asset_materialization
                    faces[m.asset_key.path[-1]] += m.metadata["faces"].value if "faces" in m.metadata else 0
        waves = dict(done.wave_seconds)
        label_s = waves[f"{profile}/teacher_soft_labels"]
        lfwc_s = waves[f"{profile}/lfwc_images"]
        rows[n] = {"labels": (faces["teacher_soft_labels"], label_s),
                   "lfwc": (faces["lfwc_images"], lfwc_s)}
        print(f"{n} worker(s): labelled {faces['teacher_soft_labels']} faces in {label_s:.1f} s; "
              f"LFW+C {faces['lfwc_images']} images in {lfwc_s:.1f} s", flush=True)

    print("\n| stage | faces | 1 worker (faces/s) | 2 workers (faces/s) | ratio 2/1 |\n|---|---|---|---|---|")
    for stage, title in (("labels", "labelling (8 variants)"), ("lfwc", "LFW+C build")):
        (f1, s1), (f2, s2) = rows[1][stage], rows[2][stage]
        print(f"| {title} | {f1} | {f1 / s1:.1f} | {f2 / s2:.1f} | {(f2 / s2) / (f1 / s1):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
