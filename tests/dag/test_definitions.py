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


def test_sensors_request_manifest_refresh_and_missing_shards(tmp_path):
    """Sensors off by default; on a real folder they ask for exactly the missing work."""
    import numpy as np

    from agedistill_core.images import encode_jpeg
    from agedistill_dag.materialize import materialize_all
    from agedistill_dag.resources import AgedistillConfig
    from agedistill_dag.sensors import new_images_sensor, unlabelled_shards_sensor
    from agedistill_testing import write_params

    assert new_images_sensor.default_status == dg.DefaultSensorStatus.STOPPED
    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        (root / f"{i}.jpg").write_bytes(encode_jpeg(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)))
    p = write_params(tmp_path, {"f": {"workdir": str(tmp_path / "w"), "shard_size": 2,
                                      "dataset": {"name": "folder", "root": str(root)},
                                      "faces": {"detector": "none"}}})
    instance = dg.DagsterInstance.ephemeral()
    config = AgedistillConfig(profile="f", params=str(p))
    ctx = dg.build_sensor_context(instance=instance, resources={"config": config})
    assert isinstance(new_images_sensor(ctx), dg.RunRequest)             # no manifest yet
    dg.materialize([*defs.assets], selection="face_manifest", instance=instance, resources={"config": config})
    assert isinstance(new_images_sensor(ctx), dg.SkipReason)
    requests = unlabelled_shards_sensor(dg.build_sensor_context(instance=instance))
    assert sorted(r.partition_key for r in requests) == ["shard-00000", "shard-00001"]
    (root / "3.jpg").write_bytes((root / "0.jpg").read_bytes())
    assert isinstance(new_images_sensor(ctx), dg.RunRequest)             # a new image appeared
