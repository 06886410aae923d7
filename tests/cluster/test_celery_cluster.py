"""Redis and two dagster-celery workers on loopback materialise a small graph (manifest, crops and
labels of three shards, the label table, one LFW+C partition); steps run on both workers, and no
Redis or worker process is left once the cluster stops, also when a run fails or on Ctrl-C."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from agedistill_core.errors import ConfigError
from agedistill_core.settings import load_settings
from agedistill_core.shards import list_shards, read_shards
from agedistill_dag.cluster import DEMO_WORKERS, Cluster, group_members, redis_server_binary, steps_by_worker
from agedistill_dag.materialize import main, materialize_all
from agedistill_testing import write_params

pytestmark = pytest.mark.cluster

SMALL_GRAPH = ["face_manifest", "face_crops", "teacher_soft_labels", "vmage_table", "lfwc_images"]


def _redis_or_skip() -> None:
    try:
        redis_server_binary()
    except ConfigError as exc:
        pytest.skip(f"Redis cannot start: {exc}")


def _params(tmp_path):
    """The demo faces, 3 shards; a 1-variant teacher; LFW+C: jpeg at severity 1 on 4 faces."""
    return write_params(tmp_path, {"small": {
        "workdir": str(tmp_path / "work"), "shard_size": 10,
        "dataset": {"name": "demo", "root": str(tmp_path / "raw"), "limit": 30},
        "teacher": {"variants": 1, "threads": 1},
        "corruptions": {"names": ["jpeg"], "severities": [1], "max_faces": 4}}})


def test_two_workers_run_the_graph_and_stop(tmp_path):
    _redis_or_skip()
    params = _params(tmp_path)
    home = tmp_path / "dagster_home"
    cluster = Cluster(home, logdir=tmp_path / "logs", env={"OMP_NUM_THREADS": "1"})
    with cluster:
        assert cluster.alive() == ["redis", "worker-a", "worker-b"]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            done = materialize_all("small", str(params), instance=instance, jobs=2, executor="celery",
                                   run_config=cluster.run_config(), assets=SMALL_GRAPH, log=lambda _: None)
            ran = steps_by_worker(instance, done.run_ids)
            s = load_settings("small", params)
            shards = instance.get_dynamic_partitions("shards_small")
            assert shards == ["shard-00000", "shard-00001", "shard-00002"]
            assert instance.get_materialized_partitions(dg.AssetKey(["small", "teacher_soft_labels"])) == set(shards)
            assert instance.get_materialized_partitions(dg.AssetKey(["small", "lfwc_images"])) == {"jpeg|1"}
    assert cluster.alive() == []                         # Redis and both workers (and their pool children) gone

    assert done.success and len(done.runs) == 1 + 3 + 1 + 1     # manifest, 3 x (crops+labels), vmage, lfwc
    # every step ran on a worker, and both workers ran some
    assert set(ran) == set(cluster.worker_names())
    steps = sorted(s for worker_steps in ran.values() for s in worker_steps)
    assert steps.count("small__face_crops") == 3 and steps.count("small__teacher_soft_labels") == 3
    assert {"small__face_manifest", "small__vmage_table", "small__lfwc_images"} <= set(steps)
    # and the files are there, as in-process runs write them
    assert list_shards(s.crops_dir) == shards == list_shards(s.labels_dir)
    assert read_shards(s.labels_dir).num_rows == read_shards(s.crops_dir).num_rows > 0
    assert (s.lfwc_dir / "jpeg-s1").is_dir()


def test_failed_run_still_stops_everything(tmp_path, monkeypatch, capsys):
    """A run that fails on a worker (a dataset root that does not exist): the command line (workers
    already running, --executor celery --broker) exits 2 with a one-line error naming the run and the
    fix; materialize_all raises it; leaving the context stops Redis and the workers all the same."""
    _redis_or_skip()
    params = write_params(tmp_path, {"broken": {
        "workdir": str(tmp_path / "work"), "dataset": {"name": "folder", "root": str(tmp_path / "missing")}}})
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    cluster = Cluster(home, logdir=tmp_path / "logs", workers=DEMO_WORKERS[:1])
    with pytest.raises(ConfigError, match=r"broken/face_manifest failed \(run .*\): .*missing"):
        with cluster:
            pids = [p.pid for p in cluster.procs.values()]
            rc = main(["--profile", "broken", "--params", str(params), "--jobs", "1",
                       "--executor", "celery", "--broker", cluster.broker])
            err = capsys.readouterr().err.strip().splitlines()[-1]
            assert rc == 2
            assert err.startswith("error: broken/face_manifest failed (run ")
            assert "does not exist; set dataset.root in profile 'broken'" in err
            with dg.DagsterInstance.get() as instance:
                materialize_all("broken", str(params), instance=instance, jobs=1, executor="celery",
                                run_config=cluster.run_config(), log=lambda _: None)
    assert cluster.alive() == []
    assert all(group_members(pid) == [] for pid in pids)      # no live process in any group we started


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            stat = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()
            if text in cmdline.read_bytes().decode(errors="replace") and stat[0] != "Z":
                found.append(int(cmdline.parent.name))
        except (OSError, IndexError):
            continue
    return found


def test_ctrl_c_stops_redis_workers_and_runs(tmp_path):
    """Ctrl-C (SIGINT to the command's process group, as a terminal sends it) while runs are on the
    workers: `python -m agedistill_dag.cluster` exits 130, no Redis, worker or run process is left,
    and no run stays unfinished in the instance (the interrupted ones are marked canceled)."""
    _redis_or_skip()
    params = _params(tmp_path)
    home, logs = tmp_path / "dagster_home", tmp_path / "logs"
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "agedistill_dag.cluster", "--profile", "small", "--params",
                             str(params), "--logdir", str(logs)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True, text=True)
    out = []
    try:
        for line in proc.stdout:
            out.append(line)
            if line.startswith("materialising small/face_crops"):     # shard runs submitted to the workers
                break
        time.sleep(3)
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, "".join(out) + rest
    assert "interrupted: unfinished runs marked canceled; every Redis and worker process stopped" in rest
    deadline = time.monotonic() + 10                          # multiprocessing's resource tracker exits
    while group_members(proc.pid) and time.monotonic() < deadline:   # when it sees its parent gone
        time.sleep(0.2)
    assert group_members(proc.pid) == []                     # the command's own group: pool processes too
    assert _processes_mentioning(str(logs)) == []            # redis-server (--dir) and workers (-y) are gone
    with dg.DagsterInstance.from_config(str(home)) as instance:
        statuses = {r.status for r in instance.get_runs()}
    assert statuses <= {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE}
    assert dg.DagsterRunStatus.SUCCESS in statuses                # the manifest run finished before
