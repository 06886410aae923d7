"""The whole pipeline as plain function calls: the map of the stages.

``manifest -> crops (per shard) -> labels (per shard) -> vmage -> lfwc
(per corruption x severity) -> students (per architecture) -> benchmark +
robustness``.  The CLI, DVC, Dagster and tests all call
these same functions; ``run_all`` just calls them in order.
"""
from __future__ import annotations

import functools
import json
from typing import Callable

import pyarrow.compute as pc

from agedistill_core.crops import StageResult, crop_shard
from agedistill_core.datasets import build_manifest
from agedistill_core.evaluate.benchmark import run_benchmark
from agedistill_core.evaluate.robustness import base_faces, build_lfwc_partition, run_robustness, selected
from agedistill_core.labels import label_shard
from agedistill_core.settings import Settings
from agedistill_core.shards import atomic_write_text, read_shards, read_table
from agedistill_core.students.train import train_student
from agedistill_core.teacher.report import age_group_report
from agedistill_core.vmage import build_vmage, check_vmage, summarize

Log = Callable[[str], None]


def manifest_shards(settings: Settings) -> list[str]:
    table = read_table(settings.manifest_path, ["shard"])
    return sorted(pc.unique(table["shard"]).to_pylist())


def _each_shard(stage, what: str, settings: Settings, shards: list[str] | None, log: Log) -> list[StageResult]:
    """Run a per-shard stage over the given shards (default: all of the manifest's)."""
    results = []
    for sid in shards or manifest_shards(settings):
        r = stage(settings, sid)
        log(f"{what} {sid}: {r.rows} rows {r.counts or ''}{' (up to date)' if r.skipped else ''}")
        results.append(r)
    return results


def run_crops(settings: Settings, shards: list[str] | None = None, log: Log = print) -> list[StageResult]:
    return _each_shard(crop_shard, "crops", settings, shards, log)


def run_labels(settings: Settings, shards: list[str] | None = None, log: Log = print) -> list[StageResult]:
    return _each_shard(label_shard, "labels", settings, shards, log)


def run_vmage(settings: Settings, log: Log = print) -> dict:
    table = build_vmage(settings)
    crops = read_shards(settings.crops_dir, ["image_id", "status"])
    summary = summarize(table, crops)
    summary["checks"] = {c.name: c.passed for c in check_vmage(table, crops)}
    report = age_group_report(table, settings.workdir)
    summary["age_group_plot"] = str(report["path"])
    summary["age_group_table"] = report["markdown"]
    atomic_write_text(settings.workdir / "vmage_summary.json", json.dumps(summary, indent=2))
    log(f"label table: {summary['faces']} faces, groups {summary['age_groups']}")
    return summary


def run_lfwc(settings: Settings, names: list[str] | None = None, severities: list[int] | None = None,
             log: Log = print) -> list[StageResult]:
    """Build the corrupted set's partitions (all that the profile selects, or a subset)."""
    base = functools.cache(lambda: base_faces(settings))  # read the base faces at most once
    return [build_lfwc_partition(settings, n, s, log=log, faces=base) for n, s in selected(settings)
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
