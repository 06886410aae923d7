"""Shipping a student: slim checkpoint, ONNX with parity, and a model card with its numbers."""
from __future__ import annotations

import json

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
