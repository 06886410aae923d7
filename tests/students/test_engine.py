"""The training engine's bookkeeping on the tiny real label table: run folders per recipe, resume refused
across world sizes and global batches, warm starts and total epochs, older checkpoints and run folders,
and consistent teaching (the teacher labels the very view the student sees)."""
from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from agedistill_core.errors import CheckpointError, ConfigError
from agedistill_core.settings import load_settings
from agedistill_core.students.checkpoint import load_checkpoint
from agedistill_core.students.engine import check_world, total_epochs
from agedistill_core.students.train import legacy_run_name, run_dir, run_name, train_student
from agedistill_testing import agedistill_messages

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "mn3_small_distilled" / "best.pt"
pytestmark = pytest.mark.shared_data


class Killed(BaseException):
    """Stands in for SIGKILL right after an epoch's checkpoint was written."""


def _kill_after_epoch_1(msg: str) -> None:
    if "epoch 1/" in msg:
        raise Killed()


def test_two_profiles_differing_only_in_lr_get_different_run_folders(tmp_path, tiny_params_writer):
    def settings(name, **students):
        folder = tmp_path / name
        folder.mkdir()
        return load_settings("tiny", tiny_params_writer(folder, tmp_path / "work", **students))

    a, b = settings("a", lr=0.005), settings("b", lr=0.004)
    assert a.workdir == b.workdir and run_dir(a, "mn3_small") != run_dir(b, "mn3_small")
    assert run_name(a, "mn3_small").startswith("mn3_small-") and run_name(b, "mn3_small").startswith("mn3_small-")
    assert legacy_run_name(a, "mn3_small") == legacy_run_name(b, "mn3_small") == "mn3_small"  # what collided
    same = settings("c", lr=0.005)
    assert run_name(same, "mn3_small") == run_name(a, "mn3_small")  # the same recipe resumes its folder
    for other in (dict(epochs=4), dict(batch_size=8), dict(momentum=0.9), dict(input_size=64),
                  dict(lr_schedule="cosine"), dict(init_from="x.pt")):
        assert run_name(settings(f"o{len(list(tmp_path.iterdir()))}", lr=0.005, **other), "mn3_small") != \
            run_name(a, "mn3_small"), other
    # another data set behind the same recipe: another folder
    raw = (tmp_path / "a" / "params.yaml").read_text().replace("limit: 60", "limit: 59")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "params.yaml").write_text(raw)
    assert run_name(load_settings("tiny", tmp_path / "d" / "params.yaml"), "mn3_small") != run_name(a, "mn3_small")


def _rewrite(path: Path, **config) -> None:
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"].update(config)
    torch.save(ckpt, path)


def test_resume_refuses_another_world_size_or_global_batch(tiny_settings):
    s = tiny_settings("world", epochs=2, batch_size=16)
    with pytest.raises(Killed):
        with agedistill_messages(_kill_after_epoch_1):
            train_student(s, "mn3_small", progress=False)
    last = run_dir(s, "mn3_small") / "last.pt"
    cfg = load_checkpoint(last)["config"]
    assert (cfg["world_size"], cfg["global_batch"]) == (1, 16)
    _rewrite(last, world_size=2, global_batch=32)  # as a 2-process run writes it
    with pytest.raises(CheckpointError) as err:
        train_student(s, "mn3_small", progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "2 process(es) with a global batch of 32" in msg and "1 with 16" in msg
    _rewrite(last, world_size=1, global_batch=64)  # one process, another global batch
    with pytest.raises(CheckpointError, match="global batch of 64"):
        train_student(s, "mn3_small", progress=False)
    _rewrite(last, world_size=1, global_batch=16)
    with agedistill_messages() as logs:
        assert train_student(s, "mn3_small", progress=False)["epochs"] == 2
    assert any("resuming after epoch 1" in m for m in logs)
    # a checkpoint from before these keys: one process with its batch
    check_world({"batch_size": 16}, {"world_size": 1, "global_batch": 16, "batch_size": 16}, last)
    with pytest.raises(CheckpointError):
        check_world({"batch_size": 16}, {"world_size": 2, "global_batch": 32, "batch_size": 16}, last)


def test_warm_start_counts_total_epochs_and_init_checkpoint_is_an_alias(tiny_settings):
    first = tiny_settings("first", epochs=1)
    a = train_student(first, "mn3_small", progress=False)
    assert load_checkpoint(a["checkpoint"])["extra"]["total_epochs"] == 1
    warm = tiny_settings("warm", epochs=2, lr=0.001, init_from=a["checkpoint"])
    b = train_student(warm, "mn3_small", progress=False)
    last = load_checkpoint(Path(b["dir"]) / "last.pt")
    assert b["total_epochs"] == 3 and last["extra"]["total_epochs"] == 3 and last["config"]["epochs_before"] == 1
    # the weights it started from, by content (a model shipped later to the same path is another one)
    assert last["config"]["init_sha1"] == hashlib.sha1(Path(a["checkpoint"]).read_bytes()).hexdigest()
    assert total_epochs(load_checkpoint(b["checkpoint"])) == 1 + load_checkpoint(b["checkpoint"])["epoch"] + 1
    old_name = tiny_settings("warm_old", epochs=2, lr=0.001, init_checkpoint=a["checkpoint"])
    assert run_name(old_name, "mn3_small") == run_name(warm, "mn3_small")  # one field under two names
    both = tiny_settings("both", epochs=2, init_from=a["checkpoint"], init_checkpoint="other.pt")
    with pytest.raises(ConfigError, match="disagree"):
        train_student(both, "mn3_small", progress=False)


def test_the_shipped_checkpoint_still_loads_warm_starts_and_gets_a_card(tiny_settings, tmp_path):
    if not SHIPPED.is_file() or SHIPPED.stat().st_size == 0:
        pytest.skip(f"{SHIPPED} is missing or empty")
    from agedistill_core.inference.student import load_student
    from agedistill_core.inference.ship import model_card
    from agedistill_core.students.train import init_from_checkpoint
    from agedistill_core.students.zoo import create_student
    from agedistill_core.labeltable import load_split

    import torch

    shipped = load_checkpoint(SHIPPED)
    assert total_epochs(shipped) == int(shipped["config"].get("epochs_before") or 0) + int(shipped["epoch"]) + 1
    # the same weights as the older code saved them: no world size, batch or epochs before a warm start
    legacy = {**shipped, "config": {k: v for k, v in shipped["config"].items()
                                    if k not in ("world_size", "global_batch", "epochs_before")},
              "extra": {k: v for k, v in (shipped.get("extra") or {}).items() if k != "total_epochs"}}
    legacy_path = tmp_path / "legacy.pt"
    torch.save(legacy, legacy_path)
    s = tiny_settings("shipped", epochs=1)
    jpegs = load_split(s, "val").jpeg[:4]
    for path in (SHIPPED, legacy_path):
        ckpt = load_checkpoint(path)
        if path == legacy_path:
            assert "world_size" not in ckpt["config"] and total_epochs(ckpt) == int(ckpt["epoch"]) + 1
        ages = load_student(path).predict_jpegs(jpegs)
        assert ages.shape == (4,) and np.all((ages > 0) & (ages < 100))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no ImageNet weights: they come from the checkpoint
            model = create_student("mn3_small", int(ckpt["config"].get("n_outputs", 1)), None)  # the shipped head
        assert init_from_checkpoint(model, str(path), "mn3_small") == total_epochs(ckpt)
        card = model_card(ckpt, {"rows": [], "by_source": []},
                          {1: {"student_ms": 1.0, "teacher_ms": 20.0, "ratio": 20.0}}, s, path)
        assert f"Epochs behind these weights: {total_epochs(ckpt)} in total" in card


def test_a_run_started_by_older_code_resumes_from_its_folder(tiny_settings):
    s = tiny_settings("legacy", epochs=2)
    with pytest.raises(Killed):
        with agedistill_messages(_kill_after_epoch_1):
            train_student(s, "mn3_small", progress=False)
    new, old = run_dir(s, "mn3_small"), s.students_dir / legacy_run_name(s, "mn3_small")
    shutil.move(new, old)
    ckpt = torch.load(old / "last.pt", weights_only=True)  # what the older code wrote: none of the new keys
    for key in ("world_size", "global_batch", "epochs_before"):
        ckpt["config"].pop(key)
    for key in ("init_from", "lr_factor", "folds", "teacher_in_loop", "mixup"):
        ckpt["config"]["students"].pop(key)
    ckpt["extra"].pop("total_epochs")
    torch.save(ckpt, old / "last.pt")
    with agedistill_messages() as logs:
        summary = train_student(s, "mn3_small", progress=False)
    assert any(f"resuming after epoch 1 from {old / 'last.pt'}" in m for m in logs)
    assert summary["epochs"] == 2 and load_checkpoint(new / "last.pt")["epoch"] == 1


def test_teacher_in_the_loop_labels_the_very_mixed_view(tiny_settings):
    from agedistill_core.students.augment import AugmentConfig
    from agedistill_core.students.consistent import TeacherInLoop, mix
    from agedistill_core.students.data import FaceDataset
    from agedistill_core.labeltable import load_split

    s = tiny_settings("til", epochs=1, teacher_in_loop=True, mixup=0.4)
    ds = FaceDataset(load_split(s, "train"), 96, 0.2, AugmentConfig(enabled=True), seed=3, threads=1)
    til = TeacherInLoop(ds, s, mixup=0.4, seed=3)
    assert til.teacher.variants == 1
    til.set_epoch(2)
    idx = np.arange(8)
    views = til.views(idx)
    assert np.array_equal(views, til.views(idx))  # deterministic per (seed, epoch, batch)
    plain = np.stack([ds.image(i) for i in idx])
    assert not np.array_equal(views, plain)  # mixed
    assert views.dtype == np.uint8 and views.shape == plain.shape
    x, age, probs, spread = til.batch(idx)
    expect = til.teacher.label(views)
    np.testing.assert_allclose(age.numpy(), expect.age, rtol=1e-5, atol=1e-4)  # the teacher saw exactly that view
    np.testing.assert_allclose(probs.sum(1).numpy(), 1.0, atol=1e-4)
    assert x.shape == (8, 3, 96, 96)
    assert np.array_equal(mix(plain, 0.0, np.random.default_rng(0)), plain)
    summary = train_student(s, "mn3_small", progress=False)
    ck = load_checkpoint(summary["checkpoint"])
    assert ck["config"]["students"]["teacher_in_loop"] is True and np.isfinite(summary["best_val_mae"])


def test_a_new_checkpoint_at_the_warm_start_path_starts_a_new_run_folder(tiny_settings, tmp_path):
    """Shipping a new model to the path a warm recipe names must not resume the run that began from
    the old weights: the run folder's hash covers the warm-start checkpoint's content."""
    init = tmp_path / "init.pt"
    shutil.copyfile(SHIPPED, init)
    warm = tiny_settings("warm_path", epochs=2, init_from=str(init))
    before = run_name(warm, "mn3_small")
    assert run_name(warm, "mn3_small") == before          # same file: same folder
    ckpt = torch.load(init, weights_only=True)
    ckpt["epoch"] = int(ckpt.get("epoch", 0)) + 1           # other content at the same path
    torch.save(ckpt, init)
    assert run_name(warm, "mn3_small") != before
