"""Face detectors behind one registry.  A detector: ``rgb -> list[Detection]``."""
from __future__ import annotations

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
