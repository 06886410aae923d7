"""Face crops -> teacher soft labels (per shard) -> the VMAGE-style label table."""
import json

import dagster as dg

from agedistill_core.teacher.label import label_shard
from agedistill_core.stages import run_vmage
from agedistill_dag.profile import Profile, data_version, image_md
from agedistill_dag.resources import AgedistillConfig


def assets(p: Profile) -> list[dg.AssetsDefinition]:
    @dg.asset(**p.asset_args("label", "Per face: the teacher's voted 101-bin vector, expected age, member vectors."))
    def teacher_soft_labels(context: dg.AssetExecutionContext, config: AgedistillConfig) -> dg.MaterializeResult:
        settings = p.run_settings(config, context, "label")
        result = label_shard(settings, context.partition_key)  # skipped when its crops and teacher are unchanged
        return dg.MaterializeResult(data_version=data_version(settings, "label", context.partition_key), metadata={
            "faces": result.rows, "up_to_date": result.skipped, "path": dg.MetadataValue.path(str(result.path))})

    @dg.asset(**p.asset_args("vmage", "One row per labelled face: teacher age, vector, agreement, split, ground truth."))
    def vmage_table(context: dg.AssetExecutionContext, config: AgedistillConfig) -> dg.MaterializeResult:
        settings = p.run_settings(config, context, "vmage")
        summary = run_vmage(settings, strict=False)  # failed checks show as asset checks
        meta = {"faces": summary["faces"], "age_groups": dg.MetadataValue.md(summary["age_group_table"]),
                "age_group_histogram": image_md(summary["age_group_plot"], "teacher ages by SPEC group"),
                "age_group_plot": dg.MetadataValue.path(summary["age_group_plot"]),
                "splits": dg.MetadataValue.json(summary["splits"]),
                "crop_status": dg.MetadataValue.json(summary.get("crop_status", {})),
                "path": dg.MetadataValue.path(str(settings.vmage_path))}
        if summary.get("sources_table"):
            meta["sources"] = dg.MetadataValue.md(summary["sources_table"])
        if "teacher_mae_to_ground_truth" in summary:
            meta["teacher_mae_to_ground_truth"] = round(summary["teacher_mae_to_ground_truth"], 3)
        context.log.info(json.dumps(summary))
        return dg.MaterializeResult(data_version=data_version(settings, "vmage"), metadata=meta)

    return [teacher_soft_labels, vmage_table]
