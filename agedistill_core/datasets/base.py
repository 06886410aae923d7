"""The manifest: one row per source image, the same schema for every data set.

Columns: ``image_id`` (stable: dataset/relative path), ``dataset``, ``path``
(relative to the data root), ``subject``, ``age`` and ``age_std`` (years,
nullable), ``age_group`` (e.g. "30-39", nullable), ``split`` (train/val/test),
``fold`` (nullable), ``shard``.

Splits are identity-disjoint (by ``subject``; a data set without identities
uses one subject per image) and fixed by the seed.  Shards are sticky: an image
keeps the shard it had in the previous manifest, and new images fill new
shards, so adding images never re-labels old ones.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pyarrow as pa

from agedistill_core.errors import DataError
from agedistill_core.registry import Registry
from agedistill_core.settings import Settings
from agedistill_core.shards import read_table, shard_id, shard_index, write_table

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}

MANIFEST_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("dataset", pa.string()),
    ("path", pa.string()),
    ("subject", pa.string()),
    ("age", pa.float32()),
    ("age_std", pa.float32()),
    ("age_group", pa.string()),
    ("split", pa.string()),
    ("fold", pa.int16()),
    ("shard", pa.string()),
])


@dataclass
class Item:
    """One source image as an adapter sees it (split/shard are filled later)."""
    path: str                      # relative to the data root
    subject: str | None = None
    age: float | None = None
    age_std: float | None = None
    age_group: str | None = None
    split: str | None = None       # adapters with official splits set this
    fold: int | None = None


Scanner = Callable[[Path], Iterable[Item]]
DATASETS: Registry[Scanner] = Registry("dataset")


def list_images(root: Path) -> list[str]:
    """Relative paths of all image files under ``root``, sorted."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def unit_hash(*parts: object) -> float:
    """A stable number in [0, 1) from strings (not Python's salted hash())."""
    digest = hashlib.sha1("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(subject: str, seed: int, test: float, val: float) -> str:
    u = unit_hash("split", seed, subject)
    if u < test:
        return "test"
    return "val" if (u - test) / (1 - test) < val else "train"


def scan_source(settings: Settings, source) -> list[Item]:
    """One source's items (its adapter over its root; fixed-seed ``limit`` sample)."""
    root = source.root
    scanner = DATASETS.get(source.name)
    if not root.exists() and not getattr(scanner, "creates_root", False):
        where = (f"dataset.root in profile {settings.profile!r}" if not settings.dataset.sources
                 else f"the root of source {source.id!r} in profile {settings.profile!r}")
        raise DataError(f"data root {root} does not exist; set {where} of {settings.params_path} (or pass --data-root)")
    items = list(scanner(root))
    if not items:
        raise DataError(f"no images found under {root} for dataset {source.name!r}; check its root")
    if source.limit is not None and len(items) > source.limit:
        items = sorted(items, key=lambda it: unit_hash("limit", settings.seed, it.path))[:source.limit]
    return items


def scan_dataset(settings: Settings) -> list[Item]:
    """Items of the first (or only) source; see ``scan_source``."""
    return scan_source(settings, settings.sources[0])


def build_manifest(settings: Settings, previous: Path | None = None) -> pa.Table:
    """Scan every source, assign splits and sticky shards, write the manifest.

    A row's ``dataset`` is its source id and its ``path`` is relative to that
    source's root; ``image_id`` is ``<source id>/<path>``.
    """
    old_shards: dict[str, str] = {}
    prev_path = previous or settings.manifest_path
    if Path(prev_path).is_file():
        old = read_table(prev_path, ["image_id", "shard"]).to_pydict()
        old_shards = dict(zip(old["image_id"], old["shard"]))
    rows = []
    for source in settings.sources:
        split_cfg = source.split
        for it in sorted(scan_source(settings, source), key=lambda i: i.path):
            image_id = f"{source.id}/{it.path}"
            subject = it.subject or image_id
            split = it.split or assign_split(subject, settings.seed, split_cfg.test, split_cfg.val)
            rows.append(dict(image_id=image_id, dataset=source.id, path=it.path, subject=subject,
                             age=it.age, age_std=it.age_std, age_group=it.age_group,
                             split=split, fold=it.fold, shard=old_shards.get(image_id)))
    # new images go to new shards after the highest existing one
    used = [shard_index(s) for s in set(old_shards.values())]
    next_index = max(used) + 1 if used else 0
    fresh = [r for r in rows if r["shard"] is None]
    for k, row in enumerate(fresh):
        row["shard"] = shard_id(next_index + k // settings.shard_size)
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    write_table(table, settings.manifest_path,
                {"dataset": ",".join(s.id for s in settings.sources),
                 "root": ",".join(str(s.root) for s in settings.sources)})
    return table
