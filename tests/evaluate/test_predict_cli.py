"""`agedistill predict` and `agedistill export` from the command line: rows on stdout (CSV or
JSON), messages on stderr, annotated copies, the shipped default model, one-line errors."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

import agedistill_core.inference.predict as predict_mod
import agedistill_core.inference.student as inference_mod
from agedistill_core.cli import main
from agedistill_core.inference.predict import CSV_COLUMNS, framing_for
from agedistill_core.settings import FaceSettings


def _write(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)), path
    return path


@pytest.fixture
def photos(tmp_path) -> Path:
    """astronaut (one face), coffee (a 600 px photo without a face) and a broken JPEG."""
    folder = tmp_path / "photos"
    _write(folder / "astronaut.png", data.astronaut())
    _write(folder / "coffee.jpg", data.coffee())
    (folder / "sub").mkdir()
    (folder / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def _rows_by_name(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(Path(r["path"]).name, []).append(r)
    return out


def test_csv_rows_on_stdout_messages_on_stderr(photos, student_ckpt, capsys):
    assert main(["predict", str(photos), "--checkpoint", str(student_ckpt)]) == 0
    out, err = capsys.readouterr()
    reader = csv.DictReader(io.StringIO(out))
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    rows = list(reader)
    assert len(rows) == len(out.strip().splitlines()) - 1  # every stdout line below the header is a row
    by = _rows_by_name(rows)
    assert set(by) == {"astronaut.png", "coffee.jpg", "broken.jpg"}
    (astro,) = by["astronaut.png"]
    assert astro["face"] == "0" and astro["status"] == "ok" and 0.5 <= float(astro["score"]) <= 1
    x0, y0, x1, y1 = (float(astro[k]) for k in ("x0", "y0", "x1", "y1"))
    # Eileen Collins' face lies around x 170-260, y 40-140 in the 512x512 astronaut image
    assert 140 < (x0 + x1) / 2 < 280 and 30 < (y0 + y1) / 2 < 160
    assert float(astro["age"]) == pytest.approx(30.0, abs=5)  # the untrained head starts at 30
    (coffee,) = by["coffee.jpg"]
    assert coffee["status"] == "no_face" and coffee["face"] == "" and coffee["age"] == ""
    assert "whole_image_max_side" in coffee["reason"]  # the crops stage's own reason
    (broken,) = by["broken.jpg"]
    assert broken["status"] == "unreadable" and "broken.jpg" in broken["reason"]  # one row; the run went on
    assert "predict:" not in out and "error" not in out
    assert "framing from profile" in err and "3 photo(s), 1 face(s)" in err


def test_json_output_parses_and_matches_csv(photos, student_ckpt, capsys):
    assert main(["predict", str(photos), "--checkpoint", str(student_ckpt), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert all(set(r) == {"path", "face", "box", "score", "age", "status", "reason"} for r in rows)
    by = _rows_by_name(rows)
    (astro,) = by["astronaut.png"]
    assert astro["face"] == 0 and len(astro["box"]) == 4 and astro["status"] == "ok"
    assert by["coffee.jpg"][0]["face"] is None and by["coffee.jpg"][0]["box"] is None
    assert by["broken.jpg"][0]["status"] == "unreadable"
    assert "predict:" in err
    assert main(["predict", str(photos), "--checkpoint", str(student_ckpt)]) == 0
    csv_rows = _rows_by_name(list(csv.DictReader(io.StringIO(capsys.readouterr().out))))
    assert float(csv_rows["astronaut.png"][0]["age"]) == pytest.approx(astro["age"], abs=0.006)
    # nothing to do: still valid output
    empty = photos / "empty"
    empty.mkdir()
    assert main(["predict", str(empty), "--checkpoint", str(student_ckpt), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == [] and "no image files" in err


def test_annotated_names_do_not_collide(tmp_path, student_ckpt, capsys):
    face = cv2.resize(data.astronaut()[20:276, 100:356], (128, 128), interpolation=cv2.INTER_AREA)
    a, b = tmp_path / "a", tmp_path / "b"
    for name in ("face.bmp", "face.tiff", "face.webp", "sub/face.bmp", "Face.BMP"):
        _write(a / name, face)
    _write(b / "face.bmp", face)
    out = tmp_path / "annotated"
    argv = ["predict", str(a), str(b / "face.bmp"), str(a / "face.bmp"), "--checkpoint", str(student_ckpt),
            "--detector", "none", "--annotate", str(out), "--format", "json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 7 and all(r["status"] == "ok" for r in rows)
    written = sorted(p.name for p in out.iterdir())
    # seven inputs, seven files (no temp files left); same stem, other suffix or folder: other name
    assert len(written) == 7 and len({n.casefold() for n in written}) == 7
    assert {"face.tiff_age.jpg", "face.webp_age.jpg", "sub__face.bmp_age.jpg"} <= set(written)
    assert sum(n.casefold().startswith("face.bmp") for n in written) == 4  # a/Face.BMP, a/face.bmp twice, b/face.bmp
    assert all(cv2.imread(str(out / n)).shape == (128, 128, 3) for n in written)
    # a second run writes the same names again (stable), not new ones
    assert main(argv) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == written


def test_missing_default_model_is_one_line_error(tmp_path, monkeypatch, capsys):
    photo = _write(tmp_path / "astronaut.jpg", data.astronaut())
    missing = tmp_path / "models" / "mn3_small_distilled" / "best.pt"
    monkeypatch.setattr(predict_mod, "DEFAULT_CHECKPOINT", missing)
    monkeypatch.setattr(predict_mod, "DEFAULT_ONNX", missing.with_name("model.onnx"))
    assert main(["predict", str(photo)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0]
    assert "--checkpoint" in lines[0] and "train" in lines[0]


def test_default_model_is_used_without_checkpoint(tmp_path, monkeypatch, student_ckpt, capsys):
    assert predict_mod.DEFAULT_CHECKPOINT == inference_mod.REPO_ROOT / "models/mn3_small_distilled/best.pt"
    assert predict_mod.DEFAULT_ONNX == inference_mod.REPO_ROOT / "models/mn3_small_distilled/model.onnx"
    assert (inference_mod.REPO_ROOT / "agedistill_core").is_dir()  # the repository, not the cwd
    photo = _write(tmp_path / "astronaut.jpg", data.astronaut())
    monkeypatch.setattr(predict_mod, "DEFAULT_CHECKPOINT", student_ckpt)  # no ONNX beside it: the .pt runs
    monkeypatch.setattr(predict_mod, "DEFAULT_ONNX", student_ckpt.with_name("model.onnx"))
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(photo)]) == 0
    (row,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert row["status"] == "ok" and float(row["age"]) == pytest.approx(30, abs=5)


def test_teacher_ages_an_adult(tmp_path, capsys):
    photo = _write(tmp_path / "astronaut.png", data.astronaut())
    assert main(["predict", str(photo), "--teacher", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    (row,) = json.loads(out)
    assert 15 < row["age"] < 70 and row["face"] == 0 and "teacher" in err


def test_bad_checkpoint_is_one_line_error(tmp_path, student_ckpt, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(student_ckpt.read_bytes()[:1000])
    assert main(["predict", str(tmp_path), "--checkpoint", str(bad)]) == 2
    out, err = capsys.readouterr()
    err_lines = err.strip().splitlines()
    assert out == "" and len(err_lines) == 1 and "truncated or corrupt" in err_lines[0]


def test_framing_comes_from_the_checkpoint_when_it_records_it():
    profile = FaceSettings(detector="ssd", align="dlib5", crop_size=160)
    assert framing_for(profile, {"arch": "mn3_small"}) == (profile, "profile")
    faces, source = framing_for(profile, {"faces": {"detector": "none", "align": "none", "crop_size": 112,
                                                    "some_future_key": 1}})
    assert source == "checkpoint" and (faces.detector, faces.align, faces.crop_size) == ("none", "none", 112)
    faces, _ = framing_for(profile, None, detector="haar")
    assert faces.detector == "haar" and faces.align == "dlib5"


def test_export_cli_prints_parity(student_ckpt, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(student_ckpt), "--out", str(out)]) == 0  # arch from the checkpoint
    text = capsys.readouterr().out
    assert out.is_file() and "parity" in text
    assert float(text.split("=")[-1]) < 1e-3
    assert main(["export", "--arch", "vgg16", "--checkpoint", str(student_ckpt), "--out", str(out)]) == 2
    assert "--arch mn3_small" in capsys.readouterr().err


def test_a_distribution_head_exports_and_predicts_its_softmax_expectation(tmp_path, capsys):
    """A 101-way student (loss ``distribution``) goes through export and both predict paths:
    the ONNX file keeps the raw logits and its metadata says how to read them, so onnxruntime
    and torch give the same ages, and a head peaked at 40 reads as about 40."""
    from agedistill_core.inference.student import load_onnx_student, load_student
    from agedistill_core.students.checkpoint import save_checkpoint
    from agedistill_core.students.zoo import create_student

    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    model = create_student("mn3_small", 101)
    with torch.no_grad():
        head = model.get_classifier()
        head.weight.mul_(0.001)
        head.bias.copy_(-0.5 * ((torch.arange(101.0) - 40.0) / 3.0) ** 2)  # a Gaussian peak at 40
    ckpt = save_checkpoint(tmp_path / "best.pt", model=model, epoch=0, best_val=1.0,
                           config={"arch": "mn3_small", "timm": "mobilenetv3_small_100", "input_size": 96,
                                   "n_outputs": 101, "students": {"loss": "distribution"}})
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    capsys.readouterr()
    onnx_student = load_onnx_student(out, threads=1)
    assert onnx_student.meta["output"]["ages"] == "softmax_expectation"
    crops = [data.astronaut()[:400, 50:450].copy(), data.coffee()[:300, :300].copy()]
    a_onnx = onnx_student.predict_crops(crops)
    a_torch = load_student(ckpt).predict_crops(crops)
    assert np.allclose(a_onnx, a_torch, atol=0.05)
    assert np.all(np.abs(a_onnx - 40.0) < 2.0)
