"""The LFW+C-style corrupted set: one partition per (corruption, severity)."""
import dagster as dg

from agedistill_core.corruptions.lfwc import build_lfwc_partition
from agedistill_dag.profile import Profile, data_version
from agedistill_dag.resources import AgedistillConfig


def assets(p: Profile) -> list[dg.AssetsDefinition]:
    @dg.asset(**p.asset_args("lfwc", "The evaluation crops under one corruption at one severity (lossless PNG shards)."))
    def lfwc_images(context: dg.AssetExecutionContext, config: AgedistillConfig) -> dg.MaterializeResult:
        settings = p.run_settings(config, context, "lfwc")
        keys = context.partition_key.keys_by_dimension
        name, severity = keys["corruption"], int(keys["severity"])
        result = build_lfwc_partition(settings, name, severity)  # skipped when complete
        return dg.MaterializeResult(data_version=data_version(settings, "lfwc", (name, severity)), metadata={
            "faces": result.rows, **{f"status_{k}": v for k, v in result.counts.items()},
            "up_to_date": result.skipped, "path": dg.MetadataValue.path(str(result.path))})

    return [lfwc_images]
