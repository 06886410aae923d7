import json
import shutil

import pyarrow.compute as pc
import pytest

from agedistill_core.datasets import build_manifest
from agedistill_core.datasets.utkface import parse_age
from agedistill_core.errors import DataError
from agedistill_core.settings import load_settings
from agedistill_testing import FAIRFACE, UTKFACE, needs_fairface, needs_utkface, write_params


def test_parse_age_from_utkface_names():
    assert parse_age("26_1_0_20170116171048641.jpg.chip.jpg") == 26
    assert parse_age("100_1_2_20170105174847679.jpg.chip.jpg") == 100
    assert parse_age("notes.jpg") is None


@needs_utkface
def test_utkface_manifest_splits_are_fixed_and_sized(tmp_path):
    p = write_params(tmp_path, {"u": {"workdir": str(tmp_path / "w"), "shard_size": 100,
                                      "dataset": {"name": "utkface", "root": str(UTKFACE), "limit": 500}}})
    s = load_settings("u", p)
    table = build_manifest(s)
    assert table.num_rows == 500
    assert table["age"].null_count == 0 and pc.min(table["age"]).as_py() >= 1
    splits = {d["values"]: d["counts"] for d in pc.value_counts(table["split"]).to_pylist()}
    assert 60 <= splits["test"] <= 140 and 50 <= splits["val"] <= 110        # 20% and 20% of 80%
    assert len(pc.unique(table["shard"])) == 5
    again = build_manifest(s)                                                  # deterministic
    assert again.column("split").to_pylist() == table.column("split").to_pylist()


@needs_utkface
def test_new_images_fill_new_shards_and_old_shards_stay(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    files = sorted(UTKFACE.glob("*.jpg"))[:30]
    for f in files[:20]:
        shutil.copy(f, root / f.name)
    p = write_params(tmp_path, {"u": {"workdir": str(tmp_path / "w"), "shard_size": 8,
                                      "dataset": {"name": "utkface", "root": str(root)}}})
    s = load_settings("u", p)
    first = dict(zip(*build_manifest(s).select(["image_id", "shard"]).to_pydict().values()))
    for f in files[20:]:
        shutil.copy(f, root / f.name)
    second = dict(zip(*build_manifest(s).select(["image_id", "shard"]).to_pydict().values()))
    assert len(second) == 30
    assert all(second[k] == v for k, v in first.items())                      # sticky
    new_shards = {second[k] for k in second if k not in first}
    assert new_shards.isdisjoint(set(first.values()))                          # only new shards


@needs_fairface
def test_fairface_groups_from_ground_truth(tmp_path):
    p = write_params(tmp_path, {"f": {"workdir": str(tmp_path / "w"),
                                      "dataset": {"name": "fairface", "root": str(FAIRFACE)}}})
    table = build_manifest(load_settings("f", p))
    assert table.num_rows == len(json.loads((FAIRFACE / "ground_truth.json").read_text()))
    groups = {d["values"]: d["counts"] for d in pc.value_counts(table["age_group"]).to_pylist()}
    assert groups["70+"] == 60 and len(groups) == 9
    assert set(table["split"].to_pylist()) == {"test"}


def test_missing_data_root_is_one_clear_error(tmp_path):
    p = write_params(tmp_path, {"x": {"dataset": {"name": "folder", "root": str(tmp_path / "nowhere")}}})
    with pytest.raises(DataError, match="data root .*nowhere does not exist; set dataset.root"):
        build_manifest(load_settings("x", p))


def test_demo_corpus_is_written_without_downloads(tmp_path):
    p = write_params(tmp_path, {"d": {"workdir": str(tmp_path / "w"),
                                      "dataset": {"name": "demo", "root": str(tmp_path / "raw")}}})
    table = build_manifest(load_settings("d", p))
    paths = table["path"].to_pylist()
    assert sum(x.startswith("lfw/") for x in paths) == 100
    assert "photos/astronaut.jpg" in paths and "photos/truncated.jpg" in paths
