"""Age every face of photos with a trained student (or the teacher): one inference path.

* ``AgeEstimator``: the one object for inference (``from agedistill import AgeEstimator``).
  ``AgeEstimator().predict(image_or_path)`` -> one ``FaceRow`` per face (box, score, age,
  status); ``predict_paths(paths, workers=...)`` streams photos in order, framing them in a
  process pool and ageing the faces in batches.  ``agedistill predict`` wraps it.
* The model: the shipped ``models/mn3_small_distilled/model.onnx`` on onnxruntime by default
  (``inference.student.load_model``: an ``.onnx`` runs on onnxruntime without torch, a
  ``.pt`` checkpoint through torch), or the profile's teacher (``TeacherEstimator``).
* The framing: the model's own (its metadata's / checkpoint config's ``faces``: the crops it
  was trained on), else the profile's (``framing_for``).  ``frame_faces(rgb, faces)``
  frames every face exactly as the crops stage frames the face it keeps (same detector,
  alignment, margin, crop size, score threshold and whole-image rule, through
  ``faces.extract_face``); face 0 is the crops stage's face, the others follow after
  overlap suppression.  Each crop goes through a JPEG round trip at
  ``faces.jpeg_quality``, as the stored crops the label stage and the students read.
* Rows: CSV or JSON on stdout (``RowWriter``), written as photos finish; messages and
  progress through ``logging`` (``agedistill.predict``) to stderr.  An unreadable file
  (``unreadable``) or one over the decoding cap (``too_large``) costs one row and the run
  goes on.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import multiprocessing
import os
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Iterable, Iterator, TextIO

import cv2
import numpy as np

from agedistill_core.errors import AgedistillError, CheckpointError, ConfigError, UnreadableImage
from agedistill_core.faces import Detection, FaceCrop, extract_face, make_detector
from agedistill_core.faces.align import get_aligner
from agedistill_core.images import denoise_photo, encode_jpeg, max_pixels_default, read_image
from agedistill_core.progress import Progress
from agedistill_core.settings import FaceSettings
from agedistill_core.shards import atomic_write_bytes
from agedistill_core.inference.student import DEFAULT_CHECKPOINT, DEFAULT_ONNX, load_model, metadata_path

log = logging.getLogger("agedistill.predict")

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
            batch = self.teacher.stack(list(crops[i:i + bs]))  # as the label stage (``Teacher.stack_size``)
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
    """``checkpoint`` as given, else the shipped default model: its ``model.onnx`` when it has
    metadata (``model.json``), else its ``best.pt`` (an error naming it when neither is there)."""
    if checkpoint:
        return Path(checkpoint)
    if DEFAULT_ONNX.is_file() and metadata_path(DEFAULT_ONNX).is_file():
        return DEFAULT_ONNX
    path = DEFAULT_CHECKPOINT
    if not path.is_file():
        raise CheckpointError(
            f"no --checkpoint given and the default model {path} is missing; train a student "
            f"(`agedistill --profile utkface train`) and pass --checkpoint data/utkface/students/mn3_small/best.pt, "
            f"or copy it to {path} (`agedistill export --checkpoint {path} --out {path.with_name('model.onnx')}` "
            f"writes its ONNX and metadata), or use --teacher")
    return path


def check_nms_iou(value) -> float:
    """``nms_iou`` as a float in (0, 1]; ``ConfigError`` otherwise (nan, <= 0, > 1)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (math.isfinite(v) and 0 < v <= 1):
        raise ConfigError(f"--nms-iou must be a number in (0, 1] (the overlap above which a second box is the "
                          f"same face), got {value!r}; the default is 0.3")
    return v


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
                detector=None, aligner=None, denoise: bool = False) -> list[FaceCrop]:
    """Every face of ``rgb`` framed as the crops stage frames its face (``crops.crop_one``).

    Face 0 is ``extract_face`` over all detections: the crops stage's choice,
    crop, box, score and status (``ok``, ``whole_image`` or ``no_face`` with its
    reason), by construction.  The other detections at ``cfg.min_score`` or more
    that survive ``suppress_overlaps`` (seeded with face 0) follow, most
    confident (then largest) first, each framed by the same ``extract_face``.
    ``detector`` / ``aligner`` default to the ones ``cfg`` names (made once per
    process).  Returns at least one ``FaceCrop`` (``no_face`` when there is none).
    ``denoise`` (students with the ``area_denoise`` rule): a photo whose noise, read inside face
    0's box, is above the gate is smoothed (``images.denoise_photo``) and every face is framed from
    the smoothed photo, with the same detections.
    """
    det = _detector(cfg.detector) if detector is None else detector
    align = get_aligner(cfg.align, cfg.align_padding) if aligner is None else aligner

    def frame(detections, image=rgb) -> FaceCrop:
        source = None if det is None else (lambda _rgb: detections)
        return extract_face(image, source, size=cfg.crop_size, margin=cfg.margin, min_score=cfg.min_score,
                            whole_image_fallback=cfg.whole_image_fallback,
                            whole_image_max_side=cfg.whole_image_max_side, aligner=align,
                            min_face=cfg.min_face)

    if det is None:  # the image is the face crop
        return [frame(None)]
    found = [d for d in det(rgb) if d.score >= cfg.min_score]
    first = frame(found)
    if denoise and first.box is not None:
        smoothed = denoise_photo(rgb, first.box)
        if smoothed is not rgb:
            rgb = smoothed
            first = frame(found, rgb)
    if first.status != "ok" or not found:
        return [first]
    head = next((d for d in found if tuple(float(v) for v in d.box) == first.box), None)
    rest = [d for d in found if d is not head]
    rest.sort(key=lambda d: (round(d.score, 2), (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])), reverse=True)
    seed = [head] if head is not None else [Detection(first.box, first.score or 0.0)]
    kept = suppress_overlaps(seed + rest, nms_iou)
    return [first] + [frame([d], rgb) for d in kept[1:]]


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


# --- photos ----------------------------------------------------------------------

@dataclass
class FaceRow:
    """One result row: a face of a photo, or a photo without a usable face."""
    path: str
    face: int | None                 # 0, 1, ... (0 = the crops stage's face); None without a face
    box: tuple[float, float, float, float] | None
    score: float | None
    age: float | None
    status: str                      # ok | whole_image | no_face | too_small | unreadable | too_large
    reason: str | None = None


@dataclass
class FramedPhoto:
    """One photo framed: its rows (ages not yet filled) and the JPEG of each face with a crop."""
    path: str
    rows: list[FaceRow]
    jpegs: list[bytes]


def frame_photo(image, cfg: FaceSettings, *, nms_iou: float = 0.3, max_pixels: int | None = None,
                detector=None, aligner=None, name: str | None = None, denoise: bool = False) -> FramedPhoto:
    """Read (a path) or take (an RGB uint8 array) one photo and frame every face in it
    (``denoise``: as ``frame_faces``)."""
    if isinstance(image, np.ndarray):
        rgb, path = _check_array(image), name or "<array>"
    else:
        path = str(image)
        try:
            rgb = read_image(Path(image), max_pixels)
        except UnreadableImage as exc:
            return FramedPhoto(path, [FaceRow(path, None, None, None, None, getattr(exc, "status", "unreadable"),
                                              str(exc))], [])
    found = frame_faces(rgb, cfg, nms_iou=nms_iou, detector=detector, aligner=aligner, denoise=denoise)
    usable = [f for f in found if f.crop is not None]
    if not usable:
        fc = found[0]
        return FramedPhoto(path, [FaceRow(path, None, None, None, None, fc.status, fc.reason)], [])
    rows = [FaceRow(path, k, tuple(float(v) for v in fc.box), fc.score, None, fc.status, fc.reason)
            for k, fc in enumerate(usable)]
    return FramedPhoto(path, rows, [encode_jpeg(f.crop, cfg.jpeg_quality) for f in usable])


def _check_array(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(f"an image array must be uint8 RGB (H, W, 3), got {image.dtype} {image.shape}; "
                          f"convert it (e.g. cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) or pass the file's path")
    return np.ascontiguousarray(image)


# How pool workers start.  Forked when neither onnxruntime nor torch is loaded yet (as in
# `agedistill predict` with an ONNX model: the pool starts before the first face is aged): 0.7 s
# for two workers on a loaded 2-core machine.  Forking after an onnxruntime session has run with
# its thread pool makes the workers hang, so otherwise they are spawned (3.7 s: each imports cv2,
# dlib and the core again).
def pool_context():
    if "fork" in multiprocessing.get_all_start_methods() and not {"onnxruntime", "torch"} & set(sys.modules):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


# The framing state of a pool worker (set once by _worker_init).
_WORKER: dict = {}


def _worker_init(cfg: FaceSettings, nms_iou: float, max_pixels: int | None, denoise: bool = False) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it ends the pool, quietly
    cv2.setNumThreads(1)  # one photo per process: the pool is the parallelism
    _WORKER.update(cfg=cfg, nms_iou=nms_iou, max_pixels=max_pixels, denoise=denoise, detector=_detector(cfg.detector),
                   aligner=get_aligner(cfg.align, cfg.align_padding))


def _worker_frame(path: str) -> FramedPhoto:
    w = _WORKER
    return frame_photo(path, w["cfg"], nms_iou=w["nms_iou"], max_pixels=w["max_pixels"],
                       detector=w["detector"], aligner=w["aligner"], denoise=w["denoise"])


def default_workers() -> int:
    """All the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class AgeEstimator:
    """Ages of the faces in photos: the shipped student by default (onnxruntime, no torch).

        from agedistill import AgeEstimator
        est = AgeEstimator()                       # models/mn3_small_distilled/model.onnx
        for face in est.predict("photo.jpg"):      # or an RGB uint8 array
            print(face.box, face.score, face.age, face.status)

    ``model``: a ``.onnx`` (with its metadata) or ``.pt`` student, or None for the shipped
    model; ``teacher=True`` uses the profile's teacher instead (``settings`` needed, or the
    default profile of ./params.yaml).  The framing is the model's own (``faces`` of its
    metadata or checkpoint config: what its training crops were), else ``faces`` /
    ``settings.faces``; ``detector`` overrides the detector.  ``workers`` (default 1 here,
    all cores in the CLI) frames photos of ``predict_paths`` in that many processes
    (spawned once onnxruntime or torch is loaded, see ``pool_context``: guard a script's entry
    point with ``if __name__ == "__main__":``).
    ``max_pixels``: the decoding cap (None: ``$AGEDISTILL_MAX_PIXELS`` or 50 MP; 0: none).
    ``denoise`` (attribute): noisy photos are smoothed at their own scale before framing
    (``frame_faces``); True for a student with the ``area_denoise`` input rule (the shipped one).
    """

    def __init__(self, model: str | Path | None = None, *, teacher: bool = False, settings=None,
                 faces: FaceSettings | None = None, detector: str | None = None, nms_iou: float = 0.3,
                 workers: int | None = 1, max_pixels: int | None = None, batch_size: int = 64,
                 threads: int = 0):
        self.nms_iou = check_nms_iou(nms_iou)
        self.workers = default_workers() if workers in (None, 0) else int(workers)
        if self.workers < 1:
            raise ConfigError(f"workers must be 1 or more (0 or None: all cores), got {workers!r}")
        self.max_pixels = max_pixels_default() if max_pixels is None else int(max_pixels)
        self.batch_size = int(batch_size)
        if callable(settings):  # a loader: called only when the profile is needed (teacher, no framing)
            loader, settings = settings, None
        else:
            loader = None

        def profile():
            nonlocal settings
            if settings is None:
                if loader is not None:
                    settings = loader()
                else:
                    from agedistill_core.settings import load_settings
                    settings = load_settings()
            return settings

        if teacher:
            self.model, config, self.model_path = load_teacher(profile()), None, None
        else:
            self.model_path = resolve_checkpoint(model)
            self.model = load_model(self.model_path, threads)
            config = self.model.config
        recorded = isinstance((config or {}).get("faces"), dict)
        base = faces
        if base is None and settings is not None:
            base = settings.faces
        if base is None and not recorded:  # the model does not say how it frames faces: the profile does
            base = profile().faces
        self.settings = settings
        self.faces, self.framing_source = framing_for(base if base is not None else FaceSettings(), config, detector)
        # a student whose input rule smooths noisy crops (area_denoise) also has noisy photos smoothed
        # at their own scale before framing (frame_faces); the teacher and other students see them as they are
        self.denoise = getattr(self.model, "resize", None) == "area_denoise"
        self._detector = _detector(self.faces.detector)  # a bad detector / missing model fails here, once
        self._aligner = get_aligner(self.faces.align, self.faces.align_padding)

    @property
    def name(self) -> str:
        return self.model.name

    def describe(self) -> str:
        return describe_framing(self.faces)

    def frame(self, image, name: str | None = None) -> FramedPhoto:
        return frame_photo(image, self.faces, nms_iou=self.nms_iou, max_pixels=self.max_pixels,
                           detector=self._detector, aligner=self._aligner, name=name, denoise=self.denoise)

    def age(self, photos: list[FramedPhoto]) -> list[FramedPhoto]:
        """Fill the ages of framed photos: one batched model call for all their faces."""
        jpegs = [j for p in photos for j in p.jpegs]
        ages = iter(self.model.predict_jpegs(jpegs, self.batch_size).tolist() if jpegs else [])
        for p in photos:
            if p.jpegs:
                for row in p.rows:
                    row.age = float(next(ages))
        return photos

    def predict(self, image_or_path, name: str | None = None) -> list[FaceRow]:
        """Every face of one photo (a path, or an RGB uint8 array): a ``FaceRow`` each, or one
        row with the photo's status (``no_face``, ``unreadable``, ``too_large``, ...)."""
        return self.age([self.frame(image_or_path, name)])[0].rows

    def predict_paths(self, paths: Iterable[str | Path], workers: int | None = None,
                      progress: bool = True) -> Iterator[FramedPhoto]:
        """The photos of ``paths``, in order, each with its rows aged, as they are ready.

        With more than one worker, photos are read, detected and aligned in a process pool
        (``pool_context``) and the faces of the photos ready at the same time are aged in one batch."""
        paths = [str(p) for p in paths]
        n = self.workers if workers is None else (default_workers() if workers == 0 else int(workers))
        n = max(1, min(n, len(paths)))
        bar = Progress(len(paths), "predict", "photo", logger=log, every=200, enabled=progress)
        try:
            if n == 1:
                for p in paths:
                    yield self.age([self.frame(p)])[0]
                    bar.update()
                return
            ctx = pool_context()
            init = (self.faces, self.nms_iou, self.max_pixels, self.denoise)
            with ctx.Pool(n, initializer=_worker_init, initargs=init) as pool:
                it = pool.imap(_worker_frame, paths, chunksize=1)
                done = 0
                while done < len(paths):
                    ready = [it.next()]  # the next photo in order (blocks)
                    faces = len(ready[0].jpegs)
                    while done + len(ready) < len(paths) and faces < self.batch_size:
                        try:
                            ready.append(it.next(timeout=0))  # and the ones already framed after it
                        except multiprocessing.TimeoutError:
                            break
                        faces += len(ready[-1].jpegs)
                    for photo in self.age(ready):
                        yield photo
                    done += len(ready)
                    bar.update(len(ready))
        finally:
            bar.close()


def predict_photos(inputs: Iterable[str | Path], estimator: AgeEstimator, *, annotate_dir: str | Path | None = None,
                   writer: RowWriter | None = None, workers: int | None = None,
                   progress: bool = True) -> list[FaceRow]:
    """What ``agedistill predict`` does: every face of photos and folders of photos, one row a face.

    Rows go to ``writer`` as photos finish (and are returned); messages to the
    ``agedistill.predict`` logger; annotated copies (box + age) to ``annotate_dir``."""
    names = AnnotatedNames()
    items: list[tuple[Path, Path | None]] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = expand_inputs([item])
            if not found:
                log.info(f"{item}: no image files in this folder; skipped")
            items += [(p, item) for p in found]
        else:
            items.append((item, None))
    rows: list[FaceRow] = []
    for (path, root), photo in zip(items, estimator.predict_paths([p for p, _ in items], workers, progress)):
        for row in photo.rows:
            rows.append(row)
            if writer is not None:
                writer.write(row)
        if annotate_dir is not None:
            out = Path(annotate_dir) / names(path, root)
            aged = [r for r in photo.rows if r.face is not None]
            if photo.rows[0].status in ("unreadable", "too_large"):
                continue
            try:
                rgb = read_image(path, estimator.max_pixels)
            except UnreadableImage:  # replaced or removed since it was framed
                continue
            try:
                write_image_atomic(annotate(rgb, [r.box for r in aged], [r.age for r in aged]), out)
            except (OSError, ValueError) as exc:
                raise AgedistillError(f"cannot write the annotated copy {out} ({exc})") from None
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    log.info(f"predict: {len(items)} photo(s), {sum(r.face is not None for r in rows)} face(s) "
             f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items())) or 'nothing'}) with {estimator.name}"
             + (f"; annotated copies in {annotate_dir}" if annotate_dir is not None else ""))
    return rows
