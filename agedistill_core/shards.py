"""Sharded Parquet storage: atomic writes, listing, reading.

A shard is one Parquet file ``<dir>/<shard_id>.parquet``.  Writes go to a
temporary file in the same folder and are renamed into place, so a killed run
never leaves a half-written shard that a later run would trust.
"""
from __future__ import annotations

from dataclasses import dataclass

import hashlib
import logging
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from agedistill_core.errors import DataError

SHARD_PREFIX = "shard-"
CORRUPT_SUFFIX = ".corrupt"

log = logging.getLogger("agedistill.shards")
_UMASK_LOCK = threading.Lock()


def shard_id(index: int) -> str:
    return f"{SHARD_PREFIX}{index:05d}"


def shard_index(sid: str) -> int:
    if not sid.startswith(SHARD_PREFIX):
        raise DataError(f"{sid!r} is not a shard id (expected {SHARD_PREFIX}NNNNN)")
    return int(sid[len(SHARD_PREFIX):])


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # portable fallback: set and restore (process-wide, hence the lock)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed
    onto ``path``, on any error it is removed.  Every file this project writes goes
    through here, so a killed run never leaves a half-written file under a real name.

    The file gets the mode a plain ``open(path, "w")`` of a new file would give
    (``0o666 & ~umask``), not ``mkstemp``'s private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_table(table: pa.Table, path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a Parquet file atomically, with optional key/value metadata."""
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): str(v).encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


# the command that rewrites a file, by the folder (or file) it lives in
_STAGE_OF = {"crops": "agedistill crops", "labels": "agedistill label", "manifest.parquet": "agedistill manifest",
             "vmage.parquet": "agedistill vmage", "lfwc": "agedistill lfwc"}


def stage_hint(path: Path) -> str:
    """Which command rewrites ``path`` ("its stage" when unknown)."""
    path = Path(path)
    for part in (path.name, path.parent.name, path.parent.parent.name):
        if part in _STAGE_OF:
            return f"`{_STAGE_OF[part]}`"
    return "its stage"


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; materialise the stage that writes it first ({stage_hint(path)})")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path} is not a readable Parquet file ({_short(exc)}); "
                        f"delete it and re-run {stage_hint(path)}") from None


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160]


def quarantine(path: Path, reason: str) -> Path:
    """Move an unreadable file aside to ``<name>.corrupt`` (kept for inspection, never
    read again) and say so on the ``agedistill`` logger; returns the new path."""
    path = Path(path)
    dest = path.with_name(path.name + CORRUPT_SUFFIX)
    k = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}{CORRUPT_SUFFIX}-{k}")
        k += 1
    try:
        os.replace(path, dest)
    except FileNotFoundError:  # another process moved it aside first
        return dest
    log.warning("warning: %s is not a readable Parquet file (%s); moved it to %s and it will be rebuilt",
                path, reason, dest.name)
    return dest


def table_metadata(path: Path) -> dict[str, str]:
    """The key/value metadata of a Parquet file (our ``version`` stamps).

    A file that is not Parquet at all (garbage, truncated, empty: a disk or copy
    accident, never our own atomic writes) is quarantined (``quarantine``) and
    reads as ``{}``, i.e. "no valid output": the stage that asked rebuilds it."""
    path = Path(path)
    try:
        meta = pq.read_schema(path).metadata or {}
    except pa.ArrowInvalid as exc:
        quarantine(path, _short(exc))
        return {}
    except OSError as exc:
        if not path.exists():
            return {}
        raise DataError(f"{path} cannot be read ({_short(exc)}); check its permissions") from None
    return {k.decode(): v.decode() for k, v in meta.items() if not k.startswith(b"ARROW") and k != b"pandas"}


def shard_path(folder: Path, sid: str) -> Path:
    return Path(folder) / f"{sid}.parquet"


def list_shards(folder: Path) -> list[str]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob(f"{SHARD_PREFIX}*.parquet"))


def read_shards(folder: Path, columns: list[str] | None = None, shards: list[str] | None = None) -> pa.Table:
    ids = shards if shards is not None else list_shards(folder)
    if not ids:
        raise DataError(f"no shards in {folder}; materialise the stage that writes it first")
    return pa.concat_tables([read_table(shard_path(folder, s), columns) for s in ids], promote_options="default")


def _row_keys(table: pa.Table, keys: list[str]) -> pa.Array:
    cols = [pc.cast(table[k], pa.string()) for k in keys]
    return cols[0] if len(cols) == 1 else pc.binary_join_element_wise(*cols, "\x1f")


def join_columns(left: pa.Table, right: pa.Table, keys: list[str], columns: list[str],
                 how: str = "left") -> pa.Table:
    """Append ``columns`` of ``right`` to ``left`` matched on ``keys``.

    Arrow's hash join refuses list columns (our probability vectors), so this
    matches keys with ``index_in`` and gathers with ``take``.  ``how="inner"``
    drops left rows with no match; ``"left"`` keeps them with nulls.
    """
    idx = pc.index_in(_row_keys(left, keys), value_set=_row_keys(right, keys))
    if how == "inner":
        keep = pc.is_valid(idx)
        left, idx = left.filter(keep), idx.filter(keep)
    for col in columns:
        left = left.append_column(col, right[col].take(idx))
    return left


@dataclass
class StageResult:
    """What one run of a stage on one key (a shard, a partition) did."""
    path: Path                     # the file or folder it wrote (or found up to date)
    rows: int
    counts: dict[str, int]         # rows per status
    skipped: bool = False          # True: already up to date, nothing recomputed


def file_sha1(path: Path | None) -> str | None:
    """SHA-1 of a file's bytes, read in 1 MB blocks (None when there is no such readable file)."""
    if path is None:
        return None
    h = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()
