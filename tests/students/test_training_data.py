"""The fast input path (decode once, batch in channels-last), resume refusal on new data, band weights."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from agedistill_core.images import decode_image
from agedistill_core.students.augment import AugmentConfig, augment_face, to_tensor
from agedistill_core.students.data import FaceDataset, iter_batches
from agedistill_core.students.augment import batch_tensor
from agedistill_core.labeltable import load_split, load_splits
from agedistill_core.students.losses import band_weights
from agedistill_testing import agedistill_messages


def test_batches_equal_items_and_eval_is_the_plain_resize(tiny_settings):
    settings = tiny_settings()
    faces = load_split(settings, "train")
    ds = FaceDataset(faces, 96, settings.faces.margin, AugmentConfig(enabled=True), seed=3)
    ds.set_epoch(2)
    idx = np.array([5, 0, 7, 3])
    x, age, probs, spread = ds.batch(idx)
    assert x.shape == (4, 3, 96, 96) and x.is_contiguous(memory_format=torch.channels_last)
    items = [ds[i] for i in idx]
    expect = to_tensor(np.stack([it[0] for it in items]))
    torch.testing.assert_close(x, expect, rtol=0, atol=0)  # same values whatever the layout
    np.testing.assert_array_equal(age.numpy(), faces.target_age[idx])
    # evaluation (no augmentation) sees the crop resized bilinearly, as predict does
    plain = FaceDataset(faces, 96, settings.faces.margin, AugmentConfig(enabled=False), images=ds.images)
    crop = decode_image(faces.jpeg[5])
    np.testing.assert_array_equal(plain[5][0], cv2.resize(crop, (96, 96), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(augment_face(crop, 96, 0.2, np.random.default_rng(0), AugmentConfig(enabled=False)),
                                  plain[5][0])


def test_splits_read_together_equal_splits_read_apart(tiny_settings):
    settings = tiny_settings()
    both = load_splits(settings, ("train", "val"))
    for split in ("train", "val"):
        alone = load_split(settings, split)
        assert len(alone) > 0
        assert both[split].image_id == alone.image_id and both[split].jpeg == alone.jpeg
        np.testing.assert_array_equal(both[split].target_probs, alone.target_probs)
    assert not set(both["train"].image_id) & set(both["val"].image_id)


def test_augmentation_is_deterministic_per_epoch_and_differs_across_epochs(tiny_settings):
    faces = load_split(tiny_settings(), "train")
    ds = FaceDataset(faces, 64, 0.2, AugmentConfig(enabled=True), seed=0)
    ds.set_epoch(0)
    a = ds.image(4).copy()
    ds.set_epoch(1)
    b = ds.image(4).copy()
    ds.set_epoch(0)
    assert np.array_equal(a, ds.image(4)) and not np.array_equal(a, b)


def test_prefetched_batches_equal_direct_ones(tiny_settings):
    faces = load_split(tiny_settings(), "train")
    ds = FaceDataset(faces, 64, 0.2, AugmentConfig(enabled=True), seed=1)
    idx = np.random.default_rng(0).permutation(len(ds))
    got = list(iter_batches(ds, idx, 7))
    assert sum(len(b[1]) for b in got) == len(idx)
    for k, b in enumerate(got):
        torch.testing.assert_close(b[0], ds.batch(idx[k * 7:(k + 1) * 7])[0], rtol=0, atol=0)
    workers = list(iter_batches(ds, idx, 7, workers=1))
    torch.testing.assert_close(workers[-1][0], got[-1][0], rtol=0, atol=0)


def test_channels_last_and_contiguous_tensors_hold_the_same_values():
    imgs = np.random.default_rng(0).integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    a, b = batch_tensor(imgs, True), batch_tensor(imgs, False)
    assert b.is_contiguous() and a.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_resume_is_refused_when_the_training_data_changed(tiny_settings):
    from agedistill_core.students.train import train_student

    from agedistill_core.students.train import run_dir

    more = tiny_settings("grow", epochs=2)
    second = train_student(more, "mn3_small", progress=False)
    assert second["epochs"] == 2
    # the same recipe again: resumes after epoch 2 (nothing left to train)
    with agedistill_messages() as logs:
        again = train_student(more, "mn3_small", progress=False)
    assert any("resuming after epoch 2" in m for m in logs) and again["epochs"] == 2
    # another number of epochs is another recipe: another folder (continuing is a warm start)
    assert run_dir(tiny_settings("grow", epochs=3), "mn3_small") != run_dir(more, "mn3_small")
    # the label table changes (one training face leaves): the finished run is not resumed
    from agedistill_core.shards import read_table, write_table
    import pyarrow.compute as pc

    vmage = read_table(more.vmage_path)
    train_ids = vmage.filter(pc.equal(vmage["split"], "train"))["image_id"].to_pylist()
    write_table(vmage.filter(pc.invert(pc.equal(vmage["image_id"], train_ids[0]))), more.vmage_path)
    with agedistill_messages() as logs:
        third = train_student(more, "mn3_small", progress=False)
    assert any("other training data" in m and "starting afresh" in m for m in logs)
    assert third["epochs"] == 2 and third["train_faces"] == second["train_faces"] - 1


def test_band_weights_equalise_the_age_bands():
    ages = np.array([5.0] * 2 + [30.0] * 16 + [70.0] * 2)
    w = band_weights(ages)
    assert w.mean() == pytest.approx(1.0)
    # each band's total weight is the same
    totals = [w[ages == a].sum() for a in (5.0, 30.0, 70.0)]
    np.testing.assert_allclose(totals, totals[0], rtol=1e-9)
    sq = band_weights(ages, power=0.5)
    assert 1 < sq[0] / sq[5] < w[0] / w[5]
    assert np.all(band_weights(np.array([np.nan, 30.0])) > 0)


def test_convergence_rule_waits_for_two_rate_decays_and_a_flat_val_loss():
    from types import SimpleNamespace

    from agedistill_core.students.train import converged

    cfg = SimpleNamespace(patience=3, lr_step_epochs=5)
    falling = [{"val_loss": 100.0 - e} for e in range(12)]
    assert not converged(falling, cfg)
    flat = [{"val_loss": 100.0 - e} for e in range(8)] + [{"val_loss": 92.99}] * 4
    assert converged(flat, cfg)
    assert not converged(flat[:9], cfg)  # before 2 x lr_step_epochs + 1 epochs: never
    assert not converged(flat, SimpleNamespace(patience=None, lr_step_epochs=5))
    improving = flat[:-1] + [{"val_loss": 90.0}]
    assert not converged(improving, cfg)
