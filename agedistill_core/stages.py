"""The stage functions: one plain function of the settings per stage of ``pipeline.STAGES``, and the
version of what each has written.

``pipeline.STAGES`` names these functions (``"agedistill_core.stages:run_crops"``) and imports
them only when a stage runs or a version is asked for; each function imports its family's modules
(detection, the teacher, torch for training, ...) when it is called, so that the stage table, the
CLI's ``--help`` and its argument errors load none of them.

A stage's version (``*_version(settings, key)``) is what a scheduler (Dagster) compares to tell
stale from fresh: the version of what the stage has written for ``key``, or None when it has not.
Crops and labels report the version their shard files record (a settings hash and the shard's
images' content hash; a label shard's chains its crop shard's), an LFW+C partition its completion
record; the label table hashes its inputs' versions (the manifest and the label shards); the
manifest, checkpoints and benchmark tables hash their bytes.  Equal versions mean equal data, so
a re-run that the stage skips reports the version it reported before.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path

from agedistill_core.errors import ConfigError, DataError
from agedistill_core.settings import Settings

LOG = logging.getLogger("agedistill.stages")


def manifest_shards(settings: Settings) -> list[str]:
    import pyarrow.compute as pc

    from agedistill_core.shards import read_table

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


def _counts(counts: dict | None) -> str:
    """``(ok 38, no_face 2)``: a stage's status counts for a log line."""
    return f" ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})" if counts else ""


def _each_shard(stage, what: str, settings: Settings, shards: list[str] | None) -> list:
    """Run a per-shard stage over the given shards (default: all of the manifest's).

    A shard that fails with a user error (``DataError``: e.g. its input shard is
    missing or unreadable) does not stop the others; the errors are raised
    together, as one line, once every other shard is done."""
    results, failed = [], []
    for sid in check_shards(settings, shards):
        try:
            r = stage(settings, sid)
        except DataError as exc:
            LOG.info(f"{what} {sid}: failed: {exc}")
            failed.append((sid, exc))
            continue
        LOG.info(f"{what} {sid}: {r.rows} rows{_counts(r.counts)}{' (up to date)' if r.skipped else ''}")
        results.append(r)
    if failed:
        if len(failed) == 1:
            raise failed[0][1]
        raise DataError(f"{what}: {len(failed)} shard(s) failed ({', '.join(s for s, _ in failed)}); "
                        f"first: {failed[0][1]}")
    return results


def run_manifest(settings: Settings):
    """Scan the data set(s) into the manifest: one row per image, with split and sticky shard."""
    from agedistill_core.datasets import build_manifest

    table = build_manifest(settings)
    LOG.info(f"manifest: {table.num_rows} images in {len(manifest_shards(settings))} shard(s) "
             f"-> {settings.manifest_path}")
    return table


def run_crops(settings: Settings, shards: list[str] | None = None) -> list:
    from agedistill_core.faces.crops import crop_shard

    return _each_shard(crop_shard, "crops", settings, shards)


def run_labels(settings: Settings, shards: list[str] | None = None) -> list:
    from agedistill_core.teacher.label import label_shard

    return _each_shard(label_shard, "labels", settings, shards)


def run_vmage(settings: Settings, *, strict: bool = True) -> dict:
    """Build the label table, its summary and checks.  With ``strict`` (the CLI,
    DVC, ``run_all``) a failing check raises a one-line ``DataError`` after the
    table and summary are written (so they can be inspected)."""
    from agedistill_core.shards import atomic_write_text, read_table
    from agedistill_core.teacher.report import age_group_report
    from agedistill_core.labeltable import manifest_crops
    from agedistill_core.teacher.vmage import build_vmage, check_vmage, per_source, sources_markdown, summarize

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
    atomic_write_text(settings.workdir / "vmage_metrics.json", json.dumps(vmage_metrics(summary), indent=2))
    groups = ", ".join(f"{g} {n}" for g, n in summary["age_groups"].items())
    LOG.info(f"label table: {summary['faces']} faces; age groups {groups}")
    if len(summary["sources"]) > 1:
        LOG.info("per source:\n" + summary["sources_table"])
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


def vmage_metrics(summary: dict) -> dict:
    """The label table's numbers only (DVC metrics: `dvc metrics show`, `dvc exp show`)."""
    out = {"faces": summary["faces"], "splits": summary["splits"], "age_groups": summary["age_groups"],
           "checks_passed": sum(bool(v) for v in summary.get("checks", {}).values()),
           "checks_failed": sum(not v for v in summary.get("checks", {}).values())}
    if "teacher_mae_to_ground_truth" in summary:
        out["teacher_mae_to_ground_truth"] = round(summary["teacher_mae_to_ground_truth"], 4)
    return out


def run_lfwc(settings: Settings, names: list[str] | None = None, severities: list[int] | None = None) -> list:
    """Build the corrupted set's partitions (all that the profile selects, or a subset).

    A corruption or severity the profile does not select is a one-line error,
    and so is a base split without faces (checked before any partition is written)."""
    from agedistill_core.corruptions import corruption_names
    from agedistill_core.corruptions.lfwc import base_faces, build_lfwc_partition, selected

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
    return [build_lfwc_partition(settings, n, s, faces=base) for n, s in pairs
            if (not names or n in names) and (not severities or s in severities)]


def run_students(settings: Settings, archs: list[str] | None = None) -> list[dict]:
    from agedistill_core.students.train import train_student

    return [train_student(settings, a) for a in (archs or list(settings.students.archs))]


def run_evaluate(settings: Settings) -> str:
    """The benchmark tables, and robustness where LFW+C partitions exist; returns the benchmark as Markdown."""
    from agedistill_core.evaluate.benchmark import run_benchmark
    from agedistill_core.evaluate.robustness import run_robustness

    run_benchmark(settings)
    run_robustness(settings)
    return (settings.benchmarks_dir / "benchmark.md").read_text()


# -- versions ---------------------------------------------------------------------------------

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


def manifest_version(settings: Settings, key=None) -> str | None:
    return _file_digest(settings.manifest_path)


def _shard_version(folder: Path, key: str) -> str | None:
    from agedistill_core.shards import shard_path, table_metadata

    path = shard_path(folder, key)
    return (table_metadata(path).get("version") or None) if path.is_file() else None


def crops_version(settings: Settings, key: str) -> str | None:
    """The version the crop shard ``key`` records (settings hash + its images' content hash)."""
    return _shard_version(settings.crops_dir, key)


def label_version(settings: Settings, key: str) -> str | None:
    """The version the label shard ``key`` records (chaining its crop shard's)."""
    return _shard_version(settings.labels_dir, key)


def vmage_version(settings: Settings, key=None) -> str | None:
    """The label table's inputs' versions: the manifest and every label shard."""
    manifest = manifest_version(settings)
    if manifest is None or not settings.vmage_path.is_file():
        return None
    labels = [[sid, label_version(settings, sid)] for sid in manifest_shards(settings)]
    return _digest(json.dumps([manifest, labels]).encode())


def lfwc_version(settings: Settings, key) -> str | None:
    """An LFW+C partition's completion record (``key``: a ``(corruption, severity)`` pair)."""
    from agedistill_core.corruptions.lfwc import COMPLETE as LFWC_COMPLETE
    from agedistill_core.corruptions.lfwc import complete_parts, partition_dir

    name, severity = key
    if complete_parts(settings, name, int(severity)) is None:
        return None
    return _file_digest(partition_dir(settings, name, int(severity)) / LFWC_COMPLETE)


def train_version(settings: Settings, key: str) -> str | None:
    """The bytes of a student run's best checkpoint (``key``: an architecture)."""
    from agedistill_core.students.train import run_dir

    return _file_digest(run_dir(settings, key) / "best.pt")


def evaluate_version(settings: Settings, key=None) -> str | None:
    out = settings.benchmarks_dir
    return _file_digest(out / "benchmark.parquet", out / "robustness.parquet")
