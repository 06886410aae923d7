"""Face crops -> teacher soft labels (per shard) -> the VMAGE-style label table."""
import json

import dagster as dg

from agedistill_core.labels import label_shard
from agedistill_core.pipeline import run_vmage
from agedistill_dag.assets.data import face_crops
from agedistill_dag.partitions import shard_partitions
from agedistill_dag.resources import AgedistillConfig


@dg.asset(group_name="teacher", partitions_def=shard_partitions, deps=[face_crops],
          description="Per face: the teacher's voted 101-bin vector, expected age, member vectors.")
def teacher_soft_labels(context: dg.AssetExecutionContext, config: AgedistillConfig) -> dg.MaterializeResult:
    settings = config.settings()
    result = label_shard(settings, context.partition_key, force=True)
    return dg.MaterializeResult(metadata={"faces": result.rows, "path": dg.MetadataValue.path(str(result.path))})


@dg.asset(group_name="teacher", deps=[teacher_soft_labels],
          description="One row per labelled face: teacher age, vector, agreement, split, ground truth.")
def vmage_table(context: dg.AssetExecutionContext, config: AgedistillConfig) -> dg.MaterializeResult:
    settings = config.settings()
    summary = run_vmage(settings, log=context.log.info, strict=False)  # failed checks show as asset checks
    meta = {"faces": summary["faces"], "age_groups": dg.MetadataValue.md(summary["age_group_table"]),
            "age_group_plot": dg.MetadataValue.path(summary["age_group_plot"]),
            "splits": dg.MetadataValue.json(summary["splits"]),
            "crop_status": dg.MetadataValue.json(summary.get("crop_status", {})),
            "path": dg.MetadataValue.path(str(settings.vmage_path))}
    if "teacher_mae_to_ground_truth" in summary:
        meta["teacher_mae_to_ground_truth"] = round(summary["teacher_mae_to_ground_truth"], 3)
    context.log.info(json.dumps(summary))
    return dg.MaterializeResult(metadata=meta)
