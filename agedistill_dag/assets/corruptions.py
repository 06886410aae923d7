"""The LFW+C-style corrupted set: one partition per (corruption, severity)."""
import dagster as dg

from agedistill_core.evaluate.robustness import build_lfwc_partition
from agedistill_dag.assets.teacher import vmage_table
from agedistill_dag.partitions import lfwc_partitions
from agedistill_dag.resources import AgedistillConfig


@dg.asset(group_name="robustness", partitions_def=lfwc_partitions, deps=[vmage_table],
          description="The evaluation crops under one corruption at one severity (lossless PNG shards).")
def lfwc_images(context: dg.AssetExecutionContext, config: AgedistillConfig) -> dg.MaterializeResult:
    settings = config.settings()
    keys = context.partition_key.keys_by_dimension
    result = build_lfwc_partition(settings, keys["corruption"], int(keys["severity"]), force=True,
                                  log=context.log.info)
    return dg.MaterializeResult(metadata={
        "faces": result.rows, **{f"status_{k}": v for k, v in result.counts.items()},
        "path": dg.MetadataValue.path(str(result.path))})
