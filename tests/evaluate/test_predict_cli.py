"""`agedistill predict` and `agedistill export` on a real photo (scikit-image's astronaut)."""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import pytest
import torch
from skimage import data

from agedistill_core.cli import main
from agedistill_core.evaluate.predict import load_student, predict_photos
from agedistill_core.students.checkpoint import save_checkpoint
from agedistill_core.students.zoo import create_student


@pytest.fixture(scope="module")
def student_ckpt(tmp_path_factory) -> Path:
    """An (untrained) mn3_small student checkpoint; its head starts at age 30."""
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


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "astronaut.png"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    (folder / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def test_predict_folder_annotates_and_skips_unreadable(photos, student_ckpt, tmp_path, capsys):
    out = tmp_path / "annotated"
    rc = main(["predict", str(photos), "--checkpoint", str(student_ckpt), "--annotate", str(out),
               "--detector", "haar"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    face_lines = [ln for ln in lines if "astronaut.png" in ln]
    assert len(face_lines) == 1 and "face 1/1" in face_lines[0] and "age " in face_lines[0]
    age = float(face_lines[0].split("age ")[1].split()[0])
    assert 0 <= age <= 100
    broken = [ln for ln in lines if "broken.jpg" in ln]
    assert len(broken) == 1 and "skipped" in broken[0]  # one line, and the run went on
    written = sorted(p.name for p in out.iterdir())
    assert written == ["astronaut_age.jpg"]  # no temp files left; the unreadable one has no output
    img = cv2.imread(str(out / "astronaut_age.jpg"))
    assert img.shape == data.astronaut().shape
    # the box was drawn: pure green pixels appear that the photo did not have
    green = (img[..., 1] > 200) & (img[..., 0] < 60) & (img[..., 2] < 60)
    assert green.sum() > 100


def test_predict_face_box_is_on_the_face(photos, student_ckpt):
    res = predict_photos([photos / "astronaut.png"], load_student(student_ckpt), detector="haar",
                         log=lambda m: None)
    (x0, y0, x1, y1), = res[0].boxes
    # Eileen Collins' face lies around x 170-260, y 40-140 in the 512x512 astronaut image
    assert 140 < (x0 + x1) / 2 < 280 and 30 < (y0 + y1) / 2 < 160
    assert res[0].ages[0] == pytest.approx(30.0, abs=5)  # the head starts at 30


def test_predict_with_teacher_and_default_detector(photos, capsys):
    rc = main(["predict", str(photos / "astronaut.png"), "--teacher"])
    assert rc == 0
    line, = [ln for ln in capsys.readouterr().out.splitlines() if "astronaut" in ln]
    age = float(line.split("age ")[1].split()[0])
    assert 15 < age < 70 and "(teacher)" in line  # an adult face


def test_predict_missing_file_and_bad_checkpoint(tmp_path, student_ckpt, capsys):
    rc = main(["predict", str(tmp_path / "nope.jpg"), "--checkpoint", str(student_ckpt), "--detector", "none"])
    assert rc == 0 and "nope.jpg" in capsys.readouterr().out
    bad = tmp_path / "bad.pt"
    bad.write_bytes(student_ckpt.read_bytes()[:1000])
    assert main(["predict", str(tmp_path), "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated or corrupt" in err[0]


def test_export_cli_prints_parity(student_ckpt, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "--arch", "mn3_small", "--checkpoint", str(student_ckpt), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "parity" in text
    diff = float(text.split("=")[-1])
    assert diff < 1e-3
    assert main(["export", "--arch", "vgg16", "--checkpoint", str(student_ckpt), "--out", str(out)]) == 2
    assert "--arch mn3_small" in capsys.readouterr().err
