"""Files on disk: JPEGs with trailers, the atomic writer's file mode, corrupt shards,
typos in --shard, and what onnxruntime leaves behind."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from agedistill_core import stages
from agedistill_core.cli import main as cli
from agedistill_core.errors import DataError, UnreadableImage
from agedistill_core.images import _truncated_jpeg, decode_image, encode_jpeg, read_image
from agedistill_core.shards import atomic_write_text, list_shards, read_table, shard_path, write_table
from rel_helpers import PROFILE, assert_same_tables, load, make_params, one_line_error, real_faces

# --- JPEG end marker -------------------------------------------------------------------------


def _exif_thumbnail_jpeg(main: bytes) -> bytes:
    """``main`` with an APP1 (EXIF) segment holding a whole small JPEG (its own end marker)."""
    thumb = encode_jpeg(np.full((8, 8, 3), 128, np.uint8))
    payload = b"Exif\x00\x00" + thumb
    return main[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + main[2:]


@pytest.mark.parametrize("trailer", [b"\x00" * 4096, b"camera maker trailer " * 20, "second_jpeg"],
                         ids=["zeros", "text", "second_jpeg"])
def test_jpeg_with_bytes_after_its_end_marker_decodes(tmp_path, trailer):
    face = real_faces(1)[0].read_bytes()
    if trailer == "second_jpeg":
        trailer = encode_jpeg(np.zeros((16, 16, 3), np.uint8))[:-2]  # appended, itself without an end marker
    path = tmp_path / "face.jpg"
    path.write_bytes(face + trailer)
    assert not _truncated_jpeg(face + trailer)
    np.testing.assert_array_equal(read_image(path), decode_image(face))


@pytest.mark.parametrize("cut", ["half", "no_end_marker", "half_with_exif_thumbnail"])
def test_truncated_jpeg_is_still_unreadable(cut):
    face = real_faces(1)[0].read_bytes()
    data = {"half": face[: len(face) // 2], "no_end_marker": face[:-2],
            "half_with_exif_thumbnail": _exif_thumbnail_jpeg(face)[: len(face) // 2 + 400]}[cut]
    assert _truncated_jpeg(data)
    with pytest.raises(UnreadableImage, match="x.jpg: (truncated JPEG|not a decodable image)"):
        decode_image(data, "x.jpg")  # (OpenCV itself refuses some truncations)
    assert decode_image(_exif_thumbnail_jpeg(face)).shape == decode_image(face).shape


# --- file mode of atomic writes --------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        text = atomic_write_text(tmp_path / "a.json", "{}")
        table = write_table(pa.table({"x": [1]}), tmp_path / "t.parquet")
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert want == 0o666 & ~umask
    assert stat.S_IMODE(text.stat().st_mode) == want and stat.S_IMODE(table.stat().st_mode) == want


# --- corrupt shards --------------------------------------------------------------------------

def _corrupt(path, how):
    data = path.read_bytes()
    path.write_bytes({"garbage": os.urandom(len(data)), "empty": b"", "truncated": data[: len(data) // 2]}[how])


@pytest.fixture
def copy_of_reference(tmp_path, faces_dir, reference):
    work = tmp_path / "work"
    shutil.copytree(reference, work, ignore=shutil.ignore_patterns("lfwc"))
    params = make_params(tmp_path, work, faces_dir)
    return params, load(params)


@pytest.mark.parametrize("how", ["garbage", "empty", "truncated"])
@pytest.mark.parametrize("stage,folder", [("crops", "crops"), ("label", "labels")])
def test_corrupt_shard_is_moved_aside_and_rebuilt(copy_of_reference, reference, capsys, caplog, stage, folder, how):
    params, s = copy_of_reference
    bad = s.workdir / folder / "shard-00001.parquet"
    _corrupt(bad, how)
    assert cli(["--profile", PROFILE, "--params", str(params), stage]) == 0
    warned = [r.getMessage() for r in caplog.records if "not a readable Parquet file" in r.getMessage()]
    assert len(warned) == 1 and str(bad) in warned[0] and "shard-00001.parquet.corrupt" in warned[0]
    assert (bad.parent / "shard-00001.parquet.corrupt").is_file()
    (bad.parent / "shard-00001.parquet.corrupt").unlink()
    assert_same_tables(s.workdir / folder, reference / folder)
    err = capsys.readouterr().err  # stage messages go to stderr
    assert err.count("(up to date)") == 3  # only the bad shard was redone


def test_label_with_a_corrupt_crop_shard_labels_the_rest_then_says_which(copy_of_reference, capsys):
    params, s = copy_of_reference
    shutil.rmtree(s.labels_dir)
    _corrupt(shard_path(s.crops_dir, "shard-00002"), "garbage")
    assert cli(["--profile", PROFILE, "--params", str(params), "label"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert str(shard_path(s.crops_dir, "shard-00002")) in line and "agedistill crops --shard shard-00002" in line
    assert list_shards(s.labels_dir) == ["shard-00000", "shard-00001", "shard-00003"]
    assert cli(["--profile", PROFILE, "--params", str(params), "crops"]) == 0
    assert cli(["--profile", PROFILE, "--params", str(params), "label"]) == 0
    assert len(list_shards(s.labels_dir)) == 4


def test_vmage_with_a_corrupt_label_shard_names_it(copy_of_reference, capsys):
    params, s = copy_of_reference
    _corrupt(shard_path(s.labels_dir, "shard-00003"), "garbage")
    assert cli(["--profile", PROFILE, "--params", str(params), "vmage"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert str(shard_path(s.labels_dir, "shard-00003")) in line and "agedistill label" in line
    assert cli(["--profile", PROFILE, "--params", str(params), "label"]) == 0
    assert cli(["--profile", PROFILE, "--params", str(params), "vmage"]) == 0


def test_read_table_of_garbage_is_one_line_with_the_stage(tmp_path):
    bad = tmp_path / "labels" / "shard-00000.parquet"
    bad.parent.mkdir()
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"shard-00000\.parquet is not a readable Parquet file .*`agedistill label`"):
        read_table(bad)


# --- unknown shards --------------------------------------------------------------------------

@pytest.mark.parametrize("stage,folder", [("crops", "crops"), ("label", "labels")])
def test_unknown_shard_is_one_line_listing_the_valid_ones(copy_of_reference, capsys, stage, folder):
    params, s = copy_of_reference
    before = sorted(p.name for p in (s.workdir / folder).iterdir())
    assert cli(["--profile", PROFILE, "--params", str(params), stage, "--shard", "shard-99"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "'shard-99'" in line and "shard-00000, shard-00001, shard-00002, shard-00003" in line
    assert sorted(p.name for p in (s.workdir / folder).iterdir()) == before  # nothing written


def test_known_shard_option_runs_only_that_shard(copy_of_reference):
    params, s = copy_of_reference
    shard_path(s.labels_dir, "shard-00001").unlink()
    shard_path(s.labels_dir, "shard-00002").unlink()
    results = stages.run_labels(s, ["shard-00002"])
    assert [r.path.name for r in results] == ["shard-00002.parquet"]
    assert list_shards(s.labels_dir) == ["shard-00000", "shard-00002", "shard-00003"]


# --- onnxruntime's telemetry files -----------------------------------------------------------

def test_teacher_leaves_no_telemetry_files(tmp_path):
    """onnxruntime's 1DS telemetry writes $TMPDIR/mat-debug-<pid>.log and
    ~/.cache/Microsoft/... unless ORT_DISABLE_TELEMETRY is set before it is imported."""
    tmp, cache = tmp_path / "tmp", tmp_path / "cache"
    tmp.mkdir()
    cache.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(TMPDIR=str(tmp), XDG_CACHE_HOME=str(cache), OMP_NUM_THREADS="1")
    code = ("import numpy as np\n"
            "from agedistill_core.settings import TeacherSettings\n"
            "from agedistill_core.teacher import build_teacher\n"
            "t = build_teacher(TeacherSettings(variants=1, threads=1))\n"
            "print(t.label(np.zeros((2, 64, 64, 3), np.uint8)).age.shape)\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith("mat-debug")) == []
    assert not (cache / "Microsoft").exists()
