"""Stage 2: face crop shards -> teacher label shards (vectors kept).

One row per usable face: the voted vector on ages 0..100, its expected age,
each member's vector and age, and agreement measures.  Faces are decoded and
labelled in batches; a shard already labelled by the same teacher is skipped,
so a killed run resumes at the first missing shard.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agedistill_core.labeltable import USABLE
from agedistill_core.shards import StageResult
from agedistill_core.errors import DataError, UnreadableImage
from agedistill_core.images import decode_image, resize
from agedistill_core.progress import Progress
from agedistill_core.settings import Settings
from agedistill_core.shards import quarantine, read_table, shard_path, table_metadata, write_table
from agedistill_core.teacher import Teacher, TeacherOutput, build_teacher

LOG = logging.getLogger("agedistill.teacher.label")

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
    ("gated", pa.bool_()),
    ("children_ages", pa.list_(pa.float32())),
])

_TEACHERS: dict[str, Teacher] = {}


def get_teacher(settings: Settings) -> Teacher:
    """One teacher (and its sessions) per process and configuration."""
    key = settings.section_hash("teacher")
    if key not in _TEACHERS:
        _TEACHERS[key] = build_teacher(settings.teacher, base_dir=settings.params_path.parent)
    return _TEACHERS[key]


def _fixed_list(values: np.ndarray, width: int) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(values, np.float32).ravel())
    return pa.FixedSizeListArray.from_arrays(flat, width)


def _decode_batch(jpegs: list, ids: list, lo: int, hi: int, size: int | None) -> tuple[list[np.ndarray], list[int]]:
    batch, idx = [], []
    for i in range(lo, hi):
        try:
            img = decode_image(jpegs[i], ids[i])
            batch.append(resize(img, size) if size else img)
            idx.append(i)
        except UnreadableImage:
            continue  # cannot happen for crops we encoded; kept defensive
    return batch, idx


def label_crops(teacher: Teacher, jpegs: list, ids: list, *, batch_size: int = 64, prefetch: bool = True,
                progress: Callable[[int, int], None] | None = None) -> tuple[list[TeacherOutput], list[int]]:
    """Decode and label JPEG crops in batches; with ``prefetch`` a thread decodes
    batch k+1 while the networks run on batch k (both release the GIL)."""
    if len(jpegs) != len(ids):
        raise ValueError(f"label_crops: {len(jpegs)} crops but {len(ids)} ids")
    size = teacher.stack_size  # None: each member resizes from the stored crop (``Teacher.stack_size``)
    starts = list(range(0, len(ids), batch_size))
    outputs, kept = [], []

    def job(lo):
        return _decode_batch(jpegs, ids, lo, min(lo + batch_size, len(ids)), size)

    pool = ThreadPoolExecutor(1, thread_name_prefix="decode") if prefetch and len(starts) > 1 else None
    try:
        pending = pool.submit(job, starts[0]) if pool and starts else None
        for k, lo in enumerate(starts):
            if pool:
                batch, idx = pending.result()
                if k + 1 < len(starts):
                    pending = pool.submit(job, starts[k + 1])
            else:
                batch, idx = job(lo)
            if batch:
                outputs.append(teacher.label(teacher.stack(batch)))
                kept.extend(idx)
            if progress:
                progress(min(lo + batch_size, len(ids)), len(ids))
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
    return outputs, kept


def _list_column(values: np.ndarray, n_rows: int, width: int) -> pa.Array:
    offsets = pa.array(np.arange(n_rows + 1, dtype=np.int32) * width)
    return pa.ListArray.from_arrays(offsets, pa.array(np.asarray(values, np.float32).ravel()))


def label_shard(settings: Settings, sid: str, *, force: bool = False,
                progress: bool | Callable[[int, int], None] = True) -> StageResult:
    """Label the usable crops of shard ``sid`` into ``labels/<sid>.parquet``.

    ``progress``: True, a bar on a terminal or a throttled log line (``agedistill.teacher.label``);
    False, none; a callable, called with (crops done, crops) after each batch instead.

    The shard file is written once, atomically, at the end: a killed run
    leaves either the complete shard or nothing (a hidden temp file at most),
    and the next run skips complete shards whose version matches and redoes the
    rest, so there are no duplicates and no gaps.  A shard with no usable face
    gets an empty labels shard (0 rows, same schema); an unreadable labels
    shard is moved aside (``<name>.corrupt``) and rebuilt.
    """
    out = shard_path(settings.labels_dir, sid)
    crops_path = shard_path(settings.crops_dir, sid)
    # the labels' version chains the crops' own version: re-made crops mean re-made labels
    # (table_metadata moves an unreadable file aside and reads it as absent)
    crops_meta = table_metadata(crops_path) if crops_path.is_file() else {}
    if not crops_path.is_file():
        raise DataError(f"{crops_path} is missing; run `agedistill crops --shard {sid}` "
                        f"(or materialise face_crops {sid}) before labelling it")
    version = f"{crops_meta.get('version', '?')}-{settings.section_hash('teacher')}"
    if out.is_file() and not force and table_metadata(out).get("version") == version:
        try:
            done = read_table(out, ["image_id", "face"])
        except DataError as exc:  # a readable footer over damaged pages: rebuild it
            quarantine(out, str(exc))
        else:
            if _matches_crops(done, crops_path):
                return StageResult(out, done.num_rows, {}, skipped=True)
            # right version but not one row per usable crop (edited, or written by a buggy
            # tool): not trusted, rebuilt below
    _remove_stale_temps(out)
    crops = read_table(crops_path, ["image_id", "face", "jpeg", "status"])
    crops = crops.filter(pc.is_in(crops["status"], pa.array(USABLE)))
    ids, faces = crops["image_id"].to_pylist(), crops["face"].to_pylist()
    if ids:
        teacher = get_teacher(settings)
        jpegs = crops["jpeg"].to_pylist()
        with Progress(len(ids), f"labels {sid}", "face", logger=LOG, enabled=progress is True) as bar:
            def tick(done: int, total: int) -> None:
                bar.update(done - bar.n)
                if callable(progress):
                    progress(done, total)

            outputs, kept = label_crops(teacher, jpegs, ids, batch_size=settings.teacher.batch_size,
                                        prefetch=settings.teacher.prefetch, progress=tick)
        n_members, n_children = len(teacher.members), len(teacher.children)
    else:  # no usable face in this shard (all unreadable / no_face): an empty shard, same schema
        outputs, kept = [], []
        n_members, n_children = len(settings.teacher.members), len(settings.teacher.children)
    table = labels_table(outputs, kept, ids, faces, version, n_members, n_children)
    write_table(table, out, {"version": version, "shard": sid})
    return StageResult(out, table.num_rows, {"labelled": table.num_rows,
                                             "gated": int(np.sum(table["gated"].to_numpy(zero_copy_only=False)))})


def _matches_crops(labels: pa.Table, crops_path) -> bool:
    """One labels row per usable crop of the shard, no duplicate (image_id, face)."""
    status = read_table(crops_path, ["status"])["status"]
    usable = int(pc.sum(pc.is_in(status, pa.array(USABLE))).as_py() or 0)
    if labels.num_rows != usable:
        return False
    keys = pc.binary_join_element_wise(labels["image_id"], pc.cast(labels["face"], pa.string()), "#")
    return len(pc.unique(keys)) == labels.num_rows


def labels_table(outputs: list[TeacherOutput], kept: list[int], ids: list, faces: list, version: str,
                 n_members: int, n_children: int = 0) -> pa.Table:
    """Rows of LABELS_SCHEMA from batched teacher outputs."""
    keys = ("age", "probs", "member_probs", "member_ages", "age_spread", "entropy", "gated", "children_ages")
    if outputs:
        cat = {k: np.concatenate([getattr(o, k) for o in outputs]) for k in keys}
    else:
        cat = {"age": np.zeros(0), "probs": np.zeros((0, 101)), "member_probs": np.zeros((0, n_members, 101)),
               "member_ages": np.zeros((0, n_members)), "age_spread": np.zeros(0), "entropy": np.zeros(0),
               "gated": np.zeros(0, bool), "children_ages": np.zeros((0, n_children))}
    n = len(kept)
    if n != len(cat["age"]):
        raise ValueError(f"labels_table: {n} kept faces but {len(cat['age'])} teacher outputs")
    member_probs = pa.ListArray.from_arrays(
        pa.array(np.arange(0, n * n_members + 1, n_members, dtype=np.int32)),
        _fixed_list(cat["member_probs"].reshape(-1, 101), 101))
    gated = np.asarray(cat["gated"], bool)
    kid_ages = np.asarray(cat["children_ages"], np.float64).reshape(n, n_children)
    # children ages only on gated rows (empty lists elsewhere)
    lengths = np.where(gated, kid_ages.shape[1], 0)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    children_ages = pa.ListArray.from_arrays(pa.array(offsets),
                                             pa.array(kid_ages[gated].astype(np.float32).ravel(), pa.float32()))
    return pa.Table.from_arrays([
        pa.array([ids[i] for i in kept], pa.string()),
        pa.array([faces[i] for i in kept], pa.int16()),
        pa.array(cat["age"].astype(np.float32)),
        _fixed_list(cat["probs"], 101),
        _list_column(cat["member_ages"], n, n_members),
        member_probs,
        pa.array(cat["age_spread"].astype(np.float32)),
        pa.array(cat["entropy"].astype(np.float32)),
        pa.array([version] * n, pa.string()),
        pa.array(gated, pa.bool_()),
        children_ages,
    ], schema=LABELS_SCHEMA)


def _remove_stale_temps(out, older_than_s: float = 3600) -> None:
    """Temp files a killed run left next to ``out`` (never read, only tidied; a
    recent one may belong to a concurrent writer, so it is left alone)."""
    now = time.time()
    for tmp in out.parent.glob(f".{out.name}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
        except OSError:
            pass
