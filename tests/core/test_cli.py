"""The CLI turns user errors into one line, not a traceback."""
import subprocess
import sys

from agedistill_testing import REPO, write_params


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "agedistill_core.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_missing_data_root_gives_one_line(tmp_path):
    p = write_params(tmp_path, {"x": {"workdir": str(tmp_path / "w"),
                                      "dataset": {"name": "utkface", "root": str(tmp_path / "missing")}}})
    r = run_cli("--params", str(p), "--profile", "x", "manifest")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: data root") and "dataset.root" in lines[0]


def test_bad_profile_gives_one_line(tmp_path):
    r = run_cli("--profile", "nonesuch", "manifest")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: ") and "choose one of" in r.stderr
    assert "Traceback" not in r.stderr


def test_data_root_override(tmp_path):
    p = write_params(tmp_path, {"x": {"workdir": str(tmp_path / "w"), "dataset": {"name": "folder", "root": "nope"}}})
    (tmp_path / "imgs").mkdir()
    import numpy as np
    from agedistill_core.images import encode_jpeg
    (tmp_path / "imgs" / "a.jpg").write_bytes(encode_jpeg(np.zeros((32, 32, 3), np.uint8)))
    r = run_cli("--params", str(p), "--profile", "x", "--data-root", str(tmp_path / "imgs"), "manifest")
    assert r.returncode == 0, r.stderr
    assert "manifest: 1 images" in r.stderr and r.stdout == ""  # messages on stderr, stdout for results


def test_report_ship_and_finetune_are_subcommands():
    r = run_cli("--help")
    assert r.returncode == 0 and all(c in r.stdout for c in ("report", "ship", "finetune"))
    r = run_cli("ship", "--checkpoint", "x.pt")
    assert r.returncode == 2 and r.stderr.startswith("error: agedistill ship: ") and "--report" in r.stderr


def test_help_is_fast():
    """``agedistill --help`` imports no stage (the stage table names them; report, ship and
    finetune import their modules when they run): the best of three runs stays well under 1.5 s."""
    import time

    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        assert run_cli("--help").returncode == 0
        best = min(best, time.perf_counter() - t0)
    assert best < 1.5, best


def test_one_error_handler(capsys):
    import pytest

    from agedistill_core.errors import run_command
    from agedistill_core.errors import ConfigError

    def fail(exc):
        def body():
            raise exc
        return body

    assert run_command(fail(ConfigError("x: bad; fix it"))) == 2
    assert capsys.readouterr().err == "error: x: bad; fix it\n"
    assert run_command(fail(KeyboardInterrupt()), interrupted="interrupted: nothing lost") == 130
    assert capsys.readouterr().err == "interrupted: nothing lost\n"
    with pytest.raises(KeyboardInterrupt):
        run_command(fail(KeyboardInterrupt()))
    with pytest.raises(SystemExit):
        run_command(fail(SystemExit(128 + 15)), stopped="every worker stopped")
    assert capsys.readouterr().err == "stopped by signal 15: every worker stopped\n"
    assert run_command(lambda: None) == 0 and run_command(lambda: 3) == 3


def test_ctrl_c_is_one_line_and_keeps_the_finished_work(tmp_path):
    """Ctrl-C (SIGINT to the command's process group, as a terminal sends it) during training:
    exit 130 with one line saying what is kept, no traceback, and the finished epoch's last.pt
    is there for the next run to resume from."""
    import os
    import signal

    from agedistill_testing import ProcessOutput
    p = write_params(tmp_path, {"tiny": {
        "workdir": str(tmp_path / "work"), "shard_size": 10,
        "dataset": {"name": "demo", "root": str(tmp_path / "raw"), "limit": 12},
        "teacher": {"variants": 1, "threads": 1},
        "students": {"archs": ["mn3_small"], "epochs": 1000, "batch_size": 8, "threads": 1}}})
    for stage in ("manifest", "crops", "label", "vmage"):
        r = run_cli("--params", str(p), "--profile", "tiny", stage)
        assert r.returncode == 0, r.stderr
    proc = subprocess.Popen([sys.executable, "-m", "agedistill_core.cli", "--params", str(p), "--profile", "tiny",
                             "train"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True,   # SIGINT as a terminal user has it (a background shell ignores it)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    out = ProcessOutput(proc)
    try:
        out.wait_for(lambda line: "epoch 2/1000: train" in line, 600)   # epoch 1's last.pt was saved before
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = out.finish(60)
    assert proc.returncode == 130, text
    assert "Traceback" not in text, text
    assert text.strip().splitlines()[-1].startswith("interrupted: finished work is kept"), text
    assert list((tmp_path / "work" / "students").rglob("last.pt")), text
