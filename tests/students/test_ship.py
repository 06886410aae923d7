"""Shipping a student: slim checkpoint, ONNX with parity, and a model card with its numbers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from agedistill_core.inference.student import load_student


def test_ship_writes_a_slim_checkpoint_onnx_and_card(tiny_settings, tmp_path):
    pytest.importorskip("onnx")
    from agedistill_core.evaluate.report import score
    from agedistill_core.inference.ship import ship
    from agedistill_core.students.train import train_student

    settings = tiny_settings("ship", epochs=1)
    run = train_student(settings, "mn3_small", progress=False)
    details: list[dict] = []
    rows = score("tiny", [run["checkpoint"]], str(settings.params_path), details)
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"rows": rows, "by_source": details}, default=str))
    out = ship("tiny", run["checkpoint"], str(report), str(tmp_path / "model"), str(settings.params_path))

    slim = torch.load(out / "best.pt", weights_only=True)
    assert slim["optimizer"] is None and slim["rng"] is None
    # the shipped weights give the trained ones' ages on real crops
    from agedistill_core.labeltable import load_split

    jpegs = load_split(settings, "val").jpeg[:6]
    torch.testing.assert_close(torch.from_numpy(load_student(out / "best.pt").predict_jpegs(jpegs)),
                               torch.from_numpy(load_student(run["checkpoint"]).predict_jpegs(jpegs)))
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Accuracy" in card and "## Speed" in card and "student is faster by" in card
    assert f"| {run['run']} |" in card  # its own row in the accuracy table
    assert (out / "model.onnx").stat().st_size > 100_000

    # validation chooses between recipes: `report --split val` scores that split; a card is never made of it
    from agedistill_core.errors import ConfigError

    val_rows = score("tiny", [run["checkpoint"]], str(settings.params_path), split="val")
    n_val = len(load_split(settings, "val"))
    assert [(r["split"], r["test_faces"]) for r in val_rows] == [("val", n_val)] * 2 and rows[0]["split"] == "test"
    assert n_val != rows[0]["test_faces"] and val_rows[1]["mae_to_teacher"] != rows[1]["mae_to_teacher"]
    report.write_text(json.dumps({"rows": val_rows, "by_source": []}, default=str))
    with pytest.raises(ConfigError, match="scored on the val split"):
        ship("tiny", run["checkpoint"], str(report), str(tmp_path / "model2"), str(settings.params_path))
    assert not (tmp_path / "model2").exists()


def test_the_card_of_a_warm_started_student_names_its_start_by_content(tiny_settings, tmp_path):
    """A warm start's card names the checkpoint's path and its sha1 then: the path may later hold
    another model (the shipped folder is the usual warm start of the next one)."""
    pytest.importorskip("onnx")
    import hashlib

    from agedistill_core.inference.ship import ship
    from agedistill_core.students.train import train_student

    first = train_student(tiny_settings("first", epochs=1), "mn3_small", progress=False)
    sha1 = hashlib.sha1(Path(first["checkpoint"]).read_bytes()).hexdigest()
    warm = tiny_settings("warm", epochs=1, init_from=first["checkpoint"])
    run = train_student(warm, "mn3_small", progress=False)
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"rows": [], "by_source": []}))
    out = ship("tiny", run["checkpoint"], str(report), str(tmp_path / "model"), str(warm.params_path))
    card = (out / "MODEL_CARD.md").read_text()
    assert f"warm-started from `{first['checkpoint']}` as it was then (sha1 {sha1[:12]})" in card


def test_the_card_says_which_augmentation_trained_the_student():
    from agedistill_core.inference.ship import _augmentation

    assert _augmentation(True) == "SPEC augmentation" and _augmentation(False) == "no augmentation"
    wild = _augmentation({"color_p": 0.5, "quality_p": 0.25})
    assert wild.startswith("SPEC augmentation + ") and "colour on 50% of faces" in wild
    assert "JPEG on 25% of faces" in wild


def test_the_card_says_whether_real_ages_were_learned():
    from agedistill_core.inference.ship import _teaching

    assert _teaching({"label_source": "teacher"}).endswith("never the real ages.")
    assert _teaching({"label_source": "teacher", "gt_weight": 0}) == _teaching({})  # older checkpoints: no key
    assert "learned its real age alone (`gt_weight` 1)" in _teaching({"gt_weight": 1.0})
    assert "50% its real age and 50% the teacher's" in _teaching({"gt_weight": 0.5})
    assert "ground-truth baseline" in _teaching({"label_source": "ground_truth"})


def test_the_card_says_how_the_head_reads_as_an_age():
    from agedistill_core.inference.ship import _head

    assert _head({"n_outputs": 1}) == "one output: the age in years"
    assert "101 outputs" in _head({"n_outputs": 101}) and "ages 0..100" in _head({"n_outputs": 101})


def test_speed_blocks_alternate_and_fill_the_block(monkeypatch):
    """interleaved_seconds: every fn is warmed up and sized once, then their blocks alternate."""
    from agedistill_core.inference import ship as ship_mod

    clock = {"t": 0.0}
    monkeypatch.setattr(ship_mod.time, "perf_counter", lambda: clock["t"])
    calls: list[str] = []

    def fn(name: str, seconds: float):
        def call():
            calls.append(name)
            clock["t"] += seconds
        return call

    fast, slow = ship_mod.interleaved_seconds([fn("fast", 0.001), fn("slow", 0.05)], rounds=3, block_s=0.02)
    assert fast == pytest.approx(0.001) and slow == pytest.approx(0.05)
    rounds = calls[4:]  # after warm-up + sizing: blocks of 20 fast calls (20 ms), 1 slow call, alternating
    assert calls[:4] == ["fast", "fast", "slow", "slow"]
    assert rounds == (["fast"] * 20 + ["slow"]) * 3
