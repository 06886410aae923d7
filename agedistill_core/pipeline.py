"""The stages of the pipeline: one table, and the plain function of each stage.

``STAGES`` (below) is the one definition of the pipeline.  Each ``Stage`` names its
function, what it is partitioned by, the stages whose outputs it reads, the settings
sections it reads (after the profile is merged) and what it writes.  Everything else
is derived from it:

* the CLI's stage subcommands (``agedistill_core.cli``),
* ``run_all`` (every stage in table order),
* the Dagster assets' keys, groups, partitions, dependencies and code versions
  (``agedistill_dag.profile.Profile.asset_args``),
* dvc.yaml (``agedistill_core.dvcyaml``; ``agedistill dvc-yaml`` rewrites it and a test
  fails when the committed file differs).

``manifest -> crops (per shard) -> label (per shard) -> vmage -> lfwc (per corruption x
severity) -> train (per student run) -> evaluate``
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from agedistill_core.errors import ConfigError, DataError
from agedistill_core.settings import Settings

# The stages' own modules (detection, the teacher, torch for training, ...) are imported by the
# functions below when a stage runs, so that the stage table, the CLI's --help and its argument
# errors load none of them.

LOG = logging.getLogger("agedistill.pipeline")


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


# -- the table --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    """A CLI option of a stage subcommand, passed to the stage's function as ``dest``."""
    flag: str
    dest: str
    help: str
    type: type = str


@dataclass(frozen=True)
class Output:
    """A file or folder a stage writes, relative to the profile's workdir."""
    path: str
    persist: bool = False      # kept between runs: the stage updates it in place (per shard, resumable)
    kind: str = "out"          # out | metric | plot


@dataclass(frozen=True)
class Stage:
    name: str                         # CLI subcommand and DVC stage
    asset: str                        # Dagster asset (key ``<profile>/<asset>``)
    group: str                        # Dagster group
    run: Callable                     # run(settings, **options): the whole stage (logs to agedistill.*)
    help: str
    partitions: str | None = None     # None | shards | lfwc (corruption x severity) | students (run name)
    needs: tuple[str, ...] = ()       # stages whose outputs it reads (the label table stands for the crops it
                                      # joins: its version chains theirs, so a crop change reaches every reader)
    settings: tuple[str, ...] = ()    # settings sections it reads (after the profile is merged)
    code: tuple[str, ...] = ()        # source paths whose change re-runs it (dvc.yaml deps)
    outs: tuple[Output, ...] = ()
    options: tuple[Option, ...] = ()
    accelerated: bool = False         # worth a GPU: a scheduler sends it to GPU workers (Celery queue `gpu`)
    data_roots: bool = False          # reads the profile's data roots (dvc.yaml deps: each source's root)


STAGES: tuple[Stage, ...] = (
    Stage("manifest", "face_manifest", "data", run_manifest,
          "scan the data set into the manifest (sticky shards)",
          settings=("dataset", "split", "seed", "shard_size"),
          code=("agedistill_core/datasets",), data_roots=True,
          outs=(Output("manifest.parquet", persist=True),)),   # shards are sticky: the old manifest is read back
    Stage("crops", "face_crops", "data", run_crops,
          "detect and crop faces, one shard at a time", partitions="shards",
          needs=("manifest",), settings=("dataset", "faces"),
          code=("agedistill_core/faces",),
          outs=(Output("crops", persist=True),),
          options=(Option("--shard", "shards", "only this shard (repeatable)"),)),
    Stage("label", "teacher_soft_labels", "teacher", run_labels,
          "label the crops with the teacher, one shard at a time", partitions="shards",
          needs=("crops",), settings=("teacher",),
          code=("agedistill_core/teacher/label.py", "agedistill_core/teacher/ensemble.py",
                "agedistill_core/teacher/members.py", "agedistill_core/teacher/variants.py"),
          outs=(Output("labels", persist=True),),
          options=(Option("--shard", "shards", "only this shard (repeatable)"),)),
    Stage("vmage", "vmage_table", "teacher", run_vmage,
          "join the labels into the label table and check it",
          needs=("manifest", "label"),   # and the crops, through the label shards (whose versions chain theirs)
          code=("agedistill_core/teacher/vmage.py", "agedistill_core/teacher/report.py"),
          outs=(Output("vmage.parquet"), Output("vmage_summary.json"),
                Output("vmage_metrics.json", kind="metric"),
                Output("vmage_age_groups.png", kind="plot"))),
    Stage("lfwc", "lfwc_images", "robustness", run_lfwc,
          "corrupt the evaluation crops (13 corruptions x 5 severities)", partitions="lfwc",
          needs=("vmage",), settings=("dataset", "faces", "split", "corruptions"),
          code=("agedistill_core/corruptions",),
          outs=(Output("lfwc", persist=True),),
          options=(Option("--corruption", "names", "only this corruption (repeatable)"),
                   Option("--severity", "severities", "only this severity (repeatable)", int))),
    Stage("train", "student_checkpoints", "students", run_students,
          "train students", partitions="students",
          needs=("vmage",), settings=("students", "faces", "seed"),
          code=("agedistill_core/students",),
          outs=(Output("students", persist=True),),    # last.pt lets a killed run resume
          options=(Option("--arch", "archs", "only this architecture (repeatable)"),), accelerated=True),
    Stage("evaluate", "benchmark_tables", "benchmarks", run_evaluate,
          "write the benchmark tables (and robustness, where lfwc exists)",
          needs=("vmage", "lfwc", "train"), settings=("evaluate", "corruptions"),
          code=("agedistill_core/evaluate",),
          outs=(Output("benchmarks/benchmark.parquet"), Output("benchmarks/benchmark_by_source.parquet"),
                Output("benchmarks/robustness.parquet"),
                Output("benchmarks/benchmark.md"), Output("benchmarks/robustness.md"),
                Output("benchmarks/metrics.json", kind="metric"),
                Output("benchmarks/robustness.png", kind="plot"))),
)
STAGE: dict[str, Stage] = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    if name not in STAGE:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGE)}")
    return STAGE[name]


def stage_keys(settings: Settings, name: str, archs: list[str] | None = None) -> list:
    """The partition keys of a stage for this profile: shard ids, (corruption, severity) pairs,
    student run names (of ``archs``, default the profile's); ``[None]`` for an unpartitioned stage."""
    kind = stage(name).partitions
    if kind is None:
        return [None]
    if kind == "shards":
        return manifest_shards(settings)
    if kind == "lfwc":
        from agedistill_core.corruptions.lfwc import selected

        return selected(settings) if settings.corruptions.enabled else []
    from agedistill_core.students.train import run_name

    return [run_name(settings, arch) for arch in (archs or settings.students.archs)]


def run_all(settings: Settings) -> str:
    """Every stage in table order (LFW+C only when ``corruptions.enabled``); returns the benchmark as Markdown."""
    result = None
    for st in STAGES:
        if st.name == "lfwc" and not settings.corruptions.enabled:
            LOG.info("lfwc: skipped (corruptions.enabled is false)")
            continue
        result = st.run(settings)
    return result


# -- versions: what a scheduler (Dagster) compares to tell stale from fresh ---------------
def settings_version(settings: Settings, stage_name: str) -> str:
    """Hash of the settings sections the stage reads (``Stage.settings``): changes exactly when a
    setting that changes the stage's output changes (LFW+C files record it; crop shards record it followed by
    their images' content hash, ``+img...``)."""
    return settings.section_hash(*stage(stage_name).settings)


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
    their shard files record (a settings hash and the shard's images' content hash;
    a label shard's chains its crop shard's), an LFW+C partition its completion
    record; the label table hashes its inputs' versions (the manifest and the label shards); the manifest, checkpoints
    and benchmark tables hash their bytes.  Equal versions mean equal data, so a
    re-run that the stage skips reports the version it reported before.
    """
    if stage == "manifest":
        return _file_digest(settings.manifest_path)
    if stage in ("crops", "label"):
        from agedistill_core.shards import shard_path, table_metadata
        path = shard_path(settings.crops_dir if stage == "crops" else settings.labels_dir, key)
        return (table_metadata(path).get("version") or None) if path.is_file() else None
    if stage == "vmage":
        manifest = stage_version(settings, "manifest")
        if manifest is None or not settings.vmage_path.is_file():
            return None
        labels = [[sid, stage_version(settings, "label", sid)] for sid in manifest_shards(settings)]
        return _digest(json.dumps([manifest, labels]).encode())
    if stage == "lfwc":
        from agedistill_core.corruptions.lfwc import COMPLETE as LFWC_COMPLETE
        from agedistill_core.corruptions.lfwc import complete_parts, partition_dir

        name, severity = key
        if complete_parts(settings, name, int(severity)) is None:
            return None
        return _file_digest(partition_dir(settings, name, int(severity)) / LFWC_COMPLETE)
    if stage == "train":
        from agedistill_core.students.train import run_dir

        return _file_digest(run_dir(settings, key) / "best.pt")
    if stage == "evaluate":
        out = settings.benchmarks_dir
        return _file_digest(out / "benchmark.parquet", out / "robustness.parquet")
    raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGE)}")


def stages_markdown() -> str:
    """The stage table as Markdown (README's "Architecture"; a test keeps the two equal)."""
    kinds = {None: "—", "shards": "shard", "lfwc": "corruption x severity", "students": "student run"}
    rows = ["| stage (CLI, DVC) | asset | partitions | reads stages | reads settings | writes (under the workdir) |",
            "|---|---|---|---|---|---|"]
    for st in STAGES:
        outs = ", ".join(f"`{o.path}`" for o in st.outs)
        rows.append(f"| `{st.name}` | `{st.asset}` | {kinds[st.partitions]} | {', '.join(st.needs) or '—'} | "
                    f"{', '.join(st.settings) or '—'} | {outs} |")
    return "\n".join(rows)
