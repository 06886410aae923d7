"""Re-evaluation as Dagster automates it: benchmark_tables' automation condition, evaluated by
Dagster's own evaluator against an instance's event log, requests the benchmark after a new
student checkpoint and after the weekly cron tick, and at no other time."""
import datetime as dt
import math

import dagster as dg
import pyarrow as pa
import pytest

from agedistill_dag.assets.benchmarks import metric_entries, table_value
from agedistill_dag.definitions import build_definitions
from agedistill_dag.jobs import AUTOMATION_SENSOR, REEVALUATION_CRON
from agedistill_dag.profile import Profile

UTC = dt.timezone.utc
TUESDAY = dt.datetime(2026, 11, 24, 12, 0, tzinfo=UTC)        # a week day after the Monday 03:00 tick
NEXT_MONDAY_3AM = dt.datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def demo():
    p = Profile.load("demo")
    return p, build_definitions(p)


class Ticks:
    """Successive automation evaluations on one instance, carrying Dagster's cursor."""

    def __init__(self, p: Profile, defs: dg.Definitions, instance: dg.DagsterInstance, start: dt.datetime):
        self.bench, self.defs, self.instance = p.key("benchmark_tables"), defs, instance
        self.now, self.cursor = start, None

    def __call__(self, at: dt.datetime | None = None, minutes: int = 1) -> int:
        """Evaluate once (at ``at``, else ``minutes`` after the last tick): benchmark_tables requested?"""
        self.now = at or self.now + dt.timedelta(minutes=minutes)
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance,
                                                   evaluation_time=self.now, cursor=self.cursor)
        self.cursor = result.cursor
        assert result.total_requested == result.get_num_requested(self.bench)   # nothing else is automated
        return result.get_num_requested(self.bench)


def _run(p: Profile, arch: str = "mn3_small") -> str:
    """The profile's run (student partition) of ``arch``: its name carries a hash of the recipe."""
    return next(run for run, a in p.runs.items() if a == arch)


def _materialised(instance: dg.DagsterInstance, p: Profile, asset: str, partition: str | None = None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(p.key(asset), partition=partition))


def test_automation_sensor_off_by_default_and_only_benchmark_automated(demo):
    p, defs = demo
    sensors = {s.name: s for s in defs.sensors}
    auto = sensors[AUTOMATION_SENSOR]
    assert isinstance(auto, dg.AutomationConditionSensorDefinition)
    assert auto.default_status == dg.DefaultSensorStatus.STOPPED
    graph = defs.resolve_asset_graph()
    automated = {k for k in graph.get_all_asset_keys() if graph.get(k).automation_condition is not None}
    assert automated == {p.key("benchmark_tables")}
    assert auto.asset_selection.resolve(graph) == {p.key("benchmark_tables")}
    # the user-defined sensor covers the one automated asset: Dagster adds no default sensor (which
    # would run without being turned on in some deployments)
    repo_sensors = {s.name for s in defs.get_repository_def().sensor_defs}
    assert repo_sensors == set(sensors) and "default_automation_condition_sensor" not in repo_sensors
    (schedule,) = defs.schedules
    assert schedule.cron_schedule == REEVALUATION_CRON and schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_new_checkpoint_requests_benchmark_once(demo):
    p, defs = demo
    instance = dg.DagsterInstance.ephemeral()
    tick = Ticks(p, defs, instance, TUESDAY)
    assert tick() == 0                                   # first evaluation: nothing has happened
    _materialised(instance, p, "vmage_table")
    assert tick() == 0                                   # a new label table alone does not re-evaluate
    assert tick() == 0

    _materialised(instance, p, "student_checkpoints", _run(p))
    assert tick() == 1                                   # a new checkpoint: benchmark requested
    assert tick() == 0                                   # requested once, not on every tick
    assert tick(minutes=60) == 0

    _materialised(instance, p, "benchmark_tables")       # the requested run wrote it
    assert tick() == 0
    _materialised(instance, p, "lfwc_images", "jpeg|1")  # other inputs do not trigger it
    assert tick() == 0

    # two checkpoints (another partition, then the same one again) between ticks: one request
    other = next(k for k in p.students.get_partition_keys() if k != _run(p))
    _materialised(instance, p, "student_checkpoints", other)
    _materialised(instance, p, "student_checkpoints", _run(p))
    assert tick() == 1
    assert tick() == 0


def test_benchmark_written_after_the_checkpoint_needs_no_request(demo):
    """A run that materialised the benchmark after the checkpoint (make demo does) handled it."""
    p, defs = demo
    instance = dg.DagsterInstance.ephemeral()
    tick = Ticks(p, defs, instance, TUESDAY)
    _materialised(instance, p, "vmage_table")
    assert tick() == 0
    _materialised(instance, p, "student_checkpoints", _run(p))
    _materialised(instance, p, "benchmark_tables")
    assert tick() == 0


def test_no_request_without_label_table(demo):
    p, defs = demo
    instance = dg.DagsterInstance.ephemeral()
    tick = Ticks(p, defs, instance, TUESDAY)
    assert tick() == 0
    _materialised(instance, p, "student_checkpoints", _run(p))
    assert tick() == 0                                   # the benchmark would fail without vmage_table
    assert tick(at=NEXT_MONDAY_3AM + dt.timedelta(minutes=1)) == 0


def test_checkpoint_during_a_benchmark_run_waits_for_the_run(demo):
    """While a run writes the benchmark, a new checkpoint is remembered, not requested; once the
    run ends without writing it (here: it failed), the benchmark is requested."""
    p, defs = demo
    instance = dg.DagsterInstance.ephemeral()
    tick = Ticks(p, defs, instance, TUESDAY)
    _materialised(instance, p, "vmage_table")
    assert tick() == 0
    run = instance.create_run_for_job(job_def=defs.resolve_job_def("reevaluate"),
                                      asset_selection=frozenset({p.key("benchmark_tables")}))
    instance.report_dagster_event(dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=run.job_name),
                                  run_id=run.run_id)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    _materialised(instance, p, "student_checkpoints", _run(p))
    assert tick() == 0                                   # the benchmark is being written
    assert tick() == 0
    instance.report_run_failed(instance.get_run_by_id(run.run_id))
    assert tick() == 1                                   # the checkpoint was not forgotten
    assert tick() == 0


def test_weekly_cron_tick(demo):
    p, defs = demo
    instance = dg.DagsterInstance.ephemeral()
    tick = Ticks(p, defs, instance, TUESDAY)
    _materialised(instance, p, "vmage_table")
    _materialised(instance, p, "student_checkpoints", _run(p))
    _materialised(instance, p, "benchmark_tables")
    assert tick() == 0
    assert tick(at=NEXT_MONDAY_3AM - dt.timedelta(minutes=1)) == 0     # Monday 02:59: not yet
    assert tick(at=NEXT_MONDAY_3AM + dt.timedelta(seconds=30)) == 1    # the tick passed: re-evaluate
    assert tick(at=NEXT_MONDAY_3AM + dt.timedelta(hours=5)) == 0       # once per week
    assert tick(at=NEXT_MONDAY_3AM + dt.timedelta(days=3)) == 0
    assert tick(at=NEXT_MONDAY_3AM + dt.timedelta(days=7, minutes=1)) == 1


def test_benchmark_metadata_for_plots():
    """Per-student MAEs under stable names (the Plots tab), NaN left out; the table keeps every row."""
    rows = [dict(model="teacher", kind="teacher", run="age_gender_onnx", test_faces=21, mae_to_teacher=0.0,
                 mae_to_ground_truth=6.25, group_top1=float("nan"), group_1off=float("nan"), params_m=None),
            dict(model="mn3_small", kind="student", run="mn3_small", test_faces=21, mae_to_teacher=7.5,
                 mae_to_ground_truth=float("nan"), group_top1=float("nan"), group_1off=float("nan"),
                 params_m=1.52),
            dict(model="mn3_small", kind="student", run="mn3_small-gt-s1", test_faces=21, mae_to_teacher=8.0,
                 mae_to_ground_truth=9.125, group_top1=0.5, group_1off=0.75, params_m=1.52)]
    assert metric_entries(rows) == {"teacher_mae_to_ground_truth": 6.25, "test_faces": 21,
                                    "mae_to_teacher[mn3_small]": 7.5, "mae_to_teacher[mn3_small-gt-s1]": 8.0,
                                    "mae_to_ground_truth[mn3_small-gt-s1]": 9.125,
                                    "group_top1[mn3_small-gt-s1]": 0.5}
    value = table_value(pa.Table.from_pylist(rows))
    assert [c.name for c in value.schema.columns] == list(rows[0])
    types = {c.name: c.type for c in value.schema.columns}
    assert types["run"] == "string" and types["test_faces"] == "int" and types["mae_to_teacher"] == "float"
    assert [r.data["run"] for r in value.records] == ["age_gender_onnx", "mn3_small", "mn3_small-gt-s1"]
    assert value.records[1].data["mae_to_ground_truth"] is None               # NaN: an empty cell
    assert math.isclose(value.records[2].data["mae_to_ground_truth"], 9.125)
    assert value.records[0].data["params_m"] is None
