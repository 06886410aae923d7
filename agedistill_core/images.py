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
    """True for a JPEG with no end-of-image marker after its first scan.

    OpenCV decodes a truncated JPEG into a grey-padded image with only a
    warning; such a face would silently poison the labels, so we refuse it.
    Bytes after the end marker (camera or editor trailers, a second appended
    image) are fine: the marker is looked for anywhere after the first
    start-of-scan, not only at the very end of the file.  Inside the scan data
    0xFF is always followed by 0x00 or a restart marker, so 0xFFD9 there is the
    real end marker; an EXIF thumbnail's own end marker comes before the scan
    and does not count.
    """
    if data[:2] != b"\xff\xd8":
        return False
    sos = _first_scan(data)
    return data.find(b"\xff\xd9", sos if sos is not None else 2) < 0


def _first_scan(data: bytes) -> int | None:
    """Offset of the first start-of-scan marker (walking the segments), or None."""
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None  # not a marker where one must be: let the caller search the whole file
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:
            return pos
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        if marker == 0xD9:  # end of image before any scan
            return pos
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return None


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
