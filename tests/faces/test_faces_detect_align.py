"""Detectors (ssd, dlib, haar), dlib 5-point alignment and the crop statuses."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from agedistill_core.faces.crops import crop_one
from agedistill_core.errors import ConfigError
from agedistill_core.faces import DETECTORS, extract_face, make_detector
from agedistill_core.faces.align import get_aligner
from agedistill_core.images import read_image
from agedistill_core.settings import FaceSettings

DATA = Path(__file__).resolve().parents[2].parent / "shared/data"
UTK = DATA / "utkface/crop_part1"
needs_utk = pytest.mark.skipif(not UTK.is_dir(), reason="needs real faces in ../shared/data/utkface/crop_part1")

ASTRONAUT_FACE = (175, 60, 275, 175)  # x0, y0, x1, y1: Eileen Collins' face in skimage.data.astronaut()


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_registry_has_all_detectors():
    assert {"none", "haar", "ssd", "dlib"} <= set(DETECTORS.names())
    with pytest.raises(ConfigError, match="choose one of"):
        make_detector("retinaface")


@pytest.mark.parametrize("name", ["ssd", "dlib", "haar"])
def test_detector_finds_astronaut_face(name):
    det = make_detector(name)
    found = [d for d in det(skimage.data.astronaut()) if d.score >= 0.5]
    assert found, f"{name} found no face"
    best = max(found, key=lambda d: d.score)
    assert iou(best.box, ASTRONAUT_FACE) > 0.5, best.box
    if name == "ssd":
        assert best.score > 0.95


@pytest.mark.parametrize("name", ["ssd", "dlib"])
def test_detectors_pickle_without_their_model(name):
    det = make_detector(name)
    det(skimage.data.astronaut())  # model built
    clone = pickle.loads(pickle.dumps(det))
    assert clone._model is None
    assert clone(skimage.data.astronaut())  # rebuilt on first use


def test_no_face_recorded_without_fallback_and_whole_image_with_it():
    coffee = skimage.data.coffee()
    for name in ("ssd", "dlib"):
        fc = extract_face(coffee, make_detector(name), size=96, margin=0.2, whole_image_fallback=False)
        assert fc.status == "no_face" and fc.crop is None
        fc = extract_face(coffee, make_detector(name), size=96, margin=0.2, whole_image_fallback=True)
        assert fc.status == "whole_image" and fc.crop.shape == (96, 96, 3)
        assert "whole image" in fc.reason


def test_most_confident_face_is_chosen():
    from agedistill_core.faces import Detection

    img = np.zeros((100, 100, 3), np.uint8)
    det = lambda _: [Detection((0, 0, 50, 50), 0.7), Detection((10, 10, 30, 30), 0.9),
                     Detection((0, 0, 90, 90), 0.4)]
    fc = extract_face(img, det, size=32, margin=0.2)
    assert fc.box == (10, 10, 30, 30) and fc.score == pytest.approx(0.9)


def test_dlib5_alignment_on_any_detector_box():
    aligner = get_aligner("dlib5")
    astro = skimage.data.astronaut()
    for name in ("ssd", "haar", "dlib"):
        fc = extract_face(astro, make_detector(name), size=128, margin=0.2, aligner=aligner)
        assert fc.status == "ok" and fc.crop.shape == (128, 128, 3) and fc.crop.dtype == np.uint8
        assert fc.landmarks.shape == (5, 2)
        # the 5 points (eye corners, nose) lie inside the known face region
        x0, y0, x1, y1 = ASTRONAUT_FACE
        assert np.all((fc.landmarks[:, 0] > x0) & (fc.landmarks[:, 0] < x1))
        assert np.all((fc.landmarks[:, 1] > y0) & (fc.landmarks[:, 1] < y1))
    # eyes end up level and symmetric in the chip: dlib's chip template
    chip = fc.crop
    assert chip.std() > 20


def test_get_aligner_rejects_unknown():
    assert get_aligner("none") is None
    with pytest.raises(ConfigError, match="faces.align"):
        get_aligner("mtcnn")


@needs_utk
def test_dlib5_realigns_utkface_chip_with_whole_image_box():
    img = read_image(sorted(UTK.glob("*.jpg"))[0])
    fc = extract_face(img, None, size=64, margin=0.2, aligner=get_aligner("dlib5"))
    assert fc.status == "ok" and fc.crop.shape == (64, 64, 3)
    assert fc.landmarks.shape == (5, 2)


def test_unreadable_files_are_recorded(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for p in (bad, empty, tmp_path / "missing.jpg"):
        row = crop_one(p, p.name, FaceSettings(detector="ssd", align="dlib5"))
        assert row["status"] == "unreadable" and p.name in row["reason"] and row["jpeg"] is None


def test_crop_row_records_detector_and_alignment(tmp_path):
    import cv2

    from agedistill_core.images import encode_jpeg

    p = tmp_path / "astronaut.jpg"
    p.write_bytes(encode_jpeg(skimage.data.astronaut()))
    row = crop_one(p, "astronaut", FaceSettings(detector="ssd", align="dlib5", crop_size=96))
    assert row["status"] == "ok" and row["detector"] == "ssd+dlib5"
    assert len(row["landmarks"]) == 10 and len(row["box"]) == 4
    assert cv2.imdecode(np.frombuffer(row["jpeg"], np.uint8), cv2.IMREAD_COLOR).shape == (96, 96, 3)
