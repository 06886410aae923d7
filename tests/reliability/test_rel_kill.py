"""SIGKILL in the middle of `crops`, `label` and `lfwc` (the real CLI), then a rerun:
the outputs hold the same tables as an uninterrupted run (no duplicates, no gaps).

The kill is exact: a sitecustomize on the subprocess' PYTHONPATH sends SIGKILL
to the process itself just before (a complete temp file exists, not yet renamed)
or just after (the next shard not started) a chosen output is renamed into place.
"""
from __future__ import annotations

import json
import shutil
import signal

import pyarrow.compute as pc
import pytest

from agedistill_core.shards import list_shards, read_shards
from agedistill_core.students.train import run_name
from rel_helpers import assert_same_tables, load, make_params, run_cli

SHARDS = [f"shard-{k:05d}" for k in range(4)]

# stage, what the killed run must be doing, which earlier outputs the test starts from
CASES = [
    ("crops", "after:crops/shard-00001.parquet", ["manifest.parquet"]),
    ("crops", "before:crops/shard-00002.parquet", ["manifest.parquet"]),
    ("label", "after:labels/shard-00001.parquet", ["manifest.parquet", "crops"]),
    ("label", "before:labels/shard-00002.parquet", ["manifest.parquet", "crops"]),
]


def _start_from(reference, work, inputs):
    work.mkdir(parents=True)
    for name in inputs:
        src = reference / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)


@pytest.mark.parametrize("stage,kill,inputs", CASES, ids=[f"{c[0]}-{c[1].split(':')[0]}" for c in CASES])
def test_killed_shard_stage_reruns_to_the_same_tables(tmp_path, faces_dir, reference, fault_dir, stage, kill, inputs):
    work = tmp_path / "work"
    params = make_params(tmp_path, work, faces_dir)
    _start_from(reference, work, inputs)
    out = "crops" if stage == "crops" else "labels"

    r = run_cli(params, stage, kill=kill, fault=fault_dir)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-2000:])
    done = list_shards(work / out)
    when, target = kill.split(":")
    killed_at = target.split("/")[-1].removesuffix(".parquet")
    expect_done = SHARDS[:SHARDS.index(killed_at) + (1 if when == "after" else 0)]
    assert done == expect_done  # the killed run stopped where we said, nothing half-written is visible

    r = run_cli(params, stage)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("(up to date)") == len(expect_done)  # finished shards are not redone
    assert_same_tables(work / out, reference / out)
    ids = read_shards(work / out, ["image_id"])["image_id"]
    assert len(pc.unique(ids)) == len(ids)  # no duplicates


@pytest.mark.parametrize("kill", ["after:lfwc/jpeg-s1/part-00000.parquet",
                                  "before:lfwc/defocus_blur-s2/_COMPLETE.json"],
                         ids=["between-parts", "before-completion-record"])
def test_killed_lfwc_reruns_to_the_same_partitions(tmp_path, faces_dir, reference, fault_dir, kill):
    work = tmp_path / "work"
    params = make_params(tmp_path, work, faces_dir)
    _start_from(reference, work, ["manifest.parquet", "crops", "labels", "vmage.parquet"])

    assert len(list((reference / "lfwc" / "jpeg-s1").glob("part-*.parquet"))) >= 2  # a kill between parts exists
    r = run_cli(params, "lfwc", kill=kill, fault=fault_dir)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-2000:])
    partition = work / kill.split(":")[1].rsplit("/", 1)[0]
    assert not (partition / "_COMPLETE.json").exists()

    r = run_cli(params, "lfwc")
    assert r.returncode == 0, r.stderr[-2000:]
    assert_same_tables(work / "lfwc", reference / "lfwc")
    for marker in sorted((reference / "lfwc").glob("*/_COMPLETE.json")):
        got = json.loads((work / "lfwc" / marker.parent.name / "_COMPLETE.json").read_text())
        assert got == json.loads(marker.read_text())
    parts = [p.stem for p in sorted(partition.glob("part-*.parquet"))]
    rows = read_shards(partition, ["image_id"], shards=parts).num_rows
    assert rows == json.loads((partition / "_COMPLETE.json").read_text())["faces"]


def test_killed_training_resumes_to_the_uninterrupted_weights(tmp_path, faces_dir, reference, fault_dir):
    """SIGKILL `train` right after epoch 1 of 2 wrote last.pt; the rerun resumes and ends with the
    weights of an uninterrupted 2-epoch run, bit for bit."""
    import torch

    inputs = ["manifest.parquet", "crops", "labels", "vmage.parquet"]
    runs = {}
    for name, kill in (("killed", "after:students/{run}/last.pt"), ("plain", None)):
        work = tmp_path / name / "work"
        params = make_params(tmp_path / name, work, faces_dir, students={"epochs": 2, "threads": 1})
        run = run_name(load(params), "mn3_small")      # the run folder (named by arch and recipe)
        kill = kill and kill.format(run=run)
        _start_from(reference, work, inputs)
        if kill:
            r = run_cli(params, "train", kill=kill, fault=fault_dir)
            assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-2000:])
            first = torch.load(work / "students" / run / "last.pt", weights_only=True)
            assert first["epoch"] == 0  # killed after epoch 1 of 2
        r = run_cli(params, "train")
        assert r.returncode == 0, r.stderr[-2000:]
        assert ("resuming after epoch 1" in r.stdout + r.stderr) == bool(kill)
        runs[name] = {f: torch.load(work / "students" / run / f, weights_only=True) for f in ("last.pt", "best.pt")}
    for f in ("last.pt", "best.pt"):
        a, b = runs["killed"][f], runs["plain"][f]
        assert a["epoch"] == b["epoch"]
        assert a["model"].keys() == b["model"].keys()
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (f, k)
