"""Fine-tuning protocols (SPEC 5) end to end on tiny official-layout fixtures of real faces."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from agedistill_core.errors import DataError
from agedistill_core.settings import load_settings
from agedistill_core.students.finetune import (FinetuneConfig, finetune_adience, finetune_apparent_age,
                                               kfold, main, start_from)
from agedistill_core.students.train import run_dir, train_student

QUIET = lambda m: None  # noqa: E731
FAST = FinetuneConfig(epochs=2, batch_size=8, threads=1)


@pytest.fixture(scope="module")
def distilled(tiny_table, tiny_params_writer, tmp_path_factory):
    """A student distilled for one epoch on the tiny real label table; its best.pt."""
    work = tmp_path_factory.mktemp("distilled") / "work"
    shutil.copytree(tiny_table, work, ignore=shutil.ignore_patterns("students", "benchmarks"))
    s = load_settings("tiny", tiny_params_writer(work, work, epochs=1))
    train_student(s, "mn3_small", log=QUIET, progress=False)
    return run_dir(s, "mn3_small") / "best.pt"


def test_kfold_is_fixed_and_balanced():
    f = kfold(23, 5, seed=0)
    assert np.array_equal(f, kfold(23, 5, seed=0)) and not np.array_equal(f, kfold(23, 5, seed=1))
    assert sorted(np.bincount(f).tolist()) == [4, 4, 5, 5, 5]
    with pytest.raises(DataError):
        kfold(10, 1, 0)


def test_group_head_replaced_and_lr_divided_by_10(distilled):
    start = start_from(distilled, 8, FinetuneConfig())
    head = start.model.get_classifier()
    assert isinstance(head, torch.nn.Linear) and head.out_features == 8
    assert start.lr == pytest.approx(0.005 / 10)  # SPEC 5: the student's rate / 10
    assert FinetuneConfig().epochs == 35


def test_apparent_age_finetune_reports_mae_and_epsilon(distilled, appa_root):
    res = finetune_apparent_age(distilled, appa_root, FAST, log=QUIET)
    assert (res["train_faces"], res["test_faces"]) == (16, 8)  # train + valid, then test
    for part in (res, res["zero_shot"]):
        assert 0 <= part["epsilon_error"] <= 1 and part["mae_apparent"] >= 0 and part["mae_real"] >= 0
    assert res["mae_apparent"] != res["zero_shot"]["mae_apparent"]  # the weights did move


def test_adience_five_rotations(distilled, adience_root):
    res = finetune_adience(distilled, adience_root, FinetuneConfig(epochs=1, batch_size=8, threads=1), log=QUIET)
    assert res["n_groups"] == 8 and res["dropped_labels"] == 10  # None and (38, 48) rows, 2 per fold
    assert [f["fold"] for f in res["folds"]] == [0, 1, 2, 3, 4]
    assert all(f["train_faces"] == 16 and f["test_faces"] == 4 for f in res["folds"])
    assert res["top1"] == pytest.approx(np.mean([f["top1"] for f in res["folds"]]))
    assert 0 <= res["top1"] <= res["one_off"] <= 1


def test_fairface_kfold_cli(distilled, fairface_small, tmp_path, capsys):
    out = tmp_path / "ff.json"
    rc = main(["fairface", "--root", str(fairface_small), "--checkpoint", str(distilled), "--folds", "3",
               "--epochs", "1", "--batch-size", "8", "--threads", "1", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["n_groups"] == 9 and len(res["folds"]) == 3
    assert sum(f["test_faces"] for f in res["folds"]) == 15
    assert main(["fairface", "--root", str(tmp_path), "--checkpoint", str(distilled)]) == 2
    assert "ground_truth.json" in capsys.readouterr().err
