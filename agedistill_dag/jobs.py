"""Jobs and schedules: the scheduled re-evaluation (off until a user turns it on)."""
from __future__ import annotations

import dagster as dg

from agedistill_dag.profile import Profile


def reevaluation(p: Profile) -> tuple:  # (asset job, schedule)
    job = dg.define_asset_job(
        "reevaluate", selection=dg.AssetSelection.assets(p.key("benchmark_tables")),
        description=f"Re-run the benchmark tables of profile {p.name!r} on the current checkpoints and label table.")
    schedule = dg.ScheduleDefinition(
        job=job, cron_schedule="0 3 * * 1", default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Every Monday 03:00: re-evaluate the students (off by default).")
    return job, schedule
