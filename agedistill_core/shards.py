"""Sharded Parquet storage: atomic writes, listing, reading.

A shard is one Parquet file ``<dir>/<shard_id>.parquet``.  Writes go to a
temporary file in the same folder and are renamed into place, so a killed run
never leaves a half-written shard that a later run would trust.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from agedistill_core.errors import DataError

SHARD_PREFIX = "shard-"


def shard_id(index: int) -> str:
    return f"{SHARD_PREFIX}{index:05d}"


def shard_index(sid: str) -> int:
    if not sid.startswith(SHARD_PREFIX):
        raise DataError(f"{sid!r} is not a shard id (expected {SHARD_PREFIX}NNNNN)")
    return int(sid[len(SHARD_PREFIX):])


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed
    onto ``path``, on any error it is removed.  Every file this project writes goes
    through here, so a killed run never leaves a half-written file under a real name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; materialise the stage that writes it first")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path} is not a readable Parquet file ({exc}); delete it and re-run its stage") from None


def table_metadata(path: Path) -> dict[str, str]:
    meta = pq.read_schema(path).metadata or {}
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
