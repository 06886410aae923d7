"""Redis and two dagster-celery workers on loopback materialise a small graph (manifest, crops and
labels of three shards, the label table, one LFW+C partition); steps run on both workers, and no
Redis or worker process is left once the cluster stops, also when a run fails, on Ctrl-C or
SIGTERM at several moments, and when the launcher is killed.  Redis wants a password.

Leftovers are looked for by process id (the process group of every process the launcher started:
redis-server rewrites its command line, so its name or arguments prove nothing)."""
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from agedistill_core.errors import ConfigError
from agedistill_core.settings import load_settings
from agedistill_core.shards import list_shards, read_shards
from agedistill_dag.cluster import (BROKER_ENV, DEMO_WORKERS, Cluster, group_members, redis_server_binary,
                                    steps_by_worker)
from agedistill_dag.materialize import main, materialize_all
from agedistill_testing import ProcessOutput, stopped_group, write_params

pytestmark = [pytest.mark.cluster, pytest.mark.xdist_group("cluster")]   # (--dist loadgroup: one worker)

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
                                   run_config=cluster.run_config(), assets=SMALL_GRAPH)
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
                                run_config=cluster.run_config())
    assert cluster.alive() == []
    assert all(group_members(pid) == [] for pid in pids)      # no live process in any group we started


def _wait_until(condition, timeout: float, what: str, poll: float = 0.1):
    """Until ``condition()`` is true (returns it); fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return stat[0] != "Z"


def _redis_answer(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(command)
        return s.recv(256)


def test_redis_wants_the_generated_password(tmp_path):
    """An unauthenticated client (any local user) is refused; the password is on no command line
    and in no file once Redis is up; the URLs reach runs through the environment only."""
    _redis_or_skip()
    cluster = Cluster(tmp_path / "dagster_home", logdir=tmp_path / "logs", workers=())
    with cluster:
        assert len(cluster.password) >= 32
        assert _redis_answer(cluster.port, b"PING\r\n").startswith(b"-NOAUTH")
        assert _redis_answer(cluster.port, b"SET x 1\r\n").startswith(b"-NOAUTH")
        assert _redis_answer(cluster.port, b"AUTH wrong\r\n").startswith(b"-WRONGPASS")
        assert _redis_answer(cluster.port, f"AUTH {cluster.password}\r\nPING\r\n".encode()) == b"+OK\r\n+PONG\r\n"
        group = group_members(cluster.procs["redis"].pid)
        assert len(group) == 2                                       # the supervisor and redis-server
        for pid in group:
            assert cluster.password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        leaked = [p for p in tmp_path.rglob("*") if p.is_file() and cluster.password.encode() in p.read_bytes()]
        assert leaked == []
        assert cluster.run_config()["execution"]["config"]["broker"] == {"env": BROKER_ENV}
        assert os.environ[BROKER_ENV] == cluster.broker
    assert BROKER_ENV not in os.environ                              # restored
    assert cluster.alive() == [] and group_members(group[0]) == []


def test_supervised_process_stops_with_its_lifeline(tmp_path):
    """The supervisor stops its whole group when the launcher's end of the pipe closes, whatever
    the child does with SIGTERM (here it ignores it: SIGKILL after the grace)."""
    read_end, write_end = os.pipe()
    stubborn = "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
               "subprocess.Popen(['sleep', '300']); time.sleep(300)"
    proc = subprocess.Popen([sys.executable, "-m", "agedistill_dag.supervise", str(read_end), "1", "--",
                             sys.executable, "-c", stubborn], start_new_session=True, pass_fds=(read_end,))
    os.close(read_end)
    try:
        _wait_until(lambda: len(group_members(proc.pid)) == 3, 60, "the supervisor, its child and grandchild")
        os.close(write_end)
        assert proc.wait(timeout=60) != 0
        _wait_until(lambda: group_members(proc.pid) == [], 30, "the group to be gone")
    finally:
        if group_members(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)


def _interrupt_params(tmp_path, epochs: int = 3):
    """The demo faces, 2 shards, a 1-variant teacher, one LFW+C partition, one student."""
    return write_params(tmp_path, {"small": {
        "workdir": str(tmp_path / "work"), "shard_size": 10,
        "dataset": {"name": "demo", "root": str(tmp_path / "raw"), "limit": 20},
        "teacher": {"variants": 1, "threads": 1},
        "corruptions": {"names": ["jpeg"], "severities": [1], "max_faces": 4},
        "students": {"archs": ["mn3_small"], "epochs": epochs, "batch_size": 8, "threads": 1}}})


# moment (the launcher line to wait for; then the event that puts work on the workers), signal, target
MOMENTS = {
    # a wave of one run (the manifest, in a pool process being started): the launcher is SIGKILLed:
    # its pool processes, the workers and Redis die with it
    "one-run-wave-launcher-killed": ("small/face_manifest", None, signal.SIGKILL, "launcher"),
    # a wave of one run on the workers (after the shards): Ctrl-C
    "one-run-wave-ctrl-c": ("small/vmage_table", None, signal.SIGINT, "group"),
    # a parallel wave (shards), steps received by a worker: Ctrl-C
    "parallel-wave-ctrl-c": ("small/face_crops", "received", signal.SIGINT, "group"),
    # training, after its first epoch's checkpoint: SIGTERM to the launcher alone
    "training-sigterm": ("small/student_checkpoints", "last.pt", signal.SIGTERM, "launcher"),
}


@pytest.mark.parametrize("moment", list(MOMENTS), ids=list(MOMENTS))
def test_interrupt_at_any_moment_leaves_nothing(tmp_path, moment):
    """`python -m agedistill_dag.cluster` interrupted: Ctrl-C (SIGINT to the command's process
    group, as a terminal sends it) or SIGTERM to the launcher exit 130/143 with one line, no run
    left unfinished in the instance (the interrupted ones are canceled); a SIGKILLed launcher
    takes Redis, the workers and its run processes with it.  No process of any group the launcher
    started is left, found by process id."""
    _redis_or_skip()
    line, event, sig, target = MOMENTS[moment]
    params = _interrupt_params(tmp_path, epochs=1000 if event == "last.pt" else 3)
    home, logs = tmp_path / "dagster_home", tmp_path / "logs"
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "agedistill_dag.cluster", "--profile", "small", "--params",
                             str(params), "--logdir", str(logs)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True, text=True)
    out, groups = ProcessOutput(proc), [proc.pid]
    with stopped_group(proc, out) as stop:
        ids = out.wait_for(lambda text: "process ids:" in text, 600)
        groups += [int(pid) for pid in re.findall(r"=(\d+)", ids.split("process ids:", 1)[1])]
        assert len(groups) == 4, out.text                         # the launcher, Redis, two workers
        out.wait_for(lambda text: text.startswith(f"materialising {line}"), 900)
        received = sum(log.read_text().count(" received") for log in logs.glob("worker-*.log"))
        if event == "received":                                    # a step went to a worker
            _wait_until(lambda: sum(log.read_text().count(" received") for log in logs.glob("worker-*.log"))
                        > received, 300, "a step on a worker")
        elif event == "last.pt":                                   # an epoch trained, more to go
            _wait_until(lambda: list((tmp_path / "work" / "students").rglob("last.pt")), 600,
                        "the first epoch's checkpoint")
        stop.interrupt(lambda: os.killpg(proc.pid, sig) if target == "group" else os.kill(proc.pid, sig))
    text, rest = stop.text, stop.rest
    # nothing left in any group the launcher started (its own: the pool processes and
    # multiprocessing's resource tracker, which exits when it sees its parent gone)
    for pgid in groups:
        _wait_until(lambda: group_members(pgid) == [], 60, f"process group {pgid} to be empty:\n{text[-3000:]}")
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        return
    assert proc.returncode == 128 + sig, text
    if sig == signal.SIGINT:
        assert "interrupted: unfinished runs marked canceled; every Redis and worker process stopped" in rest
    else:
        assert "stopped by signal 15: unfinished runs marked canceled; every Redis and worker process stopped" in rest
    assert "concurrent/futures" not in rest and "agedistill_dag/" not in rest, rest   # no traceback from
    #                                              this command or its pool processes, idle or not
    with dg.DagsterInstance.from_config(str(home)) as instance:
        statuses = {r.status for r in instance.get_runs()}
    assert statuses <= {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE}
    if line != "small/face_manifest":
        assert dg.DagsterRunStatus.SUCCESS in statuses            # the manifest run finished before
