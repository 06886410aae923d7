"""The one Definitions object (``dagster dev`` finds it through workspace.yaml).

Executor: multiprocess by default; ``AGEDISTILL_EXECUTOR=in_process`` for
debugging.  On a cluster, swap the executor in ``_executor`` for
``dagster_k8s.k8s_job_executor`` or ``dagster_celery.celery_executor``: the
assets do not change, since each partition is an independent unit of work
that reads and writes its own shard files.
"""
import os

import dagster as dg

from agedistill_dag.assets import benchmarks, corruptions, data, students, teacher
from agedistill_dag.checks import vmage_checks
from agedistill_dag.jobs import reevaluate_job, weekly_reevaluation
from agedistill_dag.resources import AgedistillConfig
from agedistill_dag.sensors import label_shard_job, new_images_sensor, refresh_manifest_job, unlabelled_shards_sensor

EXECUTORS = {"multiprocess": dg.multiprocess_executor, "in_process": dg.in_process_executor}


def _executor() -> dg.ExecutorDefinition:
    name = os.environ.get("AGEDISTILL_EXECUTOR", "multiprocess")
    if name not in EXECUTORS:
        raise ValueError(f"AGEDISTILL_EXECUTOR={name!r}; choose one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name]


all_assets = dg.load_assets_from_modules([data, teacher, corruptions, students, benchmarks])

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=[vmage_checks],
    jobs=[reevaluate_job, refresh_manifest_job, label_shard_job],
    sensors=[new_images_sensor, unlabelled_shards_sensor],
    schedules=[weekly_reevaluation],
    resources={"config": AgedistillConfig()},
    executor=_executor(),
)
