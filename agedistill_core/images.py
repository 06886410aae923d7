"""Image decoding and encoding with errors a long run can record and skip.

Decoding is capped: an image that declares more than ``max_pixels`` pixels (default
``DEFAULT_MAX_PIXELS``, 50 MP; environment ``AGEDISTILL_MAX_PIXELS``; 0 = no cap) is
refused from its header, before any pixel is decoded (``TooLargeImage``, status
``too_large``): a 100 KB PNG can declare 30000 x 30000 pixels and take 10 GB to decode.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import cv2
import numpy as np

from agedistill_core.errors import UnreadableImage

DEFAULT_MAX_PIXELS = 50_000_000
VGGFACE2_MEAN_RGB = (131.0912, 103.8827, 91.4953)  # SPEC 2: subtracted from RGB faces, no division by std
MAX_PIXELS_ENV = "AGEDISTILL_MAX_PIXELS"


class TooLargeImage(UnreadableImage):
    """An image larger than the decoding cap (recorded as status ``too_large``)."""
    status = "too_large"


def max_pixels_default() -> int:
    """The decoding cap: ``$AGEDISTILL_MAX_PIXELS`` when set (0 = no cap), else ``DEFAULT_MAX_PIXELS``."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        value = -1
    if value < 0:
        from agedistill_core.errors import ConfigError
        raise ConfigError(f"{MAX_PIXELS_ENV}={raw!r} is not a pixel count; set a whole number "
                          f"(e.g. {DEFAULT_MAX_PIXELS}; 0 = no cap) or unset it")
    return value


def declared_size(data: bytes) -> tuple[str, int] | None:
    """(``"WxH"``, pixel count) from the image header without decoding pixels (PIL), or None
    when PIL does not know the format (OpenCV may still decode it)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: we apply our own cap
            with Image.open(io.BytesIO(data)) as im:
                w, h = int(im.size[0]), int(im.size[1])
                return f"{w}x{h}", w * h
    except Image.DecompressionBombError as exc:  # over PIL's own hard limit (179 MP): no size given
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
            return f"{w}x{h}", w * h
        import re

        m = re.search(r"\((\d+) pixels\)", str(exc))
        return "declared size", int(m.group(1)) if m else 2**62
    except Exception:  # noqa: BLE001 - unknown or broken header: OpenCV decides below
        return None


def _check_pixels(size: str, pixels: int, name: str, max_pixels: int) -> None:
    if max_pixels and pixels > max_pixels:
        raise TooLargeImage(
            f"{name}: {size} = {pixels / 1e6:.0f} MP is more than the {max_pixels / 1e6:g} MP decoding cap "
            f"(a decompression bomb, or a huge photo); shrink the image, or raise the cap with "
            f"{MAX_PIXELS_ENV}=<pixels> (predict: --max-pixels)")


def decode_image(data: bytes, name: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """Encoded bytes -> uint8 RGB (H, W, 3).  Raises UnreadableImage with a reason
    (``TooLargeImage`` over ``max_pixels``; None = ``max_pixels_default()``, 0 = no cap)."""
    if data is None or len(data) == 0:
        raise UnreadableImage(f"{name}: empty file (0 bytes)")
    cap = max_pixels_default() if max_pixels is None else int(max_pixels)
    if cap:
        declared = declared_size(data)
        if declared is not None:
            _check_pixels(*declared, name, cap)
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise UnreadableImage(f"{name}: not a decodable image ({len(data)} bytes)")
    if cap:
        _check_pixels(f"{img.shape[1]}x{img.shape[0]}", img.shape[0] * img.shape[1], name, cap)
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


def read_image(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """A file -> uint8 RGB; ``max_pixels`` as in ``decode_image``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableImage(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, str(path), max_pixels)


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


# How a student's input is made from a face crop: one rule per student, recorded in its training
# config (``students.resize``) and in an exported model's metadata, so that training, evaluation,
# ``predict`` and ONNX all resize alike.  ``bilinear``: cv2's INTER_LINEAR, every student before the
# rule existed (a 160 -> 96 px shrink passes pixel noise through almost whole).  ``area``: area
# averaging when shrinking (noise averaged away, as in the teacher's input), bilinear when growing.
# ``area_denoise``: ``area``, after smoothing a crop whose estimated pixel noise is above
# ``NOISE_GATE`` (``denoise``); a clean photo's crop is left exactly as ``area`` sees it.  When
# ``predict`` frames a photo for such a student, it first smooths a noisy photo at its own scale
# (``denoise_photo``), so that noise enlarged with a small face is caught too.
STUDENT_RESIZES = ("bilinear", "area", "area_denoise")

#: Rules that see every crop below ``NOISE_GATE`` alike: a student trained with the key may be run
#: with a rule of its value (``agedistill ship --resize``), and behaves differently only on noisy crops.
SAME_ON_CLEAN_CROPS = {"area": ("area_denoise",)}

#: Above this estimated noise (``estimate_noise``, levels of 0..255) a crop is smoothed.  Clean
#: crops of the corpus read 0.25 (median), validation and test crops at most 1.7 (1 of 28,961
#: training crops, a grainy yearbook photo, reads 5.2); a face of a 120 px photo with Gaussian noise
#: of deviation 25 reads about 3.5 once enlarged into its crop, noise of deviation 10 on a crop 5 or
#: more (docs/ROBUSTNESS.md, sixth session).
NOISE_GATE = 3.0
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
#: The crop is read as a grid of NOISE_GRID x NOISE_GRID blocks, and the noise must be in most of
#: them: the estimate is the NOISE_QUANTILE quantile of the blocks' readings.
NOISE_GRID = 4
NOISE_QUANTILE = 0.2


def _noise_of_grey(grey: np.ndarray) -> float:
    """``estimate_noise`` on a float32 grey image; 0.0 under 3 + 2 NOISE_GRID pixels a side (too small)."""
    if min(grey.shape[:2]) < 3 + 2 * NOISE_GRID:
        return 0.0
    response = np.abs(cv2.filter2D(grey, -1, _NOISE_KERNEL)[1:-1, 1:-1])
    h, w = response.shape
    bh, bw = h // NOISE_GRID, w // NOISE_GRID
    top, left = (h - bh * NOISE_GRID) // 2, (w - bw * NOISE_GRID) // 2
    blocks = (response[top:top + bh * NOISE_GRID, left:left + bw * NOISE_GRID]
              .reshape(NOISE_GRID, bh, NOISE_GRID, bw).transpose(0, 2, 1, 3).reshape(NOISE_GRID ** 2, -1))
    mid = blocks.shape[1] // 2                              # each block's median (the upper one if even)
    medians = np.partition(blocks, mid, axis=1)[:, mid]
    k = int(round((NOISE_GRID ** 2 - 1) * NOISE_QUANTILE))  # 3 of 0..15: the 0.2 quantile of 16 blocks
    return float(np.partition(medians, k)[k] / (0.6745 * 6.0))


def _grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)


def _half(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` at half its size (area averaging), float32."""
    h, w = rgb.shape[:2]
    return cv2.resize(rgb.astype(np.float32), (max(w // 2, 1), max(h // 2, 1)), interpolation=cv2.INTER_AREA)


def estimate_noise(rgb: np.ndarray) -> float:
    """Standard deviation of the pixel noise in an RGB image, levels of 0..255.

    The response of a mask that cancels smooth image structure (Immerkaer 1996) on the grey image,
    read robustly twice: each block of a ``NOISE_GRID`` x ``NOISE_GRID`` grid reads the median of
    its absolute response (Gaussian noise of deviation s gives a response of deviation 6 s, median
    0.6745 x 6 s), and the image reads the ``NOISE_QUANTILE`` quantile of its blocks.  Noise covers
    the whole face; texture (wrinkles, hair, edges) covers parts of it, and reads as little noise.
    0.0 for an image too small to measure."""
    return _noise_of_grey(_grey(rgb))


#: The blur ``denoise`` applies above the gate is ``DENOISE_STRENGTH e^0.7`` pixels.
DENOISE_STRENGTH = 0.25
#: Noise whose estimate at half size is at least this share of its estimate at full size is coarse
#: grained (a photo's noise enlarged with a small face into its crop): white pixel noise reads about
#: 0.5 there, since averaging 4 pixels halves it; enlarged noise 1 or more.
COARSE_GRAIN = 1.0


def denoise(rgb: np.ndarray, strength: float = DENOISE_STRENGTH) -> np.ndarray:
    """``rgb`` smoothed when its estimated noise ``e`` is above ``NOISE_GATE``; below it, ``rgb`` itself.

    Fine-grained noise: a Gaussian blur of ``strength e^0.7`` pixels (0.25 chosen on validation
    faces with added Gaussian noise, docs/ROBUSTNESS.md).  Coarse-grained noise (``COARSE_GRAIN``):
    the same blur at half size, where the noise is pixel-fine again (with that size's estimate),
    then back to ``rgb``'s size.  ``benchmarks/photo_noise.py`` compares rules on noisy photos."""
    e = estimate_noise(rgb)
    if e <= NOISE_GATE:
        return rgb
    half = _half(rgb)
    e_half = _noise_of_grey(_grey(half))
    if e_half < COARSE_GRAIN * e:
        return cv2.GaussianBlur(rgb, (0, 0), sigmaX=strength * e ** 0.7)
    smooth = cv2.GaussianBlur(half, (0, 0), sigmaX=strength * e_half ** 0.7)
    back = cv2.resize(smooth, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.rint(back), 0, 255).astype(np.uint8)


#: ``predict`` also reads a photo's noise at the photo's own scale, inside the chosen face's box,
#: before framing enlarges a small face (and its noise, which the crop's estimate then misses) or
#: shrinks a large one (``denoise_photo``).  Noise of deviation 10 reads 6 or more there at any
#: size; so do the dense wrinkles of a 90-year-old in a face of 60-80 px (up to 12).  What tells
#: them apart is colour: a camera's noise differs between the channels, wrinkles are grey-level
#: structure.  The photo is smoothed when both its estimate and the same estimate on the colour
#: differences (``estimate_colour_noise``) are above their gates: clean faces read at most 0.9 on
#: colour, noise of deviation 10 reads 8.5 or more (docs/ROBUSTNESS.md, sixth session).
PHOTO_NOISE_GATE = 4.5
PHOTO_COLOUR_GATE = 3.0


def estimate_colour_noise(rgb: np.ndarray) -> float:
    """``estimate_noise`` on the colour differences (R - G and B - G, over the square root of 2: a
    channel's own deviation for noise independent between channels), the mean of the two."""
    f = rgb.astype(np.float32)
    root2 = np.float32(np.sqrt(2.0))
    return 0.5 * (_noise_of_grey((f[..., 0] - f[..., 1]) / root2) + _noise_of_grey((f[..., 2] - f[..., 1]) / root2))


def denoise_photo(rgb: np.ndarray, box) -> np.ndarray:
    """``rgb`` smoothed when the noise read inside ``box`` (x0, y0, x1, y1; the face) is above
    ``PHOTO_NOISE_GATE`` and its colour noise above ``PHOTO_COLOUR_GATE``: a Gaussian blur of
    ``DENOISE_STRENGTH e^0.7`` photo pixels, as ``denoise`` blurs a crop.  Otherwise (and for a box
    too small to read, or a grey photo) ``rgb`` itself: ``denoise`` still reads its crop."""
    h, w = rgb.shape[:2]
    x0, y0 = max(int(round(box[0])), 0), max(int(round(box[1])), 0)
    x1, y1 = min(int(round(box[2])), w), min(int(round(box[3])), h)
    if x1 <= x0 or y1 <= y0:
        return rgb
    face = rgb[y0:y1, x0:x1]
    e = estimate_noise(face)
    if e <= PHOTO_NOISE_GATE or estimate_colour_noise(face) <= PHOTO_COLOUR_GATE:
        return rgb
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=DENOISE_STRENGTH * e ** 0.7)


def resize_input(rgb: np.ndarray, size: int, rule: str = "bilinear") -> np.ndarray:
    """A crop as a student with resize ``rule`` sees it: ``(size, size, 3)``."""
    if rule == "area":
        return resize(rgb, size)
    if rule == "area_denoise":
        return resize(denoise(rgb), size)
    if rule != "bilinear":
        raise ValueError(f"unknown student resize {rule!r}; one of {', '.join(STUDENT_RESIZES)}")
    if rgb.shape[:2] == (size, size):
        return rgb
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
