"""The demo's benchmark table shows the shipped model (a trained student) as a row."""
from __future__ import annotations

import math
import re

from agedistill_core.cli import main
from agedistill_core.evaluate.benchmark import run_benchmark
from agedistill_core.settings import load_settings
from agedistill_core.inference.student import DEFAULT_CHECKPOINT
from agedistill_testing import agedistill_messages, write_params


def test_demo_benchmark_has_the_shipped_model_row(tmp_path):
    assert DEFAULT_CHECKPOINT.is_file()
    params = write_params(tmp_path, {"d": {"workdir": str(tmp_path / "work"), "shard_size": 64,
                                           "dataset": {"name": "demo", "root": str(tmp_path / "raw"), "limit": 80}}})
    for stage in ("manifest", "crops", "label", "vmage"):
        assert main(["--params", str(params), "--profile", "d", stage]) == 0, stage
    settings = load_settings("d", params, {"evaluate": {"batch_size": 2}})
    with agedistill_messages() as lines:
        table = run_benchmark(settings)
    rows = {r["run"]: r for r in table.to_pylist()}
    shipped = rows["mn3_small_distilled"]
    assert shipped["kind"] == "shipped" and shipped["model"] == "mn3_small" and shipped["test_faces"] > 0
    assert math.isfinite(shipped["mae_to_teacher"]) and shipped["mae_to_teacher"] < 15  # a trained student
    md = (settings.benchmarks_dir / "benchmark.md").read_text()
    assert "mn3_small_distilled" in md and "shipped" in md
    # progress while a checkpoint scores the test split (batches of 2): faces done, throughput, time left
    n = shipped["test_faces"]
    assert any(re.fullmatch(rf"benchmark mn3_small_distilled: \d+/{n} faces, [\d.]+ faces/s, \d+ s left", m)
               for m in lines), lines
