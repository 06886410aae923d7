"""Stage 2: face crop shards -> teacher label shards (vectors kept).

One row per usable face: the voted vector on ages 0..100, its expected age,
each member's vector and age, and agreement measures.  Faces are decoded and
labelled in batches; a shard already labelled by the same teacher is skipped,
so a killed run resumes at the first missing shard.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agedistill_core.crops import USABLE, StageResult
from agedistill_core.errors import UnreadableImage
from agedistill_core.images import decode_image, resize
from agedistill_core.settings import Settings
from agedistill_core.shards import read_table, shard_path, table_metadata, write_table
from agedistill_core.teacher import Teacher, build_teacher

LABELS_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("face", pa.int16()),
    ("age", pa.float32()),
    ("probs", pa.list_(pa.float32(), 101)),
    ("member_ages", pa.list_(pa.float32())),
    ("member_probs", pa.list_(pa.list_(pa.float32(), 101))),
    ("age_spread", pa.float32()),
    ("entropy", pa.float32()),
    ("teacher", pa.string()),
])

_TEACHERS: dict[str, Teacher] = {}


def get_teacher(settings: Settings) -> Teacher:
    """One teacher (and its sessions) per process and configuration."""
    key = settings.section_hash("teacher")
    if key not in _TEACHERS:
        _TEACHERS[key] = build_teacher(settings.teacher)
    return _TEACHERS[key]


def _fixed_list(values: np.ndarray, width: int) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(values, np.float32).ravel())
    return pa.FixedSizeListArray.from_arrays(flat, width)


def label_shard(settings: Settings, sid: str, *, force: bool = False,
                progress: Callable[[int, int], None] | None = None) -> StageResult:
    out = shard_path(settings.labels_dir, sid)
    version = settings.section_hash("dataset", "faces", "teacher")
    if out.is_file() and not force and table_metadata(out).get("version") == version:
        return StageResult(out, read_table(out, ["image_id"]).num_rows, {}, skipped=True)
    crops = read_table(shard_path(settings.crops_dir, sid), ["image_id", "face", "jpeg", "status"])
    crops = crops.filter(pc.is_in(crops["status"], pa.array(USABLE)))
    teacher = get_teacher(settings)
    size = max(teacher.input_sizes)
    ids, faces = crops["image_id"].to_pylist(), crops["face"].to_pylist()
    jpegs = crops["jpeg"].to_pylist()
    outputs, kept = [], []
    bs = settings.teacher.batch_size
    for start in range(0, len(ids), bs):
        batch, idx = [], []
        for i in range(start, min(start + bs, len(ids))):
            try:
                batch.append(resize(decode_image(jpegs[i], ids[i]), size))
                idx.append(i)
            except UnreadableImage:
                continue  # cannot happen for crops we encoded; kept defensive
        if batch:
            outputs.append(teacher.label(np.stack(batch)))
            kept.extend(idx)
        if progress:
            progress(min(start + bs, len(ids)), len(ids))
    n_members = len(teacher.members)
    if outputs:
        cat = {k: np.concatenate([getattr(o, k) for o in outputs]) for k in
               ("age", "probs", "member_probs", "member_ages", "age_spread", "entropy")}
    else:
        cat = {"age": np.zeros(0), "probs": np.zeros((0, 101)), "member_probs": np.zeros((0, n_members, 101)),
               "member_ages": np.zeros((0, n_members)), "age_spread": np.zeros(0), "entropy": np.zeros(0)}
    member_probs = pa.ListArray.from_arrays(
        pa.array(np.arange(0, len(kept) * n_members + 1, n_members, dtype=np.int32)),
        _fixed_list(cat["member_probs"].reshape(-1, 101), 101))
    member_ages = pa.ListArray.from_arrays(
        pa.array(np.arange(0, len(kept) * n_members + 1, n_members, dtype=np.int32)),
        pa.array(cat["member_ages"].astype(np.float32).ravel()))
    table = pa.Table.from_arrays([
        pa.array([ids[i] for i in kept], pa.string()),
        pa.array([faces[i] for i in kept], pa.int16()),
        pa.array(cat["age"].astype(np.float32)),
        _fixed_list(cat["probs"], 101),
        member_ages,
        member_probs,
        pa.array(cat["age_spread"].astype(np.float32)),
        pa.array(cat["entropy"].astype(np.float32)),
        pa.array([version] * len(kept), pa.string()),
    ], schema=LABELS_SCHEMA)
    write_table(table, out, {"version": version, "shard": sid})
    return StageResult(out, table.num_rows, {"labelled": table.num_rows})
