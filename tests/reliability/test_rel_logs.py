"""Logs and progress on the tiny real-face profile (20 UTKFace faces, shards of 5): stage messages
and progress lines go to stderr through ``logging``, stdout carries results only (so
``agedistill vmage | python -m json.tool`` works), and a Dagster run's event log holds the
stages' own lines (the instance captures the ``agedistill`` loggers)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import dagster as dg

from agedistill_dag.materialize import materialize_all
from agedistill_testing import REPO
from rel_helpers import PROFILE, run_cli

# two progress lines a shard of 5: after 2 and 4 images (every quarter, rounded up), none at the end
PROGRESS = r"{what} {sid}: (\d+)/5 {unit}s, [\d.]+ {unit}s/s, \d+ s left"
SMALL_BATCHES = {"teacher": {"variants": 1, "threads": 1, "batch_size": 2, "prefetch": False}}


def _progress(stderr: str, what: str, unit: str) -> dict[str, list[int]]:
    """Items done per shard, from the progress lines of ``what`` (crops, labels)."""
    done: dict[str, list[int]] = {}
    for sid, n in re.findall(PROGRESS.format(what=what, sid=r"(shard-\d{5})", unit=unit), stderr):
        done.setdefault(sid, []).append(int(n))
    return done


def test_stages_log_progress_to_stderr_and_results_to_stdout(tiny):
    params, s = tiny(**SMALL_BATCHES)
    assert run_cli(params, "manifest").returncode == 0
    shards = [f"shard-{k:05d}" for k in range(4)]

    crops = run_cli(params, "crops")                                   # through a pipe: not a terminal
    assert crops.returncode == 0, crops.stderr[-2000:]
    assert crops.stdout == ""                                          # messages are not results
    assert _progress(crops.stderr, "crops", "image") == {sid: [2, 4] for sid in shards}, crops.stderr
    assert all(f"crops {sid}: 5 rows (ok 5)" in crops.stderr for sid in shards), crops.stderr

    labels = run_cli(params, "label")
    assert labels.returncode == 0, labels.stderr[-2000:]
    assert labels.stdout == ""
    assert _progress(labels.stderr, "labels", "face") == {sid: [2, 4] for sid in shards}, labels.stderr

    again = run_cli(params, "crops")                                   # up to date: nothing to show progress of
    assert _progress(again.stderr, "crops", "image") == {} and again.stderr.count("(up to date)") == 4

    quiet = run_cli(params, "-q", "label", "--shard", "shard-00000")   # -q: warnings only
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""

    # `agedistill vmage --profile P | python -m json.tool` (the profile after the subcommand, as users
    # type it): the summary alone on stdout, the messages on stderr
    exe = [str(REPO / ".venv" / "bin" / "agedistill")] if (REPO / ".venv" / "bin" / "agedistill").is_file() \
        else [sys.executable, "-m", "agedistill_core.cli"]
    vmage = subprocess.Popen([*exe, "vmage", "--profile", PROFILE, "--params", str(params)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, OMP_NUM_THREADS="1"))
    tool = subprocess.run([sys.executable, "-m", "json.tool"], stdin=vmage.stdout, capture_output=True, text=True,
                          timeout=300)
    vmage.stdout.close()
    err = vmage.stderr.read().decode()
    assert vmage.wait(timeout=300) == 0 and tool.returncode == 0, err + tool.stderr
    summary = json.loads(tool.stdout)
    assert summary["faces"] == 20 and all(summary["checks"].values())
    assert "label table: 20 faces" in err


def test_a_dagster_run_records_the_stages_own_lines(tiny):
    """The instance captures the ``agedistill`` loggers (``python_logs``, as ``make demo`` writes it):
    the crops stage's progress lines for a shard are in that shard's run's event log."""
    params, s = tiny(**SMALL_BATCHES)
    overrides = {"python_logs": {"managed_python_loggers": ["agedistill"], "python_log_level": "INFO"}}
    with dg.instance_for_test(overrides=overrides) as instance:
        done = materialize_all(PROFILE, str(params), instance=instance, jobs=1,
                               assets=["face_manifest", "face_crops"])
        assert done.success
        runs = {r.tags.get("dagster/partition"): r.run_id for r in instance.get_runs()}
        messages = [e.user_message for e in instance.all_logs(runs["shard-00001"])]
    assert any(re.fullmatch(PROGRESS.format(what="crops", sid="shard-00001", unit="image"), m) for m in messages), \
        messages


def test_on_a_terminal_progress_is_a_bar_not_log_lines(tiny):
    """stderr a terminal (a pseudo-terminal here): tqdm bars for each shard's crops, no progress lines."""
    import fcntl
    import pty
    import struct
    import termios

    params, s = tiny(**SMALL_BATCHES)
    assert run_cli(params, "manifest").returncode == 0
    exe = [str(REPO / ".venv" / "bin" / "agedistill")] if (REPO / ".venv" / "bin" / "agedistill").is_file() \
        else [sys.executable, "-m", "agedistill_core.cli"]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))   # a 100-column terminal
    proc = subprocess.Popen([*exe, "--profile", PROFILE, "--params", str(params), "crops"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=slave, env=dict(os.environ, OMP_NUM_THREADS="1"))
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:              # EIO: the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    out = proc.stdout.read()
    assert proc.wait(timeout=300) == 0
    tty = b"".join(chunks).decode(errors="replace")
    assert out == b""
    assert "crops shard-00003: 5 rows (ok 5)" in tty                      # the messages, as in a pipe
    assert re.search(r"crops shard-00000: +\d+%\|", tty), tty            # a tqdm bar ...
    assert _progress(tty, "crops", "image") == {}, tty                   # ... instead of the lines
