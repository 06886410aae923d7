"""Fixtures for the inference tests: a tiny (untrained) student checkpoint."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from agedistill_core.students.checkpoint import save_checkpoint
from agedistill_core.students.zoo import create_student


@pytest.fixture(scope="session")
def student_ckpt(tmp_path_factory) -> Path:
    """An (untrained) mn3_small student checkpoint at 96 px; its head starts at age 30."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_student("mn3_small", 1)
    with torch.no_grad():
        model.get_classifier().weight.mul_(0.01)
        model.get_classifier().bias.fill_(30.0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    config = {"arch": "mn3_small", "timm": "mobilenetv3_small_100", "input_size": 96, "n_outputs": 1,
              "students": {"loss": "paper"}}
    return save_checkpoint(path, model=model, epoch=0, best_val=1.0, config=config)
