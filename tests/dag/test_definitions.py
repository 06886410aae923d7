"""The Dagster definitions: the asset keys users see, partitions, checks, schedule, profiles apart."""
import dagster as dg
import numpy as np
import pytest

from agedistill_core.images import encode_jpeg
from agedistill_core.students.zoo import STUDENTS
from agedistill_dag.definitions import build_definitions
from agedistill_dag.partitions import STUDENT_ARCHS
from agedistill_dag.profile import Profile
from agedistill_dag.resources import AgedistillConfig
from agedistill_testing import write_params

EXPECTED = {"face_manifest", "face_crops", "teacher_soft_labels", "vmage_table", "lfwc_images",
            "student_checkpoints", "benchmark_tables"}


def _images(root, n: int) -> None:
    root.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / f"{i}.jpg").write_bytes(encode_jpeg(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)))


def _two_profiles(tmp_path):
    """Profiles `a` and `b` over the same folder; `b` trains another recipe (real ages, a tag)."""
    root = tmp_path / "imgs"
    _images(root, 3)
    common = {"shard_size": 2, "dataset": {"name": "folder", "root": str(root)},
              "faces": {"detector": "none", "align": "none"}}
    return write_params(tmp_path, {
        "a": {**common, "workdir": str(tmp_path / "wa")},
        "b": {**common, "workdir": str(tmp_path / "wb"),
              "students": {"label_source": "ground_truth", "tag": "x"}}}, default="a")


def test_asset_keys_groups_and_partitions():
    defs = build_definitions("demo")
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {f"demo/{k}" for k in EXPECTED}
    assert graph.get(dg.AssetKey(["demo", "face_crops"])).partitions_def.name == "shards_demo"
    assert graph.get(dg.AssetKey(["demo", "teacher_soft_labels"])).partitions_def.name == "shards_demo"
    students = graph.get(dg.AssetKey(["demo", "student_checkpoints"])).partitions_def
    runs = students.get_partition_keys()                  # one run per architecture: arch-<recipe hash>
    assert sorted(r.rsplit("-", 1)[0] for r in runs) == sorted(STUDENT_ARCHS)
    assert len({r.rsplit("-", 1)[1] for r in runs}) == 1     # the same recipe
    assert set(STUDENT_ARCHS) == set(STUDENTS.names())
    groups = {graph.get(dg.AssetKey(["demo", k])).group_name for k in EXPECTED}
    assert groups == {"data", "teacher", "robustness", "students", "benchmarks"}
    # every asset has a code version: the hash of the settings sections its stage reads
    assert all(graph.get(k).code_version for k in graph.get_all_asset_keys())


def test_checks_and_weekly_schedule_off_by_default():
    defs = build_definitions("demo")
    graph = defs.resolve_asset_graph()
    assert {k.asset_key for k in graph.asset_check_keys} == {dg.AssetKey(["demo", "vmage_table"])}
    assert {k.name for k in graph.asset_check_keys} == {"ages_in_range", "vectors_sum_to_one", "unique_ids",
                                                         "counts_match_crops"}
    (sched,) = defs.schedules
    assert sched.default_status == dg.DefaultScheduleStatus.STOPPED
    assert sched.job_name == "reevaluate"


def test_default_profile_from_environment(tmp_path, monkeypatch):
    params = _two_profiles(tmp_path)
    monkeypatch.delenv("AGEDISTILL_PROFILE", raising=False)
    assert Profile.load(params=str(params)).name == "a"                  # params.yaml's default_profile
    monkeypatch.setenv("AGEDISTILL_PROFILE", "b")
    defs = build_definitions(params=str(params))
    assert dg.AssetKey(["b", "face_crops"]) in defs.resolve_asset_graph().get_all_asset_keys()


def test_two_profiles_in_one_instance_stay_apart(tmp_path):
    """Keys, shard partitions and student runs are the profile's own; a run with another
    profile's config is refused rather than written under the wrong keys."""
    params = str(_two_profiles(tmp_path))
    a, b = Profile.load("a", params), Profile.load("b", params)
    defs_a, defs_b = build_definitions(a), build_definitions(b)
    keys_a = set(defs_a.resolve_asset_graph().get_all_asset_keys())
    keys_b = set(defs_b.resolve_asset_graph().get_all_asset_keys())
    assert not keys_a & keys_b
    assert a.shards.name == "shards_a" and b.shards.name == "shards_b"
    # students keyed by run (architecture + recipe): b's recipe differs, so do its partitions
    run_a = next(r for r, arch in a.runs.items() if arch == "mn3_small")
    run_b = next(r for r, arch in b.runs.items() if arch == "mn3_small")
    assert run_a.startswith("mn3_small-") and run_b.startswith("mn3_small-gt-x-") and run_a != run_b
    assert run_a in a.students.get_partition_keys() and run_b not in a.students.get_partition_keys()
    assert run_b in b.students.get_partition_keys()

    instance = dg.DagsterInstance.ephemeral()
    for p, defs in ((a, defs_a), (b, defs_b)):
        dg.materialize(list(defs.assets), selection=[p.key("face_manifest")], instance=instance,
                       resources={"config": p.config()})
    assert instance.get_dynamic_partitions("shards_a") == ["shard-00000", "shard-00001"]
    assert instance.get_dynamic_partitions("shards_b") == ["shard-00000", "shard-00001"]
    dg.materialize(list(defs_a.assets), selection=[a.key("face_crops")], partition_key="shard-00000",
                   instance=instance, resources={"config": a.config()})
    assert instance.get_materialized_partitions(a.key("face_crops")) == {"shard-00000"}
    assert instance.get_materialized_partitions(b.key("face_crops")) == set()
    assert not (tmp_path / "wb" / "crops").exists()

    with pytest.raises(Exception, match="belong to profile 'a'"):
        dg.materialize(list(defs_a.assets), selection=[a.key("face_manifest")], instance=instance,
                       resources={"config": AgedistillConfig(profile="b", params=params)})


def test_sensors_request_manifest_refresh_and_missing_shards(tmp_path):
    """Sensors off by default; on a real folder they ask for exactly the missing work."""
    root = tmp_path / "imgs"
    _images(root, 3)
    params = write_params(tmp_path, {"f": {"workdir": str(tmp_path / "w"), "shard_size": 2,
                                           "dataset": {"name": "folder", "root": str(root)},
                                           "faces": {"detector": "none"}}})
    p = Profile.load("f", str(params))
    defs = build_definitions(p)
    sensors = {s.name: s for s in defs.sensors}
    new_images_sensor, unlabelled_shards_sensor = sensors["new_images_sensor"], sensors["unlabelled_shards_sensor"]
    assert new_images_sensor.default_status == dg.DefaultSensorStatus.STOPPED
    instance = dg.DagsterInstance.ephemeral()
    ctx = dg.build_sensor_context(instance=instance, resources={"config": p.config()})
    assert isinstance(new_images_sensor(ctx), dg.RunRequest)             # no manifest yet
    dg.materialize(list(defs.assets), selection=[p.key("face_manifest")], instance=instance,
                   resources={"config": p.config()})
    assert isinstance(new_images_sensor(ctx), dg.SkipReason)
    requests = unlabelled_shards_sensor(dg.build_sensor_context(instance=instance))
    assert sorted(r.partition_key for r in requests) == ["shard-00000", "shard-00001"]
    (root / "3.jpg").write_bytes((root / "0.jpg").read_bytes())
    assert isinstance(new_images_sensor(ctx), dg.RunRequest)             # a new image appeared


def test_graph_jobs_stage_order_and_gpu_queue():
    """`make demo`'s stages come from the graph (upstream first, crops+labels per shard together),
    each through the job of its partitioning; only student training goes to the `gpu` Celery queue."""
    from agedistill_dag.definitions import graph_jobs
    from agedistill_dag.profile import GPU_QUEUE, QUEUE_TAG
    from agedistill_dag.materialize import stage_waves, wanted_partitions

    p = Profile.load("demo")
    defs = build_definitions(p, executor="celery")
    waves = [[s.assets for s in wave] for wave in stage_waves(p, defs)]
    assert waves == [[("face_manifest",)], [("face_crops", "teacher_soft_labels")], [("vmage_table",)],
                     [("lfwc_images",), ("student_checkpoints",)], [("benchmark_tables",)]]
    jobs = graph_jobs(list(defs.assets))
    assert sorted(jobs) == ["materialize_face_crops", "materialize_lfwc_images",
                            "materialize_student_checkpoints", "materialize_unpartitioned"]
    assert sum(len(k) for k in jobs.values()) == len(EXPECTED)          # every asset in exactly one job
    job = defs.resolve_job_def("materialize_student_checkpoints")
    assert job.executor_def.name == "celery"
    tags = {n.name: n.tags.get(QUEUE_TAG) for n in defs.resolve_job_def("materialize_unpartitioned").graph.nodes}
    assert set(tags.values()) == {None}
    (node,) = job.graph.nodes
    assert node.tags[QUEUE_TAG] == GPU_QUEUE
    # the partitions the demo profile asks for: its students and its selected LFW+C partitions
    stage = {s.assets: s for wave in stage_waves(p, defs) for s in wave}
    assert wanted_partitions(p, stage[("student_checkpoints",)]) == [r for r, a in p.runs.items() if a == "mn3_small"]
    lfwc = wanted_partitions(p, stage[("lfwc_images",)])
    assert len(lfwc) == len(p.settings.corruptions.severities) * 13 and lfwc[0].keys_by_dimension


def test_unknown_executor_is_refused():
    with pytest.raises(Exception, match="AGEDISTILL_EXECUTOR='dask'; choose one of multiprocess, in_process, celery"):
        build_definitions("demo", executor="dask")
