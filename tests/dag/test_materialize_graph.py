"""Materialise the whole asset graph in-process on 300 real UTKFace faces (one short epoch)."""
import math

import dagster as dg
import pyarrow.parquet as pq

from agedistill_core.crops import CROPS_SCHEMA
from agedistill_core.labels import LABELS_SCHEMA
from agedistill_core.settings import load_settings
from agedistill_core.shards import list_shards, read_shards, read_table
from agedistill_dag.materialize import materialize_all
from agedistill_testing import needs_utkface


@needs_utkface
def test_full_graph_on_real_faces(utk_params):
    instance = dg.DagsterInstance.ephemeral()
    results = materialize_all("utk", str(utk_params), instance=instance, log=lambda _: None)
    assert all(r.success for r in results.values())
    s = load_settings("utk", utk_params)

    # partitions: the manifest registered 3 shards of <=128 images, each materialised
    shards = instance.get_dynamic_partitions("shards")
    assert shards == ["shard-00000", "shard-00001", "shard-00002"]
    assert list_shards(s.crops_dir) == shards == list_shards(s.labels_dir)

    crops = read_shards(s.crops_dir)
    labels = read_shards(s.labels_dir)
    assert crops.num_rows == 300 and labels.num_rows == 300
    assert pq.read_schema(s.crops_dir / "shard-00000.parquet").remove_metadata() == CROPS_SCHEMA
    assert pq.read_schema(s.labels_dir / "shard-00000.parquet").remove_metadata() == LABELS_SCHEMA

    vmage = read_table(s.vmage_path)
    assert vmage.num_rows == 300
    assert {"teacher_age", "probs", "split", "gt_age", "age_group"} <= set(vmage.column_names)

    # the checks ran and passed
    check_evals = [e for r in results.values() for e in r.get_asset_check_evaluations()]
    assert {e.check_name for e in check_evals} == {"ages_in_range", "vectors_sum_to_one", "unique_ids",
                                                  "counts_match_crops"}
    assert all(e.passed for e in check_evals)

    bench = {r["run"]: r for r in read_table(s.benchmarks_dir / "benchmark.parquet").to_pylist()}
    assert bench["age_gender_onnx"]["mae_to_ground_truth"] < 10          # the teacher on real ages
    student = bench["mn3_small"]
    assert math.isfinite(student["mae_to_teacher"]) and math.isfinite(student["mae_to_ground_truth"])
    assert student["test_faces"] == bench["age_gender_onnx"]["test_faces"] > 30
    assert (s.students_dir / "mn3_small" / "best.pt").is_file()
    assert (s.students_dir / "mn3_small" / "metrics.png").is_file()

    # the corrupted set: the 4 selected (corruption, severity) partitions, 40 faces each
    lfwc = {p.name for p in s.lfwc_dir.iterdir()}
    assert lfwc == {"defocus_blur-s1", "defocus_blur-s5", "jpeg-s1", "jpeg-s5"}
    rob = read_table(s.benchmarks_dir / "robustness.parquet").to_pylist()
    assert {(r["model"], r["corruption"], r["severity"]) for r in rob} >= {
        ("teacher", "defocus_blur", 5), ("mn3_small", "jpeg", 1)}
    assert all(r["faces"] == 40 and math.isfinite(r["mae"]) for r in rob)
    mae = {(r["model"], r["corruption"], r["severity"]): r["mae"] for r in rob}
    assert mae[("teacher", "defocus_blur", 5)] > mae[("teacher", "clean", 0)]   # heavy blur hurts
    assert (s.benchmarks_dir / "robustness.png").stat().st_size > 10_000
    bench_meta = instance.get_latest_materialization_event(dg.AssetKey("benchmark_tables")).asset_materialization
    assert "defocus_blur" in bench_meta.metadata["robustness"].value

    # the vmage_table materialisation carries its summary for the UI
    mat = instance.get_latest_materialization_event(dg.AssetKey("vmage_table")).asset_materialization
    assert mat.metadata["faces"].value == 300
    assert "61-100" in mat.metadata["age_groups"].value
