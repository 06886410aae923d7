"""LFW+C partitions count as built only with a valid completion record; options that
select nothing are one-line errors instead of a silent exit 0."""
from __future__ import annotations

import json
import shutil

import pytest

from agedistill_core.cli import main as cli
from agedistill_core.corruptions.lfwc import COMPLETE, build_lfwc_partition, complete_parts, partition_dir
from agedistill_testing import agedistill_messages
from rel_helpers import PROFILE, assert_same_tables, load, make_params, one_line_error


@pytest.fixture
def built(tmp_path, faces_dir, reference):
    """A private copy of the reference run (lfwc included) and its settings."""
    work = tmp_path / "work"
    shutil.copytree(reference, work)
    params = make_params(tmp_path, work, faces_dir)
    return params, load(params)


def _damage(part_dir, how):
    parts = sorted(part_dir.glob("part-*.parquet"))
    if how == "killed_between_parts":       # what SIGKILL after part-00000 leaves
        (part_dir / COMPLETE).unlink()
        parts[-1].unlink()
    elif how == "part_deleted":             # record present, a listed part gone
        parts[0].unlink()
    elif how == "stray_part":               # an extra part no build of this version wrote
        shutil.copy(parts[0], part_dir / "part-00007.parquet")
    elif how == "other_version":            # record of another corruptions setting
        rec = json.loads((part_dir / COMPLETE).read_text())
        (part_dir / COMPLETE).write_text(json.dumps({**rec, "version": "0123456789ab"}))
    elif how == "garbage_record":
        (part_dir / COMPLETE).write_text("{not json")
    elif how == "garbage_part":
        parts[0].write_bytes(b"\x00" * 100)
        (part_dir / COMPLETE).unlink()


@pytest.mark.parametrize("how", ["killed_between_parts", "part_deleted", "stray_part", "other_version",
                                 "garbage_record", "garbage_part"])
def test_unfinished_partition_is_rebuilt(built, reference, how):
    params, s = built
    part_dir = partition_dir(s, "jpeg", 1)
    _damage(part_dir, how)
    assert complete_parts(s, "jpeg", 1) is None
    with agedistill_messages() as messages:
        r = build_lfwc_partition(s, "jpeg", 1)
    if how in ("killed_between_parts", "part_deleted", "stray_part", "garbage_part"):
        assert not r.skipped and "rebuilding" in messages[0]
    assert r.rows == 10 and complete_parts(s, "jpeg", 1) is not None
    for p in part_dir.glob("*.corrupt*"):
        p.unlink()  # a quarantined part is kept for inspection; the rebuilt ones must match
    assert_same_tables(part_dir, reference / "lfwc" / "jpeg-s1")


def test_finished_partition_is_skipped(built):
    params, s = built
    before = {p.name: p.stat().st_mtime_ns for p in partition_dir(s, "jpeg", 2).iterdir()}
    r = build_lfwc_partition(s, "jpeg", 2)
    assert r.skipped and r.rows == 10
    assert {p.name: p.stat().st_mtime_ns for p in partition_dir(s, "jpeg", 2).iterdir()} == before


def test_complete_parts_without_record_are_adopted(built, reference):
    """Every part written but no record (killed just before it, or built by an older
    version): the parts are checked against the base faces and kept."""
    params, s = built
    part_dir = partition_dir(s, "defocus_blur", 1)
    (part_dir / COMPLETE).unlink()
    before = {p.name: p.stat().st_mtime_ns for p in part_dir.glob("part-*.parquet")}
    r = build_lfwc_partition(s, "defocus_blur", 1)
    assert r.skipped and r.rows == 10
    assert {p.name: p.stat().st_mtime_ns for p in part_dir.glob("part-*.parquet")} == before
    assert json.loads((part_dir / COMPLETE).read_text()) == \
        json.loads((reference / "lfwc" / "defocus_blur-s1" / COMPLETE).read_text())


@pytest.mark.parametrize("args,expect", [
    (["--corruption", "jpg"], "unknown corruption 'jpg'"),
    (["--corruption", "gaussian_noise"], "not selected by the profile"),
    (["--severity", "7"], "severity 7"),
])
def test_lfwc_option_selecting_nothing_is_one_line(built, capsys, args, expect):
    params, s = built
    shutil.rmtree(s.lfwc_dir)
    assert cli(["--profile", PROFILE, "--params", str(params), "lfwc", *args]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert expect in line and ("jpeg, defocus_blur" in line or "1, 2" in line)
    assert not s.lfwc_dir.exists()


def test_base_split_without_faces_is_one_line(tmp_path, faces_dir, reference, capsys):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    work = tmp_path / "work"
    shutil.copytree(reference, work, ignore=shutil.ignore_patterns("lfwc"))
    # a split that is not one: refused when the profile loads, naming the valid ones
    params = make_params(tmp_path, work, faces_dir, corruptions={"base_split": "holdout"})
    assert cli(["--profile", PROFILE, "--params", str(params), "lfwc"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "corruptions.base_split" in line and "'holdout'" in line and "train, val, test" in line
    # a real split that holds no face in the label table: one line naming the splits that do
    table = pq.read_table(work / "vmage.parquet")
    pq.write_table(table.filter(pc.not_equal(table["split"], "val")), work / "vmage.parquet")
    params = make_params(tmp_path, work, faces_dir, corruptions={"base_split": "val"})
    assert cli(["--profile", PROFILE, "--params", str(params), "lfwc"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "corruptions.base_split 'val' has no faces" in line and "train" in line and str(params) in line
    assert not (work / "lfwc").exists() or not any((work / "lfwc").iterdir())


def test_evaluation_skips_unfinished_partitions(built):
    from agedistill_core.evaluate.robustness import run_robustness

    params, s = built
    _damage(partition_dir(s, "jpeg", 1), "killed_between_parts")
    with agedistill_messages() as messages:
        table = run_robustness(s)
    cases = {(c, sev) for c, sev in zip(table["corruption"].to_pylist(), table["severity"].to_pylist())}
    assert cases == {("clean", 0), ("jpeg", 2), ("defocus_blur", 1), ("defocus_blur", 2)}
    assert any("skipping 1 unfinished" in m and "jpeg-s1" in m for m in messages)
