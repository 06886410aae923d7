"""Source images -> manifest -> face crop shards."""
import dagster as dg

from agedistill_core.faces.crops import crop_shard
from agedistill_core.datasets import build_manifest
from agedistill_core.stages import manifest_shards
from agedistill_dag.profile import Profile, data_version
from agedistill_dag.resources import AgedistillConfig


def assets(p: Profile) -> list[dg.AssetsDefinition]:
    @dg.asset(**p.asset_args("manifest", "One row per source image, with split and sticky shard."))
    def face_manifest(context: dg.AssetExecutionContext, config: AgedistillConfig) -> dg.MaterializeResult:
        settings = p.run_settings(config, context, "manifest")
        table = build_manifest(settings)
        shards = manifest_shards(settings)
        known = set(context.instance.get_dynamic_partitions(p.shards.name))
        new = [s for s in shards if s not in known]
        if new:
            context.instance.add_dynamic_partitions(p.shards.name, new)
        return dg.MaterializeResult(data_version=data_version(settings, "manifest"), metadata={
            "images": table.num_rows, "shards": len(shards), "new_shards": len(new),
            "path": dg.MetadataValue.path(str(settings.manifest_path)), "profile": settings.profile})

    @dg.asset(**p.asset_args("crops", "Sharded Parquet of face crops (JPEG) with status per source image."))
    def face_crops(context: dg.AssetExecutionContext, config: AgedistillConfig) -> dg.MaterializeResult:
        settings = p.run_settings(config, context, "crops")
        result = crop_shard(settings, context.partition_key)  # skipped when made with the same settings
        return dg.MaterializeResult(data_version=data_version(settings, "crops", context.partition_key), metadata={
            "images": result.rows, **{f"status_{k}": v for k, v in result.counts.items()},
            "up_to_date": result.skipped, "path": dg.MetadataValue.path(str(result.path))})

    return [face_manifest, face_crops]
