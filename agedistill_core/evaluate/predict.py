"""Run a trained student (or the teacher) on face crops and on photos.

* ``load_student(checkpoint) -> LoadedStudent``: ``predict_crops`` / ``predict_jpegs``.
* ``load_teacher(settings) -> TeacherEstimator``: the labelling teacher, same interface.
* ``predict_photos(paths, estimator, ...)``: what ``agedistill predict`` does: find
  every face in each photo (or folder of photos), print its age, optionally write
  an annotated copy (box + age) atomically.  An unreadable file costs one line
  and the run goes on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np
import torch

from agedistill_core.errors import AgedistillError, UnreadableImage
from agedistill_core.images import decode_image, read_image
from agedistill_core.shards import atomic_write_bytes
from agedistill_core.students.augment import to_tensor
from agedistill_core.students.checkpoint import load_checkpoint
from agedistill_core.students.losses import make_loss
from agedistill_core.students.zoo import create_student


@dataclass
class LoadedStudent:
    arch: str
    model: torch.nn.Module
    loss: object
    input_size: int
    config: dict
    name: str = "student"

    @torch.no_grad()
    def predict_crops(self, crops: list[np.ndarray], batch_size: int = 128) -> np.ndarray:
        """Ages for uint8 RGB crops (any size: resized bilinearly like validation)."""
        self.model.eval()
        out = []
        s = self.input_size
        for i in range(0, len(crops), batch_size):
            batch = np.stack([cv2.resize(c, (s, s), interpolation=cv2.INTER_LINEAR) for c in crops[i:i + batch_size]])
            out.append(self.loss.ages(self.model(to_tensor(batch))).float().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def predict_jpegs(self, jpegs: list[bytes], batch_size: int = 128) -> np.ndarray:
        ages = []
        for i in range(0, len(jpegs), batch_size):
            ages.append(self.predict_crops([decode_image(j) for j in jpegs[i:i + batch_size]], batch_size))
        return np.concatenate(ages) if ages else np.zeros(0, np.float32)


def load_student(path: str | Path) -> LoadedStudent:
    """A student from its checkpoint (``CheckpointError`` when missing or corrupt)."""
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    loss = make_loss(cfg["students"]["loss"])
    model = create_student_quiet(cfg["arch"], int(cfg["n_outputs"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return LoadedStudent(cfg["arch"], model, loss, int(cfg["input_size"]), cfg, name=f"student {cfg['arch']}")


def create_student_quiet(arch: str, n_outputs: int) -> torch.nn.Module:
    """The architecture only: its weights come from our checkpoint."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_student(arch, n_outputs, None)


@dataclass
class TeacherEstimator:
    """The labelling teacher (profile's ``teacher`` section) behind the student interface."""
    teacher: object
    crop_size: int
    name: str = "teacher"

    def predict_crops(self, crops: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
        s = self.crop_size
        out = []
        for i in range(0, len(crops), batch_size):
            batch = np.stack([c if c.shape[:2] == (s, s) else cv2.resize(c, (s, s), interpolation=cv2.INTER_LINEAR)
                              for c in crops[i:i + batch_size]])
            out.append(np.asarray(self.teacher.label(batch).age, np.float32))
        return np.concatenate(out) if out else np.zeros(0, np.float32)


def load_teacher(settings) -> TeacherEstimator:
    from agedistill_core.teacher.ensemble import build_teacher

    return TeacherEstimator(build_teacher(settings.teacher, base_dir=settings.params_path.parent),
                            settings.faces.crop_size)


# --- photos ----------------------------------------------------------------------

def default_detector() -> str:
    """``ssd`` (the paper's light SSD) when registered, else ``haar``."""
    from agedistill_core.faces import DETECTORS

    return "ssd" if "ssd" in DETECTORS else "haar"


@dataclass
class PhotoFaces:
    path: str
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    ages: list[float] = field(default_factory=list)
    error: str | None = None
    annotated: str | None = None


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders replaced by their image files (recursive, sorted)."""
    from agedistill_core.datasets.base import list_images

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        out.extend([p / rel for rel in list_images(p)] if p.is_dir() else [p])
    return out


def find_faces(rgb: np.ndarray, detector, *, margin: float, crop_size: int, min_score: float,
               whole_image_fallback: bool = False):
    """Every detected face: (box, score, square+margin crop), largest first."""
    from agedistill_core.faces import crop_square, extract_face, square_box

    if detector is None:  # the photo is the face crop
        fc = extract_face(rgb, None, size=crop_size, margin=margin)
        return [(fc.box, None, fc.crop)]
    found = sorted((d for d in detector(rgb) if d.score >= min_score),
                   key=lambda d: -(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
    if not found and whole_image_fallback:
        fc = extract_face(rgb, None, size=crop_size, margin=margin)
        return [(fc.box, None, fc.crop)]
    return [(tuple(float(v) for v in d.box), float(d.score), crop_square(rgb, square_box(d.box, margin), crop_size))
            for d in found]


def annotate(rgb: np.ndarray, boxes, ages) -> np.ndarray:
    """A copy of ``rgb`` with each face's box and age drawn on it."""
    img = np.ascontiguousarray(rgb.copy())
    thick = max(1, round(min(img.shape[:2]) / 250))
    for (x0, y0, x1, y1), age in zip(boxes, ages):
        p0, p1 = (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1)))
        cv2.rectangle(img, p0, p1, (0, 255, 0), thick)
        text = f"{age:.0f}"
        scale = max(0.5, (x1 - x0) / 120)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = max(p0[1], th + base + 2)
        cv2.rectangle(img, (p0[0], ty - th - base - 2), (p0[0] + tw + 4, ty), (0, 255, 0), -1)
        cv2.putText(img, text, (p0[0] + 2, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick,
                    cv2.LINE_AA)
    return img


def write_image_atomic(rgb: np.ndarray, path: Path, quality: int = 92) -> Path:
    """JPEG (or PNG by suffix) written to a temp file in the same folder, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = ".png" if path.suffix.lower() == ".png" else ".jpg"
    params = [] if ext == ".png" else [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"cannot encode {path}")
    return atomic_write_bytes(path, buf.tobytes())


def _annotated_name(path: Path, inputs_root: Path | None) -> str:
    rel = path.relative_to(inputs_root) if inputs_root and path.is_relative_to(inputs_root) else Path(path.name)
    return "__".join(rel.with_suffix("").parts) + "_age.jpg"


def predict_photos(
    inputs: Iterable[str | Path],
    estimator,
    *,
    detector: str | None = None,
    margin: float = 0.2,
    crop_size: int = 160,
    min_score: float = 0.5,
    annotate_dir: str | Path | None = None,
    whole_image_fallback: bool = False,
    log: Callable[[str], None] = print,
) -> list[PhotoFaces]:
    """Ages of every face in photos and folders of photos; one printed line per face.

    ``estimator``: a ``LoadedStudent`` or ``TeacherEstimator``.  ``detector``:
    a name in ``agedistill_core.faces.DETECTORS`` (default: ``default_detector()``;
    ``none`` = each photo already is a face crop).
    """
    from agedistill_core.faces import make_detector

    name = detector or default_detector()
    det = make_detector(name)  # an unknown name raises ConfigError listing the choices
    results = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            paths, root = expand_inputs([item]), item
            if not paths:
                log(f"{item}: no image files in this folder; skipped")
        else:
            paths, root = [item], None
        for path in paths:
            res = PhotoFaces(str(path))
            results.append(res)
            try:
                rgb = read_image(path)
                faces = find_faces(rgb, det, margin=margin, crop_size=crop_size, min_score=min_score,
                                   whole_image_fallback=whole_image_fallback)
            except (UnreadableImage, OSError) as exc:
                res.error = str(exc) if isinstance(exc, AgedistillError) else f"{path}: {exc}"
                log(f"{res.error}; skipped")
                continue
            if not faces:
                res.error = f"{path}: no face detected (detector {name}); try --detector haar or --detector none"
                log(res.error)
            else:
                res.boxes = [f[0] for f in faces]
                res.scores = [f[1] for f in faces]
                res.ages = [float(a) for a in estimator.predict_crops([f[2] for f in faces])]
                for k, (box, age) in enumerate(zip(res.boxes, res.ages)):
                    bx = ",".join(f"{v:.0f}" for v in box)
                    log(f"{path}\tface {k + 1}/{len(faces)}\tbox {bx}\tage {age:.1f} ({estimator.name})")
            if annotate_dir is not None:
                out = Path(annotate_dir) / _annotated_name(path, root)
                res.annotated = str(write_image_atomic(annotate(rgb, res.boxes, res.ages), out))
    return results
