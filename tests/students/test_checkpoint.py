"""Checkpoints: exact round trip, safe loading, RNG restore, corrupt files."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from agedistill_core.errors import CheckpointError
from agedistill_core.students.checkpoint import (
    load_checkpoint,
    load_into,
    restore_rng,
    save_checkpoint,
)


def _setup(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.2)
    return model, opt, sched


def _train_steps(model, opt, sched, k: int):
    for _ in range(k):
        x = torch.randn(16, 4)
        loss = (model(x) - 1.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def _draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(1).tolist(), [random.random() for _ in range(3)]


def test_round_trip_restores_everything(tmp_path: Path):
    model, opt, sched = _setup(0)
    _train_steps(model, opt, sched, 3)
    np.random.seed(5)
    random.seed(6)
    np.random.randn(1)  # leaves a cached gaussian in numpy's legacy state
    path = tmp_path / "sub" / "last.pt"
    save_checkpoint(path, model=model, optimizer=opt, scheduler=sched, epoch=3, best_val=1.25,
                    config={"student": "mn3_small", "lr": 0.005, "root": Path("/x")}, extra={"note": "hi"})
    after_save = _draws()
    _train_steps(model, opt, sched, 2)  # continue the original run
    expected_params = [p.detach().clone() for p in model.parameters()]

    # unsafe-loading-free read back
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 3 and raw["best_val"] == 1.25
    ckpt = load_checkpoint(path)
    assert ckpt["config"] == {"student": "mn3_small", "lr": 0.005, "root": "/x"}
    assert ckpt["extra"] == {"note": "hi"}
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["last.pt"]  # no temp files left

    model2, opt2, sched2 = _setup(123)
    load_into(ckpt, model=model2, optimizer=opt2, scheduler=sched2)
    for k, v in model2.state_dict().items():  # includes BatchNorm running stats
        assert torch.equal(v, ckpt["model"][k]), k
    assert sched2.get_last_lr() == pytest.approx([0.005 * 0.2])
    assert sched2.last_epoch == 3
    torch.manual_seed(999)
    np.random.seed(999)
    random.seed(999)
    restore_rng(ckpt)
    assert _draws() == after_save
    # resuming reproduces the uninterrupted run bit for bit (momentum buffers, lr schedule, RNG)
    restore_rng(ckpt)
    _draws()
    _train_steps(model2, opt2, sched2, 2)
    for a, b in zip(model2.parameters(), expected_params):
        assert torch.equal(a, b)


def test_missing_truncated_random_and_foreign_files(tmp_path: Path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match=str(missing)):
        load_checkpoint(missing)

    model, opt, sched = _setup(0)
    good = save_checkpoint(tmp_path / "good.pt", model=model, optimizer=opt, scheduler=sched,
                           epoch=0, best_val=float("inf"), config={})
    data = good.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"trunc\.pt.*(delete it and retrain|--checkpoint)"):
        load_checkpoint(trunc)

    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match=r"junk\.pt.*--checkpoint"):
        load_checkpoint(junk)

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": model.state_dict()}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign\.pt is not an agedistill"):
        load_checkpoint(foreign)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "x", "payload": Evil()}, evil)
    with pytest.raises(CheckpointError, match=r"evil\.pt"):
        load_checkpoint(evil)


def test_failed_save_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch):
    model, _, _ = _setup(0)
    path = save_checkpoint(tmp_path / "best.pt", model=model, epoch=1, best_val=2.0, config={})
    before = path.read_bytes()

    def failing_save(obj, f, *a, **k):
        if isinstance(f, (str, Path)):
            Path(f).write_bytes(b"partial")
        else:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model=model, epoch=2, best_val=1.0, config={})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
    assert load_checkpoint(path)["epoch"] == 1


def test_ddp_wrapped_model_saved_unwrapped(tmp_path: Path):
    model, _, _ = _setup(0)

    class Wrapper(torch.nn.Module):  # mimics torch.compile's _orig_mod
        def __init__(self, m):
            super().__init__()
            self._orig_mod = m

    ckpt_path = save_checkpoint(tmp_path / "w.pt", model=Wrapper(model), epoch=0, best_val=0.0, config={})
    keys = list(load_checkpoint(ckpt_path)["model"])
    assert keys == list(model.state_dict())
