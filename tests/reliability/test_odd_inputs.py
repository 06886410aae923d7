"""Odd inputs that used to be accepted without a word: images too small to hold a face
(a 1x1 PNG was labelled 35.5 years and trained on) and byte-identical copies (labelled
twice, possibly one copy in train and the other in test).  Each is now a crop row with
a status and a reason, never labelled, never trained on.

Real faces from ../shared/data/utkface/crop_part1 (skipped with the path named when
absent) plus tiny generated files."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from agedistill_core import stages
from agedistill_core.faces.crops import MIN_FACE, crop_shard, min_face
from agedistill_core.labeltable import USABLE
from agedistill_core.datasets import build_manifest
from agedistill_core.datasets.base import CONTENT_COLUMNS, assign_split, manifest_notes
from agedistill_core.faces.crop import Detection, extract_face
from agedistill_core.images import encode_png
from agedistill_core.settings import FaceSettings
from agedistill_core.shards import read_table, write_table
from agedistill_core.labeltable import manifest_crops
from agedistill_core.teacher.vmage import check_vmage
from rel_helpers import real_faces


def _folder(tmp_path: Path, n: int, name: str = "imgs", offset: int = 0) -> tuple[Path, list[Path]]:
    faces = real_faces(n, offset)
    root = tmp_path / name
    root.mkdir()
    for f in faces:
        shutil.copy(f, root / f.name)
    return root, [root / f.name for f in faces]


def _crops(settings) -> dict[str, dict]:
    rows = {}
    for sid in sorted(set(read_table(settings.manifest_path, ["shard"])["shard"].to_pylist())):
        rows.update({r["image_id"]: r for r in read_table(crop_shard(settings, sid).path).to_pylist()})
    return rows


def _manifest(settings) -> dict[str, dict]:
    return {r["image_id"]: r for r in read_table(settings.manifest_path).to_pylist()}


def _copy_name(original_id: str, prefix: str, seed: int, test: float, val: float, suffix: str = ".jpg") -> str:
    """A file name whose own split (by its id) differs from ``original_id``'s: a copy under it leaks
    unless it follows the first copy's split."""
    want = assign_split(original_id, seed, test, val)
    for k in range(1000):
        name = f"{prefix}{k}{suffix}"
        if assign_split(f"{original_id.split('/')[0]}/{name}", seed, test, val) != want:
            return name
    raise AssertionError("no name with another split found")


# --- too small ---------------------------------------------------------------------------------

def test_min_face_default_and_setting():
    assert MIN_FACE == 24 and min_face(FaceSettings()) == getattr(FaceSettings(), "min_face", 24)


def test_tiny_images_are_too_small_with_the_size_and_the_setting(tmp_path, tiny):
    root, _ = _folder(tmp_path, 2)
    (root / "30_0_0_one.png").write_bytes(encode_png(np.full((1, 1, 3), 128, np.uint8)))
    (root / "31_0_0_strip.png").write_bytes(encode_png(np.full((300, 12, 3), 90, np.uint8)))
    (root / "32_0_0_edge.png").write_bytes(encode_png(np.full((MIN_FACE, MIN_FACE, 3), 60, np.uint8)))
    _, s = tiny("small", root=root)
    build_manifest(s)
    rows = _crops(s)
    one, strip, edge = rows["utkface/30_0_0_one.png"], rows["utkface/31_0_0_strip.png"], rows["utkface/32_0_0_edge.png"]
    assert one["status"] == "too_small" and one["jpeg"] is None and one["status"] not in USABLE
    assert "1x1 px" in one["reason"] and f"faces.min_face={MIN_FACE}" in one["reason"]
    assert strip["status"] == "too_small" and "12x300 px" in strip["reason"]
    assert edge["status"] == "ok"                                       # exactly min_face is kept
    assert sum(r["status"] == "ok" for r in rows.values()) == 3


def test_min_face_from_the_profile(tmp_path, tiny):
    if "min_face" not in {f.name for f in dataclasses.fields(FaceSettings)}:
        pytest.skip("settings has no faces.min_face yet (the crop stage uses its default, 24)")
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "30_0_0_small.png").write_bytes(encode_png(np.full((10, 10, 3), 128, np.uint8)))
    _, s = tiny("setting", root=root, faces={"min_face": 8})
    build_manifest(s)
    assert _crops(s)["utkface/30_0_0_small.png"]["status"] == "ok"


def _fake(*dets: Detection):
    return lambda _rgb: list(dets)


def test_small_detections_are_set_aside_like_low_scores():
    photo = np.zeros((600, 800, 3), np.uint8)
    chip = np.zeros((100, 100, 3), np.uint8)
    tiny_det, face = Detection((10, 10, 20, 22), 0.99), Detection((300, 200, 420, 330), 0.7)
    kw = dict(size=64, margin=0.2, whole_image_max_side=512, min_face=24)
    # a bigger face wins over a more confident tiny one
    assert extract_face(photo, _fake(tiny_det, face), **kw).box == face.box
    # a photo whose only face is tiny: too_small, with the box and the sizes
    fc = extract_face(photo, _fake(tiny_det), **kw)
    assert fc.status == "too_small" and fc.crop is None and fc.box == tiny_det.box
    assert "10x12 px" in fc.reason and "faces.min_face=24" in fc.reason and "800x600" in fc.reason
    # a crop-sized image with a tiny detection: the whole image is the face box (it is big enough)
    fc = extract_face(chip, _fake(tiny_det), **kw)
    assert fc.status == "whole_image" and fc.crop.shape == (64, 64, 3) and "faces.min_face=24" in fc.reason
    # ... unless the whole image is small too, or there is no fallback
    fc = extract_face(chip[:20, :20], _fake(Detection((2, 2, 9, 9), 0.9)), **kw)
    assert fc.status == "too_small" and "20x20 px image used whole" in fc.reason
    assert extract_face(chip, _fake(tiny_det), **kw, whole_image_fallback=False).status == "too_small"
    # no detector, no detection: the image itself
    assert extract_face(chip[:5, :7], None, **kw).status == "too_small"
    assert extract_face(chip[:20, :30], _fake(), **kw).status == "too_small"
    # min_face=None (callers that do not pass it): unchanged
    assert extract_face(photo, _fake(tiny_det), size=64, margin=0.2).status == "ok"


# --- duplicates --------------------------------------------------------------------------------

def test_duplicates_follow_their_first_copy_and_only_usable_faces_are_labelled(tmp_path, tiny):
    """manifest -> crops -> labels -> label table: the 1x1 image and the copies never reach the teacher."""
    root, faces = _folder(tmp_path, 4)
    first_id = f"utkface/{faces[0].name}"
    _, s = tiny("dup", root=root)
    copy = _copy_name(first_id, "50_0_0_copy", s.seed, s.split.test, s.split.val)
    shutil.copy(faces[0], root / copy)
    shutil.copy(faces[0], root / ("51_0_0_" + copy))                   # three copies of one face
    (root / "30_0_0_one.png").write_bytes(encode_png(np.full((1, 1, 3), 128, np.uint8)))
    table = build_manifest(s)
    assert "duplicate_of" in table.column_names
    m = _manifest(s)
    for cid in (f"utkface/{copy}", f"utkface/51_0_0_{copy}"):
        assert m[cid]["duplicate_of"] == first_id
        assert m[cid]["split"] == m[first_id]["split"]            # no copy in another split
    assert m[first_id]["duplicate_of"] is None
    assert sum(r["duplicate_of"] is not None for r in m.values()) == 2
    [note] = [n for n in manifest_notes(s) if "byte-identical" in n]
    assert f"utkface/{copy} = {first_id}" in note and "delete the copies" in note

    stages.run_crops(s)
    rows = _crops(s)
    assert rows[f"utkface/{copy}"]["status"] == "duplicate" and rows[f"utkface/{copy}"]["jpeg"] is None
    assert first_id in rows[f"utkface/{copy}"]["reason"]
    assert rows["utkface/30_0_0_one.png"]["status"] == "too_small"
    stages.run_labels(s)
    stages.run_vmage(s)                                  # strict: its checks pass
    vmage = read_table(s.vmage_path, ["image_id", "split"]).to_pylist()
    assert sorted(r["image_id"] for r in vmage) == sorted(f"utkface/{f.name}" for f in faces)
    checks = check_vmage(read_table(s.vmage_path), manifest_crops(s))
    assert all(c.passed for c in checks), [c.detail for c in checks]


def test_first_copy_is_sticky_and_deleting_it_relabels_the_copy(tmp_path, tiny):
    root, faces = _folder(tmp_path, 3)
    _, s = tiny("sticky", root=root)
    build_manifest(s)
    stages.run_crops(s)
    before = _manifest(s)
    old = f"utkface/{faces[1].name}"
    # a copy whose name sorts first, added later: the labelled image stays the original
    newcomer = "00_0_0_copy.jpg"
    shutil.copy(faces[1], root / newcomer)
    build_manifest(s)
    m = _manifest(s)
    assert m[f"utkface/{newcomer}"]["duplicate_of"] == old and m[old]["duplicate_of"] is None
    assert m[old]["shard"] == before[old]["shard"] and m[f"utkface/{newcomer}"]["split"] == m[old]["split"]
    assert crop_shard(s, m[old]["shard"]).skipped                     # old shards are not redone
    assert _crops(s)[f"utkface/{newcomer}"]["status"] == "duplicate"
    # the original deleted: its copy is now the face, and its shard is cropped again
    (root / faces[1].name).unlink()
    build_manifest(s)
    m = _manifest(s)
    assert m[f"utkface/{newcomer}"]["duplicate_of"] is None
    result = crop_shard(s, m[f"utkface/{newcomer}"]["shard"])
    assert not result.skipped and result.counts == {"ok": 1}


def test_copy_in_another_source_follows_the_first_source(tmp_path, tiny):
    a, faces = _folder(tmp_path, 2, "a")
    b, _ = _folder(tmp_path, 2, "b", offset=9)
    _, s = tiny("sources", dataset={"sources": [
        {"id": "a", "name": "folder", "root": str(a), "split": {"test": 0.5, "val": 0.2}},
        {"id": "b", "name": "folder", "root": str(b), "split": {"test": 0.0, "val": 0.1}},
    ]})
    first_id = f"a/{faces[0].name}"
    want = assign_split(first_id, s.seed, 0.5, 0.2)
    copy = next(n for n in (f"copy{k}.jpg" for k in range(1000)) if assign_split(f"b/{n}", s.seed, 0.0, 0.1) != want)
    shutil.copy(faces[0], b / copy)
    build_manifest(s)
    m = _manifest(s)
    assert m[f"b/{copy}"]["duplicate_of"] == first_id and m[f"b/{copy}"]["dataset"] == "b"
    assert m[f"b/{copy}"]["split"] == m[first_id]["split"] == want
    assert _crops(s)[f"b/{copy}"]["status"] == "duplicate"


def test_manifest_written_before_the_new_columns_still_crops(tmp_path, tiny):
    root, faces = _folder(tmp_path, 2)
    _, s = tiny("old", root=root)
    build_manifest(s)
    old = read_table(s.manifest_path).drop_columns(["path_bytes", "duplicate_of", *CONTENT_COLUMNS])
    write_table(old, s.manifest_path)
    assert pq.read_schema(s.manifest_path).names[-1] == "shard"
    assert {r["status"] for r in _crops(s).values()} == {"ok"}
    # readers that select columns by name see the same columns in a new manifest
    build_manifest(s)
    new = read_table(s.manifest_path, old.column_names)
    assert new.select(old.column_names).equals(old.select(old.column_names))
