"""The Definitions of one params.yaml profile (``dagster dev`` finds ``defs`` through workspace.yaml).

The profile is $AGEDISTILL_PROFILE, else params.yaml's ``default_profile``, read when
Dagster loads the code location (``defs`` is lazy: importing this module reads nothing).
Every asset key is ``<profile>/<asset>`` and the shard partitions are ``shards_<profile>``
(``agedistill_dag.profile``), so several profiles can share one Dagster instance.

Executor: multiprocess by default; ``AGEDISTILL_EXECUTOR=in_process`` for
debugging.  On a cluster, swap the executor in ``_executor`` for
``dagster_k8s.k8s_job_executor`` or ``dagster_celery.celery_executor``: the
assets do not change, since each partition is an independent unit of work
that reads and writes its own shard files.
"""
from __future__ import annotations

import os

import dagster as dg

from agedistill_dag.assets import benchmarks, corruptions, data, students, teacher
from agedistill_dag.checks import vmage_checks
from agedistill_dag.jobs import reevaluation
from agedistill_dag.profile import Profile
from agedistill_dag.sensors import corpus_sensors

EXECUTORS = {"multiprocess": dg.multiprocess_executor, "in_process": dg.in_process_executor}


def _executor() -> dg.ExecutorDefinition:
    name = os.environ.get("AGEDISTILL_EXECUTOR", "multiprocess")
    if name not in EXECUTORS:
        raise ValueError(f"AGEDISTILL_EXECUTOR={name!r}; choose one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name]


def profile_assets(p: Profile) -> list[dg.AssetsDefinition]:
    """Every asset of profile ``p``, upstream first."""
    return [*data.assets(p), *teacher.assets(p), *corruptions.assets(p), *students.assets(p), *benchmarks.assets(p)]


def build_definitions(profile: str | Profile | None = None, params: str | None = None) -> dg.Definitions:
    p = profile if isinstance(profile, Profile) else Profile.load(profile, params)
    job, schedule = reevaluation(p)
    sensor_jobs, sensors = corpus_sensors(p)
    return dg.Definitions(
        assets=profile_assets(p),
        asset_checks=[vmage_checks(p)],
        jobs=[job, *sensor_jobs],
        sensors=sensors,
        schedules=[schedule],
        resources={"config": p.config()},
        executor=_executor(),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
