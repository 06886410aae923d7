"""A corpus of several sources: per-source framing and splits, evaluation splits kept out of training."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from agedistill_testing import SHARED_DATA, UTKFACE, write_params
from agedistill_core.errors import ConfigError
from agedistill_core.settings import load_settings

REST = SHARED_DATA / "utkface" / "rest"
LFW = SHARED_DATA / "lfw"
CELEBA = SHARED_DATA / "celeba_crops"
needs_corpus = pytest.mark.skipif(
    not all(p.is_dir() for p in (UTKFACE, REST, LFW, CELEBA)),
    reason=f"needs ../shared/data/utkface/crop_part1, utkface/rest, lfw and celeba_crops under {SHARED_DATA}")


def _corpus_profile(work: Path, per_source: int = 24, **students) -> dict:
    return {
        "workdir": str(work),
        "shard_size": 40,
        "dataset": {"sources": [
            {"id": "utkface", "name": "utkface", "root": str(UTKFACE), "limit": per_source,
             "faces": {"detector": "none", "align": "none"}},
            {"id": "utkface_rest", "name": "utkface", "root": str(REST), "limit": per_source,
             "faces": {"detector": "none", "align": "none"}},
            {"id": "lfw", "name": "lfw", "root": str(LFW), "limit": per_source, "split": {"test": 0.0, "val": 0.1}},
            {"id": "celeba", "name": "folder", "root": str(CELEBA), "limit": per_source,
             "split": {"test": 0.0, "val": 0.1}},
        ]},
        "faces": {"detector": "ssd", "align": "dlib5", "crop_size": 112},
        "teacher": {"variants": 1},
        "students": {"archs": ["mn3_small"], "epochs": 1, "batch_size": 16, **students},
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A 96-face, 4-source corpus through manifest -> crops -> labels -> label table."""
    if not all(p.is_dir() for p in (UTKFACE, REST, LFW, CELEBA)):
        pytest.skip(f"needs ../shared/data/utkface/crop_part1, utkface/rest, lfw and celeba_crops under {SHARED_DATA}")
    from agedistill_core import stages
    from agedistill_core.datasets import build_manifest

    root = tmp_path_factory.mktemp("corpus")
    params = write_params(root, {"corpus": _corpus_profile(root / "work"),
                                 "corpus_gt": _corpus_profile(root / "work", label_source="ground_truth",
                                                              sources=["utkface"])})
    settings = load_settings("corpus", params)
    build_manifest(settings)
    stages.run_crops(settings)
    stages.run_labels(settings)
    stages.run_vmage(settings)
    return params


@needs_corpus
def test_manifest_names_each_source_and_its_splits(corpus):
    from agedistill_core.shards import read_table

    settings = load_settings("corpus", corpus)
    m = read_table(settings.manifest_path).to_pydict()
    assert sorted(set(m["dataset"])) == ["celeba", "lfw", "utkface", "utkface_rest"]
    for iid, src in zip(m["image_id"], m["dataset"]):
        assert iid.startswith(src + "/")
    # sources without ages have no test split; the UTKFace sources keep theirs, with ages
    for iid, src, split, age in zip(m["image_id"], m["dataset"], m["split"], m["age"]):
        if src in ("lfw", "celeba"):
            assert split in ("train", "val") and age is None
        else:
            assert age is not None
    # LFW splits are identity-disjoint: a person's photos share one split
    person_split = {}
    for src, subject, split in zip(m["dataset"], m["subject"], m["split"]):
        if src == "lfw":
            assert person_split.setdefault(subject, split) == split


@needs_corpus
def test_crops_use_each_sources_framing(corpus):
    from agedistill_core.shards import read_shards

    settings = load_settings("corpus", corpus)
    crops = read_shards(settings.crops_dir, ["image_id", "detector", "status"]).to_pydict()
    framing = {}
    for iid, det in zip(crops["image_id"], crops["detector"]):
        framing.setdefault(iid.split("/", 1)[0], set()).add(det)
    assert framing["utkface"] == {"none"} and framing["utkface_rest"] == {"none"}
    assert framing["lfw"] == {"ssd+dlib5"} and framing["celeba"] == {"ssd+dlib5"}


@needs_corpus
def test_evaluation_splits_never_reach_training(corpus):
    from agedistill_core.labeltable import load_split

    settings = load_settings("corpus", corpus)
    train = load_split(settings, "train", "teacher")
    val = load_split(settings, "val", "teacher")
    test = load_split(settings, "test", "teacher")
    assert len(test) > 0 and {s for s in test.source} <= {"utkface", "utkface_rest"}
    assert not set(test.image_id) & (set(train.image_id) | set(val.image_id))
    # every source trains; distilled targets are the teacher's ages and vectors, never the real ages
    assert set(train.source) == {"utkface", "utkface_rest", "lfw", "celeba"}
    np.testing.assert_array_equal(train.target_age, train.teacher_age)
    has_gt = np.isfinite(train.gt_age)
    assert has_gt.any() and not np.allclose(train.target_age[has_gt], train.gt_age[has_gt], atol=0.5)
    np.testing.assert_allclose(train.target_probs @ np.arange(101), train.teacher_age, atol=0.05)


@needs_corpus
def test_student_sources_restrict_training_to_one_source(corpus):
    from agedistill_core.labeltable import load_split

    settings = load_settings("corpus_gt", corpus)
    train = load_split(settings, "train", "ground_truth", settings.students.sources)
    assert len(train) > 0 and set(train.source) == {"utkface"}
    np.testing.assert_array_equal(train.target_age, train.gt_age)


@needs_corpus
def test_label_table_summary_reports_each_source(corpus):
    import json

    settings = load_settings("corpus", corpus)
    summary = json.loads((settings.workdir / "vmage_summary.json").read_text())
    per = summary["sources"]
    assert set(per) == {"utkface", "utkface_rest", "lfw", "celeba"}
    for src, row in per.items():
        assert row["images"] == 24 and sum(row["status"].values()) == 24
        assert row["labelled"] <= row["images"]
    assert per["utkface"]["teacher_mae"] is not None and 1 < per["utkface"]["teacher_mae"] < 15
    assert per["lfw"]["teacher_mae"] is None
    # the DVC metric: the same numbers, no text
    metrics = json.loads((settings.workdir / "vmage_metrics.json").read_text())
    assert metrics["faces"] == summary["faces"] and metrics["age_groups"] == summary["age_groups"]
    assert metrics["checks_failed"] == 0 and metrics["checks_passed"] == len(summary["checks"])
    assert abs(metrics["teacher_mae_to_ground_truth"] - summary["teacher_mae_to_ground_truth"]) < 1e-3
    assert all(isinstance(v, (int, float, dict)) for v in metrics.values())


def test_source_settings_are_validated(tmp_path):
    bad = {"dataset": {"sources": [{"id": "a", "name": "folder"}]}}
    with pytest.raises(ConfigError, match="root"):
        load_settings("p", write_params(tmp_path, {"p": bad}))
    dup = {"dataset": {"sources": [{"id": "a", "name": "folder", "root": "x"},
                                   {"id": "a", "name": "folder", "root": "y"}]}}
    with pytest.raises(ConfigError, match="unique"):
        load_settings("p", write_params(tmp_path, {"p": dup}))
    typo = {"dataset": {"sources": [{"id": "a", "name": "folder", "root": "x", "face": {}}]}}
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings("p", write_params(tmp_path, {"p": typo}))
    size = {"dataset": {"sources": [{"id": "a", "name": "folder", "root": "x", "faces": {"crop_size": 64}}]}}
    with pytest.raises(ConfigError, match="crop_size"):
        load_settings("p", write_params(tmp_path, {"p": size}))
    wrong = {"dataset": {"sources": [{"id": "a", "name": "folder", "root": "x"}]}, "students": {"sources": ["b"]}}
    with pytest.raises(ConfigError, match="not a source"):
        load_settings("p", write_params(tmp_path, {"p": wrong}))


def test_single_dataset_profiles_are_one_source(tmp_path):
    s = load_settings("p", write_params(tmp_path, {"p": {"dataset": {"name": "folder", "root": "photos"}}}))
    (src,) = s.sources
    assert (src.id, src.name, src.root) == ("folder", "folder", s.data_root)
    assert src.faces == s.faces and src.split == s.split


@needs_corpus
def test_per_source_table_lists_every_source(corpus):
    import json

    settings = load_settings("corpus", corpus)
    table = json.loads((settings.workdir / "vmage_summary.json").read_text())["sources_table"]
    lines = table.strip().splitlines()
    assert lines[0].startswith("| source | images | labelled |") and len(lines) == 2 + 4
    assert any(line.startswith("| lfw | 24 |") and line.endswith("| - |") for line in lines)
