"""The whole pipeline as plain function calls: the map of the stages.

``manifest -> crops (per shard) -> labels (per shard) -> vmage -> lfwc
(per corruption x severity) -> students (per architecture) -> benchmark +
robustness``.  The CLI, DVC, Dagster and tests all call
these same functions; ``run_all`` just calls them in order.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Callable

import pyarrow.compute as pc

from agedistill_core.corruptions import corruption_names
from agedistill_core.crops import StageResult, crop_shard
from agedistill_core.datasets import build_manifest
from agedistill_core.errors import ConfigError, DataError
from agedistill_core.evaluate.benchmark import run_benchmark
from agedistill_core.evaluate.robustness import COMPLETE as LFWC_COMPLETE
from agedistill_core.evaluate.robustness import (base_faces, build_lfwc_partition, complete_parts, partition_dir,
                                                 run_robustness, selected)
from agedistill_core.labels import label_shard
from agedistill_core.settings import Settings
from agedistill_core.shards import atomic_write_text, read_table, shard_path, table_metadata
from agedistill_core.students.train import run_dir, train_student
from agedistill_core.teacher.report import age_group_report
from agedistill_core.vmage import build_vmage, check_vmage, manifest_crops, per_source, sources_markdown, summarize

Log = Callable[[str], None]


def manifest_shards(settings: Settings) -> list[str]:
    table = read_table(settings.manifest_path, ["shard"])
    return sorted(pc.unique(table["shard"]).to_pylist())


def _listing(names: list[str], limit: int = 12) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:3])}, ..., {names[-1]} ({len(names)} in all)"


def check_shards(settings: Settings, shards: list[str] | None) -> list[str]:
    """The requested shards (default: all of the manifest's); an unknown one is a one-line error."""
    known = manifest_shards(settings)
    if not shards:
        return known
    unknown = [s for s in dict.fromkeys(shards) if s not in set(known)]
    if unknown:
        raise ConfigError(f"unknown shard {', '.join(repr(s) for s in unknown)} (--shard); the manifest "
                          f"{settings.manifest_path} has {_listing(known)}")
    return list(dict.fromkeys(shards))


def _each_shard(stage, what: str, settings: Settings, shards: list[str] | None, log: Log) -> list[StageResult]:
    """Run a per-shard stage over the given shards (default: all of the manifest's).

    A shard that fails with a user error (``DataError``: e.g. its input shard is
    missing or unreadable) does not stop the others; the errors are raised
    together, as one line, once every other shard is done."""
    results, failed = [], []
    for sid in check_shards(settings, shards):
        try:
            r = stage(settings, sid)
        except DataError as exc:
            log(f"{what} {sid}: failed: {exc}")
            failed.append((sid, exc))
            continue
        log(f"{what} {sid}: {r.rows} rows {r.counts or ''}{' (up to date)' if r.skipped else ''}")
        results.append(r)
    if failed:
        if len(failed) == 1:
            raise failed[0][1]
        raise DataError(f"{what}: {len(failed)} shard(s) failed ({', '.join(s for s, _ in failed)}); "
                        f"first: {failed[0][1]}")
    return results


def run_crops(settings: Settings, shards: list[str] | None = None, log: Log = print) -> list[StageResult]:
    return _each_shard(crop_shard, "crops", settings, shards, log)


def run_labels(settings: Settings, shards: list[str] | None = None, log: Log = print) -> list[StageResult]:
    return _each_shard(label_shard, "labels", settings, shards, log)


def run_vmage(settings: Settings, log: Log = print, *, strict: bool = True) -> dict:
    """Build the label table, its summary and checks.  With ``strict`` (the CLI,
    DVC, ``run_all``) a failing check raises a one-line ``DataError`` after the
    table and summary are written (so they can be inspected)."""
    table = build_vmage(settings)
    crops = manifest_crops(settings, ["image_id", "face", "status"])
    summary = summarize(table, crops)
    summary["sources"] = per_source(table, read_table(settings.manifest_path, ["image_id", "dataset"]), crops)
    summary["sources_table"] = sources_markdown(summary["sources"])
    checks = check_vmage(table, crops)
    summary["checks"] = {c.name: c.passed for c in checks}
    report = age_group_report(table, settings.workdir)
    summary["age_group_plot"] = str(report["path"])
    summary["age_group_table"] = report["markdown"]
    atomic_write_text(settings.workdir / "vmage_summary.json", json.dumps(summary, indent=2))
    log(f"label table: {summary['faces']} faces, groups {summary['age_groups']}")
    if len(summary["sources"]) > 1:
        log("per source:\n" + summary["sources_table"])
    failed = [c for c in checks if not c.passed]
    if strict and failed:
        names = {c.name for c in failed}
        fix = ("run `agedistill label` (it redoes every shard whose labels do not match its crops), "
               "then `agedistill vmage`" if names <= {"counts_match_crops", "unique_ids"} else
               "the teacher gave invalid outputs: check teacher.members in the profile, then re-run "
               "`agedistill label` and `agedistill vmage`")
        raise DataError(f"label table {settings.vmage_path} fails {len(failed)} check(s): "
                        + "; ".join(f"{c.name} ({c.detail})" for c in failed) + f"; {fix}")
    return summary


def run_lfwc(settings: Settings, names: list[str] | None = None, severities: list[int] | None = None,
             log: Log = print) -> list[StageResult]:
    """Build the corrupted set's partitions (all that the profile selects, or a subset).

    A corruption or severity the profile does not select is a one-line error,
    and so is a base split without faces (checked before any partition is written)."""
    pairs = selected(settings)
    chosen_names = list(dict.fromkeys(n for n, _ in pairs))
    chosen_sevs = sorted({s for _, s in pairs})
    unknown = [n for n in dict.fromkeys(names or []) if n not in chosen_names]
    if unknown:
        every = corruption_names()
        what = ("unknown corruption" if any(n not in every for n in unknown)
                else "corruption not selected by the profile")
        raise ConfigError(f"{what} {', '.join(repr(n) for n in unknown)} (--corruption); "
                          f"choose from {', '.join(chosen_names)}"
                          + ("" if len(chosen_names) == len(every) else
                             f" (corruptions.names of profile {settings.profile!r} in {settings.params_path})"))
    bad = [s for s in dict.fromkeys(severities or []) if s not in chosen_sevs]
    if bad:
        raise ConfigError(f"severity {', '.join(map(str, bad))} (--severity) is not one of the profile's "
                          f"corruptions.severities: {', '.join(map(str, chosen_sevs))}")
    base = functools.cache(lambda: base_faces(settings, require=True))  # read the base faces at most once
    return [build_lfwc_partition(settings, n, s, log=log, faces=base) for n, s in pairs
            if (not names or n in names) and (not severities or s in severities)]


def run_students(settings: Settings, archs: list[str] | None = None, log: Log = print) -> list[dict]:
    return [train_student(settings, a, log=log) for a in (archs or list(settings.students.archs))]


def run_all(settings: Settings, log: Log = print) -> str:
    """Every stage in order; returns the benchmark table as Markdown."""
    table = build_manifest(settings)
    log(f"manifest: {table.num_rows} images in {len(manifest_shards(settings))} shard(s)")
    run_crops(settings, log=log)
    run_labels(settings, log=log)
    run_vmage(settings, log=log)
    if settings.corruptions.enabled:
        run_lfwc(settings, log=log)
    run_students(settings, log=log)
    run_benchmark(settings, log=log)
    run_robustness(settings, log=log)
    return (settings.benchmarks_dir / "benchmark.md").read_text()


# -- versions: what a scheduler (Dagster) compares to tell stale from fresh ---------------
# The settings sections each stage reads, besides its inputs (the same sections dvc.yaml
# lists as `params`, plus those the stage's own version stamp covers: crops hash
# dataset + faces, LFW+C partitions dataset + faces + split + corruptions).
STAGE_SETTINGS: dict[str, tuple[str, ...]] = {
    "manifest": ("dataset", "split", "seed", "shard_size"),
    "crops": ("dataset", "faces"),
    "label": ("teacher",),
    "vmage": (),
    "lfwc": ("dataset", "faces", "split", "corruptions"),
    "train": ("students", "faces", "seed"),
    "evaluate": ("evaluate", "corruptions"),
}


def settings_version(settings: Settings, stage: str) -> str:
    """Hash of the settings sections ``stage`` reads: changes exactly when a setting that
    changes the stage's output changes (for crops and LFW+C it is the hash their files record)."""
    if stage not in STAGE_SETTINGS:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_SETTINGS)}")
    return settings.section_hash(*STAGE_SETTINGS[stage])


def _digest(*parts: bytes) -> str:
    h = hashlib.sha1()
    for part in parts:
        h.update(hashlib.sha1(part).digest())
    return h.hexdigest()[:12]


def _file_digest(*paths: Path) -> str | None:
    """Hash of the files' bytes (None when the first is missing; later missing ones count as empty)."""
    if not paths[0].is_file():
        return None
    return _digest(*(p.read_bytes() if p.is_file() else b"" for p in paths))


def stage_version(settings: Settings, stage: str, key=None) -> str | None:
    """The version of what ``stage`` has written for ``key``, or None when it has not.

    ``key``: a shard id (crops, label), a ``(corruption, severity)`` pair (lfwc), an
    architecture (train); none for the others.  Crops and labels report the version
    their shard files record (a settings hash; a label shard's chains its crop
    shard's), an LFW+C partition its completion record; the label table hashes its
    inputs' versions (the manifest and the label shards); the manifest, checkpoints
    and benchmark tables hash their bytes.  Equal versions mean equal data, so a
    re-run that the stage skips reports the version it reported before.
    """
    if stage == "manifest":
        return _file_digest(settings.manifest_path)
    if stage in ("crops", "label"):
        path = shard_path(settings.crops_dir if stage == "crops" else settings.labels_dir, key)
        return (table_metadata(path).get("version") or None) if path.is_file() else None
    if stage == "vmage":
        manifest = stage_version(settings, "manifest")
        if manifest is None or not settings.vmage_path.is_file():
            return None
        labels = [[sid, stage_version(settings, "label", sid)] for sid in manifest_shards(settings)]
        return _digest(json.dumps([manifest, labels]).encode())
    if stage == "lfwc":
        name, severity = key
        if complete_parts(settings, name, int(severity)) is None:
            return None
        return _file_digest(partition_dir(settings, name, int(severity)) / LFWC_COMPLETE)
    if stage == "train":
        return _file_digest(run_dir(settings, key) / "best.pt")
    if stage == "evaluate":
        out = settings.benchmarks_dir
        return _file_digest(out / "benchmark.parquet", out / "robustness.parquet")
    raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_SETTINGS)}")
