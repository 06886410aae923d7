"""SPEC 3's children-specialist members, trained by the one engine on the tiny real table:
``students.max_age`` keeps only children, loss ``children`` gives a 13-way head over ages
0..12, and a 1-output student warm-starts its body."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from agedistill_core.errors import ConfigError
from agedistill_core.labeltable import load_split
from agedistill_core.students.checkpoint import load_checkpoint, save_half
from agedistill_core.students.train import init_from_checkpoint, train_student
from agedistill_core.students.zoo import create_student

from agedistill_testing import REPO

SHIPPED = REPO / "models" / "mn3_small_distilled" / "best.pt"
needs_shipped = pytest.mark.skipif(not SHIPPED.is_file(), reason="needs models/mn3_small_distilled/best.pt")


@needs_shipped
def test_a_13_way_head_warm_starts_from_a_1_output_body():
    model = create_student("mn3_small", 13, None, warm_start=True)
    head_before = model.get_classifier().weight.detach().clone()
    init_from_checkpoint(model, str(SHIPPED), "mn3_small", head=False)
    body = load_checkpoint(SHIPPED)["model"]
    state = model.state_dict()
    assert torch.equal(state["conv_stem.weight"], body["conv_stem.weight"])
    assert torch.equal(model.get_classifier().weight, head_before)  # the new head stays


@needs_shipped
def test_children_member_trains_on_faces_up_to_max_age_only(tiny_settings):
    settings = tiny_settings("kids", loss="children", label_source="ground_truth", max_age=12, epochs=1,
                             input_size=64, init_from=str(SHIPPED))
    train = load_split(settings, "train", "ground_truth")
    val = load_split(settings, "val", "ground_truth")
    n_train, n_val = int((train.gt_age <= 12).sum()), int((val.gt_age <= 12).sum())
    assert 0 < n_train < len(train) and n_val > 0  # the tiny set holds children and adults

    summary = train_student(settings, "mn3_small", progress=False)
    assert (summary["train_faces"], summary["val_faces"]) == (n_train, n_val)
    assert "-le12-" in summary["run"]
    ckpt = load_checkpoint(summary["checkpoint"])
    assert ckpt["config"]["n_outputs"] == 13 and ckpt["config"]["students"]["max_age"] == 12

    # kept in git as float16: the same ages as the float32 checkpoint, within hundredths of a year
    from agedistill_core.inference.student import load_student

    half = save_half(summary["checkpoint"], settings.workdir / "kid_half.pt")
    crops = [np.asarray(c) for c in np.random.default_rng(0).integers(0, 255, (4, 96, 96, 3), dtype=np.uint8)]
    full_ages = load_student(summary["checkpoint"]).predict_crops(crops)
    np.testing.assert_allclose(load_student(half).predict_crops(crops), full_ages, atol=0.05)
    assert ((full_ages >= 0) & (full_ages <= 12)).all()


def test_max_age_that_keeps_no_face_is_one_line(tiny_settings):
    settings = tiny_settings("none", label_source="ground_truth", max_age=0.5, epochs=1)
    with pytest.raises(ConfigError, match=r"no training face has a target age <= students.max_age \(0.5\)") as err:
        train_student(settings, "mn3_small", progress=False)
    assert "\n" not in str(err.value)
