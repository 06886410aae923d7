"""Jobs and schedules: the scheduled re-evaluation (off until a user turns it on)."""
import dagster as dg

from agedistill_dag.assets.benchmarks import benchmark_tables

reevaluate_job = dg.define_asset_job(
    "reevaluate", selection=dg.AssetSelection.assets(benchmark_tables),
    description="Re-run the benchmark tables on the current checkpoints and label table.")

weekly_reevaluation = dg.ScheduleDefinition(
    job=reevaluate_job, cron_schedule="0 3 * * 1", default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every Monday 03:00: re-evaluate the students (off by default).")
