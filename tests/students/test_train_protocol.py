"""The SPEC section 4 training protocol on a tiny real label table:
the lr schedule, resume-after-kill equivalence, and DDP with 2 gloo processes."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from agedistill_core.settings import load_settings
from agedistill_core.students.checkpoint import load_checkpoint
from agedistill_core.students.train import make_optimizer, run_dir, train_student
from agedistill_testing import agedistill_messages

REPO = Path(__file__).resolve().parents[2]


def _lrs(settings, arch: str, epochs: int) -> list[float]:
    optimizer, scheduler = make_optimizer(torch.nn.Linear(2, 1), settings, arch)
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_spec_lr_schedule_x02_every_20_epochs_over_70(tmp_path, tiny_params_writer):
    # the repo's base: 70 epochs, lr x0.2 every 20 (SPEC 4); the tiny profile only sets epochs/batch
    settings = load_settings("tiny", tiny_params_writer(tmp_path, tmp_path / "w", epochs=70))
    assert (settings.students.epochs, settings.students.lr_step_epochs, settings.students.lr_gamma) == (70, 20, 0.2)
    lrs = _lrs(settings, "mn3_small", 70)
    expect = [0.005 * 0.2 ** (e // 20) for e in range(70)]
    assert lrs == pytest.approx(expect, rel=1e-9)
    assert lrs[19] == pytest.approx(0.005) and lrs[20] == pytest.approx(0.001)
    assert lrs[60] == pytest.approx(0.005 * 0.2 ** 3) and len(set(round(v, 12) for v in lrs)) == 4
    assert _lrs(settings, "vgg16", 21)[-1] == pytest.approx(0.00005 * 0.2)  # VGG-16: 5e-5, no batch norm


def _train_rows(out: Path) -> list[dict]:
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_logged_lr_follows_the_schedule_and_tensorboard_is_optional(tiny_settings):
    s = tiny_settings("sched", epochs=3, lr_step_epochs=1, lr_gamma=0.2, augment=False)
    summary = train_student(s, "mn3_small", progress=False)
    out = run_dir(s, "mn3_small")
    rows = _train_rows(out)
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.005, 0.001, 0.0002])
    assert summary["epochs"] == 3 and summary["steps"] == sum(int(r["steps"]) for r in rows) > 0
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file() and (out / "metrics.png").is_file()
    has_tb = importlib.util.find_spec("tensorboard") is not None
    assert (out / "tb").is_dir() == has_tb  # written when tensorboard is installed, skipped quietly otherwise
    # the run's resolved settings beside its outputs (as timm writes args.yaml): what its checkpoints record
    config = json.loads((out / "config.json").read_text())
    assert config == json.loads(json.dumps(load_checkpoint(out / "best.pt")["config"], default=str))
    assert config["arch"] == "mn3_small" and config["students"]["lr_gamma"] == 0.2 and config["profile"] == "tiny"


class Killed(BaseException):
    """Stands in for SIGKILL right after an epoch's checkpoint was written."""


def test_resume_after_kill_equals_uninterrupted_run(tiny_settings):
    epochs = 3
    whole = tiny_settings("whole", epochs=epochs, lr_step_epochs=2, momentum=0.9)
    train_student(whole, "mn3_small", progress=False)

    broken = tiny_settings("broken", epochs=epochs, lr_step_epochs=2, momentum=0.9)

    def die_after_epoch_2(msg: str) -> None:
        if "epoch 2/" in msg:
            raise Killed()

    with pytest.raises(Killed):
        with agedistill_messages(die_after_epoch_2):
            train_student(broken, "mn3_small", progress=False)
    assert load_checkpoint(run_dir(broken, "mn3_small") / "last.pt")["epoch"] == 1  # 0-based: 2 epochs done
    with agedistill_messages() as messages:
        train_student(broken, "mn3_small", progress=False)
    assert any("resuming after epoch 2" in m for m in messages)

    for name in ("last.pt", "best.pt"):
        a = load_checkpoint(run_dir(whole, "mn3_small") / name)
        b = load_checkpoint(run_dir(broken, "mn3_small") / name)
        assert a["epoch"] == b["epoch"]
        assert a["model"].keys() == b["model"].keys()
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), f"{name}: {k} differs after resume"
    if a["optimizer"] is not None:  # momentum buffers too
        for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
            assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    ra, rb = _train_rows(run_dir(whole, "mn3_small")), _train_rows(run_dir(broken, "mn3_small"))
    keys = ["epoch", "lr", "steps", "train_loss", "train_mae", "val_loss", "val_mae"]
    assert [[r[k] for k in keys] for r in ra] == [[r[k] for k in keys] for r in rb]


DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    from agedistill_core.settings import load_settings
    from agedistill_core.students.distributed import cleanup
    from agedistill_core.students.train import train_student
    torch.set_num_threads(1)
    s = load_settings("tiny", sys.argv[1])
    summary = train_student(s, "mn3_small", progress=False)
    with open(os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.json"), "w") as f:
        json.dump(summary, f)
    cleanup()
""")


def test_ddp_two_gloo_processes(tiny_settings, tmp_path):
    s = tiny_settings("ddp", epochs=2, batch_size=8, augment=True)
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(s.params_path), str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert (r0["world_size"], r1["world_size"], r0["rank"], r1["rank"]) == (2, 2, 0, 1)
    per_rank = -(-r0["train_faces"] // 2)
    assert r0["steps"] == r1["steps"] == 2 * -(-per_rank // 8)  # equal shards: same steps on both ranks
    out = run_dir(s, "mn3_small")
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 1 and not any(k.startswith("module.") for k in ckpt["model"])
    assert len(_train_rows(out)) == 2  # rank 0 alone wrote the log: one row per epoch
    assert r0["best_val_loss"] == pytest.approx(r1["best_val_loss"])  # same weights on both ranks


def test_gt_weight_trains_and_validates_on_real_ages_where_known(tiny_settings):
    """students.gt_weight 1: every face of the tiny UTKFace table (all have real ages) learns its
    real age, in training and in validation; the checkpoint's data fingerprints say so."""
    from dataclasses import replace

    from agedistill_core.labeltable import load_splits

    s = tiny_settings("gt", epochs=1, loss="distribution", gt_weight=1.0, augment=False)
    train_student(s, "mn3_small", progress=False)
    out = run_dir(s, "mn3_small")
    assert "-gt1-" in out.name
    data = load_checkpoint(out / "best.pt")["config"]["data"]
    splits = load_splits(s, ("train", "val"))
    for split, faces in splits.items():
        assert np.isfinite(faces.gt_age).all() and not np.allclose(faces.gt_age, faces.target_age)
        real = replace(faces, target_age=faces.gt_age.astype(np.float32))
        assert data[split] == real.fingerprint() != faces.fingerprint(), split
