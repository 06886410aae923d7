"""Run a trained student (or the teacher) on face crops and on photos: one inference path.

* ``load_student(checkpoint) -> LoadedStudent``: ``predict_crops`` / ``predict_jpegs``,
  the students' evaluation input pipeline (validation path of ``students.data.FaceDataset``).
* ``load_teacher(settings) -> TeacherEstimator``: the labelling teacher, same interface,
  the label stage's input pipeline (``labels.label_crops``).
* ``frame_faces(rgb, faces_settings)``: every face of a photo framed exactly as the
  crops stage frames the face it keeps (same detector, alignment, margin, crop size,
  score threshold and whole-image rule, through ``faces.extract_face``); face 0 is
  the face the crops stage chooses, the others follow after overlap suppression.
* ``predict_photos(paths, estimator, faces_settings, ...)``: what ``agedistill predict``
  does: frame every face of each photo (or folder of photos), JPEG round trip at
  ``faces.jpeg_quality`` as the stored crops have, age, one row per face (CSV or
  JSON on stdout), optionally an annotated copy (box + age) written atomically.
  An unreadable file costs one row and the run goes on.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, Iterable, TextIO

import cv2
import numpy as np

from agedistill_core.errors import AgedistillError, CheckpointError, UnreadableImage
from agedistill_core.faces import Detection, FaceCrop, extract_face, make_detector
from agedistill_core.faces.align import get_aligner
from agedistill_core.images import encode_jpeg, read_image, resize
from agedistill_core.settings import FaceSettings
from agedistill_core.shards import atomic_write_bytes
from agedistill_core.students.inference import DEFAULT_CHECKPOINT

@dataclass
class TeacherEstimator:
    """The labelling teacher (profile's ``teacher`` section) behind the student interface."""
    teacher: object
    batch_size: int = 64
    name: str = "teacher"

    @property
    def input_size(self) -> int:
        return max(self.teacher.input_sizes)

    def predict_crops(self, crops: list[np.ndarray], batch_size: int | None = None) -> np.ndarray:
        """Ages for decoded uint8 RGB crops, resized as the label stage resizes them."""
        bs = batch_size or self.batch_size
        out = []
        for i in range(0, len(crops), bs):
            batch = np.stack([resize(c, self.input_size) for c in crops[i:i + bs]])
            out.append(np.asarray(self.teacher.label(batch).age, np.float32))
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def predict_jpegs(self, jpegs: list[bytes], batch_size: int | None = None) -> np.ndarray:
        """Ages for JPEG crops through the label stage's own function (``labels.label_crops``)."""
        from agedistill_core.teacher.label import label_crops

        ages = np.full(len(jpegs), np.nan, np.float32)
        outputs, kept = label_crops(self.teacher, jpegs, [f"crop {i}" for i in range(len(jpegs))],
                                    batch_size=batch_size or self.batch_size, prefetch=False)
        if outputs:
            ages[kept] = np.concatenate([o.age for o in outputs]).astype(np.float32)
        return ages


def load_teacher(settings) -> TeacherEstimator:
    """The teacher the label stage uses for ``settings`` (same cache, same members)."""
    from agedistill_core.teacher.label import get_teacher

    return TeacherEstimator(get_teacher(settings), settings.teacher.batch_size)


# --- which model, which framing ---------------------------------------------------

def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """``checkpoint`` as given, else the shipped default model (an error naming it when missing)."""
    if checkpoint:
        return Path(checkpoint)
    path = DEFAULT_CHECKPOINT
    if not path.is_file():
        raise CheckpointError(
            f"no --checkpoint given and the default model {path} is missing; train a student "
            f"(`agedistill --profile utkface train`) and pass --checkpoint data/utkface/students/mn3_small/best.pt, "
            f"or copy it to {path} (`agedistill export --checkpoint {path} --out {path.with_name('model.onnx')}` "
            f"writes its ONNX), or use --teacher")
    return path


def framing_for(profile_faces: FaceSettings, config: dict | None = None,
                detector: str | None = None) -> tuple[FaceSettings, str]:
    """The face settings predict frames with, and where they came from (``profile`` or ``checkpoint``).

    A checkpoint whose config records ``faces`` (the settings of the crops it was
    trained on) wins over the profile's; ``detector`` (``--detector``) then
    overrides the detector.
    """
    faces, source = profile_faces, "profile"
    recorded = (config or {}).get("faces")
    if isinstance(recorded, dict):
        known = {f.name for f in fields(FaceSettings)}
        faces, source = replace(profile_faces, **{k: v for k, v in recorded.items() if k in known}), "checkpoint"
    if detector:
        faces = replace(faces, detector=detector)
    return faces, source


def describe_framing(faces: FaceSettings) -> str:
    how = f"{faces.detector}+{faces.align}" if faces.align != "none" else f"{faces.detector}, margin {faces.margin}"
    return f"{how}, crop {faces.crop_size}, min score {faces.min_score}, JPEG q{faces.jpeg_quality}"


# --- framing: the crops stage's, for every face ------------------------------------

_DETECTORS: dict[str, object] = {}


def _detector(name: str):
    if name not in _DETECTORS:
        _DETECTORS[name] = make_detector(name)  # an unknown name raises ConfigError listing the choices
    return _DETECTORS[name]


def iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
             - inter)
    return inter / union if union > 0 else 0.0


def suppress_overlaps(detections: list[Detection], threshold: float = 0.3) -> list[Detection]:
    """Greedy non-maximum suppression in the given order (first = kept first): a box
    whose IoU with a kept box exceeds ``threshold`` is dropped."""
    kept: list[Detection] = []
    for d in detections:
        if all(iou(d.box, k.box) <= threshold for k in kept):
            kept.append(d)
    return kept


def frame_faces(rgb: np.ndarray, cfg: FaceSettings, *, nms_iou: float = 0.3,
                detector=None, aligner=None) -> list[FaceCrop]:
    """Every face of ``rgb`` framed as the crops stage frames its face (``crops._crop_one``).

    Face 0 is ``extract_face`` over all detections: the crops stage's choice,
    crop, box, score and status (``ok``, ``whole_image`` or ``no_face`` with its
    reason), by construction.  The other detections at ``cfg.min_score`` or more
    that survive ``suppress_overlaps`` (seeded with face 0) follow, most
    confident (then largest) first, each framed by the same ``extract_face``.
    ``detector`` / ``aligner`` default to the ones ``cfg`` names (made once per
    process).  Returns at least one ``FaceCrop`` (``no_face`` when there is none).
    """
    det = _detector(cfg.detector) if detector is None else detector
    align = get_aligner(cfg.align, cfg.align_padding) if aligner is None else aligner

    def frame(detections) -> FaceCrop:
        source = None if det is None else (lambda _rgb: detections)
        return extract_face(rgb, source, size=cfg.crop_size, margin=cfg.margin, min_score=cfg.min_score,
                            whole_image_fallback=cfg.whole_image_fallback,
                            whole_image_max_side=cfg.whole_image_max_side, aligner=align,
                            min_face=cfg.min_face)

    if det is None:  # the image is the face crop
        return [frame(None)]
    found = [d for d in det(rgb) if d.score >= cfg.min_score]
    first = frame(found)
    if first.status != "ok" or not found:
        return [first]
    head = next((d for d in found if tuple(float(v) for v in d.box) == first.box), None)
    rest = [d for d in found if d is not head]
    rest.sort(key=lambda d: (round(d.score, 2), (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])), reverse=True)
    seed = [head] if head is not None else [Detection(first.box, first.score or 0.0)]
    kept = suppress_overlaps(seed + rest, nms_iou)
    return [first] + [frame([d]) for d in kept[1:]]


# --- photos ----------------------------------------------------------------------

@dataclass
class FaceRow:
    """One output row: a face of a photo, or a photo without a usable face."""
    path: str
    face: int | None                 # 0, 1, ... (0 = the crops stage's face); None without a face
    box: tuple[float, float, float, float] | None
    score: float | None
    age: float | None
    status: str                      # ok | whole_image | no_face | too_small | unreadable
    reason: str | None = None


CSV_COLUMNS = ("path", "face", "x0", "y0", "x1", "y1", "score", "age", "status", "reason")


def _num(v, fmt: str) -> str:
    return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)


class RowWriter:
    """Rows to a stream as CSV (header + one line a row) or a JSON array, flushed per row.

    Nothing is written before the first row, so an error at start-up leaves
    stdout empty; ``close`` ends the JSON array (or writes the lone CSV header).
    """

    def __init__(self, stream: TextIO, fmt: str = "csv"):
        if fmt not in ("csv", "json"):
            raise ValueError(f"format must be csv or json, got {fmt!r}")
        self.stream, self.fmt, self.n = stream, fmt, 0

    def _line(self, values) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        self.stream.write(buf.getvalue())

    def write(self, row: FaceRow) -> None:
        if self.fmt == "csv":
            if self.n == 0:
                self._line(CSV_COLUMNS)
            box = row.box or (None,) * 4
            self._line([row.path, "" if row.face is None else row.face, *(_num(v, ".1f") for v in box),
                        _num(row.score, ".4f"), _num(row.age, ".2f"), row.status, row.reason or ""])
        else:
            obj = {"path": row.path, "face": row.face,
                   "box": None if row.box is None else [round(float(v), 2) for v in row.box],
                   "score": None if row.score is None else round(float(row.score), 4),
                   "age": None if row.age is None or not np.isfinite(row.age) else round(float(row.age), 4),
                   "status": row.status, "reason": row.reason}
            self.stream.write(("[\n  " if self.n == 0 else ",\n  ") + json.dumps(obj))
        self.n += 1
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("[]\n" if self.n == 0 else "\n]\n")
        elif self.n == 0:
            self._line(CSV_COLUMNS)
        self.stream.flush()


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders replaced by their image files (recursive, sorted)."""
    from agedistill_core.datasets.base import list_images

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        out.extend([p / rel for rel in list_images(p)] if p.is_dir() else [p])
    return out


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


class AnnotatedNames:
    """Output names for annotated copies, unique within one run.

    A photo's name keeps its whole file name, suffix included (``face.bmp`` ->
    ``face.bmp_age.jpg``, so ``face.bmp`` / ``face.tiff`` / ``face.webp`` differ);
    inside a folder given on the command line, its sub-folders are part of the name
    (``sub/face.jpg`` -> ``sub__face.jpg_age.jpg``).  A name already used in this
    run (same file name in two folders given separately; names equal but for case,
    for case-insensitive file systems) gets ``-2``, ``-3``, ... before ``_age.jpg``.
    """

    def __init__(self):
        self.used: set[str] = set()

    def __call__(self, path: Path, inputs_root: Path | None = None) -> str:
        rel = path.relative_to(inputs_root) if inputs_root and path.is_relative_to(inputs_root) else Path(path.name)
        stem = "__".join(rel.parts)
        name, k = f"{stem}_age.jpg", 1
        while name.casefold() in self.used:
            k += 1
            name = f"{stem}-{k}_age.jpg"
        self.used.add(name.casefold())
        return name


def predict_photos(
    inputs: Iterable[str | Path],
    estimator,
    faces: FaceSettings,
    *,
    annotate_dir: str | Path | None = None,
    writer: RowWriter | None = None,
    nms_iou: float = 0.3,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
) -> list[FaceRow]:
    """Ages of every face in photos and folders of photos; one row per face.

    ``estimator``: a ``LoadedStudent`` or ``TeacherEstimator`` (``predict_jpegs``).
    ``faces``: the framing (a profile's ``faces`` settings, see ``framing_for``).
    Each face's crop goes through a JPEG round trip at ``faces.jpeg_quality``,
    as the stored crops the label stage and the students read.  Rows go to
    ``writer`` as they come (and are returned); messages go to ``log`` (stderr).
    """
    det = _detector(faces.detector)  # a bad detector / missing model fails here, once
    aligner = get_aligner(faces.align, faces.align_padding)
    names = AnnotatedNames()
    rows: list[FaceRow] = []

    def emit(row: FaceRow) -> None:
        rows.append(row)
        if writer is not None:
            writer.write(row)

    for item in inputs:
        item = Path(item)
        if item.is_dir():
            paths, root = expand_inputs([item]), item
            if not paths:
                log(f"{item}: no image files in this folder; skipped")
        else:
            paths, root = [item], None
        for path in paths:
            try:
                rgb = read_image(path)
            except UnreadableImage as exc:
                emit(FaceRow(str(path), None, None, None, None, "unreadable", str(exc)))
                continue
            found = frame_faces(rgb, faces, nms_iou=nms_iou, detector=det, aligner=aligner)
            usable = [f for f in found if f.crop is not None]
            ages = (estimator.predict_jpegs([encode_jpeg(f.crop, faces.jpeg_quality) for f in usable])
                    if usable else [])
            if not usable:
                fc = found[0]
                emit(FaceRow(str(path), None, None, None, None, fc.status, fc.reason))
            for k, (fc, age) in enumerate(zip(usable, ages)):
                emit(FaceRow(str(path), k, tuple(float(v) for v in fc.box), fc.score, float(age), fc.status,
                             fc.reason))
            if annotate_dir is not None:
                out = Path(annotate_dir) / names(path, root)
                try:
                    write_image_atomic(annotate(rgb, [f.box for f in usable], [float(a) for a in ages]), out)
                except (OSError, ValueError) as exc:
                    raise AgedistillError(f"cannot write the annotated copy {out} ({exc})") from None
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    n_photos = len({r.path for r in rows})
    log(f"predict: {n_photos} photo(s), {sum(r.face is not None for r in rows)} face(s) "
        f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items())) or 'nothing'}) with {estimator.name}"
        + (f"; annotated copies in {annotate_dir}" if annotate_dir is not None else ""))
    return rows
