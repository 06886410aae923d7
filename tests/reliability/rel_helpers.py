"""Helpers for the bad-input / fault tests: tiny profiles over real UTKFace faces.

Test modules import these (not conftest.py, whose module name clashes with
the other test folders'); the fixtures are in conftest.py.  Every profile here
is small on purpose (20 faces, shards of 5, one teacher variant, 64 px crops,
one thread) so a test runs in seconds.  Tests that need the real faces skip
with the missing path named.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agedistill_testing import REPO, UTKFACE, write_params

PROFILE = "rel"
N_FACES = 20
SHARD_SIZE = 5
CLI = REPO / ".venv" / "bin" / "agedistill"


def require_utkface() -> None:
    if not UTKFACE.is_dir():
        pytest.skip(f"needs real faces in ../shared/data/utkface/crop_part1 ({UTKFACE} missing)")


def real_faces(n: int, offset: int = 0) -> list[Path]:
    """``n`` real UTKFace files, spread over the set (sorted names, fixed stride)."""
    require_utkface()
    names = sorted(UTKFACE.glob("*.jpg"))
    stride = max(1, len(names) // (n * 3))
    return names[offset::stride][:n]


def profile(workdir: Path, root: Path, **over) -> dict:
    """The tiny profile: ``over`` replaces whole sections (dicts are merged one level)."""
    doc = {
        "workdir": str(workdir),
        "shard_size": SHARD_SIZE,
        "dataset": {"name": "utkface", "root": str(root)},
        "faces": {"detector": "none", "align": "none", "crop_size": 64, "workers": 1},
        "teacher": {"variants": 1, "threads": 1, "batch_size": 8, "prefetch": False},
        "students": {"archs": ["mn3_small"], "epochs": 1, "batch_size": 8, "workers": 0},
        "corruptions": {"names": ["jpeg", "defocus_blur"], "severities": [1, 2], "max_faces": 10,
                        "base_split": "train", "workers": 1},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return doc


def make_params(folder: Path, workdir: Path, root: Path, **over) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_params(folder, {PROFILE: profile(workdir, root, **over)})


def load(params: Path, **overrides):
    from agedistill_core.settings import load_settings

    return load_settings(PROFILE, params, overrides or None)


# --- comparing outputs by content (not mtimes) ------------------------------------------------

def parquet_files(folder: Path) -> list[str]:
    """Visible Parquet files under ``folder`` (relative paths), hidden temp files excluded."""
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*.parquet")
                  if not p.name.startswith("."))


def assert_same_tables(got: Path, want: Path) -> None:
    """Same files, and each holds the same table: rows, schema and our metadata (version)."""
    assert parquet_files(got) == parquet_files(want)
    for rel in parquet_files(want):
        a, b = pq.read_table(Path(got) / rel), pq.read_table(Path(want) / rel)
        assert a.equals(b, check_metadata=True), f"{rel} differs from the uninterrupted run"


# --- the real CLI, with an optional SIGKILL at a chosen write ---------------------------------

FAULT_HOOK = '''
import os, signal
_spec = os.environ.get("AGEDISTILL_TEST_KILL")
if _spec:
    _when, _suffix = _spec.split(":", 1)
    _replace = os.replace

    def _killing_replace(src, dst, *a, **k):
        hit = str(dst).endswith(_suffix)
        if hit and _when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        _replace(src, dst, *a, **k)
        if hit and _when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = _killing_replace
'''


def run_cli(params: Path, *args: str, kill: str | None = None, fault: Path | None = None,
            timeout: int = 300) -> subprocess.CompletedProcess:
    """``.venv/bin/agedistill --profile rel --params P ARGS`` in a subprocess."""
    exe = [str(CLI)] if CLI.is_file() else [sys.executable, "-m", "agedistill_core.cli"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("AGEDISTILL_TEST_KILL", None)
    if kill:
        assert fault is not None
        env["AGEDISTILL_TEST_KILL"] = kill
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fault), env.get("PYTHONPATH")]))
    return subprocess.run([*exe, "--profile", PROFILE, "--params", str(params), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(stderr: str) -> str:
    """The CLI's error line (asserting there is exactly one and no traceback)."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]
