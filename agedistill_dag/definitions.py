"""The Definitions of one params.yaml profile (``dagster dev`` finds ``defs`` through workspace.yaml).

The profile is $AGEDISTILL_PROFILE, else params.yaml's ``default_profile``, read when
Dagster loads the code location (``defs`` is lazy: importing this module reads nothing).
Every asset key is ``<profile>/<asset>`` and the shard partitions are ``shards_<profile>``
(``agedistill_dag.profile``), so several profiles can share one Dagster instance.

Executor: multiprocess by default; ``AGEDISTILL_EXECUTOR=in_process`` for debugging,
``AGEDISTILL_EXECUTOR=celery`` for Celery workers (``agedistill_dag.cluster``, docs/DEPLOY.md).
The assets do not change between executors: each partition is an independent unit of work
that reads and writes its own files under the profile's workdir.  Student training (the stage
table marks it accelerated) carries the op tag ``dagster-celery/queue: gpu``, so under Celery
only workers that consume the ``gpu`` queue train; every other step goes to the default queue
``dagster``.
"""
from __future__ import annotations

import os

import dagster as dg

from agedistill_core.errors import ConfigError
from agedistill_dag.assets import benchmarks, corruptions, data, students, teacher
from agedistill_dag.checks import vmage_checks
from agedistill_dag.jobs import reevaluation
from agedistill_dag.profile import Profile
from agedistill_dag.sensors import corpus_sensors

EXECUTORS = ("multiprocess", "in_process", "celery")
EXECUTOR_ENV = "AGEDISTILL_EXECUTOR"

# `make demo` and `make cluster-demo` run the graph through one job per partitioning (an asset job's
# assets must share one): materialize_unpartitioned, materialize_face_crops (crops and labels of a
# shard), materialize_lfwc_images, materialize_student_checkpoints; one partition per run.
JOB_PREFIX = "materialize_"


def graph_jobs(assets: list[dg.AssetsDefinition]) -> dict[str, list[dg.AssetKey]]:
    """Job name -> the asset keys it covers: one job per partitions definition, named after its
    first asset (upstream first), ``materialize_unpartitioned`` for the rest."""
    groups: dict[int, list[dg.AssetKey]] = {}
    names: dict[int, str] = {}
    for a in assets:
        pdef = a.partitions_def
        gid = 0 if pdef is None else id(pdef)
        names.setdefault(gid, "unpartitioned" if pdef is None else a.key.path[-1])
        groups.setdefault(gid, []).extend(a.keys)
    return {JOB_PREFIX + names[g]: keys for g, keys in groups.items()}


def executor_def(name: str | None = None) -> dg.ExecutorDefinition:
    """The executor called ``name`` (default: $AGEDISTILL_EXECUTOR, else multiprocess)."""
    name = name or os.environ.get(EXECUTOR_ENV) or "multiprocess"
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "in_process":
        return dg.in_process_executor
    if name == "celery":
        try:
            from dagster_celery import celery_executor
        except ImportError as exc:   # the `cluster` extra is not installed
            raise ConfigError(f"{EXECUTOR_ENV}=celery needs dagster-celery: pip install -e '.[cluster]' ({exc})")
        return celery_executor
    raise ConfigError(f"{EXECUTOR_ENV}={name!r}; choose one of {', '.join(EXECUTORS)}")


def profile_assets(p: Profile) -> list[dg.AssetsDefinition]:
    """Every asset of profile ``p``, upstream first (training carries the ``gpu`` Celery queue tag:
    the stage table marks it accelerated)."""
    return [*data.assets(p), *teacher.assets(p), *corruptions.assets(p), *students.assets(p), *benchmarks.assets(p)]


def build_definitions(profile: str | Profile | None = None, params: str | None = None,
                      executor: str | None = None) -> dg.Definitions:
    """The Definitions of one profile; ``executor`` names one of EXECUTORS (default: $AGEDISTILL_EXECUTOR)."""
    p = profile if isinstance(profile, Profile) else Profile.load(profile, params)
    job, schedule = reevaluation(p)
    sensor_jobs, sensors = corpus_sensors(p)
    assets = profile_assets(p)
    graph = [dg.define_asset_job(name, selection=dg.AssetSelection.assets(*keys),
                                 description=f"Profile {p.name!r}: {', '.join(k.path[-1] for k in keys)} "
                                             f"(one partition per run; `make demo` runs every job in graph order)")
             for name, keys in graph_jobs(assets).items()]
    return dg.Definitions(
        assets=assets,
        asset_checks=[vmage_checks(p)],
        jobs=[job, *sensor_jobs, *graph],
        sensors=sensors,
        schedules=[schedule],
        resources={"config": p.config()},
        executor=executor_def(executor),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
