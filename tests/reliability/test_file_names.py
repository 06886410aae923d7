"""File names and kinds the manifest meets in real folders: a name that is not valid
UTF-8, GIF / HEIC / extension-less files.  Each is recorded (a manifest row the crop
stage reads from the real file) or counted and named in a one-line message; nothing
crashes and nothing is ignored silently.

Real faces from ../shared/data/utkface/crop_part1 (skipped with the path named when
absent) plus tiny generated files."""
from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from agedistill_core.faces.crops import crop_shard
from agedistill_core.datasets import build_manifest
from agedistill_core.datasets.base import image_suffixes, manifest_notes, real_path
from agedistill_core.errors import DataError
from agedistill_core.faces import extract_face
from agedistill_core.images import decode_image, encode_jpeg, read_image
from agedistill_core.shards import read_table, table_metadata
from rel_helpers import real_faces, run_cli

LATIN1 = b"25_0_0_caf\xe9.jpg"            # a Latin-1 name (e with acute accent), not valid UTF-8
SHOWN = "25_0_0_caf\\xe9.jpg"              # how the manifest shows it


def _bytes_file(folder: Path, name: bytes, data: bytes) -> Path:
    """Write ``data`` under the raw file name ``name`` (skip where the file system refuses it)."""
    raw = os.path.join(os.fsencode(folder), name)
    try:
        with open(raw, "wb") as f:
            f.write(data)
    except OSError as exc:
        pytest.skip(f"this file system refuses non-UTF-8 file names ({exc})")
    return Path(os.fsdecode(raw))


def _folder(tmp_path: Path, n: int = 3) -> tuple[Path, list[Path]]:
    faces = real_faces(n)
    root = tmp_path / "imgs"
    root.mkdir()
    for f in faces:
        shutil.copy(f, root / f.name)
    return root, faces


def _crops(settings) -> dict[str, dict]:
    rows = {}
    for sid in sorted(set(read_table(settings.manifest_path, ["shard"])["shard"].to_pylist())):
        rows.update({r["image_id"]: r for r in read_table(crop_shard(settings, sid).path).to_pylist()})
    return rows


# --- a file name that is not valid UTF-8 -------------------------------------------------------

def test_non_utf8_name_is_recorded_escaped_and_cropped_from_the_real_file(tmp_path, tiny):
    root, _ = _folder(tmp_path, 2)
    source = real_faces(1, offset=7)[0]                     # a face that is not already in the folder
    _bytes_file(root, LATIN1, source.read_bytes())
    data = source.read_bytes()
    _bytes_file(root, b"30_1_0_broken\xff.jpg", data[: len(data) // 2])   # truncated, odd name too
    _, s = tiny("names", root=root)
    table = build_manifest(s)                                 # used to raise UnicodeEncodeError
    rows = {r["path"]: r for r in table.to_pylist()}
    row = rows[SHOWN]
    assert row["image_id"] == f"utkface/{SHOWN}" and row["path_bytes"] == LATIN1
    assert row["age"] == 25.0                                 # the adapter still parses the real name
    assert real_path(root, row["path"], row["path_bytes"]).read_bytes() == source.read_bytes()
    assert rows["30_1_0_broken\\xff.jpg"]["path_bytes"] == b"30_1_0_broken\xff.jpg"
    assert all(r["path_bytes"] is None for p, r in rows.items() if "\\x" not in p)   # ordinary names: null
    notes = manifest_notes(s)
    assert any("not valid UTF-8" in n and SHOWN in n and "rename" in n for n in notes), notes
    assert table_metadata(s.manifest_path)["escaped_names"] == "2"

    crops = _crops(s)
    got = crops[f"utkface/{SHOWN}"]
    assert got["status"] == "ok", got["reason"]
    # the crop is the real file's: the same framing of the source face
    want = extract_face(read_image(source), None, size=64, margin=s.faces.margin)
    np.testing.assert_array_equal(decode_image(got["jpeg"]), decode_image(encode_jpeg(want.crop, s.faces.jpeg_quality)))
    bad = crops["utkface/30_1_0_broken\\xff.jpg"]
    assert bad["status"] == "unreadable" and "30_1_0_broken\\xff.jpg: " in bad["reason"]   # named, escaped

    # a second scan finds the same ids, so the image keeps its shard and its crop is reused
    again = {r["image_id"]: r["shard"] for r in build_manifest(s).to_pylist()}
    assert again == {r["image_id"]: r["shard"] for r in table.to_pylist()}
    assert crop_shard(s, row["shard"]).skipped


def test_non_utf8_name_with_limit_and_as_the_only_odd_file(tmp_path, tiny):
    """The fixed-seed ``limit`` sample hashes the name too (it used to fail on it)."""
    root, _ = _folder(tmp_path, 3)
    _bytes_file(root, LATIN1, real_faces(1, offset=7)[0].read_bytes())
    _, s = tiny("limit", root=root, dataset={"limit": 4})
    assert build_manifest(s).num_rows == 4


# --- GIF, HEIC, extension-less files -----------------------------------------------------------

def test_other_kinds_are_counted_by_suffix_and_named(tmp_path, tiny):
    from PIL import Image

    root, faces = _folder(tmp_path, 3)
    extra = real_faces(2, offset=11)
    buf = io.BytesIO()
    Image.open(extra[0]).save(buf, format="GIF")
    (root / "40_0_0_face.gif").write_bytes(buf.getvalue())
    shutil.copy(extra[1], root / "41_0_0_noext")                     # a JPEG without a suffix
    (root / "42_0_0_phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    (root / "43_0_0_phone.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    (root / "labels.txt").write_text("a sidecar, not an image\n")   # data-set sidecars are not counted
    (root / ".DS_Store").write_bytes(b"\x00" * 16)                  # nor hidden files
    _, s = tiny("kinds", root=root)
    table = build_manifest(s)
    gif_read = ".gif" in image_suffixes()
    want = {".heic": 2, "(no suffix)": 1} | ({} if gif_read else {".gif": 1})
    assert json.loads(table_metadata(s.manifest_path)["skipped"]) == want
    assert json.loads(table.schema.metadata[b"skipped"]) == want        # the returned table says it too
    [line] = [n for n in manifest_notes(s) if "skipped" in n]
    assert "\n" not in line
    assert "skipped 3 files" in line if gif_read else "skipped 4 files" in line
    assert ".heic: 2" in line and "(no suffix): 1" in line
    assert "41_0_0_noext" in line and "convert to JPEG or PNG" in line
    paths = set(table["path"].to_pylist())
    assert {f.name for f in faces} <= paths and "41_0_0_noext" not in paths
    if gif_read:  # OpenCV reads GIF (its first frame): the GIF is an image like any other
        assert "40_0_0_face.gif" in paths
        row = _crops(s)["utkface/40_0_0_face.gif"]
        assert row["status"] == "ok" and decode_image(row["jpeg"]).shape == (64, 64, 3)


def test_animated_gif_is_read_as_its_first_frame(tmp_path):
    from PIL import Image

    if ".gif" not in image_suffixes():
        pytest.skip("this OpenCV does not decode GIF (it is counted as skipped instead)")
    frames = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (200, 20, 90)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    rgb = read_image(path)
    assert rgb.shape == (32, 32, 3) and abs(int(rgb.mean()) - 200) <= 2


def test_a_root_with_only_unread_kinds_says_which(tmp_path, tiny):
    root = tmp_path / "phone"
    root.mkdir()
    for k in range(2):
        (root / f"IMG_{k}.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    _, s = tiny("heic", root=root)
    with pytest.raises(DataError) as err:
        build_manifest(s)
    assert "no images found under" in str(err.value) and ".heic: 2" in str(err.value)


def test_cli_manifest_prints_the_skipped_kinds(tmp_path, tiny):
    root, _ = _folder(tmp_path, 2)
    (root / "IMG_0001.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    params, _ = tiny("cli", root=root)
    done = run_cli(params, "manifest", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if "skipped 1 file" in ln]
    assert len(lines) == 1 and "IMG_0001.heic" in lines[0] and ".heic: 1" in lines[0], done.stderr
