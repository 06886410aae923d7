"""The label table holds exactly the faces of the current manifest: switching the data
root, deleting an image, or stale label shards never leave rows with split null, and a
failing check makes `agedistill vmage` exit non-zero with one line."""
from __future__ import annotations

import shutil

import pyarrow as pa
import pytest

from agedistill_core.cli import main as cli
from agedistill_core.shards import read_table, shard_path, table_metadata, write_table
from rel_helpers import PROFILE, one_line_error, real_faces


def _folder(path, files, prefix=""):
    path.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, path / f"{prefix}{f.name}")
    return path


def _run(params, *stages, root=None, capsys=None):
    """`agedistill [--data-root ROOT] STAGE` for each stage, in this process; returns the last exit code."""
    for stage in stages:
        rc = cli(["--profile", PROFILE, "--params", str(params), *(["--data-root", str(root)] if root else []), stage])
        if rc:
            return rc
    return 0


STAGES = ("manifest", "crops", "label", "vmage")


def test_switching_data_root_keeps_only_the_new_faces(tiny, tmp_path, capsys):
    a = _folder(tmp_path / "A", real_faces(7), "a_")
    b = _folder(tmp_path / "B", real_faces(4, offset=1), "b_")
    params, s = tiny(root=a)
    assert _run(params, *STAGES, root=a) == 0
    assert _run(params, *STAGES, root=b) == 0
    table = read_table(s.vmage_path)
    want = sorted(f"utkface/{p.name}" for p in b.iterdir())
    assert table["image_id"].to_pylist() == want
    assert table["split"].null_count == 0 and table["dataset"].null_count == 0
    out = capsys.readouterr().out
    assert '"counts_match_crops": true' in out


def test_deleted_image_leaves_the_table(tiny, tmp_path, capsys):
    root = _folder(tmp_path / "photos", real_faces(8))
    params, s = tiny(root=root)
    assert _run(params, *STAGES) == 0
    gone = sorted(root.iterdir())[3]
    gone.unlink()
    assert _run(params, *STAGES) == 0
    ids = read_table(s.vmage_path)["image_id"].to_pylist()
    assert f"utkface/{gone.name}" not in ids and len(ids) == 7
    assert read_table(s.vmage_path)["split"].null_count == 0


def test_failing_check_exits_non_zero_with_one_line(tiny, tmp_path, capsys):
    root = _folder(tmp_path / "photos", real_faces(6))
    params, s = tiny(root=root)
    assert _run(params, *STAGES) == 0
    capsys.readouterr()
    # a label shard that lost a row but still claims to be up to date (a hand edit, a buggy tool)
    path = shard_path(s.labels_dir, "shard-00000")
    meta = table_metadata(path)
    write_table(read_table(path).slice(1), path, meta)
    assert _run(params, "vmage") == 2
    line = one_line_error(capsys.readouterr().err)
    assert "counts_match_crops" in line and str(s.vmage_path) in line and "agedistill label" in line
    assert _run(params, "label", "vmage") == 0  # the fix the line gives works
    assert read_table(s.vmage_path).num_rows == 6


def test_labels_older_than_their_crops_are_refused(tiny, tmp_path, capsys):
    root = _folder(tmp_path / "photos", real_faces(6))
    params, s = tiny(root=root)
    assert _run(params, *STAGES) == 0
    # crops re-made with other settings (new version) but not re-labelled
    params2, s2 = tiny(name="a", root=root, faces={"crop_size": 72})
    assert _run(params2, "crops") == 0
    capsys.readouterr()
    assert _run(params2, "vmage") == 2
    line = one_line_error(capsys.readouterr().err)
    assert "shard-00000" in line and "agedistill label" in line
    assert _run(params2, "label", "vmage") == 0


def test_missing_label_shard_is_one_line(tiny, tmp_path, capsys):
    root = _folder(tmp_path / "photos", real_faces(6))
    params, s = tiny(root=root)
    assert _run(params, *STAGES) == 0
    shard_path(s.labels_dir, "shard-00001").unlink()
    capsys.readouterr()
    assert _run(params, "vmage") == 2
    line = one_line_error(capsys.readouterr().err)
    assert str(shard_path(s.labels_dir, "shard-00001")) in line and "agedistill label" in line


def test_shard_files_of_another_manifest_are_not_read(tiny, tmp_path, capsys):
    """A label/crop shard file whose shard is not in the manifest (left by an older
    manifest) is ignored, even when it is garbage."""
    root = _folder(tmp_path / "photos", real_faces(6))
    params, s = tiny(root=root)
    assert _run(params, *STAGES) == 0
    for folder in (s.crops_dir, s.labels_dir):
        shard_path(folder, "shard-00042").write_bytes(b"left over, not Parquet")
    assert _run(params, "vmage") == 0
    assert read_table(s.vmage_path).num_rows == 6
    assert shard_path(s.labels_dir, "shard-00042").is_file()  # not ours to touch


@pytest.mark.parametrize("dupe", ["same_shard", "other_manifest_shard"])
def test_duplicate_rows_fail_the_check(tiny, tmp_path, capsys, dupe):
    root = _folder(tmp_path / "photos", real_faces(6))
    params, s = tiny(root=root)
    assert _run(params, *STAGES) == 0
    path = shard_path(s.labels_dir, "shard-00000")
    t, meta = read_table(path), table_metadata(path)
    if dupe == "same_shard":
        write_table(pa.concat_tables([t, t.slice(0, 1)]), path, meta)
        capsys.readouterr()
        assert _run(params, "vmage") == 2
        assert "unique_ids" in one_line_error(capsys.readouterr().err)
        assert _run(params, "label", "vmage") == 0
        assert read_table(s.vmage_path).num_rows == 6
    else:  # the same faces in a shard file the manifest does not name: ignored, no duplicates
        write_table(t, shard_path(s.labels_dir, "shard-00009"), meta)
        assert _run(params, "vmage") == 0
        assert read_table(s.vmage_path).num_rows == 6
