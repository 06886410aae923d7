"""Image decoding and encoding with errors a long run can record and skip."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from agedistill_core.errors import UnreadableImage


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Encoded bytes -> uint8 RGB (H, W, 3).  Raises UnreadableImage with a reason."""
    if data is None or len(data) == 0:
        raise UnreadableImage(f"{name}: empty file (0 bytes)")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise UnreadableImage(f"{name}: not a decodable image ({len(data)} bytes)")
    if _truncated_jpeg(data):
        raise UnreadableImage(f"{name}: truncated JPEG (no end-of-image marker)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _truncated_jpeg(data: bytes) -> bool:
    # OpenCV decodes a truncated JPEG into a grey-padded image with only a
    # warning; such a face would silently poison the labels, so we refuse it.
    return data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]


def read_image(path: Path) -> np.ndarray:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableImage(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, str(path))


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def encode_png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Square resize: area averaging when shrinking, bilinear when growing."""
    h, w = rgb.shape[:2]
    if (h, w) == (size, size):
        return rgb
    interp = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)
