"""Robustness for an explicit list of checkpoints (`robustness_rows`, `benchmarks/robustness_of.py`)
and for every trained student (`run_robustness`), on a tiny LFW+C set built from real faces."""
from __future__ import annotations

import importlib.util
import json
import math
import shutil

import pytest

from agedistill_core.cli import main as cli
from agedistill_core.corruptions.lfwc import selected
from agedistill_core.evaluate.robustness import robustness_rows, run_robustness
from agedistill_core.inference.student import DEFAULT_CHECKPOINT
from agedistill_core.settings import load_settings
from agedistill_testing import REPO, UTKFACE, agedistill_messages, write_params

PROFILE = "rob"


@pytest.fixture(scope="module")
def lfwc_profile(tmp_path_factory):
    """A profile over 20 real UTKFace faces whose LFW+C set (8 base faces, 2 corruptions x 2
    severities) is built, with two (untrained) students in its students folder."""
    if not UTKFACE.is_dir():
        pytest.skip(f"needs real faces in ../shared/data/utkface/crop_part1 ({UTKFACE} missing)")
    tmp = tmp_path_factory.mktemp("robustness")
    params = write_params(tmp, {PROFILE: {
        "workdir": str(tmp / "work"), "shard_size": 10,
        "dataset": {"name": "utkface", "root": str(UTKFACE), "limit": 20},
        "faces": {"detector": "none", "align": "none", "crop_size": 64, "workers": 1},
        "teacher": {"variants": 1, "threads": 1, "batch_size": 8, "prefetch": False},
        "evaluate": {"batch_size": 4},
        "corruptions": {"names": ["jpeg", "defocus_blur"], "severities": [1, 3], "max_faces": 8,
                        "base_split": "train", "workers": 1},
    }})
    for stage in ("manifest", "crops", "label", "vmage", "lfwc"):
        assert cli(["--params", str(params), "--profile", PROFILE, stage]) == 0, stage
    return params


@pytest.fixture(scope="module")
def students(lfwc_profile, student_ckpt):
    """Two run folders, each with a best.pt, under the profile's students folder."""
    settings = load_settings(PROFILE, lfwc_profile)
    runs = ["mn3_small-a", "mn3_small-b"]
    for run in runs:
        (settings.students_dir / run).mkdir(parents=True, exist_ok=True)
        shutil.copy(student_ckpt, settings.students_dir / run / "best.pt")
    return runs


def _sets(settings) -> set[tuple[str, int]]:
    return {("clean", 0), *selected(settings)}


def test_rows_for_exactly_the_named_models_and_every_set(lfwc_profile, student_ckpt):
    settings = load_settings(PROFILE, lfwc_profile)
    rows = robustness_rows(settings, {"shipped": DEFAULT_CHECKPOINT, "untrained": student_ckpt})
    assert [r["model"] for r in rows[:3]] == ["teacher", "shipped", "untrained"]
    assert {r["model"] for r in rows} == {"teacher", "shipped", "untrained"}
    for model in ("teacher", "shipped", "untrained"):
        mine = [(r["corruption"], r["severity"]) for r in rows if r["model"] == model]
        assert sorted(mine) == sorted(_sets(settings)), model  # each set once
    assert all(r["faces"] == 8 and math.isfinite(r["mae"]) and r["mae"] >= 0 for r in rows), rows
    assert {r["target"] for r in rows} == {"ground_truth"}  # UTKFace has real ages

    alone = robustness_rows(settings, {"untrained": student_ckpt}, teacher=False)
    assert {r["model"] for r in alone} == {"untrained"} and len(alone) == len(_sets(settings))
    # the same checkpoint on the same faces: the same numbers, with or without the teacher beside it
    before = {(r["corruption"], r["severity"]): r["mae"] for r in rows if r["model"] == "untrained"}
    assert {(r["corruption"], r["severity"]): r["mae"] for r in alone} == pytest.approx(before)


def test_run_robustness_still_scores_every_student(lfwc_profile, students):
    settings = load_settings(PROFILE, lfwc_profile)
    table = run_robustness(settings)
    rows = table.to_pylist()
    assert {r["model"] for r in rows} == {"teacher", *students}
    assert len(rows) == (1 + len(students)) * len(_sets(settings))
    assert all(math.isfinite(r["mae"]) for r in rows)
    md = (settings.benchmarks_dir / "robustness.md").read_text()
    assert all(name in md for name in ("teacher", *students)) and "all corruptions" in md
    assert (settings.benchmarks_dir / "robustness.png").is_file()


def test_benchmark_script_prints_table6_and_reuses_the_teachers_rows(lfwc_profile, student_ckpt, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("robustness_of", REPO / "benchmarks" / "robustness_of.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    teacher_json, out_json = tmp_path / "teacher.json", tmp_path / "rows.json"
    argv = ["--params", str(lfwc_profile), "--profile", PROFILE, "--teacher-json", str(teacher_json),
            "--json", str(out_json), f"mine={student_ckpt}"]
    assert script.main(argv) == 0
    first = json.loads(out_json.read_text())
    md = capsys.readouterr().out
    assert "| corruption | teacher | mine |" in md and "| clean |" in md and "| all corruptions |" in md
    assert "mean over 4 sets" in md
    assert first["checkpoints"] == {"mine": str(student_ckpt)} and first["sets"] == 4
    assert {r["model"] for r in first["rows"]} == {"teacher", "mine"}

    with agedistill_messages() as messages:   # another thread count: the teacher's ages are the same, reused
        assert script.main(argv + ["--threads", "2", "--plot", str(tmp_path / "fig4.png")]) == 0
    assert any("the teacher's rows from" in m for m in messages), messages
    assert (tmp_path / "fig4.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = json.loads(out_json.read_text())
    teacher = [r for r in first["rows"] if r["model"] == "teacher"]
    assert [r for r in again["rows"] if r["model"] == "teacher"] == teacher       # reused as written
    for a, b in zip(again["rows"], first["rows"]):                              # the student, on 2 threads
        assert {**a, "mae": 0} == {**b, "mae": 0} and a["mae"] == pytest.approx(b["mae"], rel=1e-5, abs=1e-4)
