"""Trained students + label table -> the benchmark tables."""
import dagster as dg

from agedistill_core.evaluate.benchmark import run_benchmark
from agedistill_dag.assets.students import student_checkpoints
from agedistill_dag.assets.teacher import vmage_table
from agedistill_dag.resources import AgedistillConfig


@dg.asset(group_name="benchmarks", deps=[vmage_table, student_checkpoints],
          description="MAE to the teacher (VMAGE-test) and to ground truth, per student and the teacher.")
def benchmark_tables(context: dg.AssetExecutionContext, config: AgedistillConfig) -> dg.MaterializeResult:
    settings = config.settings()
    table = run_benchmark(settings, log=context.log.info)
    md = (settings.benchmarks_dir / "benchmark.md").read_text()
    return dg.MaterializeResult(metadata={
        "rows": table.num_rows, "table": dg.MetadataValue.md(md),
        "path": dg.MetadataValue.path(str(settings.benchmarks_dir / "benchmark.parquet"))})
