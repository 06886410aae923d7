"""Corrupt a table of encoded images (one corruption, one severity), in order.

Decoding uses Pillow, which refuses truncated files (OpenCV would return a
half-grey image); an undecodable row is kept with status "unreadable" and the
decoder's message as reason.  PNGs are written with OpenCV (lossless, its
default fast zlib settings).
"""
from __future__ import annotations

import atexit
import io
import math
import multiprocessing as mp
import re
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import repeat

import cv2
import numpy as np
import pyarrow as pa
from PIL import Image

from agedistill_core.errors import ConfigError, DataError

from .base import CORRUPTIONS, check_severity

OUTPUT_SCHEMA = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("corruption", pa.string(), nullable=False),
    pa.field("severity", pa.int8(), nullable=False),
    pa.field("png", pa.binary()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
])


def decode_rgb(data: bytes | None) -> np.ndarray:
    """Encoded image bytes -> uint8 RGB HxWx3; raises on anything unreadable."""
    if not data:
        raise ValueError("empty image bytes")
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # raises OSError on truncated data
        return np.array(im.convert("RGB"))


def encode_png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _reason(exc: BaseException) -> str:
    """Decoder message without object addresses (so reruns give equal tables)."""
    msg = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(exc)).strip()
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _run_chunk(rows, name: str, severity: int, seed: int):
    from . import corrupt, image_seed  # local: the package imports this module

    out = []
    for image_id, data in rows:
        try:
            rgb = decode_rgb(data)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is "unreadable"
            out.append((None, "unreadable", _reason(exc)))
            continue
        img = corrupt(rgb, name, severity, seed=image_seed(image_id, name, severity, seed))
        out.append((encode_png(img), "ok", None))
    return out


def _init_worker() -> None:
    cv2.setNumThreads(1)


_POOLS: dict[int, ProcessPoolExecutor] = {}


def _pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of ``workers`` spawned processes, kept for later calls
    (a dataset is 13 x 5 calls; spawning costs about a second each time)."""
    ex = _POOLS.get(workers)
    if ex is None:
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker)
        _POOLS[workers] = ex
    return ex


def shutdown_pools() -> None:
    """Stop the worker processes ``corrupt_table`` keeps (also done at exit)."""
    while _POOLS:
        _, ex = _POOLS.popitem()
        ex.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown_pools)


def corrupt_table(table: pa.Table, name: str, severity: int, *, seed: int = 0,
                  workers: int = 1) -> pa.Table:
    """Corrupt every row of ``table`` (columns ``image_id`` string, ``jpeg``
    binary) with ``name`` at ``severity``.

    Returns one row per input row, in input order, with columns ``image_id``,
    ``corruption``, ``severity`` (int8), ``png`` (lossless PNG of the corrupted
    RGB image; null when unreadable), ``status`` ("ok" / "unreadable") and
    ``reason`` (null when ok).  Row ``i`` uses the seed
    ``image_seed(image_id, name, severity, seed)``, so results do not depend on
    ``workers`` or on the other rows.  ``workers > 1`` runs chunks in a
    process pool (spawn start method).
    """
    CORRUPTIONS.get(name)
    severity = check_severity(severity)
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer; got {workers!r}")
    missing = [c for c in ("image_id", "jpeg") if c not in table.column_names]
    if missing:
        raise DataError(
            f"corrupt_table needs columns image_id and jpeg; missing {', '.join(missing)} "
            f"(has: {', '.join(table.column_names) or 'none'})"
        )
    ids = ["" if v is None else str(v) for v in table.column("image_id").to_pylist()]
    rows = list(zip(ids, table.column("jpeg").to_pylist()))

    if workers == 1 or len(rows) < 2:
        results = _run_chunk(rows, name, severity, seed)
    else:
        workers = min(workers, len(rows))
        size = max(1, min(64, math.ceil(len(rows) / (workers * 4))))
        chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
        ex = _pool(workers)
        try:
            results = [r for part in ex.map(_run_chunk, chunks, repeat(name),
                                             repeat(severity), repeat(seed))
                       for r in part]
        except BrokenProcessPool:
            _POOLS.pop(workers, None)
            raise

    n = len(rows)
    return pa.table({
        "image_id": pa.array(ids, pa.string()),
        "corruption": pa.array([name] * n, pa.string()),
        "severity": pa.array([severity] * n, pa.int8()),
        "png": pa.array([r[0] for r in results], pa.binary()),
        "status": pa.array([r[1] for r in results], pa.string()),
        "reason": pa.array([r[2] for r in results], pa.string()),
    }, schema=OUTPUT_SCHEMA)
