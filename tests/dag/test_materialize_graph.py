"""Materialise the whole asset graph through Dagster runs (two pool processes, one run per partition)
on 300 real UTKFace faces (one short epoch) into a throwaway instance, twice: the second time skips
every stage's work and records the same data versions."""
import math

import dagster as dg
import pyarrow.parquet as pq

from agedistill_core.faces.crops import CROPS_SCHEMA
from agedistill_core.teacher.label import LABELS_SCHEMA
from agedistill_core.settings import load_settings
from agedistill_core.shards import list_shards, read_shards, read_table
from agedistill_dag.materialize import materialize_all
from agedistill_testing import needs_utkface


@needs_utkface
def test_full_graph_on_real_faces(utk_params):
    # on disk: pool processes open it from its ref; it captures the agedistill loggers, as make demo's does
    python_logs = {"managed_python_loggers": ["agedistill"], "python_log_level": "INFO"}
    with dg.instance_for_test(overrides={"python_logs": python_logs}) as instance:
        _full_graph(utk_params, instance)


def _full_graph(utk_params, instance):
    results = materialize_all("utk", str(utk_params), instance=instance, jobs=2)
    assert results.success
    s = load_settings("utk", utk_params)

    # one recorded run per partition: manifest, 3 shards (crops + labels), label table,
    # 4 LFW+C partitions, 1 student, benchmark; each through the job of its partitioning
    runs = instance.get_runs()
    assert len(runs) == len(results.runs) == 1 + 3 + 1 + 4 + 1 + 1
    assert {r.job_name for r in runs} == {"materialize_unpartitioned", "materialize_face_crops",
                                          "materialize_lfwc_images", "materialize_student_checkpoints"}
    assert sorted(r.tags.get("dagster/partition") for r in runs if r.job_name == "materialize_face_crops") == [
        "shard-00000", "shard-00001", "shard-00002"]

    # partitions: the manifest registered 3 shards of <=128 images, each materialised
    shards = instance.get_dynamic_partitions("shards_utk")
    assert shards == ["shard-00000", "shard-00001", "shard-00002"]
    assert list_shards(s.crops_dir) == shards == list_shards(s.labels_dir)
    # each stage's own lines, logged in a pool process, are in its run's event log: a crops shard's progress
    crops_run = next(r for r in runs if r.tags.get("dagster/partition") == "shard-00001"
                     and r.job_name == "materialize_face_crops")
    lines = [e.user_message for e in instance.all_logs(crops_run.run_id)]
    assert any(m.startswith("crops shard-00001: ") and m.endswith(" s left") for m in lines), lines

    crops = read_shards(s.crops_dir)
    labels = read_shards(s.labels_dir)
    assert crops.num_rows == 300 and labels.num_rows == 300
    assert pq.read_schema(s.crops_dir / "shard-00000.parquet").remove_metadata() == CROPS_SCHEMA
    assert pq.read_schema(s.labels_dir / "shard-00000.parquet").remove_metadata() == LABELS_SCHEMA

    vmage = read_table(s.vmage_path)
    assert vmage.num_rows == 300
    assert {"teacher_age", "probs", "split", "gt_age", "age_group"} <= set(vmage.column_names)

    # the checks ran and passed
    check_evals = results.check_evaluations()
    assert {e.check_name for e in check_evals} == {"ages_in_range", "vectors_sum_to_one", "unique_ids",
                                                  "counts_match_crops"}
    assert all(e.passed for e in check_evals)

    bench = {r["run"]: r for r in read_table(s.benchmarks_dir / "benchmark.parquet").to_pylist()}
    assert bench["age_gender_onnx"]["mae_to_ground_truth"] < 10          # the teacher on real ages
    run = next(r for r in bench if r.startswith("mn3_small-"))        # the run name carries a recipe hash
    student = bench[run]
    assert math.isfinite(student["mae_to_teacher"]) and math.isfinite(student["mae_to_ground_truth"])
    assert student["test_faces"] == bench["age_gender_onnx"]["test_faces"] > 30
    assert (s.students_dir / run / "best.pt").is_file()
    assert (s.students_dir / run / "metrics.png").is_file()

    # the corrupted set: the 4 selected (corruption, severity) partitions, 40 faces each
    lfwc = {p.name for p in s.lfwc_dir.iterdir()}
    assert lfwc == {"defocus_blur-s1", "defocus_blur-s5", "jpeg-s1", "jpeg-s5"}
    rob = read_table(s.benchmarks_dir / "robustness.parquet").to_pylist()
    assert {(r["model"], r["corruption"], r["severity"]) for r in rob} >= {
        ("teacher", "defocus_blur", 5), (run, "jpeg", 1)}
    assert all(r["faces"] == 40 and math.isfinite(r["mae"]) for r in rob)
    mae = {(r["model"], r["corruption"], r["severity"]): r["mae"] for r in rob}
    assert mae[("teacher", "defocus_blur", 5)] > mae[("teacher", "clean", 0)]   # heavy blur hurts
    assert (s.benchmarks_dir / "robustness.png").stat().st_size > 10_000

    def latest(name):
        return instance.get_latest_materialization_event(dg.AssetKey(["utk", name])).asset_materialization
    bench_meta = latest("benchmark_tables")
    assert "defocus_blur" in bench_meta.metadata["robustness"].value
    # the plots render in the UI (Markdown, PNG inline) and keep their paths
    assert bench_meta.metadata["robustness_chart"].value.startswith(
        "![MAE per corruption and severity](data:image/png;base64,")
    assert bench_meta.metadata["robustness_plot"].value.endswith("robustness.png")
    student_meta = latest("student_checkpoints")
    assert student_meta.partition == run                                        # the run name (recipe hash)
    assert "(data:image/png;base64," in student_meta.metadata["training_curves"].value

    # the vmage_table materialisation carries its summary for the UI
    mat = latest("vmage_table")
    assert mat.metadata["faces"].value == 300
    assert "61-120" in mat.metadata["age_groups"].value
    assert "(data:image/png;base64," in mat.metadata["age_group_histogram"].value

    # a second run: nothing to redo, every data version as before
    def versions(res):
        return {(e.asset_materialization.asset_key.to_user_string(), e.asset_materialization.partition):
                e.asset_materialization.tags["dagster/data_version"] for e in res.materializations()}
    crop_mtime = (s.crops_dir / "shard-00000.parquet").stat().st_mtime_ns
    again = materialize_all("utk", str(utk_params), instance=instance)
    assert versions(again) == versions(results)
    assert (s.crops_dir / "shard-00000.parquet").stat().st_mtime_ns == crop_mtime
    assert again.success and len(versions(again)) == 1 + 3 + 3 + 1 + 4 + 1 + 1
    skipped = [e.asset_materialization.metadata["up_to_date"].value for e in again.materializations()
               if "up_to_date" in e.asset_materialization.metadata]
    assert len(skipped) == 3 + 3 + 4 and all(skipped)                         # crops, labels, LFW+C
    assert latest("student_checkpoints").metadata["epochs"].value == 1          # resumed: no epoch trained
