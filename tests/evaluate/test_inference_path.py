"""One inference path: `agedistill predict` frames and ages a photo exactly as the pipeline
(manifest -> crops -> label -> vmage) and the students' evaluation do."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from agedistill_core.cli import main
from agedistill_core.inference.predict import frame_faces, iou, suppress_overlaps
from agedistill_core.inference.student import load_student
from agedistill_core.faces import Detection, extract_face, make_detector
from agedistill_core.faces.align import get_aligner
from agedistill_core.images import decode_image, encode_jpeg, read_image
from agedistill_core.settings import FaceSettings, load_settings
from agedistill_core.shards import read_shards, read_table
from agedistill_core.students.augment import AugmentConfig
from agedistill_core.students.data import FaceDataset, collate
from agedistill_core.labeltable import FaceSet
from agedistill_testing import FAIRFACE, UTKFACE, write_params

# 448x448 FairFace photos: 0001 has a second face; in 0288 the most confident box is not the face
# (the crops stage keeps it, so predict's face 0 must too, and the real face comes second).
FAIRFACE_PHOTOS = ("fairface_0001.jpg", "fairface_0002.jpg", "fairface_0288.jpg")
# UTKFace chips on which the SSD returns two boxes for the one face
UTK_CHIPS = ("100_1_0_20170110183726390.jpg.chip.jpg", "10_0_0_20170103233459275.jpg.chip.jpg")
FACES = {"detector": "ssd", "align": "dlib5", "align_padding": 0.2, "margin": 0.2, "crop_size": 160,
         "min_score": 0.5, "whole_image_fallback": True, "whole_image_max_side": 512, "jpeg_quality": 95}


def _need(*paths: Path) -> None:
    for p in paths:
        if not p.exists():
            pytest.skip(f"needs real faces: {p} is missing")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A folder profile over real photos and edge cases, run through manifest crops label vmage."""
    _need(*(FAIRFACE / n for n in FAIRFACE_PHOTOS), UTKFACE / UTK_CHIPS[0])
    tmp = tmp_path_factory.mktemp("pipeline")
    root = tmp / "photos"
    root.mkdir()
    for name in FAIRFACE_PHOTOS:
        shutil.copy(FAIRFACE / name, root / name)
    shutil.copy(UTKFACE / UTK_CHIPS[0], root / "chip.jpg")
    (root / "grey.jpg").write_bytes(encode_jpeg(np.full((96, 96, 3), 128, np.uint8)))  # no face, crop-sized
    (root / "coffee.jpg").write_bytes(encode_jpeg(data.coffee()))  # no face, photo-sized
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    params = write_params(tmp, {"f": {"workdir": str(tmp / "work"), "shard_size": 64,
                                      "dataset": {"name": "folder", "root": str(root)}, "faces": FACES}})
    for stage in ("manifest", "crops", "label", "vmage"):
        assert main(["--params", str(params), "--profile", "f", stage]) == 0, stage
    settings = load_settings("f", params)
    crops = {r["image_id"].split("/")[-1]: r for r in read_shards(settings.crops_dir).to_pylist()}
    ages = {r["image_id"].split("/")[-1]: r["teacher_age"]
            for r in read_table(settings.vmage_path, ["image_id", "face", "teacher_age"]).to_pylist()}
    return dict(root=root, params=params, settings=settings, crops=crops, ages=ages)


def _predict_json(capsys, *argv) -> dict[str, list[dict]]:
    capsys.readouterr()
    assert main(list(argv) + ["--format", "json"]) == 0
    out: dict[str, list[dict]] = {}
    for row in json.loads(capsys.readouterr().out):
        out.setdefault(Path(row["path"]).name, []).append(row)
    return out


def test_teacher_predict_equals_the_pipeline(pipeline, capsys):
    rows = _predict_json(capsys, "--params", str(pipeline["params"]), "--profile", "f", "predict",
                         str(pipeline["root"]), "--teacher")
    crops = pipeline["crops"]
    assert set(rows) == set(crops)
    assert {name: crops[name]["status"] for name in crops} == {
        "fairface_0001.jpg": "ok", "fairface_0002.jpg": "ok", "fairface_0288.jpg": "ok", "chip.jpg": "ok",
        "grey.jpg": "whole_image", "coffee.jpg": "no_face", "broken.jpg": "unreadable"}
    for name, stored in crops.items():
        face0 = rows[name][0]
        assert face0["status"] == stored["status"], name
        if stored["jpeg"] is None:  # no_face / unreadable: one row without a face, with the reason
            assert len(rows[name]) == 1 and face0["face"] is None and face0["age"] is None
            assert face0["reason"] == stored["reason"]
            continue
        assert face0["face"] == 0
        assert face0["box"] == pytest.approx(stored["box"], abs=0.01), name  # the same face, same box
        if stored["score"] is None:
            assert face0["score"] is None
        else:
            assert face0["score"] == pytest.approx(stored["score"], abs=1e-4)
        assert face0["age"] == pytest.approx(pipeline["ages"][name], abs=0.05), name  # the label stage's age
    for name in ("fairface_0001.jpg", "fairface_0288.jpg"):  # further faces are numbered in score order
        assert [r["face"] for r in rows[name]] == list(range(len(rows[name])))
        assert [r["score"] for r in rows[name]] == sorted((r["score"] for r in rows[name]), reverse=True)


def test_face_zero_crop_is_the_stored_crop(pipeline):
    """The framing itself: predict's face-0 crop, JPEG-encoded as the crops stage does, is the stored JPEG."""
    cfg = pipeline["settings"].faces
    for name, stored in pipeline["crops"].items():
        if stored["jpeg"] is None:
            continue
        faces = frame_faces(read_image(pipeline["root"] / name), cfg)
        assert encode_jpeg(faces[0].crop, cfg.jpeg_quality) == stored["jpeg"], name
        assert all(f.crop.shape == (cfg.crop_size, cfg.crop_size, 3) for f in faces)


def test_student_predict_equals_the_evaluation_path(pipeline, student_ckpt, capsys):
    rows = _predict_json(capsys, "--params", str(pipeline["params"]), "--profile", "f", "predict",
                         str(pipeline["root"]), "--checkpoint", str(student_ckpt))
    student = load_student(student_ckpt)
    usable = [n for n, r in pipeline["crops"].items() if r["jpeg"] is not None]
    # what `agedistill evaluate` computes from the stored crops
    expected = student.predict_jpegs([pipeline["crops"][n]["jpeg"] for n in usable])
    for name, age in zip(usable, expected):
        assert rows[name][0]["age"] == pytest.approx(float(age), abs=1e-3), name


def test_student_input_is_the_validation_input(student_ckpt):
    """predict's student input = FaceDataset without augmentation (training's validation path)."""
    img = data.astronaut()
    jpegs = [encode_jpeg(np.ascontiguousarray(img[y:y + 200, x:x + 200]), 95)
             for x, y in ((120, 10), (0, 0), (300, 250))]
    n = len(jpegs)
    faces = FaceSet([f"f{i}" for i in range(n)], jpegs, np.zeros(n, np.float32), None, np.zeros(n, np.float32),
                    np.zeros(n, np.float32), np.zeros(n, np.float32))
    student = load_student(student_ckpt)
    ds = FaceDataset(faces, student.input_size, 0.2, AugmentConfig(enabled=False))
    ours = student.inputs([decode_image(j) for j in jpegs])
    for i in range(n):
        np.testing.assert_array_equal(ours[i], np.asarray(ds[i][0]))
    x = collate([ds[i] for i in range(n)])[0]
    val_ages = student.loss.ages(student.model.eval()(x)).detach().float().numpy()
    np.testing.assert_allclose(student.predict_jpegs(jpegs), val_ages, atol=1e-3)


def test_one_row_per_face_on_a_prealigned_chip(capsys, tmp_path):
    chips = [UTKFACE / n for n in UTK_CHIPS]
    _need(*chips)
    cfg = FaceSettings(**FACES)
    det = make_detector("ssd")
    for chip in chips:
        rgb = read_image(chip)
        raw = [d for d in det(rgb) if d.score >= cfg.min_score]
        faces = frame_faces(rgb, cfg)
        assert 1 <= len(faces) <= len(raw)
        # one row per detection after suppression: no two reported faces overlap by IoU 0.3 or more
        assert all(iou(a.box, b.box) < 0.3 for k, a in enumerate(faces) for b in faces[k + 1:])
        ref = extract_face(rgb, det, size=cfg.crop_size, margin=cfg.margin, min_score=cfg.min_score,
                           whole_image_fallback=cfg.whole_image_fallback,
                           whole_image_max_side=cfg.whole_image_max_side,
                           aligner=get_aligner(cfg.align, cfg.align_padding))
        assert faces[0].box == ref.box and np.array_equal(faces[0].crop, ref.crop)
    params = write_params(tmp_path, {"f": {"workdir": str(tmp_path / "w"), "faces": FACES}})
    rows = _predict_json(capsys, "--params", str(params), "--profile", "f", "predict", *map(str, chips), "--teacher")
    assert [len(r) for r in rows.values()] == [len(frame_faces(read_image(c), cfg)) for c in chips]


def test_suppress_overlaps_keeps_the_first_of_each_cluster():
    a = Detection((0, 0, 100, 100), 0.9)
    a2 = Detection((10, 10, 110, 110), 0.99)  # IoU with a: 0.68
    b = Detection((200, 0, 300, 100), 0.6)
    c = Detection((60, 0, 160, 100), 0.7)  # IoU with a: 0.25 -> kept
    assert suppress_overlaps([a, a2, b, c], 0.3) == [a, b, c]
    assert suppress_overlaps([a, c], 0.2) == [a]
    assert suppress_overlaps([], 0.3) == []
