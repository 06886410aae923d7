"""The label table -> one trained student per architecture partition."""
import dagster as dg

from agedistill_core.students.train import train_student
from agedistill_dag.assets.teacher import vmage_table
from agedistill_dag.partitions import student_partitions
from agedistill_dag.resources import AgedistillConfig


@dg.asset(group_name="students", partitions_def=student_partitions, deps=[vmage_table],
          description="Best-validation checkpoint of one student trained on the teacher's ages.")
def student_checkpoints(context: dg.AssetExecutionContext, config: AgedistillConfig) -> dg.MaterializeResult:
    settings = config.settings()
    summary = train_student(settings, context.partition_key, log=context.log.info, progress=False)
    metrics = f"{summary['dir']}/metrics.png"
    return dg.MaterializeResult(metadata={
        "epochs": summary["epochs"], "train_faces": summary["train_faces"], "val_faces": summary["val_faces"],
        "best_val_mae": summary["best_val_mae"], "checkpoint": dg.MetadataValue.path(summary["checkpoint"]),
        "metrics_plot": dg.MetadataValue.path(metrics)})
