"""Ctrl-C and SIGTERM reach `python -m agedistill_dag.materialize` although Dagster runs in it.

With ``--jobs 1`` the runs execute in the materialising process, where Dagster's
``capture_interrupts`` turns SIGINT (and SIGTERM) into a flag the run consumes and clears, then
points SIGTERM at the SIGINT handler: the interrupt stopped the run but never reached the command,
which went on with the next wave.  Leftover processes are looked for by process id."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._utils.interrupts import capture_interrupts

from agedistill_dag.cluster import _sigterm_as_exit, group_members
from agedistill_dag.materialize import _SignalsDuringRun, quiet_instance_home
from agedistill_dag.supervise import signals_deferred
from agedistill_testing import ProcessOutput, stopped_group, write_params


# (signals to this very process: only where tests run in the main thread, as pytest and xdist do)
pytestmark = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                reason="signal handlers need the main thread")


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Ctrl-C as a terminal user has it: Python's own SIGINT handler.  A test process started in
    the background by a non-interactive shell inherits SIGINT ignored, and Python keeps it so."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_a_sigint_dagster_swallowed_is_raised_after_the_run():
    with pytest.raises(KeyboardInterrupt):
        with _SignalsDuringRun():
            with capture_interrupts():                       # what dg.execute_job does around a run
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)                             # the flag is set; nothing is raised here
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_sigterm_dagster_swallowed_is_raised_and_the_handler_kept():
    old = signal.signal(signal.SIGTERM, _sigterm_as_exit)
    try:
        with pytest.raises(SystemExit) as exc:
            with _SignalsDuringRun():
                with capture_interrupts():
                    assert signal.getsignal(signal.SIGTERM) is not _sigterm_as_exit   # Dagster's now
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.01)
        assert exc.value.code == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is _sigterm_as_exit                   # ours again
    finally:
        signal.signal(signal.SIGTERM, old)


def test_a_second_ctrl_c_waits_for_the_shutdown():
    """signals_deferred (around stopping the cluster, killing the pool, marking runs canceled): a
    Ctrl-C inside does not cut the block short; it is raised when the block is done."""
    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            done.append(True)
    assert done == [True] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_signal_no_exception():
    with _SignalsDuringRun():
        with capture_interrupts():
            pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


INSTANCE = {"telemetry": {"enabled": False},
            "python_logs": {"managed_python_loggers": ["agedistill"], "python_log_level": "INFO"}}


def test_a_home_without_dagster_yaml_gets_telemetry_off(tmp_path):
    quiet_instance_home(tmp_path / "home")
    assert yaml.safe_load((tmp_path / "home" / "dagster.yaml").read_text()) == INSTANCE
    (tmp_path / "home" / "dagster.yaml").write_text("telemetry: {enabled: true}\n")
    quiet_instance_home(tmp_path / "home")                    # a user's own file is left alone
    assert "true" in (tmp_path / "home" / "dagster.yaml").read_text()


def test_make_writes_the_same_instance_settings(tmp_path):
    """`make demo`'s $(DAGSTER_HOME)/dagster.yaml rule writes what materialize and cluster write."""
    home = tmp_path / "make_home"
    r = subprocess.run(["make", "-s", f"DAGSTER_HOME={home}", f"{home}/dagster.yaml"], cwd=Path(__file__).parents[2],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load((home / "dagster.yaml").read_text()) == INSTANCE


def test_ctrl_c_during_training_in_process(tmp_path):
    """`--jobs 1`, Ctrl-C (SIGINT to the process group) once the student's first epoch is saved:
    exit 130 with one line, the benchmark wave never starts, no run is left unfinished, no process
    of the group is left; DAGSTER_HOME had no dagster.yaml: telemetry was off."""
    params = write_params(tmp_path, {"tiny": {
        "workdir": str(tmp_path / "work"), "shard_size": 10,
        "dataset": {"name": "demo", "root": str(tmp_path / "raw"), "limit": 12},
        "teacher": {"variants": 1, "threads": 1},
        "corruptions": {"names": ["jpeg"], "severities": [1], "max_faces": 2},
        "students": {"archs": ["mn3_small"], "epochs": 1000, "batch_size": 8, "threads": 1}}})
    home = tmp_path / "dagster_home"
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "agedistill_dag.materialize", "--profile", "tiny", "--params",
                             str(params), "--jobs", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True, text=True)
    out = ProcessOutput(proc)
    with stopped_group(proc, out) as stop:
        out.wait_for(lambda line: line.startswith("materialising tiny/student_checkpoints"), 900)
        deadline = time.monotonic() + 600
        while not list((tmp_path / "work" / "students").rglob("last.pt")):     # an epoch trained
            assert proc.poll() is None and time.monotonic() < deadline, out.text
            time.sleep(0.2)
        stop.interrupt(lambda: os.killpg(proc.pid, signal.SIGINT))
    text, rest = stop.text, stop.rest
    assert proc.returncode == 130, text
    assert rest.strip().splitlines()[-1].startswith("interrupted: unfinished runs marked canceled"), rest
    # (Dagster logs the interrupted step with its traceback, and its compute-log watchers in the
    # group print KeyboardInterrupt: theirs; nothing from this command or a pool process)
    assert "agedistill_dag/materialize.py" not in rest and "concurrent/futures" not in rest, rest
    assert "materialising tiny/benchmark_tables" not in text                 # no later wave started
    deadline = time.monotonic() + 30
    while group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert group_members(proc.pid) == []
    assert yaml.safe_load((home / "dagster.yaml").read_text()) == INSTANCE
    with dg.DagsterInstance.from_config(str(home)) as instance:
        statuses = {r.status for r in instance.get_runs()}
    assert statuses <= {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE}
    assert statuses - {dg.DagsterRunStatus.SUCCESS}, statuses                # the training run did not finish
    assert not (Path(home) / "logs" / "event.log").exists()                  # no telemetry events written


POOL_SCRIPT = '''
import os, signal, sys

if __name__ == "__mp_main__":     # a pool process importing this file: held here until the test's Ctrl-C
    with open(os.environ["POOL_FIFO"]) as fifo:
        fifo.read()               # end of file: the test sent Ctrl-C, then closed its end


def pid():
    return os.getpid()


if __name__ == "__main__":
    from agedistill_dag.materialize import QuietPool
    got = []
    signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    with QuietPool(1) as pool:
        child = pool.submit(pid).result()
    print(f"ran in another process: {child != os.getpid()}; Ctrl-C here: {got}", flush=True)
'''


def test_ctrl_c_while_a_pool_process_imports_leaves_no_traceback(tmp_path):
    """A terminal's Ctrl-C reaches the whole process group, pool processes included.  One that is
    still importing the main module (before any initializer runs; the cluster's CI run hit it)
    must not print a KeyboardInterrupt traceback: it starts with SIGINT blocked and discards it;
    the launcher gets its Ctrl-C once, and the pool still runs the task."""
    script, fifo = tmp_path / "pool_script.py", tmp_path / "fifo"
    script.write_text(POOL_SCRIPT)
    os.mkfifo(fifo)
    env = {**os.environ, "POOL_FIFO": str(fifo), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True, text=True, cwd=Path(__file__).parents[2])
    opened, holder = threading.Event(), []
    threading.Thread(target=lambda: (holder.append(open(fifo, "w")), opened.set()), daemon=True).start()
    try:
        # the open returns once the pool process opened its end: it is inside the import
        assert opened.wait(300), "the pool process never reached the import"
        os.killpg(proc.pid, signal.SIGINT)
        holder[0].close()
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert "ran in another process: True; Ctrl-C here: [2]" in out, out
