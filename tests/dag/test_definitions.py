"""The Dagster definitions: the asset keys users see, partitions, checks, schedule."""
import dagster as dg

from agedistill_core.students.zoo import STUDENTS
from agedistill_dag.definitions import defs
from agedistill_dag.partitions import STUDENT_ARCHS

EXPECTED = {"face_manifest", "face_crops", "teacher_soft_labels", "vmage_table", "student_checkpoints",
            "benchmark_tables"}


def test_asset_keys_groups_and_partitions():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert EXPECTED <= keys
    assert graph.get(dg.AssetKey("face_crops")).partitions_def.name == "shards"
    assert set(graph.get(dg.AssetKey("student_checkpoints")).partitions_def.get_partition_keys()) == set(STUDENT_ARCHS)
    assert set(STUDENT_ARCHS) == set(STUDENTS.names())
    groups = {graph.get(dg.AssetKey(k)).group_name for k in EXPECTED}
    assert groups == {"data", "teacher", "students", "benchmarks"}


def test_checks_and_weekly_schedule_off_by_default():
    graph = defs.resolve_asset_graph()
    checks = {k.name for k in graph.asset_check_keys}
    assert checks == {"ages_in_range", "vectors_sum_to_one", "unique_ids", "counts_match_crops"}
    (sched,) = defs.schedules
    assert sched.default_status == dg.DefaultScheduleStatus.STOPPED
    assert sched.job_name == "reevaluate"
