"""Sensors that keep the label table growing with the corpus, and the benchmark current (all off by default).

- ``new_images_sensor``: when the data root holds images the manifest has not seen,
  refresh ``face_manifest`` (which registers new shard partitions).
- ``unlabelled_shards_sensor``: for every shard partition whose teacher labels are
  not materialised yet, request a crops + labels run of just that partition.
- ``reevaluation_automation`` (``agedistill_dag.jobs``): evaluates ``benchmark_tables``' automation
  condition: re-runs the benchmark after a new student checkpoint and every Monday 03:00 UTC.
"""
from __future__ import annotations

import dagster as dg

from agedistill_core.datasets.base import list_images
from agedistill_core.errors import AgedistillError
from agedistill_core.shards import read_table
from agedistill_dag.jobs import reevaluation_sensor
from agedistill_dag.profile import Profile
from agedistill_dag.resources import AgedistillConfig


def corpus_sensors(p: Profile) -> tuple[list, list[dg.SensorDefinition]]:  # (asset jobs, sensors)
    refresh_manifest_job = dg.define_asset_job("refresh_manifest",
                                               selection=dg.AssetSelection.assets(p.key("face_manifest")))
    label_shard_job = dg.define_asset_job(
        "label_shard", selection=dg.AssetSelection.assets(p.key("face_crops"), p.key("teacher_soft_labels")))

    @dg.sensor(job=refresh_manifest_job, minimum_interval_seconds=600,
               default_status=dg.DefaultSensorStatus.STOPPED)
    def new_images_sensor(context: dg.SensorEvaluationContext, config: AgedistillConfig):
        try:
            settings = config.settings()
            on_disk = sum(len(list_images(src.root)) for src in settings.sources if src.root.is_dir())
            known = (read_table(settings.manifest_path, ["image_id"]).num_rows
                     if settings.manifest_path.is_file() else 0)
        except AgedistillError as exc:
            return dg.SkipReason(str(exc))
        if on_disk <= known:
            return dg.SkipReason(f"{on_disk} images on disk, {known} in the manifest: nothing new")
        return dg.RunRequest(run_key=f"images-{on_disk}", tags={"new_images": str(on_disk - known)})

    @dg.sensor(job=label_shard_job, minimum_interval_seconds=300,
               default_status=dg.DefaultSensorStatus.STOPPED)
    def unlabelled_shards_sensor(context: dg.SensorEvaluationContext):
        shards = context.instance.get_dynamic_partitions(p.shards.name)
        done = context.instance.get_materialized_partitions(p.key("teacher_soft_labels"))
        todo = [s for s in shards if s not in done]
        if not todo:
            return dg.SkipReason(f"all {len(shards)} shards are labelled")
        return [dg.RunRequest(run_key=f"label-{s}", partition_key=s) for s in todo]

    return ([refresh_manifest_job, label_shard_job],
            [new_images_sensor, unlabelled_shards_sensor, reevaluation_sensor(p)])
