"""Member backends: the bundled ONNX network on real faces, a torch student
checkpoint, a (tiny, hand-made) Caffe network, and the config errors."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from agedistill_core.errors import ConfigError
from agedistill_core.images import read_image, resize
from agedistill_core.settings import TeacherSettings
from agedistill_core.teacher import build_teacher, make_member
from agedistill_core.teacher.ensemble import member_from_spec
from agedistill_core.teacher.members import narrow_distribution

import agedistill_core.inference.member  # noqa: F401,E402  (registers the torch member)

sys.path.insert(0, str(Path(__file__).parent))
from tiny_caffe import write_tiny_caffe  # noqa: E402

DATA = Path(__file__).resolve().parents[2].parent / "shared/data"
UTK = DATA / "utkface/crop_part1"
needs_utk = pytest.mark.skipif(not UTK.is_dir(), reason="needs real faces in ../shared/data/utkface/crop_part1")


def utk_faces(n: int, size: int = 64):
    files = sorted(UTK.glob("*.jpg"))
    files = files[:: len(files) // n][:n]
    ages = np.array([float(f.name.split("_")[0]) for f in files])
    return np.stack([resize(read_image(f), size) for f in files]), ages


@needs_utk
@pytest.mark.parametrize("variants", [1, 8])
def test_onnx_default_teacher_on_real_faces(variants):
    crops, ages = utk_faces(64)
    out = build_teacher(TeacherSettings(variants=variants)).label(crops)
    assert np.abs(out.age - ages).mean() < 10
    np.testing.assert_allclose(out.probs.sum(1), 1, atol=1e-6)
    assert out.member_probs.shape == (64, 1, 101)


def test_member_specs_and_errors(tmp_path):
    assert member_from_spec("age_gender_onnx").name == "age_gender_onnx"
    with pytest.raises(ConfigError, match="choose one of"):
        member_from_spec("dex")
    with pytest.raises(ConfigError, match="missing 'prototxt'"):
        member_from_spec({"name": "caffe", "caffemodel": "x.caffemodel"})
    with pytest.raises(ConfigError, match=r"prototxt file .*nope\.prototxt not found"):
        member_from_spec({"name": "caffe", "prototxt": "nope.prototxt", "caffemodel": "m"}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown option"):
        member_from_spec({"name": "caffe", "prototxt": "a", "caffemodel": "b", "colour": "RGB"})
    with pytest.raises(ConfigError, match="checkpoint file .* not found"):
        member_from_spec({"name": "torch", "checkpoint": "students/none/best.pt"}, base_dir=tmp_path)


def test_caffe_member_prepare_and_forward(tmp_path):
    # 5 bins; the logits are linear in the channel means of the (mean-subtracted, BGR) input
    w = np.array([[0.02, 0, 0], [0, 0.02, 0], [0, 0, 0.02], [0, 0, 0], [-0.02, 0, 0]], np.float32)
    proto, model = write_tiny_caffe(tmp_path, w, np.zeros(5, np.float32), size=8)
    m = member_from_spec({"name": "caffe", "prototxt": proto.name, "caffemodel": model.name,
                          "bins": [0, 10, 20, 30, 40], "input_size": 8, "label": "tiny"}, base_dir=tmp_path)
    assert m.name == "tiny" and m.color_order == "BGR" and m.input_size == 8
    assert m.mean == pytest.approx((91.4953, 103.8827, 131.0912))  # SPEC 2 mean, BGR order
    crops = np.zeros((2, 32, 32, 3), np.uint8)
    crops[0, ..., 0] = 255  # red face
    crops[1, ..., 2] = 255  # blue face
    x = m.prepare(crops)
    assert x.shape == (2, 3, 8, 8) and x.dtype == np.float32
    assert x[0, 2].mean() == pytest.approx(255 - 131.0912, abs=1e-3)  # R is channel 2 in BGR
    p = m.predict(crops)
    pooled = x.mean((2, 3))
    logits = pooled @ w.T
    ref = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(p, ref / ref.sum(1, keepdims=True), atol=1e-5)
    # the teacher accepts it like any member (rebinned onto 0..100)
    out = build_teacher(TeacherSettings(members=({"name": "caffe", "prototxt": str(proto),
                                                  "caffemodel": str(model), "bins": [0, 10, 20, 30, 40],
                                                  "input_size": 8},), variants=8)).label(crops)
    assert out.probs.shape == (2, 101) and np.all(out.age >= 0) and np.all(out.age <= 40)


def test_caffe_member_wrong_bin_count(tmp_path):
    proto, model = write_tiny_caffe(tmp_path, np.zeros((5, 3), np.float32), np.zeros(5, np.float32))
    m = make_member("caffe", prototxt=str(proto), caffemodel=str(model), bins=101, input_size=8)
    with pytest.raises(ConfigError, match="5 outputs but bins has 101"):
        m.predict(np.zeros((1, 8, 8, 3), np.uint8))


def _tiny_checkpoint(path: Path, n_outputs: int, loss: str) -> Path:
    import timm
    import torch

    from agedistill_core.students.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = timm.create_model("mobilenetv3_small_100", pretrained=False, num_classes=n_outputs)
    with torch.no_grad():
        model.get_classifier().bias.fill_(30.0 if n_outputs == 1 else 0.0)
    config = {"arch": "mn3_small", "timm": "mobilenetv3_small_100", "input_size": 96, "n_outputs": n_outputs,
              "students": {"loss": loss}}
    return save_checkpoint(path, model=model, epoch=0, best_val=1.0, config=config)


def test_narrow_distribution_keeps_the_age():
    p = narrow_distribution(np.array([0.0, 30.25, 99.9, 100.0, 120.0]))
    assert p.shape == (5, 101)
    np.testing.assert_allclose(p.sum(1), 1)
    np.testing.assert_allclose(p @ np.arange(101), [0, 30.25, 99.9, 100, 100])
    assert ((p > 0).sum(1) <= 2).all()


@pytest.mark.parametrize("n_outputs, loss", [(1, "paper"), (101, "distribution")])
def test_torch_checkpoint_member(tmp_path, n_outputs, loss):
    from agedistill_core.inference.student import load_student

    ckpt = _tiny_checkpoint(tmp_path / "best.pt", n_outputs, loss)
    m = member_from_spec({"name": "torch", "checkpoint": "best.pt"}, base_dir=tmp_path)
    assert m.input_size == 96 and len(m.bins) == 101
    crops = np.random.default_rng(0).integers(0, 255, (3, 112, 112, 3), dtype=np.uint8)
    p = m.predict(crops)
    assert p.shape == (3, 101)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    # the member's expected age is the student's own prediction
    ref = load_student(ckpt).predict_crops(list(crops))
    np.testing.assert_allclose(p @ np.arange(101), ref, atol=1e-3)
    if n_outputs == 1:
        assert ((p > 0).sum(1) <= 2).all()
    out = build_teacher(TeacherSettings(members=({"name": "torch", "checkpoint": str(ckpt)},),
                                        variants=1)).label(crops)
    np.testing.assert_allclose(out.age, ref, atol=1e-3)


REPO = Path(__file__).resolve().parents[2]
CHILDREN = [REPO / "models" / "children" / f"child_s{i}.pt" for i in range(3)]


def test_children_checkpoint_member_reports_its_13_bins(tmp_path):
    """A ``children`` head (13 outputs, ages 0..12) is a member over those 13 bins; the ensemble
    re-bins them onto 0..100, so its expected age stays the student's own (within 0..12)."""
    from agedistill_core.inference.student import load_student
    from agedistill_core.teacher import rebin

    ckpt = _tiny_checkpoint(tmp_path / "kid.pt", 13, "children")
    m = member_from_spec({"name": "torch", "checkpoint": "kid.pt", "label": "kid"}, base_dir=tmp_path)
    assert m.name == "kid" and m.bins.tolist() == list(range(13))
    crops = np.random.default_rng(0).integers(0, 255, (3, 112, 112, 3), dtype=np.uint8)
    p = m.predict(crops)
    assert p.shape == (3, 13)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    ref = load_student(ckpt).predict_crops(list(crops))
    np.testing.assert_allclose(rebin(p, m.bins) @ np.arange(101), ref, atol=1e-3)
    assert ((ref >= 0) & (ref <= 12)).all()


def test_a_member_refuses_outputs_that_are_not_ages(tmp_path):
    _tiny_checkpoint(tmp_path / "groups.pt", 9, "groups")
    with pytest.raises(ConfigError, match="9 outputs that are not ages"):
        member_from_spec({"name": "torch", "checkpoint": "groups.pt"}, base_dir=tmp_path)


@needs_utk
@pytest.mark.skipif(not all(p.is_file() for p in CHILDREN), reason="needs models/children/child_s*.pt")
def test_children_members_decide_exactly_the_gated_faces():
    """The shipped children members behind the gate, with the bundled general member, on real
    faces: a face whose general age is <= 12 gets the children's average, any other face keeps
    the general vote unchanged; the general members' own vectors are kept either way."""
    crops, _ = utk_faces(48)
    kids = tuple({"name": "torch", "checkpoint": str(p)} for p in CHILDREN)
    plain = build_teacher(TeacherSettings(variants=1)).label(crops)
    out = build_teacher(TeacherSettings(variants=1, children=kids)).label(crops)
    gated = plain.age <= 12
    assert gated.any() and (~gated).any()
    np.testing.assert_array_equal(out.gated, gated)
    np.testing.assert_allclose(out.age[~gated], plain.age[~gated])
    np.testing.assert_allclose(out.probs[~gated], plain.probs[~gated])
    np.testing.assert_allclose(out.member_ages, plain.member_ages)
    assert out.children_ages.shape == (48, 3) and np.isnan(out.children_ages[~gated]).all()
    np.testing.assert_allclose(out.age[gated], out.children_ages[gated].mean(1), atol=1e-6)
    assert (out.age[gated] <= 12).all() and (out.probs[gated][:, 13:] == 0).all()


@needs_utk
@pytest.mark.skipif(not all(p.is_file() for p in CHILDREN), reason="needs models/children/child_s*.pt")
def test_label_stage_gives_each_member_the_stored_crop():
    """Members of different input sizes (64 px general, 96 px children): the label stage hands
    every member the stored 160 px crop (``Teacher.stack_size`` None), so the general member's
    ages, and every face the gate lets through, are exactly the teacher's without children."""
    from agedistill_core.images import encode_jpeg
    from agedistill_core.teacher.label import label_crops

    crops, _ = utk_faces(32, size=160)
    jpegs, ids = [encode_jpeg(c, 95) for c in crops], [f"f{i}" for i in range(32)]
    plain_t = build_teacher(TeacherSettings(variants=1))
    kids_t = build_teacher(TeacherSettings(variants=1, children=tuple({"name": "torch", "checkpoint": str(p)}
                                                                      for p in CHILDREN)))
    assert plain_t.stack_size == 64 and kids_t.stack_size is None
    plain = label_crops(plain_t, jpegs, ids, batch_size=16)[0]
    kids = label_crops(kids_t, jpegs, ids, batch_size=16)[0]
    p_age, k_age = np.concatenate([o.age for o in plain]), np.concatenate([o.age for o in kids])
    gated = np.concatenate([o.gated for o in kids])
    np.testing.assert_allclose(np.concatenate([o.member_ages for o in kids]),
                               np.concatenate([o.member_ages for o in plain]), atol=1e-9)
    np.testing.assert_allclose(k_age[~gated], p_age[~gated], atol=1e-9)
    np.testing.assert_array_equal(gated, p_age <= 12)
