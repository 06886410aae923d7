"""Stage 1: source images -> face crop shards (one row per image's chosen face).

Every image yields a row: ``ok`` (a detected face), ``whole_image`` (no face
found, image used as its own box), ``no_face`` or ``unreadable`` (with the
reason).  Nothing is dropped silently; a bad file never stops the shard.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agedistill_core.errors import DataError, UnreadableImage
from agedistill_core.faces import extract_face, make_detector
from agedistill_core.faces.align import get_aligner
from agedistill_core.images import encode_jpeg, read_image
from agedistill_core.settings import FaceSettings, Settings
from agedistill_core.shards import read_table, shard_path, table_metadata, write_table

CROPS_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("face", pa.int16()),
    ("jpeg", pa.binary()),
    ("box", pa.list_(pa.float32(), 4)),
    ("landmarks", pa.list_(pa.float32())),
    ("detector", pa.string()),
    ("score", pa.float32()),
    ("status", pa.string()),
    ("reason", pa.string()),
])
USABLE = ("ok", "whole_image")  # statuses that have a crop

# One detector (and landmark model) per process, made on first use: worker
# processes of the pool each build their own; nothing heavy is pickled.
_DETECTOR_CACHE: dict[str, object] = {}


def _detector(cfg: FaceSettings):
    if cfg.detector not in _DETECTOR_CACHE:
        _DETECTOR_CACHE[cfg.detector] = make_detector(cfg.detector)
    return _DETECTOR_CACHE[cfg.detector]


def _crop_one(path: Path, image_id: str, cfg: FaceSettings) -> dict:
    detector = _detector(cfg)
    aligner = get_aligner(cfg.align, cfg.align_padding)
    row = dict(image_id=image_id, face=0, jpeg=None, box=None, landmarks=None,
               detector=cfg.detector if cfg.align == "none" else f"{cfg.detector}+{cfg.align}",
               score=None, status="unreadable", reason=None)
    try:
        rgb = read_image(path)
    except UnreadableImage as exc:
        row["reason"] = str(exc)
        return row
    fc = extract_face(rgb, detector, size=cfg.crop_size, margin=cfg.margin,
                      min_score=cfg.min_score, whole_image_fallback=cfg.whole_image_fallback,
                      whole_image_max_side=cfg.whole_image_max_side,
                      aligner=aligner)
    row.update(status=fc.status, reason=fc.reason, score=fc.score,
               box=list(fc.box) if fc.box else None,
               landmarks=np.asarray(fc.landmarks, np.float32).ravel().tolist() if fc.landmarks is not None else None)
    if fc.crop is not None:
        row["jpeg"] = encode_jpeg(fc.crop, cfg.jpeg_quality)
    return row


def _source_of(sources: dict, source_id: str, image_id: str):
    if source_id in sources:
        return sources[source_id]
    if len(sources) == 1:  # a manifest written before sources had ids: the dataset name
        return next(iter(sources.values()))
    raise DataError(f"manifest row {image_id} belongs to source {source_id!r}, which the profile no longer "
                    f"has; run `agedistill manifest` again")


@dataclass
class StageResult:
    path: Path
    rows: int
    counts: dict[str, int]
    skipped: bool = False


def status_counts(table: pa.Table) -> dict[str, int]:
    vc = pc.value_counts(table["status"]).to_pylist()
    return {d["values"]: int(d["counts"]) for d in vc}


def crop_shard(settings: Settings, sid: str, *, force: bool = False,
               progress: Callable[[int, int], None] | None = None) -> StageResult:
    """Crop every image of manifest shard ``sid`` into ``crops/<sid>.parquet``.

    Skips the work when the shard exists and was made with the same settings.
    """
    out = shard_path(settings.crops_dir, sid)
    version = settings.section_hash("dataset", "faces")
    if out.is_file() and not force and table_metadata(out).get("version") == version:
        table = read_table(out, ["status"])
        return StageResult(out, table.num_rows, status_counts(table), skipped=True)
    manifest = read_table(settings.manifest_path, ["image_id", "dataset", "path", "shard"])
    manifest = manifest.filter(pc.equal(manifest["shard"], sid))
    ids = manifest["image_id"].to_pylist()
    sources = {src.id: src for src in settings.sources}
    rows_src = [_source_of(sources, d, iid) for d, iid in zip(manifest["dataset"].to_pylist(), ids)]
    paths = [src.root / p for src, p in zip(rows_src, manifest["path"].to_pylist())]
    cfgs = [src.faces for src in rows_src]
    for cfg in {src.id: src.faces for src in rows_src}.values():
        _detector(cfg)  # a bad detector / missing model file fails here, once, with its message
        get_aligner(cfg.align, cfg.align_padding)
    work = _crop_one
    rows: list[dict] = []
    if settings.faces.workers > 1 and len(ids) > 1:
        with ProcessPoolExecutor(settings.faces.workers) as pool:
            chunk = max(1, min(64, len(ids) // (4 * settings.faces.workers)))
            for i, row in enumerate(pool.map(work, paths, ids, cfgs, chunksize=chunk)):
                rows.append(row)
                if progress:
                    progress(i + 1, len(ids))
    else:
        for i, (p, iid, cfg) in enumerate(zip(paths, ids, cfgs)):
            rows.append(work(p, iid, cfg))
            if progress:
                progress(i + 1, len(ids))
    table = pa.Table.from_pylist(rows, schema=CROPS_SCHEMA)
    write_table(table, out, {"version": version, "shard": sid})
    return StageResult(out, table.num_rows, status_counts(table))
