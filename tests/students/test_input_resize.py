"""A student's input resize (``students.resize``): one rule per student, recorded in its checkpoint
and model metadata, followed by training, validation, evaluation, ``predict``'s torch and ONNX
paths and fine-tuning.  ``area`` averages pixel noise away when a crop shrinks; ``bilinear`` is
every student from before the rule (and stays their behaviour); ``area_denoise`` smooths a crop
whose estimated pixel noise is above ``NOISE_GATE`` first, and leaves a clean one exactly as
``area`` sees it."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from agedistill_core.errors import CheckpointError
from agedistill_core.images import (NOISE_GATE, STUDENT_RESIZES, decode_image, denoise, estimate_noise, resize,
                                    resize_input)
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


def _real_faces(k: int) -> list[np.ndarray]:
    if not UTKFACE.is_dir():
        pytest.skip(f"needs real faces in ../shared/data/utkface/crop_part1 ({UTKFACE} missing)")
    paths = sorted(UTKFACE.glob("*.jpg"))[::701][:k]
    return [cv2.resize(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), (160, 160), interpolation=cv2.INTER_AREA)
            for p in paths]


def test_the_noise_estimate_reads_clean_faces_below_the_gate_and_tracks_added_noise():
    faces = _real_faces(12)
    rng = np.random.default_rng(0)
    for face in faces:
        assert estimate_noise(face) < 0.6 * NOISE_GATE                     # clean photos (0.2-1.5 here)
        assert denoise(face) is face                                       # untouched, not a copy
        np.testing.assert_array_equal(resize_input(face, 96, "area_denoise"), resize_input(face, 96, "area"))
        for sigma in (10.0, 20.0, 40.0):
            noisy = np.clip(face + rng.normal(0, sigma, face.shape), 0, 255).astype(np.uint8)
            # the grey image carries 0.67 of a channel's independent noise; clipping at 0 and 255 hides
            # some more (most in the brightest blocks, which the low quantile reads): low, never high
            assert 0.5 * sigma < estimate_noise(noisy) < 0.8 * sigma, sigma
            assert estimate_noise(noisy) > NOISE_GATE


def test_area_denoise_takes_the_noise_out_of_the_input_and_leaves_the_face():
    # the network misreads fine-grained noise as skin texture (wrinkles); what matters is how much of it
    # reaches the input, read by the same estimate on the 96 px input
    face = _real_faces(1)[0]
    rng = np.random.default_rng(1)
    clean = resize_input(face, 96, "area")
    for sigma in (20.0, 50.0):
        noisy = np.clip(face + rng.normal(0, sigma, face.shape), 0, 255).astype(np.uint8)
        area, smoothed = (resize_input(noisy, 96, rule) for rule in ("area", "area_denoise"))
        assert estimate_noise(area) > 2 * estimate_noise(clean) + 1      # 2.2 clean; 6.2 and 12.4 noisy
        assert estimate_noise(smoothed) <= estimate_noise(clean) + 0.1, sigma   # 0.5: no more than the clean face
        # the face is still there: the smoothed input follows the clean one at least as closely
        corr = [np.corrcoef(x.astype(float).ravel(), clean.astype(float).ravel())[0, 1] for x in (area, smoothed)]
        assert corr[1] > 0.95 and corr[1] > corr[0] - 0.01, corr         # 0.990 / 0.972 here
    tiny = np.full((2, 2, 3), 128, np.uint8)                                 # too small to measure: left alone
    assert estimate_noise(tiny) == 0.0 and denoise(tiny) is tiny


def test_the_settings_offer_exactly_the_rules_the_code_knows():
    from typing import get_args, get_type_hints

    from agedistill_core.settings.sections import StudentSettings

    assert get_args(get_type_hints(StudentSettings)["resize"]) == STUDENT_RESIZES


def test_a_checkpoint_without_the_rule_is_bilinear_and_an_unknown_rule_is_refused():
    assert checkpoint_resize({"students": {"loss": "paper"}}) == "bilinear"
    assert checkpoint_resize({}) == "bilinear"
    assert checkpoint_resize({"students": {"resize": "area"}}) == "area"
    assert checkpoint_resize({"students": {"resize": "area_denoise"}}) == "area_denoise"
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


def test_ship_may_switch_an_area_student_to_area_denoise_and_nothing_else():
    from agedistill_core.errors import ConfigError
    from agedistill_core.inference.ship import _resize_words, with_input_rule

    area = {"config": {"students": {"resize": "area", "loss": "distribution"}}, "model": {}}
    shipped = with_input_rule(area, "area_denoise", "run/best.pt")
    assert checkpoint_resize(shipped["config"]) == "area_denoise"
    assert shipped["config"]["students"]["trained_resize"] == "area"
    assert area["config"]["students"]["resize"] == "area"                      # the loaded checkpoint is not changed
    assert "trained with `area` inputs" in _resize_words(shipped["config"])
    assert with_input_rule(area, None, "x") is area and with_input_rule(area, "area", "x") is area
    bilinear = {"config": {"students": {}}, "model": {}}
    with pytest.raises(ConfigError, match=r"run/best.pt was trained with input resize 'bilinear'.*"
                                          r"retrain with students.resize: area"):
        with_input_rule(bilinear, "area", "run/best.pt")
    with pytest.raises(ConfigError, match="agree with it on clean crops: none"):
        with_input_rule(shipped, "area", "x")
