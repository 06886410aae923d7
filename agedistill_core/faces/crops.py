"""Stage 1: source images -> face crop shards (one row per image's chosen face).

Every image yields a row: ``ok`` (a detected face), ``whole_image`` (no face
found, image used as its own box), ``no_face``, ``unreadable``, ``too_large`` (more
pixels than the decoding cap, ``images.DEFAULT_MAX_PIXELS``: refused from its header), ``too_small``
(the face box, detected or the whole image, is under ``faces.min_face``
pixels) or ``duplicate`` (a byte-identical copy of another manifest image,
``duplicate_of``: labelled once, under the first copy), each with the reason.
Only ``USABLE`` rows (``labeltable.USABLE``) reach the teacher and training.  Nothing is dropped
silently; a bad file never stops the shard.
"""
from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from agedistill_core.datasets.base import images_fingerprint, real_path, unchanged_since, utf8_text
from agedistill_core.errors import DataError, UnreadableImage
from agedistill_core.faces import extract_face, make_detector
from agedistill_core.faces.align import get_aligner
from agedistill_core.images import encode_jpeg, read_image
from agedistill_core.progress import Progress
from agedistill_core.settings import FaceSettings, Settings
from agedistill_core.shards import StageResult, read_table, shard_path, table_metadata, write_table

LOG = logging.getLogger("agedistill.faces.crops")

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
MIN_FACE = 24  # default of faces.min_face: a smaller face box (pixels, shorter side) is too_small


def min_face(cfg: FaceSettings) -> int:
    """``faces.min_face`` (``MIN_FACE`` when the settings do not have it)."""
    return int(getattr(cfg, "min_face", MIN_FACE))

# One detector (and landmark model) per process, made on first use: worker
# processes of the pool each build their own; nothing heavy is pickled.
_DETECTOR_CACHE: dict[str, object] = {}


def _detector(cfg: FaceSettings):
    if cfg.detector not in _DETECTOR_CACHE:
        _DETECTOR_CACHE[cfg.detector] = make_detector(cfg.detector)
    return _DETECTOR_CACHE[cfg.detector]


def crop_one(path: Path, image_id: str, cfg: FaceSettings, duplicate_of: str | None = None) -> dict:
    """One photo framed as the crops stage frames it: the row it writes for the photo's face.

    The row has ``CROPS_SCHEMA``'s columns; ``jpeg`` holds the crop when ``status`` is one of
    ``labeltable.USABLE``, else it is None and ``status`` / ``reason`` say why (``no_face``,
    ``unreadable``, ``too_large``, ``too_small``; ``duplicate`` when ``duplicate_of`` names the
    image it copies).  Public so that whatever frames photos outside the stage (fine-tuning, the
    teacher's measurements, tests) frames them exactly as the training crops were framed, with
    the same ``faces`` settings (``cfg``); the detector is built once per process and reused.
    """
    row = dict(image_id=image_id, face=0, jpeg=None, box=None, landmarks=None,
               detector=cfg.detector if cfg.align == "none" else f"{cfg.detector}+{cfg.align}",
               score=None, status="unreadable", reason=None)
    if duplicate_of is not None:
        row.update(status="duplicate", reason=(
            f"byte-identical to {duplicate_of} (same size and SHA-1); labelled once, under that id; "
            f"delete the copy to silence this"))
        return row
    detector = _detector(cfg)
    aligner = get_aligner(cfg.align, cfg.align_padding)
    try:
        rgb = read_image(path)
    except UnreadableImage as exc:  # too_large (over the decoding cap, images.TooLargeImage) or unreadable
        row["status"] = getattr(exc, "status", "unreadable")
        row["reason"] = utf8_text(str(exc))  # a non-UTF-8 file name is shown with \xNN escapes
        return row
    fc = extract_face(rgb, detector, size=cfg.crop_size, margin=cfg.margin,
                      min_score=cfg.min_score, whole_image_fallback=cfg.whole_image_fallback,
                      whole_image_max_side=cfg.whole_image_max_side,
                      aligner=aligner, min_face=min_face(cfg))
    row.update(status=fc.status, reason=utf8_text(fc.reason), score=fc.score,
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


def _manifest_shard(settings: Settings, sid: str) -> dict[str, list]:
    """The manifest rows of shard ``sid``: image_id, dataset, path, path_bytes, duplicate_of
    (the last two null for a manifest written before they existed)."""
    try:
        names = set(pq.read_schema(settings.manifest_path).names)
    except (pa.ArrowInvalid, OSError):
        names = set()  # missing or unreadable: read_table below says so, with the fix
    optional = [c for c in ("path_bytes", "duplicate_of", "sha1") if c in names]
    manifest = read_table(settings.manifest_path, ["image_id", "dataset", "path", "shard", *optional])
    manifest = manifest.filter(pc.equal(manifest["shard"], sid))
    cols = {c: manifest[c].to_pylist() for c in ("image_id", "dataset", "path", *optional)}
    for c in ("path_bytes", "duplicate_of"):
        cols.setdefault(c, [None] * manifest.num_rows)
    cols.setdefault("sha1", None)  # None: a manifest written before content hashes
    return cols


def status_counts(table: pa.Table) -> dict[str, int]:
    vc = pc.value_counts(table["status"]).to_pylist()
    return {d["values"]: int(d["counts"]) for d in vc}


def crop_shard(settings: Settings, sid: str, *, force: bool = False,
               progress: bool | Callable[[int, int], None] = True) -> StageResult:
    """Crop every image of manifest shard ``sid`` into ``crops/<sid>.parquet``.

    Skips the work when the shard exists and was made with the same settings.  ``progress``:
    True, a bar on a terminal or a throttled log line (``agedistill.faces.crops``); False, none;
    a callable, called with (images done, images) after each image instead.
    """
    out = shard_path(settings.crops_dir, sid)
    manifest = _manifest_shard(settings, sid)
    ids = manifest["image_id"]
    dupes = manifest["duplicate_of"]
    version = settings.section_hash("dataset", "faces")
    if any(d is not None for d in dupes):
        # which rows are copies is part of what the shard holds: when it changes (a first
        # copy deleted, a copy added), the shard and its labels are made again
        pairs = json.dumps(sorted((i, d) for i, d in zip(ids, dupes) if d is not None))
        version += "+dup" + hashlib.sha1(pairs.encode()).hexdigest()[:8]
    # content changes are changes: the shard's (image_id, sha1) pairs are part of its version
    images = images_fingerprint(ids, manifest["sha1"])
    legacy, version = version, version if images is None else f"{version}+img{images[:8]}"
    sources = {src.id: src for src in settings.sources}
    rows_src = [_source_of(sources, d, iid) for d, iid in zip(manifest["dataset"], ids)]
    paths = [real_path(src.root, p, raw) for src, p, raw in zip(rows_src, manifest["path"], manifest["path_bytes"])]
    if out.is_file() and not force and _up_to_date(out, version, legacy, images, paths):
        table = read_table(out, ["status"])
        return StageResult(out, table.num_rows, status_counts(table), skipped=True)
    cfgs = [src.faces for src in rows_src]
    for cfg in {src.id: src.faces for src in rows_src}.values():
        _detector(cfg)  # a bad detector / missing model file fails here, once, with its message
        get_aligner(cfg.align, cfg.align_padding)
    work = crop_one
    rows: list[dict] = []
    hook = progress if callable(progress) else None
    with Progress(len(ids), f"crops {sid}", "image", logger=LOG, enabled=progress is True) as bar:
        if settings.faces.workers > 1 and len(ids) > 1:
            with ProcessPoolExecutor(settings.faces.workers) as pool:
                chunk = max(1, min(64, len(ids) // (4 * settings.faces.workers)))
                rows_in = pool.map(work, paths, ids, cfgs, dupes, chunksize=chunk)
                for i, row in enumerate(rows_in):
                    rows.append(row)
                    bar.update()
                    if hook:
                        hook(i + 1, len(ids))
        else:
            for i, (p, iid, cfg, dup) in enumerate(zip(paths, ids, cfgs, dupes)):
                rows.append(work(p, iid, cfg, dup))
                bar.update()
                if hook:
                    hook(i + 1, len(ids))
    table = pa.Table.from_pylist(rows, schema=CROPS_SCHEMA)
    write_table(table, out, {"version": version, "shard": sid, **({"images": images} if images else {})})
    return StageResult(out, table.num_rows, status_counts(table))


def _up_to_date(out: Path, version: str, legacy: str, images: str | None, paths: list[Path]) -> bool:
    """Whether shard file ``out`` holds these settings' crops of these images.

    A shard written before content hashes (version ``legacy``, no ``images``) is adopted
    once when none of its images changed after it was written (``unchanged_since``: ctime
    and mtime older than the file): its ``images`` are recorded and its version kept, so
    its labels stay valid; from then on a replaced image changes the version."""
    meta = table_metadata(out)
    if meta.get("version") == version or (meta.get("version") == legacy and images is not None
                                          and meta.get("images") == images):
        return True
    if meta.get("version") != legacy or images is None or "images" in meta:
        return False
    if not unchanged_since(paths, out.stat().st_mtime_ns):
        return False
    write_table(read_table(out), out, {**meta, "images": images})
    return True
