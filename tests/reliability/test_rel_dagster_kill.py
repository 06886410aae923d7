"""SIGKILL in the middle of a Dagster materialisation of the whole graph (the tiny profile,
two student epochs), then the same materialisation again: every Parquet table is the same as
an uninterrupted Dagster run's (no duplicates, no gaps), finished outputs are not redone, and
the student resumes from ``last.pt`` to the same weights.

The run is ``python -m agedistill_dag.materialize`` in a subprocess with its own
$DAGSTER_HOME; the kill is the sitecustomize of test_rel_kill.py (SIGKILL just after a
chosen file is renamed into place), so the Dagster run is left STARTED in the instance.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from agedistill_core.shards import list_shards, read_shards, read_table
from agedistill_core.students.checkpoint import load_checkpoint
from agedistill_testing import REPO
from agedistill_core.students.train import run_name
from rel_helpers import PROFILE, load, make_params, parquet_files

EPOCHS = 2
SHARDS = [f"shard-{k:05d}" for k in range(4)]

# what the killed run must be doing when it dies
CASES = {
    "crops-shard": "after:crops/shard-00001.parquet",
    "labels-shard": "after:labels/shard-00001.parquet",
    "lfwc-part": "after:lfwc/jpeg-s1/part-00000.parquet",
    "train-last-epoch1": "after:students/mn3_small/last.pt",
}


def _params(folder: Path, faces_dir: Path) -> Path:
    return make_params(folder, folder / "work", faces_dir, students={"epochs": EPOCHS})


def materialize(params: Path, home: Path, kill: str | None = None, fault: Path | None = None,
                timeout: int = 300, jobs: int | None = None) -> subprocess.CompletedProcess:
    """``python -m agedistill_dag.materialize --profile rel --params P [--jobs N]`` with DAGSTER_HOME=home
    (default: runs in parallel, one process per run, as ``make demo``)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", DAGSTER_HOME=str(home), AGEDISTILL_PROFILE=PROFILE,
               AGEDISTILL_PARAMS=str(params))
    env.pop("AGEDISTILL_TEST_KILL", None)
    if kill:
        assert fault is not None
        env["AGEDISTILL_TEST_KILL"] = kill
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fault), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "agedistill_dag.materialize", "--profile", PROFILE,
                           "--params", str(params), *(["--jobs", str(jobs)] if jobs else [])],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def dag_reference(tmp_path_factory, faces_dir) -> Path:
    """The workdir of one uninterrupted Dagster materialisation of the whole graph."""
    folder = tmp_path_factory.mktemp("dag_reference")
    r = materialize(_params(folder, faces_dir), folder / "dagster_home")
    assert r.returncode == 0, r.stderr[-3000:]
    return folder / "work"


def _plain(v):
    """Row values with NaN made comparable (NaN != NaN in Table.equals)."""
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def assert_same_tables_nan(got: Path, want: Path) -> None:
    """Same Parquet files, each with the same schema, metadata and rows (NaN equal to NaN)."""
    assert parquet_files(got) == parquet_files(want)
    for rel in parquet_files(want):
        a, b = pq.read_table(got / rel), pq.read_table(want / rel)
        assert a.schema.equals(b.schema, check_metadata=True), f"{rel}: schema/metadata differ"
        assert _plain(a.to_pylist()) == _plain(b.to_pylist()), f"{rel} differs from the uninterrupted run"


def _stamps(work: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every finished shard/part file: a rewrite (rename into place) changes them."""
    out = {}
    for sub in ("crops", "labels", "lfwc"):
        for p in sorted((work / sub).rglob("*.parquet")) if (work / sub).is_dir() else []:
            if not p.name.startswith("."):
                st = p.stat()
                out[p.relative_to(work).as_posix()] = (st.st_ino, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("kill", list(CASES.values()), ids=list(CASES))
def test_killed_dagster_run_reruns_to_the_same_outputs(tmp_path, faces_dir, fault_dir, dag_reference, kill):
    params = _params(tmp_path, faces_dir)
    work, home = tmp_path / "work", tmp_path / "dagster_home"
    run = run_name(load(params), "mn3_small")          # the run folder (named by arch and recipe)
    kill = kill.replace("students/mn3_small/", f"students/{run}/")

    # one run at a time in the materialising process (--jobs 1), so the kill stops everything at a
    # known point; the rerun goes in parallel, as `make demo` does
    r = materialize(params, home, kill=kill, fault=fault_dir, jobs=1)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-3000:])

    # the killed run stopped exactly where we said (shards go crops then labels, shard by shard)
    target = kill.split(":", 1)[1]
    assert (work / target).is_file()
    if target.startswith("crops/"):
        assert list_shards(work / "crops") == SHARDS[:2] and list_shards(work / "labels") == SHARDS[:1]
    elif target.startswith("labels/"):
        assert list_shards(work / "crops") == SHARDS[:2] == list_shards(work / "labels")
    else:
        assert list_shards(work / "crops") == SHARDS == list_shards(work / "labels")
    if target.startswith("lfwc/"):
        partition = work / target.rsplit("/", 1)[0]
        assert not (partition / "_COMPLETE.json").exists()
        assert [p.name for p in partition.glob("part-*.parquet")] == ["part-00000.parquet"]
        assert not (work / "students").exists()
    if target.startswith("students/"):
        ckpt = load_checkpoint(work / target)
        assert ckpt["epoch"] == 0 and len(ckpt["extra"]["history"]) == 1   # epoch 1 of 2 done
        epoch1 = ckpt["extra"]["history"][0]
        assert not (work / "benchmarks").exists()
    finished = _stamps(work)
    if target.startswith("lfwc/"):   # the unfinished partition may be rewritten; the rest must not be
        finished = {k: v for k, v in finished.items() if not k.startswith(target.rsplit("/", 1)[0])}

    r = materialize(params, home)
    assert r.returncode == 0, r.stderr[-3000:]
    if target.startswith("students/"):   # resumed from last.pt, not trained afresh: the killed run's
        history = load_checkpoint(work / target)["extra"]["history"]   # epoch-1 row (its timing) is kept
        assert len(history) == 2 and history[0] == epoch1, (history, epoch1)

    # finished shard/part files were kept, not redone
    now = _stamps(work)
    assert {k: now.get(k) for k in finished} == finished
    # every table equals the uninterrupted run's, no duplicates, no gaps
    assert_same_tables_nan(work, dag_reference)
    for table in (read_shards(work / "crops", ["image_id"]), read_shards(work / "labels", ["image_id"]),
                  read_table(work / "vmage.parquet")):
        ids = table["image_id"]
        assert len(pc.unique(ids)) == len(ids) == read_table(work / "manifest.parquet").num_rows
    for marker in sorted((dag_reference / "lfwc").glob("*/_COMPLETE.json")):
        part = work / "lfwc" / marker.parent.name
        got = json.loads((part / "_COMPLETE.json").read_text())
        assert got == json.loads(marker.read_text())
        rows = read_shards(part, ["image_id"], shards=[p.stem for p in sorted(part.glob("part-*.parquet"))])
        assert rows.num_rows == got["faces"] == len(pc.unique(rows["image_id"]))
    # the student finished both epochs, resumed to the uninterrupted run's weights
    for name in ("last.pt", "best.pt"):
        got = load_checkpoint(work / "students" / run / name)
        want = load_checkpoint(dag_reference / "students" / run / name)
        assert got["epoch"] == want["epoch"]
        assert got["model"].keys() == want["model"].keys()
        for k, v in want["model"].items():
            assert got["model"][k].equal(v), f"{name}: {k} differs from the uninterrupted run"
    assert load_checkpoint(work / "students" / run / "last.pt")["epoch"] == EPOCHS - 1


def test_a_run_process_killed_in_a_parallel_materialisation(tmp_path, faces_dir, fault_dir, dag_reference):
    """In parallel, runs execute in worker processes: when one is SIGKILLed the materialisation
    stops with one error line, leaves no run STARTED in the instance (it would block automation
    forever), and the rerun ends with the uninterrupted run's tables."""
    import dagster as dg

    params = _params(tmp_path, faces_dir)
    work, home = tmp_path / "work", tmp_path / "dagster_home"
    r = materialize(params, home, kill=CASES["labels-shard"], fault=fault_dir, jobs=2)
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    from dagster._core.instance.ref import InstanceRef

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        statuses = {run.status for run in instance.get_runs()}
    assert dg.DagsterRunStatus.STARTED not in statuses and dg.DagsterRunStatus.CANCELED in statuses

    r = materialize(params, home)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_tables_nan(work, dag_reference)

