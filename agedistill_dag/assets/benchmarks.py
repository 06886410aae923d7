"""Trained students + label table -> the benchmark tables."""
import dagster as dg

from agedistill_core.evaluate.benchmark import run_benchmark
from agedistill_core.evaluate.robustness import run_robustness
from agedistill_dag.profile import Profile, data_version, image_md
from agedistill_dag.resources import AgedistillConfig


def assets(p: Profile) -> list[dg.AssetsDefinition]:
    @dg.asset(**p.asset_args("evaluate", "MAE to the teacher (VMAGE-test) and to ground truth, per student and the "
                                         "teacher; robustness per corruption where lfwc_images partitions exist."))
    def benchmark_tables(context: dg.AssetExecutionContext, config: AgedistillConfig) -> dg.MaterializeResult:
        settings = p.run_settings(config, context, "evaluate")
        table = run_benchmark(settings, log=context.log.info)
        out = settings.benchmarks_dir
        meta = {"rows": table.num_rows, "table": dg.MetadataValue.md((out / "benchmark.md").read_text()),
                "path": dg.MetadataValue.path(str(out / "benchmark.parquet"))}
        if run_robustness(settings, log=context.log.info) is not None:
            meta["robustness"] = dg.MetadataValue.md((out / "robustness.md").read_text())
            meta["robustness_chart"] = image_md(out / "robustness.png", "MAE per corruption and severity")
            meta["robustness_plot"] = dg.MetadataValue.path(str(out / "robustness.png"))
        return dg.MaterializeResult(data_version=data_version(settings, "evaluate"), metadata=meta)

    return [benchmark_tables]
