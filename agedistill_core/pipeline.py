"""The stages of the pipeline: one table.

``STAGES`` (below) is the one definition of the pipeline.  Each ``Stage`` names its
function and its version function (``"agedistill_core.stages:run_crops"``: imported when the
stage runs, so that the table, the CLI's ``--help`` and its argument errors load no stage's
modules), what it is partitioned by, the stages whose outputs it reads, the settings
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

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from agedistill_core.settings import Settings

LOG = logging.getLogger("agedistill.pipeline")


def resolve(ref: str) -> Callable:
    """``"package.module:function"`` -> the function (its module imported now)."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


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
    function: str                     # "module:function", run(settings, **options): the whole stage
                                      # (logs to agedistill.*); imported when the stage runs
    version: str                      # "module:function", version(settings, key): what the stage has
                                      # written for a partition key (None: nothing), see ``stage_version``
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
    inputs: str | None = None         # "module:function", inputs(settings) -> [Path]: files it reads that no
                                      # stage writes (dvc.yaml deps), e.g. the shipped model the demo scores

    def extra_inputs(self, settings: Settings) -> list[Path]:
        """The files outside the stage table that the stage reads for ``settings`` (``inputs``)."""
        return list(resolve(self.inputs)(settings)) if self.inputs else []

    def run(self, settings: Settings, **options: Any) -> Any:
        """Run the whole stage (its function imported now)."""
        return resolve(self.function)(settings, **options)

    def written(self, settings: Settings, key=None) -> str | None:
        """The version of what the stage has written for ``key`` (None when it has not)."""
        return resolve(self.version)(settings, key)


STAGES: tuple[Stage, ...] = (
    Stage("manifest", "face_manifest", "data",
          "agedistill_core.stages:run_manifest", "agedistill_core.stages:manifest_version",
          "scan the data set into the manifest (sticky shards)",
          settings=("dataset", "split", "seed", "shard_size"),
          code=("agedistill_core/datasets",), data_roots=True,
          outs=(Output("manifest.parquet", persist=True),)),   # shards are sticky: the old manifest is read back
    Stage("crops", "face_crops", "data",
          "agedistill_core.stages:run_crops", "agedistill_core.stages:crops_version",
          "detect and crop faces, one shard at a time", partitions="shards",
          needs=("manifest",), settings=("dataset", "faces"),
          code=("agedistill_core/faces",),
          outs=(Output("crops", persist=True),),
          options=(Option("--shard", "shards", "only this shard (repeatable)"),)),
    Stage("label", "teacher_soft_labels", "teacher",
          "agedistill_core.stages:run_labels", "agedistill_core.stages:label_version",
          "label the crops with the teacher, one shard at a time", partitions="shards",
          needs=("crops",), settings=("teacher",),
          code=("agedistill_core/teacher/label.py", "agedistill_core/teacher/ensemble.py",
                "agedistill_core/teacher/members.py", "agedistill_core/teacher/variants.py"),
          outs=(Output("labels", persist=True),),
          options=(Option("--shard", "shards", "only this shard (repeatable)"),)),
    Stage("vmage", "vmage_table", "teacher",
          "agedistill_core.stages:run_vmage", "agedistill_core.stages:vmage_version",
          "join the labels into the label table and check it",
          needs=("manifest", "label"),   # and the crops, through the label shards (whose versions chain theirs)
          code=("agedistill_core/teacher/vmage.py", "agedistill_core/teacher/report.py",
                "agedistill_core/labeltable.py", "agedistill_core/ages.py"),
          outs=(Output("vmage.parquet"), Output("vmage_summary.json"),
                Output("vmage_metrics.json", kind="metric"),
                Output("vmage_age_groups.png", kind="plot"))),
    Stage("lfwc", "lfwc_images", "robustness",
          "agedistill_core.stages:run_lfwc", "agedistill_core.stages:lfwc_version",
          "corrupt the evaluation crops (13 corruptions x 5 severities)", partitions="lfwc",
          needs=("vmage",), settings=("dataset", "faces", "split", "corruptions"),
          code=("agedistill_core/corruptions", "agedistill_core/labeltable.py"),
          outs=(Output("lfwc", persist=True),),
          options=(Option("--corruption", "names", "only this corruption (repeatable)"),
                   Option("--severity", "severities", "only this severity (repeatable)", int))),
    Stage("train", "student_checkpoints", "students",
          "agedistill_core.stages:run_students", "agedistill_core.stages:train_version",
          "train students", partitions="students",
          needs=("vmage",), settings=("students", "faces", "seed"),
          code=("agedistill_core/students", "agedistill_core/labeltable.py"),
          outs=(Output("students", persist=True),),    # last.pt lets a killed run resume
          options=(Option("--arch", "archs", "only this architecture (repeatable)"),), accelerated=True),
    Stage("evaluate", "benchmark_tables", "benchmarks",
          "agedistill_core.stages:run_evaluate", "agedistill_core.stages:evaluate_version",
          "write the benchmark tables (and robustness, where lfwc exists)",
          needs=("vmage", "lfwc", "train"), settings=("evaluate", "corruptions"),
          inputs="agedistill_core.evaluate.benchmark:extra_checkpoints",
          code=("agedistill_core/evaluate", "agedistill_core/inference/student.py", "agedistill_core/metrics.py",
                "agedistill_core/ages.py"),
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
        from agedistill_core.stages import manifest_shards

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


def stage_version(settings: Settings, stage_name: str, key=None) -> str | None:
    """The version of what ``stage_name`` has written for ``key``, or None when it has not
    (``Stage.version``, a function of ``agedistill_core.stages``).

    ``key``: a shard id (crops, label), a ``(corruption, severity)`` pair (lfwc), an
    architecture (train); none for the others."""
    return stage(stage_name).written(settings, key)


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
