"""The label table -> one trained student per run (architecture + recipe) partition."""
import dagster as dg

from agedistill_core.errors import ConfigError
from agedistill_core.students.train import run_name, train_student
from agedistill_dag.profile import Profile, data_version, image_md
from agedistill_dag.resources import AgedistillConfig


def assets(p: Profile) -> list[dg.AssetsDefinition]:
    @dg.asset(**p.asset_args("train", "Best-validation checkpoint of one student run (partition = run name: "
                                      "the architecture plus what differs from the default recipe)."))
    def student_checkpoints(context: dg.AssetExecutionContext, config: AgedistillConfig) -> dg.MaterializeResult:
        settings = p.run_settings(config, context, "train")
        arch = p.runs[context.partition_key]
        if run_name(settings, arch) != context.partition_key:
            raise ConfigError(f"params.yaml changed the recipe: {arch} now trains as run "
                              f"{run_name(settings, arch)!r}, not {context.partition_key!r}; "
                              f"reload the code location")
        # resumes from last.pt: a finished run with the same recipe and data trains no further epoch
        summary = train_student(settings, arch)  # its log lines reach the run through python_logs
        metrics = f"{summary['dir']}/metrics.png"
        return dg.MaterializeResult(data_version=data_version(settings, "train", arch), metadata={
            "arch": arch, "run": summary["run"], "epochs": summary["epochs"],
            "train_faces": summary["train_faces"], "val_faces": summary["val_faces"],
            "best_val_mae": summary["best_val_mae"], "checkpoint": dg.MetadataValue.path(summary["checkpoint"]),
            "training_curves": image_md(metrics, f"{summary['run']} training curves"),
            "metrics_plot": dg.MetadataValue.path(metrics)})

    return [student_checkpoints]
