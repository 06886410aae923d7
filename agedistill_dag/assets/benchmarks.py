"""Trained students + label table -> the benchmark tables."""
import dagster as dg

from agedistill_core.evaluate.benchmark import run_benchmark
from agedistill_core.evaluate.robustness import run_robustness
from agedistill_dag.assets.corruptions import lfwc_images
from agedistill_dag.assets.students import student_checkpoints
from agedistill_dag.assets.teacher import vmage_table
from agedistill_dag.resources import AgedistillConfig


@dg.asset(group_name="benchmarks", deps=[vmage_table, student_checkpoints, lfwc_images],
          description="MAE to the teacher (VMAGE-test) and to ground truth, per student and the teacher; "
                      "robustness per corruption where lfwc_images partitions exist.")
def benchmark_tables(context: dg.AssetExecutionContext, config: AgedistillConfig) -> dg.MaterializeResult:
    settings = config.settings()
    table = run_benchmark(settings, log=context.log.info)
    out = settings.benchmarks_dir
    meta = {"rows": table.num_rows, "table": dg.MetadataValue.md((out / "benchmark.md").read_text()),
            "path": dg.MetadataValue.path(str(out / "benchmark.parquet"))}
    if run_robustness(settings, log=context.log.info) is not None:
        meta["robustness"] = dg.MetadataValue.md((out / "robustness.md").read_text())
        meta["robustness_plot"] = dg.MetadataValue.path(str(out / "robustness.png"))
    return dg.MaterializeResult(metadata=meta)
