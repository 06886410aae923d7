"""A shard with no usable face (only unreadable files) is labelled as an empty shard
(0 rows, the labels schema), later shards are labelled, and vmage / lfwc / the
students' data loading take the empty shard in their stride."""
from __future__ import annotations

import shutil

import pytest

from agedistill_core import stages
from agedistill_core.datasets import build_manifest
from agedistill_core.images import encode_jpeg
from agedistill_core.teacher.label import LABELS_SCHEMA, label_shard, labels_table
from agedistill_core.shards import list_shards, read_table, shard_path
from agedistill_core.labeltable import load_split
from agedistill_core.students.train import train_student
from rel_helpers import real_faces



def _bad_bytes(kind: str) -> bytes:
    if kind == "landscape_photo":  # a real photo with no face, larger than a crop: no_face
        from skimage import data

        return encode_jpeg(data.coffee())
    face = real_faces(1)[0].read_bytes()
    return {"garbage": bytes(range(256)) * 12, "empty": b"", "text": b"not an image at all\n",
            "truncated_jpeg": face[: len(face) // 2]}[kind]


@pytest.mark.parametrize("kind", ["garbage", "empty", "text", "truncated_jpeg", "landscape_photo"])
def test_shard_with_no_usable_face_gets_an_empty_label_shard(tiny, tmp_path, kind):
    root = tmp_path / "photos"
    root.mkdir()
    for f in real_faces(5):
        shutil.copy(f, root / f.name)
    # the SSD detector for the photo (the default for photos); UTKFace chips are used whole
    params, s = tiny(root=root, **({"faces": {"detector": "ssd"}} if kind == "landscape_photo" else {}))
    build_manifest(s)                                     # shard-00000: 5 faces
    (root / f"zz_{kind}.jpg").write_bytes(_bad_bytes(kind))
    build_manifest(s)                                     # shard-00001: the bad file alone
    for f in real_faces(2, offset=1):
        shutil.copy(f, root / f"zzz_{f.name}")
    build_manifest(s)                                     # shard-00002: two more faces
    assert stages.manifest_shards(s) == ["shard-00000", "shard-00001", "shard-00002"]

    stages.run_crops(s)
    status = "no_face" if kind == "landscape_photo" else "unreadable"
    assert read_table(shard_path(s.crops_dir, "shard-00001"), ["status"])["status"].to_pylist() == [status]
    results = stages.run_labels(s)

    assert [r.rows for r in results] == [5, 0, 2]         # the shard after the empty one is labelled too
    empty = read_table(shard_path(s.labels_dir, "shard-00001"))
    assert empty.num_rows == 0 and empty.schema.remove_metadata() == LABELS_SCHEMA
    assert label_shard(s, "shard-00001").skipped          # and a rerun counts it as done
    assert label_shard(s, "shard-00001", force=True).rows == 0  # as the Dagster asset calls it
    summary = stages.run_vmage(s)            # strict: raises if a check fails
    assert summary["faces"] == 7 and all(summary["checks"].values())
    assert summary["crop_status"].get(status) == 1 and sum(summary["crop_status"].values()) == 8


def test_labels_table_with_no_faces_has_the_schema():
    for n_children in (0, 2):
        t = labels_table([], [], [], [], "v", n_members=3, n_children=n_children)
        assert t.num_rows == 0 and t.schema == LABELS_SCHEMA


def test_students_data_and_lfwc_read_past_an_empty_shard(tiny, tmp_path):
    """An all-unreadable shard in the middle: the splits load, a student trains, LFW+C builds."""
    root = tmp_path / "photos"
    root.mkdir()
    for f in real_faces(10):
        shutil.copy(f, root / f.name)
    params, s = tiny(root=root, split={"test": 0.0, "val": 0.3},
                     students={"epochs": 1, "threads": 1, "augment": False})
    build_manifest(s)
    (root / "zz_bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    build_manifest(s)
    for f in real_faces(3, offset=2):
        shutil.copy(f, root / f"zzz_{f.name}")
    build_manifest(s)
    stages.run_crops(s)
    stages.run_labels(s)
    stages.run_vmage(s)
    assert read_table(shard_path(s.labels_dir, "shard-00002")).num_rows == 0
    train, val = load_split(s, "train"), load_split(s, "val")
    assert len(train) + len(val) == 13 and len(set(train.image_id) | set(val.image_id)) == 13
    assert len(train) and len(val)
    summary = train_student(s, "mn3_small", progress=False)
    assert (summary["train_faces"], summary["val_faces"]) == (len(train), len(val))
    results = stages.run_lfwc(s, ["jpeg"], [1])
    assert [r.rows for r in results] == [min(10, len(train))]  # max_faces of the profile
    parts = sorted((s.lfwc_dir / "jpeg-s1").glob("part-*.parquet"))
    statuses = {st for p in parts for st in read_table(p, ["status"])["status"].to_pylist()}
    assert statuses == {"ok"}
    assert list_shards(s.labels_dir) == ["shard-00000", "shard-00001", "shard-00002", "shard-00003"]
