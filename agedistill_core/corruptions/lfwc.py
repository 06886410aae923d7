"""The LFW+C-style corrupted set (SPEC 6): the evaluation crops under 13 corruptions x 5 severities.

One partition = one (corruption, severity): ``lfwc/<name>-s<k>/part-NNNNN.parquet``
(lossless PNGs, one row per base face, status + reason) and ``_COMPLETE.json``,
written last, which makes the partition count as finished.  Scoring the models on
it is ``evaluate.robustness``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agedistill_core.corruptions import SEVERITIES, corrupt_table, corruption_names
from agedistill_core.errors import ConfigError, DataError
from agedistill_core.progress import Progress
from agedistill_core.settings import Settings
from agedistill_core.shards import StageResult, atomic_write_text, read_table, table_metadata, write_table
from agedistill_core.labeltable import FaceSet, load_split

LOG = logging.getLogger("agedistill.corruptions.lfwc")


def selected(settings: Settings) -> list[tuple[str, int]]:
    """The (corruption, severity) pairs this profile materialises."""
    cfg = settings.corruptions
    names = list(cfg.names) or corruption_names()
    unknown = sorted(set(names) - set(corruption_names()))
    if unknown:
        raise ConfigError(f"{settings.profile}.corruptions.names: unknown {', '.join(unknown)}; "
                          f"choose from {', '.join(corruption_names())}")
    bad = sorted(set(cfg.severities) - set(SEVERITIES))
    if bad:
        raise ConfigError(f"{settings.profile}.corruptions.severities: {bad} not in 1..5")
    return [(n, int(s)) for n in names for s in cfg.severities]


def partition_dir(settings: Settings, name: str, severity: int) -> Path:
    return settings.lfwc_dir / f"{name}-s{int(severity)}"


def base_faces(settings: Settings, *, require: bool = False) -> FaceSet:
    """The base split's faces (fixed-seed subset when ``max_faces`` is set).

    With ``require`` an empty base split is a one-line ``DataError`` naming the
    setting (corrupting nothing would write empty partitions that look done)."""
    split = settings.corruptions.base_split
    faces = load_split(settings, split, "teacher")
    if require and len(faces) == 0:
        splits = read_table(settings.vmage_path, ["split"])["split"]
        sizes = {d["values"]: int(d["counts"]) for d in pc.value_counts(splits).to_pylist()}
        have = ", ".join(f"{k} {v}" for k, v in sorted(sizes.items(), key=lambda kv: str(kv[0]))) or "no faces at all"
        raise DataError(f"corruptions.base_split {split!r} has no faces in the label table {settings.vmage_path} "
                        f"({have}); set corruptions.base_split in profile {settings.profile!r} of "
                        f"{settings.params_path} to a split that has faces")
    limit = settings.corruptions.max_faces
    if limit is not None and len(faces) > limit:
        idx = np.sort(np.random.default_rng([settings.seed, 11]).permutation(len(faces))[:limit])
        faces = faces.subset(idx)
    return faces


COMPLETE = "_COMPLETE.json"  # a partition's completion record, written last


def partition_version(settings: Settings) -> str:
    return settings.section_hash("dataset", "faces", "split", "corruptions")


def complete_parts(settings: Settings, name: str, severity: int) -> list[Path] | None:
    """The part files of a finished partition, or None when it is not finished.

    A partition is finished only when its completion record (written atomically
    after every part) exists, has this profile's version, and lists exactly the
    part files on disk: a build killed between parts, a part deleted by hand or
    a stray extra part all read as "not finished", and the partition is rebuilt."""
    out = partition_dir(settings, name, severity)
    try:
        record = json.loads((out / COMPLETE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != partition_version(settings):
        return None
    on_disk = sorted(p.name for p in out.glob("part-*.parquet"))
    if record.get("parts") != on_disk:
        return None
    return [out / p for p in on_disk]


def build_lfwc_partition(settings: Settings, name: str, severity: int, *, force: bool = False,
                         faces: Callable[[], FaceSet] | None = None) -> StageResult:
    """Corrupt the base faces with one (corruption, severity), in shard-sized parts.

    ``faces`` supplies the base faces when a caller builds many partitions in one
    process (read once, not once per partition); by default they are read here.
    The completion record (``_COMPLETE.json``: version, part list, row count) is
    written last; without a valid one the partition is rebuilt from scratch.
    """
    out = partition_dir(settings, name, severity)
    version = partition_version(settings)
    marker = out / COMPLETE
    done = None if force else complete_parts(settings, name, severity)
    if done is not None:
        record = json.loads(marker.read_text())
        return StageResult(out, int(record.get("faces", 0)), dict(record.get("counts", {})), skipped=True)
    leftovers = sorted(out.glob("part-*.parquet"))
    faces = faces() if faces is not None else base_faces(settings, require=True)
    if len(faces) == 0:
        raise DataError(f"corruptions.base_split {settings.corruptions.base_split!r} has no faces; "
                        f"set corruptions.base_split in profile {settings.profile!r} of {settings.params_path}")
    if leftovers and not force:
        adopted = _adopt_legacy(settings, name, severity, leftovers, faces, version)
        if adopted is not None:
            return adopted
        LOG.info(f"lfwc {name} s{severity}: {len(leftovers)} part(s) on disk but no valid {COMPLETE} "
            f"(an interrupted or older build); rebuilding")
    marker.unlink(missing_ok=True)  # from here on the partition is "not finished" until the end
    for stale in leftovers:
        stale.unlink()
    counts: dict[str, int] = {}
    parts = []
    step = settings.shard_size
    with Progress(len(faces), f"lfwc {name} s{severity}", "face", logger=LOG) as bar:
        for k, lo in enumerate(range(0, len(faces), step)):
            chunk = pa.table({"image_id": faces.image_id[lo:lo + step],
                              "jpeg": pa.array(faces.jpeg[lo:lo + step], pa.binary())})
            table = corrupt_table(chunk, name, severity, seed=settings.corruptions.seed,
                                  workers=settings.corruptions.workers)
            for d in pc.value_counts(table["status"]).to_pylist():
                counts[d["values"]] = counts.get(d["values"], 0) + int(d["counts"])
            part = out / f"part-{k:05d}.parquet"
            write_table(table, part, {"version": version})
            parts.append(part.name)
            bar.update(chunk.num_rows)
    atomic_write_text(marker, json.dumps({"version": version, "corruption": name, "severity": int(severity),
                                          "parts": parts, "faces": len(faces), "counts": counts}, indent=1))
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    LOG.info(f"lfwc {name} s{severity}: {len(faces)} faces ({statuses})")
    return StageResult(out, len(faces), counts)


def _adopt_legacy(settings: Settings, name: str, severity: int, parts: list[Path], faces: FaceSet,
                  version: str) -> StageResult | None:
    """A partition written before completion records existed is kept (and given its
    record) only if its parts are exactly the ones a full build writes: this
    version, part-00000.. in order, and together every base face in order."""
    step = settings.shard_size
    expected = [f"part-{k:05d}.parquet" for k in range(-(-len(faces) // step))]
    if [p.name for p in parts] != expected:
        return None
    try:
        tables = [read_table(p, ["image_id", "status"]) for p in parts]
        versions = [table_metadata(p).get("version") for p in parts]
    except DataError:
        return None
    if any(v != version for v in versions):
        return None
    table = pa.concat_tables(tables)
    if table["image_id"].to_pylist() != list(faces.image_id):
        return None
    counts = {d["values"]: int(d["counts"]) for d in pc.value_counts(table["status"]).to_pylist()}
    out = partition_dir(settings, name, severity)
    atomic_write_text(out / COMPLETE, json.dumps({"version": version, "corruption": name, "severity": int(severity),
                                                  "parts": expected, "faces": len(faces), "counts": counts},
                                                 indent=1))
    return StageResult(out, len(faces), counts, skipped=True)


def partition_faces(parts: list[Path]) -> tuple[list[str], list[bytes]]:
    table = pa.concat_tables([read_table(p, ["image_id", "png", "status"]) for p in parts])
    table = table.filter(pc.equal(table["status"], "ok"))
    return table["image_id"].to_pylist(), table["png"].to_pylist()
