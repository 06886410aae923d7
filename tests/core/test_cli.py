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
