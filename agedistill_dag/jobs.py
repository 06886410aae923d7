"""Re-evaluation: the ``reevaluate`` job, its weekly schedule, and the automation condition that
re-runs ``benchmark_tables`` by itself (all off until a user turns them on).

Two ways to keep the benchmark current, both off by default:

- ``reevaluation_automation`` (Automation tab, a sensor that evaluates ``benchmark_tables``'
  automation condition every 30 s): requests ``benchmark_tables`` when a student checkpoint has
  been materialised since the benchmark last ran or was last requested, and every Monday at 03:00
  UTC (``REEVALUATION_CRON``).  It never requests while the benchmark or one of its inputs is being
  written, nor before the label table exists.
- the ``reevaluate`` job's schedule (same cron): a plain job-based schedule, for users who prefer
  schedules to declarative automation.  Turn on one of the two.
"""
from __future__ import annotations

import dagster as dg

from agedistill_dag.profile import Profile

REEVALUATION_CRON = "0 3 * * 1"     # Mondays 03:00
REEVALUATION_TZ = "UTC"
AUTOMATION_SENSOR = "reevaluation_automation"


def reevaluation_condition(p: Profile) -> dg.AutomationCondition:
    """When ``benchmark_tables`` of profile ``p`` is requested by the automation sensor.

    True after a cron tick, or after any ``student_checkpoints`` partition is materialised, until
    the benchmark is requested or materialised (a benchmark written after the checkpoint, as
    ``make demo`` does, counts as handled); held back while a run writes the benchmark or any of
    its inputs, and while the label table is missing (the benchmark would fail without it).
    """
    AC = dg.AutomationCondition
    weekly = AC.cron_tick_passed(REEVALUATION_CRON, REEVALUATION_TZ).since_last_handled().with_label(
        f"cron tick passed ({REEVALUATION_CRON} {REEVALUATION_TZ})")
    new_checkpoint = (
        AC.any_deps_match(AC.newly_updated())
        .allow(dg.AssetSelection.assets(p.key("student_checkpoints")))
        .since_last_handled()
        .with_label("new student checkpoint"))
    no_label_table = AC.any_deps_missing().allow(dg.AssetSelection.assets(p.key("vmage_table")))
    return ((weekly | new_checkpoint)
            & ~no_label_table
            & ~AC.any_deps_in_progress()
            & ~AC.in_progress()).with_label("re-evaluate")


def reevaluation_sensor(p: Profile) -> dg.AutomationConditionSensorDefinition:
    """The sensor that evaluates ``reevaluation_condition`` (stopped until a user starts it)."""
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR, target=dg.AssetSelection.assets(p.key("benchmark_tables")),
        default_status=dg.DefaultSensorStatus.STOPPED, minimum_interval_seconds=30,
        description=f"Re-runs {p.prefix}/benchmark_tables after a new student checkpoint, and every Monday "
                    f"03:00 UTC (off by default).")


def reevaluation(p: Profile) -> tuple:  # (asset job, schedule)
    job = dg.define_asset_job(
        "reevaluate", selection=dg.AssetSelection.assets(p.key("benchmark_tables")),
        description=f"Re-run the benchmark tables of profile {p.name!r} on the current checkpoints and label table.")
    schedule = dg.ScheduleDefinition(
        job=job, cron_schedule=REEVALUATION_CRON, execution_timezone=REEVALUATION_TZ,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Every Monday 03:00 UTC: re-evaluate the students (off by default; the "
                    f"{AUTOMATION_SENSOR} sensor does the same and also reacts to new checkpoints).")
    return job, schedule
