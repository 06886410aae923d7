"""Source images -> manifest -> face crop shards."""
import dagster as dg

from agedistill_core.datasets import build_manifest
from agedistill_core.crops import crop_shard
from agedistill_core.pipeline import manifest_shards
from agedistill_dag.partitions import shard_partitions
from agedistill_dag.resources import AgedistillConfig


@dg.asset(group_name="data", description="One row per source image, with split and sticky shard.")
def face_manifest(context: dg.AssetExecutionContext, config: AgedistillConfig) -> dg.MaterializeResult:
    settings = config.settings()
    table = build_manifest(settings)
    shards = manifest_shards(settings)
    known = set(context.instance.get_dynamic_partitions(shard_partitions.name))
    new = [s for s in shards if s not in known]
    if new:
        context.instance.add_dynamic_partitions(shard_partitions.name, new)
    return dg.MaterializeResult(metadata={
        "images": table.num_rows, "shards": len(shards), "new_shards": len(new),
        "path": dg.MetadataValue.path(str(settings.manifest_path)), "profile": settings.profile})


@dg.asset(group_name="data", partitions_def=shard_partitions, deps=[face_manifest],
          description="Sharded Parquet of face crops (JPEG) with status per source image.")
def face_crops(context: dg.AssetExecutionContext, config: AgedistillConfig) -> dg.MaterializeResult:
    settings = config.settings()
    result = crop_shard(settings, context.partition_key, force=True)
    return dg.MaterializeResult(metadata={
        "images": result.rows, **{f"status_{k}": v for k, v in result.counts.items()},
        "path": dg.MetadataValue.path(str(result.path))})
