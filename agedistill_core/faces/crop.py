"""From a detection to the stored crop: enclosing square + margin, padded, bilinear."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


@dataclass
class Detection:
    box: Box
    score: float
    landmarks: np.ndarray | None = None  # (5, 2) x, y when the detector gives them


@dataclass
class FaceCrop:
    status: str                     # ok | whole_image | no_face | too_small
    crop: np.ndarray | None         # uint8 (size, size, 3) RGB, None when no (usable) face
    box: Box | None = None
    score: float | None = None
    landmarks: np.ndarray | None = None
    reason: str | None = None
    extra: dict = field(default_factory=dict)


def square_box(box: Box, margin: float) -> Box:
    """The box's enclosing square (same centre), grown by ``margin`` x side on each side."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = side * (0.5 + margin)
    return (cx - half, cy - half, cx + half, cy + half)


def crop_square(rgb: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Resample the square ``box`` of ``rgb`` to ``size`` x ``size``, bilinear.

    Parts of the box outside the image are padded by edge replication.  One
    affine warp does crop, pad and resize together; when shrinking a lot, the
    image is first area-averaged so the bilinear sampling does not alias.
    """
    x0, y0, x1, y1 = box
    scale = size / max(x1 - x0, 1e-6)
    src = rgb
    if scale < 0.5:  # pre-shrink by an integer-ish factor for anti-aliasing
        f = max(1, int(1 / scale / 1.5))
        if f > 1:
            h, w = rgb.shape[:2]
            src = cv2.resize(rgb, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
            sx, sy = src.shape[1] / w, src.shape[0] / h
            x0, x1, y0, y1 = x0 * sx, x1 * sx, y0 * sy, y1 * sy
            scale = size / max(x1 - x0, 1e-6)
    # pixel centres: output pixel i covers source x0 + (i + 0.5) / scale - 0.5
    m = np.array([[scale, 0, -(x0 - 0.5) * scale - 0.5],
                  [0, scale, -(y0 - 0.5) * scale - 0.5]], dtype=np.float64)
    return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def extract_face(
    rgb: np.ndarray,
    detector: Callable[[np.ndarray], list[Detection]] | None,
    *,
    size: int,
    margin: float,
    min_score: float = 0.5,
    whole_image_fallback: bool = True,
    whole_image_max_side: int | None = None,
    aligner=None,
    min_face: int | None = None,
) -> FaceCrop:
    """Detect, choose the most confident (then largest) face, crop it.

    ``detector=None`` means the image already is the face crop (framing kept).
    With no detection, ``whole_image_fallback`` treats the whole image as the
    face box (for data sets of crops the detector misses); otherwise the image
    is recorded as ``no_face``.  The fallback applies only to images whose
    longer side is at most ``whole_image_max_side`` (crops): a larger image is a
    photo, and a photo without a face is ``no_face``, never a "face".

    ``aligner`` (e.g. ``faces.align.Dlib5Aligner``) replaces the square +
    margin framing: its landmarks are found inside the chosen box (the
    detection, or the whole image) and the crop is its aligned chip.

    ``min_face`` (pixels; ``faces.min_face``): a face box whose shorter side is
    smaller is too small to age.  Detections under it are set aside like
    low-score ones (the whole-image rule above then applies to a crop-sized
    image); the result is ``too_small``, with the size in the reason and no
    crop, when the box it would use (the whole image, or the largest small
    detection of a photo or without the fallback) is under it.  ``None`` (the
    default) checks nothing.
    """
    h, w = rgb.shape[:2]
    if detector is None:
        box, status, reason = _whole(w, h), "ok", "no detector: the image is the crop"
        score = None
        if _small(box, min_face):
            return _too_small(box, None, min_face, f"the image is {w}x{h} px, so its face box")
    else:
        found = [d for d in detector(rgb) if d.score >= min_score]
        small = [d for d in found if _small(d.box, min_face)]
        found = [d for d in found if not _small(d.box, min_face)]
        if not found:
            photo = whole_image_max_side is not None and max(h, w) > whole_image_max_side
            if small and (photo or not whole_image_fallback):
                big = max(small, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
                return _too_small(tuple(float(v) for v in big.box), float(big.score), min_face,
                                  f"the largest face found ({len(small)} in a {w}x{h} px image)")
            if not whole_image_fallback:
                return FaceCrop("no_face", None, reason="no face detected")
            if photo:
                return FaceCrop("no_face", None, reason=(
                    f"no face detected; a {w}x{h} image is larger than faces.whole_image_max_side="
                    f"{whole_image_max_side}, so it is treated as a photo, not a crop"))
            box, status, score = _whole(w, h), "whole_image", None
            reason = "no face detected; whole image used as the face box"
            if small:
                sb = max(small, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])).box
                reason = (f"the face found ({sb[2] - sb[0]:.0f}x{sb[3] - sb[1]:.0f} px) is smaller than "
                          f"faces.min_face={min_face} px; whole image used as the face box")
            if _small(box, min_face):
                return _too_small(box, None, min_face,
                                  f"{f'no face of {min_face} px or more' if small else 'no face'} detected, "
                                  f"and the {w}x{h} px image used whole")
        else:
            best = max(found, key=lambda d: (round(d.score, 2), (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])))
            box, status, score, reason = tuple(float(v) for v in best.box), "ok", float(best.score), None
            if aligner is None:
                return FaceCrop("ok", crop_square(rgb, square_box(best.box, margin), size), box=box,
                                score=score, landmarks=best.landmarks)
    if aligner is not None:
        crop, landmarks = aligner.chip(rgb, box, size)
        return FaceCrop(status, crop, box=box, score=score, landmarks=landmarks,
                        reason=reason if reason is None else reason + "; landmark-aligned chip")
    return FaceCrop(status, crop_square(rgb, box, size), box=box, score=score, reason=reason)


def _small(box: Box, min_face: int | None) -> bool:
    """Is the box's shorter side under ``min_face`` pixels?"""
    return min_face is not None and min(box[2] - box[0], box[3] - box[1]) < min_face


def _too_small(box: Box, score: float | None, min_face: int, what: str) -> FaceCrop:
    bw, bh = box[2] - box[0], box[3] - box[1]
    return FaceCrop("too_small", None, box=box, score=score, reason=(
        f"{what} is {bw:.0f}x{bh:.0f} px, smaller than faces.min_face={min_face} px: too small to age; "
        f"use a larger image, or lower faces.min_face to keep it"))


def _whole(w: int, h: int) -> Box:
    """The whole image as a square box (centre square when not square)."""
    side = min(w, h)
    x0, y0 = (w - side) / 2, (h - side) / 2
    return (x0, y0, x0 + side, y0 + side)
