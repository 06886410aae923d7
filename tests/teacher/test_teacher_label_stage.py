"""label_shard on real crops: schema, gated column, and resuming a killed run
(no duplicates, no gaps)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import yaml

from agedistill_core.faces.crops import crop_shard
from agedistill_core.labeltable import USABLE
from agedistill_core.datasets import build_manifest
from agedistill_core.teacher.label import LABELS_SCHEMA, label_shard
from agedistill_core.settings import load_settings
from agedistill_core.shards import list_shards, read_shards, read_table

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared/data"
UTK = DATA / "utkface/crop_part1"
pytestmark = pytest.mark.skipif(not UTK.is_dir(), reason="needs real faces in ../shared/data/utkface/crop_part1")


@pytest.fixture
def settings(tmp_path):
    base = yaml.safe_load((REPO / "params.yaml").read_text())["base"]
    doc = {"base": base, "profiles": {"t": {
        "workdir": str(tmp_path / "work"), "shard_size": 12,
        "dataset": {"name": "utkface", "root": str(UTK), "limit": 36},
        "faces": {"detector": "none", "align": "none", "crop_size": 64, "workers": 1},
        "teacher": {"variants": 8, "batch_size": 5},
    }}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    s = load_settings("t", tmp_path / "params.yaml")
    build_manifest(s)
    for sid in ("shard-00000", "shard-00001", "shard-00002"):
        crop_shard(s, sid)
    return s


SHARDS = ["shard-00000", "shard-00001", "shard-00002"]


def _usable_ids(s):
    crops = read_shards(s.crops_dir, ["image_id", "status"])
    return sorted(crops.filter(pc.is_in(crops["status"], __import__("pyarrow").array(USABLE)))["image_id"].to_pylist())


def test_label_shard_schema_and_values(settings):
    r = label_shard(settings, SHARDS[0])
    t = read_table(r.path)
    assert t.schema.remove_metadata() == LABELS_SCHEMA
    assert r.rows == t.num_rows == 12
    probs = np.asarray(t["probs"].combine_chunks().flatten()).reshape(-1, 101)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
    assert not any(t["gated"].to_pylist())  # no children members configured
    assert all(len(a) == 0 for a in t["children_ages"].to_pylist())
    assert all(len(a) == 1 for a in t["member_ages"].to_pylist())
    assert label_shard(settings, SHARDS[0]).skipped


def test_interrupted_run_resumes_without_duplicates_or_gaps(settings):
    label_shard(settings, SHARDS[0])

    def die(done, total):
        if done >= 5:
            raise KeyboardInterrupt  # killed half-way through shard 1

    with pytest.raises(KeyboardInterrupt):
        label_shard(settings, SHARDS[1], progress=die)
    assert list_shards(settings.labels_dir) == [SHARDS[0]]  # nothing half-written is visible
    results = [label_shard(settings, sid) for sid in SHARDS]
    assert [r.skipped for r in results] == [True, False, False]
    ids = sorted(read_shards(settings.labels_dir, ["image_id"])["image_id"].to_pylist())
    assert ids == _usable_ids(settings) and len(ids) == len(set(ids))


def test_sigkilled_process_resumes(settings, tmp_path):
    code = (
        "import sys, time\n"
        "from agedistill_core.settings import load_settings\n"
        "from agedistill_core.teacher.label import label_shard\n"
        f"s = load_settings('t', {str(settings.params_path)!r})\n"
        "for sid in ['shard-00000', 'shard-00001', 'shard-00002']:\n"
        "    label_shard(s, sid, progress=lambda d, t: time.sleep(0.5) if sid != 'shard-00000' else None)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    first = settings.labels_dir / "shard-00000.parquet"
    deadline = time.time() + 90
    while not first.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.is_file(), "the child never finished its first shard"
    done_before = list_shards(settings.labels_dir)
    assert len(done_before) < 3
    results = {sid: label_shard(settings, sid) for sid in SHARDS}
    assert all(results[s].skipped for s in done_before)
    ids = sorted(read_shards(settings.labels_dir, ["image_id"])["image_id"].to_pylist())
    assert ids == _usable_ids(settings) and len(ids) == len(set(ids))
    leftovers = [p for p in os.listdir(settings.labels_dir) if not p.endswith(".parquet")]
    assert all(p.startswith(".") and p.endswith(".tmp") for p in leftovers)  # hidden temp files only
