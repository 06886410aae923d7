"""Trained students + label table -> the benchmark tables.

The UI shows, per materialisation: the benchmark as a sortable table (``benchmark``), the
Markdown tables, the robustness chart inline, and one number per model and metric with a
stable name (``metric_entries``), which the asset's Plots tab draws over materialisations.
``jobs.reevaluation_condition`` is its automation condition (new checkpoint, or weekly).
"""
# (no `from __future__ import annotations`: Dagster reads the asset's `config: AgedistillConfig` annotation)
import math

import dagster as dg
import pyarrow as pa

from agedistill_core.evaluate.benchmark import run_benchmark
from agedistill_core.evaluate.robustness import run_robustness
from agedistill_dag.jobs import reevaluation_condition
from agedistill_dag.profile import Profile, data_version, image_md
from agedistill_dag.resources import AgedistillConfig

# benchmark columns plotted per student run (Plots tab), when finite
STUDENT_METRICS = ("mae_to_teacher", "mae_to_ground_truth", "group_top1")
TABLE_TYPES = {"string": "string", "int64": "int", "double": "float", "float": "float"}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def metric_entries(rows: list[dict]) -> dict[str, float | int]:
    """Numeric metadata with names stable across materialisations: ``teacher_mae_to_ground_truth``,
    ``test_faces``, and ``<metric>[<run>]`` per student run (e.g. ``mae_to_teacher[mn3_small]``).
    A metric the data cannot give (no real ages, no FairFace groups: NaN) is left out."""
    out: dict[str, float | int] = {}
    for r in rows:
        if r["kind"] == "teacher":
            if _finite(r["mae_to_ground_truth"]):
                out["teacher_mae_to_ground_truth"] = round(float(r["mae_to_ground_truth"]), 4)
            out["test_faces"] = int(r["test_faces"])
            continue
        for metric in STUDENT_METRICS:
            if _finite(r[metric]):
                out[f"{metric}[{r['run']}]"] = round(float(r[metric]), 4)
    return out


def table_value(table: pa.Table) -> dg.MetadataValue:
    """The benchmark as a Dagster table (sortable in the UI); NaN shows as an empty cell."""
    columns = [dg.TableColumn(f.name, TABLE_TYPES.get(str(f.type), "string")) for f in table.schema]
    records = [dg.TableRecord({k: (v if v is None or isinstance(v, (str, bool, int)) or _finite(v) else None)
                               for k, v in row.items()}) for row in table.to_pylist()]
    return dg.MetadataValue.table(records, dg.TableSchema(columns))


def assets(p: Profile) -> list[dg.AssetsDefinition]:
    @dg.asset(**p.asset_args("evaluate", "MAE to the teacher (VMAGE-test) and to ground truth, per student and the "
                                         "teacher; robustness per corruption where lfwc_images partitions exist."),
              automation_condition=reevaluation_condition(p))
    def benchmark_tables(context: dg.AssetExecutionContext, config: AgedistillConfig) -> dg.MaterializeResult:
        settings = p.run_settings(config, context, "evaluate")
        table = run_benchmark(settings)
        out = settings.benchmarks_dir
        meta = {"rows": table.num_rows, "benchmark": table_value(table), **metric_entries(table.to_pylist()),
                "table": dg.MetadataValue.md((out / "benchmark.md").read_text()),
                "path": dg.MetadataValue.path(str(out / "benchmark.parquet"))}
        if run_robustness(settings) is not None:
            meta["robustness"] = dg.MetadataValue.md((out / "robustness.md").read_text())
            meta["robustness_chart"] = image_md(out / "robustness.png", "MAE per corruption and severity")
            meta["robustness_plot"] = dg.MetadataValue.path(str(out / "robustness.png"))
        return dg.MaterializeResult(data_version=data_version(settings, "evaluate"), metadata=meta)

    return [benchmark_tables]
