"""A student's input resize (``students.resize``): one rule per student, recorded in its checkpoint
and model metadata, followed by training, validation, evaluation, ``predict``'s torch and ONNX
paths and fine-tuning.  ``area`` averages pixel noise away when a crop shrinks; ``bilinear`` is
every student from before the rule (and stays their behaviour)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from agedistill_core.errors import CheckpointError
from agedistill_core.images import decode_image, resize, resize_input
from agedistill_core.inference.student import checkpoint_resize, load_onnx_student, load_student

UTKFACE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "utkface" / "crop_part1"


def _real_face() -> np.ndarray:
    if not UTKFACE.is_dir():
        pytest.skip(f"needs real faces in ../shared/data/utkface/crop_part1 ({UTKFACE} missing)")
    path = sorted(UTKFACE.glob("*.jpg"))[100]
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_area_resize_averages_pixel_noise_that_bilinear_lets_through():
    face = cv2.resize(_real_face(), (160, 160), interpolation=cv2.INTER_AREA)   # a stored crop's size
    noise = np.random.default_rng(0).normal(0, 20, face.shape)
    noisy = np.clip(face + noise, 0, 255).astype(np.uint8)
    left = {rule: (resize_input(noisy, 96, rule).astype(float) - resize_input(face, 96, rule)).std()
            for rule in ("bilinear", "area")}
    assert left["area"] < 0.8 * left["bilinear"], left          # 0.71 here (noise sigma 20, this face)
    np.testing.assert_array_equal(resize_input(face, 96, "area"), resize(face, 96))
    np.testing.assert_array_equal(resize_input(face, 96, "bilinear"),
                                  cv2.resize(face, (96, 96), interpolation=cv2.INTER_LINEAR))
    assert resize_input(face, 160, "area") is face and resize_input(face, 160, "bilinear") is face
    with pytest.raises(ValueError, match="unknown student resize 'nearest'"):
        resize_input(face, 96, "nearest")


def test_a_checkpoint_without_the_rule_is_bilinear_and_an_unknown_rule_is_refused():
    assert checkpoint_resize({"students": {"loss": "paper"}}) == "bilinear"
    assert checkpoint_resize({}) == "bilinear"
    assert checkpoint_resize({"students": {"resize": "area"}}) == "area"
    with pytest.raises(CheckpointError, match="input resize 'lanczos'.*update agedistill"):
        checkpoint_resize({"students": {"resize": "lanczos"}})


def test_an_area_student_is_trained_evaluated_exported_and_run_with_area_inputs(tiny_settings, tmp_path):
    from agedistill_core.inference.export import export_checkpoint
    from agedistill_core.labeltable import load_split
    from agedistill_core.students.augment import AugmentConfig
    from agedistill_core.students.checkpoint import load_checkpoint
    from agedistill_core.students.data import FaceDataset
    from agedistill_core.students.train import train_student

    settings = tiny_settings("area", resize="area", epochs=1, threads=1)
    summary = train_student(settings, "mn3_small", progress=False)
    assert "-area-" in summary["run"]
    ckpt = load_checkpoint(summary["checkpoint"])
    assert ckpt["config"]["students"]["resize"] == "area"

    faces = load_split(settings, "val")
    crops = [decode_image(j) for j in faces.jpeg[:6]]
    size = int(ckpt["config"]["input_size"])
    assert crops[0].shape[0] > size                               # the crops shrink to the input
    val = FaceDataset(faces, size, settings.faces.margin, AugmentConfig(enabled=False), resize="area")
    student = load_student(summary["checkpoint"])
    ours = student.inputs(crops)
    for i, crop in enumerate(crops):
        np.testing.assert_array_equal(ours[i], resize(crop, size))             # predict's torch path
        np.testing.assert_array_equal(np.asarray(val[i][0]), ours[i])           # = its validation input
    assert any(not np.array_equal(ours[i], resize_input(c, size, "bilinear")) for i, c in enumerate(crops))

    onnx_path = tmp_path / "model.onnx"
    export_checkpoint(summary["checkpoint"], onnx_path)
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["input"]["resize"] == "area"
    onnx = load_onnx_student(onnx_path, threads=1)
    np.testing.assert_allclose(onnx.predict_crops(crops), student.predict_crops(crops), atol=1e-3)

    meta["input"]["resize"] = "lanczos"                           # metadata from a newer agedistill
    onnx_path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="input resize 'lanczos'"):
        load_onnx_student(onnx_path, threads=1).predict_crops(crops)
