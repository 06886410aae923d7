"""Training-time augmentation of face crops (SPEC section 4, "Augmentation").

Every sample gets its own random policy.  Each parameter is drawn from a
bounded normal ``N~(mu, sigma) = clip(N(mu, sigma), mu - 2 sigma, mu + 2 sigma)``:

* rotation ``N~(0, 5)`` degrees and shear with both coefficients
  ``|N~(0, 0.05)|``, about the crop centre;
* box jitter with ``s = 0.045 * box height``: offset (x and y drawn
  independently) ``N~(-s/5, s/2)``, size change ``N~(s/2, s)``; the jittered box
  is grown again by the crop margin;
* contrast ``a ~ N~(1, 0.25)`` and brightness ``b ~ N~(0, 24)`` applied as
  ``(x - 128) * a + 128 + b`` on 0..255;
* horizontal flip with ``p = 0.5``.

Beyond SPEC, four in-the-wild options (off by default; each is the probability that a face
gets it, and nothing is drawn for it while it is 0, so SPEC runs keep their random stream):

* ``color_p``: a faded, grey or tinted photo: saturation ``0`` (grey) with probability 0.3,
  otherwise ``U(0.3, 1.6)``, then a gain ``N~(1, 0.08)`` per channel (a colour cast);
* ``quality_p``: a low-quality photo: down to ``U(0.25, 1)`` of the side (area
  filter) and back up (bilinear), then, with probability 0.5, JPEG at quality ``U{15..80}``;
* ``noise_p``: a noisy sensor: independent Gaussian noise on every pixel and channel of the
  network input, its standard deviation log-uniform in ``[3, 50]`` levels of 0..255;
* ``occlude_p``: dirt on the lens or the face: 1 to 4 soft-edged ellipses of one random colour
  each, semi-axes ``U(0.03, 0.12)`` of the side, opacity ``U(0.5, 1)``.

Distilled with the table's labels (the teacher's age of the clean face), they teach the
student that a photo's quality, colour, noise and smudges do not change a person's age.

All geometry is one ``cv2.warpAffine`` (bilinear, replicated border) from the
stored crop straight to the network input size, so pixels are resampled once.

Stored crops (SPEC section 2) are square, with the face box centred and of side
``S / (1 + 2 * margin)``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import cv2
import numpy as np
import torch

from agedistill_core.errors import ConfigError
from agedistill_core.images import VGGFACE2_MEAN_RGB


def bounded_normal(rng: np.random.Generator, mu, sigma, size=None):
    """Draw ``clip(N(mu, sigma), mu - 2 sigma, mu + 2 sigma)``."""
    x = rng.normal(mu, sigma, size)
    return np.clip(x, mu - 2.0 * sigma, mu + 2.0 * sigma)


#: The in-the-wild options beyond SPEC, in words (model cards).
WILD = {"color_p": "grey/faded/tinted colour", "quality_p": "low resolution and JPEG",
        "noise_p": "sensor noise", "occlude_p": "smudges and blots"}


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths; the defaults are SPEC section 4's numbers."""

    rotation_sigma: float = 5.0  # degrees
    shear_sigma: float = 0.05  # both shear coefficients are |N~(0, shear_sigma)|
    jitter_scale: float = 0.045  # s = jitter_scale * face box height
    contrast_sigma: float = 0.25  # a ~ N~(1, contrast_sigma)
    brightness_sigma: float = 24.0  # b ~ N~(0, brightness_sigma), on 0..255
    flip_p: float = 0.5
    enabled: bool = True
    color_p: float = 0.0  # in-the-wild colour (grey, faded, tinted), see the module text
    quality_p: float = 0.0  # in-the-wild quality (low resolution, JPEG), see the module text
    noise_p: float = 0.0  # sensor noise, see the module text
    occlude_p: float = 0.0  # smudges and blots, see the module text

    def __post_init__(self) -> None:
        for name in ("rotation_sigma", "shear_sigma", "jitter_scale",
                     "contrast_sigma", "brightness_sigma"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(
                    f"augment.{name} must be a finite number >= 0, got {value!r}; "
                    "fix it in params.yaml"
                )
        for name in ("flip_p", *WILD):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0):
                raise ConfigError(
                    f"augment.{name} must be in [0, 1], got {value!r}; fix it in params.yaml"
                )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "AugmentConfig":
        """Build from a params.yaml mapping; unknown keys raise ``ConfigError``."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown augment option(s) {', '.join(unknown)}; "
                f"choose from: {', '.join(sorted(known))}"
            )
        return cls(**d)

    @classmethod
    def from_setting(cls, value: bool | Mapping[str, Any]) -> "AugmentConfig":
        """``students.augment``: true / false (SPEC's policy, on or off) or a mapping of these
        options, e.g. ``{color_p: 0.5, quality_p: 0.5}`` (SPEC's policy plus in-the-wild photos)."""
        if isinstance(value, bool):
            return cls(enabled=value)
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise ConfigError(f"students.augment must be true, false or a mapping of augment options, got {value!r}; "
                          "fix it in params.yaml")

    def describe(self) -> str:
        """The policy in words, for a model card: SPEC's policy, none, or SPEC's plus what differs."""
        if not self.enabled:
            return "no augmentation"
        spec = AugmentConfig()
        named = [f"{WILD[f.name]} on {float(getattr(self, f.name)):.0%} of faces" for f in fields(self)
                 if f.name in WILD and getattr(self, f.name)]
        other = [f"{f.name} {getattr(self, f.name)}" for f in fields(self)
                 if f.name not in WILD and getattr(self, f.name) != getattr(spec, f.name)]
        return "SPEC augmentation" + "".join(f" + {x}" for x in named + other)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AugmentParams:
    """One sample's drawn policy.

    Jitter values are fractions of the face box height (multiply by the box
    height in pixels to get pixels); the pixel draw ``N~(-s/5, s/2)`` with
    ``s = k * H`` equals ``H * N~(-k/5, k/2)`` because clipping commutes with
    positive scaling.
    """

    rotation_deg: float = 0.0
    shear_x: float = 0.0
    shear_y: float = 0.0
    offset_x: float = 0.0  # fraction of box height, + moves the box right
    offset_y: float = 0.0  # fraction of box height, + moves the box down
    size_change: float = 0.0  # fraction of box height added to the box side
    contrast: float = 1.0
    brightness: float = 0.0
    flip: bool = False
    saturation: float = 1.0  # 0 = grey
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per RGB channel
    resolution: float = 1.0  # fraction of the side the face is resampled down to and back
    jpeg_quality: int = 0  # 0 = no JPEG round trip
    noise_sigma: float = 0.0  # Gaussian noise, levels of 0..255; 0 = none
    blots: tuple = ()  # ((cx, cy, ax, ay, angle_deg, opacity, r, g, b), ...), positions and axes as fractions of the side
    seed: int = 0  # the noise field's own stream

    @classmethod
    def identity(cls) -> "AugmentParams":
        return cls()


def sample_params(rng: np.random.Generator, cfg: AugmentConfig) -> AugmentParams:
    """Draw one policy.  The draw order is fixed, so results are reproducible.

    The eight bounded normals are drawn in one call (the same stream, in the same
    order, as eight ``bounded_normal`` calls), then the flip, then the in-the-wild
    options, each only while its probability is > 0: this runs once per face per
    epoch, so it is kept cheap.
    """
    k = cfg.jitter_scale
    mu = np.array([0.0, 0.0, 0.0, -k / 5.0, -k / 5.0, k / 2.0, 1.0, 0.0])
    sigma = np.array([cfg.rotation_sigma, cfg.shear_sigma, cfg.shear_sigma, k / 2.0, k / 2.0, k,
                      cfg.contrast_sigma, cfg.brightness_sigma])
    v = np.clip(mu + sigma * rng.standard_normal(8), mu - 2.0 * sigma, mu + 2.0 * sigma).tolist()
    flip = bool(rng.random() < cfg.flip_p)
    wild: dict = {}
    if cfg.color_p > 0 and rng.random() < cfg.color_p:
        wild["saturation"] = 0.0 if rng.random() < 0.3 else float(rng.uniform(0.3, 1.6))
        wild["gains"] = tuple(np.clip(1.0 + 0.08 * rng.standard_normal(3), 0.84, 1.16).tolist())
    if cfg.quality_p > 0 and rng.random() < cfg.quality_p:
        wild["resolution"] = float(rng.uniform(0.25, 1.0))
        wild["jpeg_quality"] = int(rng.integers(15, 81)) if rng.random() < 0.5 else 0
    if cfg.occlude_p > 0 and rng.random() < cfg.occlude_p:
        wild["blots"] = tuple(
            (*rng.uniform(0.0, 1.0, 2).tolist(), *rng.uniform(0.03, 0.12, 2).tolist(), float(rng.uniform(0, 180)),
             float(rng.uniform(0.5, 1.0)), *rng.integers(0, 256, 3).tolist())
            for _ in range(int(rng.integers(1, 5))))
    if cfg.noise_p > 0 and rng.random() < cfg.noise_p:
        wild["noise_sigma"] = float(math.exp(rng.uniform(math.log(3.0), math.log(50.0))))
        wild["seed"] = int(rng.integers(0, 2**31))
    return AugmentParams(v[0], abs(v[1]), abs(v[2]), v[3], v[4], v[5], v[6], v[7], flip, **wild)


def warp_matrix(crop_size: int, out_size: int, margin: float, p: AugmentParams) -> np.ndarray:
    """2x3 map from output pixel index to source pixel index (``WARP_INVERSE_MAP``).

    Continuous coordinates put pixel centres at ``i + 0.5``.  With identity
    params this is exactly ``cv2.resize``'s bilinear sampling grid.
    """
    S = float(crop_size)
    box = S / (1.0 + 2.0 * margin)  # face box side in the stored crop
    side = (box * (1.0 + p.size_change)) * (1.0 + 2.0 * margin)  # jittered, re-grown
    k = side / float(out_size)  # source pixels per output pixel
    t = math.radians(p.rotation_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    shear = np.array([[1.0, p.shear_x], [p.shear_y, 1.0]])
    lin = k * (rot @ shear)
    centre = np.array([S / 2.0 + p.offset_x * box, S / 2.0 + p.offset_y * box])
    # src_idx = lin @ (dst_idx + 0.5 - out/2) + centre - 0.5
    shift = lin @ np.full(2, 0.5 - out_size / 2.0) + centre - 0.5
    return np.hstack([lin, shift[:, None]]).astype(np.float64)


def _check_crop(crop: np.ndarray) -> None:
    if not isinstance(crop, np.ndarray) or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"expected an (S, S, 3) RGB crop, got shape {getattr(crop, 'shape', None)}")
    if crop.shape[0] != crop.shape[1]:
        raise ValueError(f"expected a square crop, got {crop.shape[1]}x{crop.shape[0]}")
    if crop.dtype != np.uint8:
        raise ValueError(f"expected a uint8 crop, got {crop.dtype}")


def apply_params(crop: np.ndarray, out_size: int, margin: float, p: AugmentParams) -> np.ndarray:
    """Apply one drawn policy: geometry (one warp), contrast/brightness, colour, quality, blots, noise, flip."""
    _check_crop(crop)
    m = warp_matrix(crop.shape[0], out_size, margin, p)
    img = cv2.warpAffine(
        np.ascontiguousarray(crop), m, (out_size, out_size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    if p.contrast != 1.0 or p.brightness != 0.0:
        x = img.astype(np.float32)
        x = (x - 128.0) * np.float32(p.contrast) + np.float32(128.0 + p.brightness)
        img = np.rint(np.clip(x, 0.0, 255.0)).astype(np.uint8)
    if p.saturation != 1.0 or p.gains != (1.0, 1.0, 1.0):
        img = _recolour(img, p.saturation, p.gains)
    if p.resolution < 1.0 or p.jpeg_quality:
        img = _degrade(img, p.resolution, p.jpeg_quality)
    if p.blots:
        img = _blot(img, p.blots)
    if p.noise_sigma > 0:
        img = _add_noise(img, p.noise_sigma, p.seed)
    if p.flip:
        img = np.ascontiguousarray(img[:, ::-1])
    return img


def _recolour(img: np.ndarray, saturation: float, gains) -> np.ndarray:
    x = img.astype(np.float32)
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = grey[..., None] + np.float32(saturation) * (x - grey[..., None])
    x = x * np.asarray(gains, np.float32)
    return np.rint(np.clip(x, 0.0, 255.0)).astype(np.uint8)


def _degrade(img: np.ndarray, resolution: float, jpeg_quality: int) -> np.ndarray:
    size = img.shape[0]
    if resolution < 1.0:
        small = max(8, int(round(size * resolution)))
        img = cv2.resize(cv2.resize(img, (small, small), interpolation=cv2.INTER_AREA), (size, size),
                         interpolation=cv2.INTER_LINEAR)
    if jpeg_quality:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if ok:  # channel order does not matter for a round trip
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(img)


def _blot(img: np.ndarray, blots) -> np.ndarray:
    """Blend each blot's colour in through a soft ellipse mask, drawn only around the blot."""
    size = img.shape[0]
    x = img.astype(np.float32)
    soft = max(0.5, 0.01 * size)  # edge blur, pixels
    pad = int(math.ceil(3 * soft)) + 1
    for cx, cy, ax, ay, angle, opacity, r, g, b in blots:
        centre = np.array([cx * size, cy * size])
        reach = int(math.ceil(max(ax, ay) * size)) + pad
        x0, y0 = (max(0, int(v) - reach) for v in centre)
        x1, y1 = (min(size, int(v) + reach + 1) for v in centre)
        if x0 >= x1 or y0 >= y1:
            continue
        mask = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.ellipse(mask, (int(round(centre[0])) - x0, int(round(centre[1])) - y0),
                    (max(1, int(round(ax * size))), max(1, int(round(ay * size)))), angle, 0, 360, 1.0, -1,
                    cv2.LINE_AA)
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=soft)[..., None] * np.float32(opacity)
        roi = x[y0:y1, x0:x1]
        roi += (np.array([r, g, b], np.float32) - roi) * mask
    return np.rint(np.clip(x, 0.0, 255.0)).astype(np.uint8)


def _add_noise(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    return np.rint(np.clip(img.astype(np.float32) + noise, 0.0, 255.0)).astype(np.uint8)


def augment_face(
    crop: np.ndarray,
    out_size: int,
    margin: float,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    *,
    params: AugmentParams | None = None,
) -> np.ndarray:
    """Randomly augment one stored face crop to ``(out_size, out_size, 3)`` uint8.

    With ``cfg.enabled`` False this is exactly ``cv2.resize(crop, (out, out),
    INTER_LINEAR)`` and draws nothing from ``rng``.  ``params`` overrides the
    random draw (tests, debugging).
    """
    _check_crop(crop)
    if params is None:
        if not cfg.enabled:
            return cv2.resize(crop, (out_size, out_size), interpolation=cv2.INTER_LINEAR)
        params = sample_params(rng, cfg)
    return apply_params(crop, out_size, margin, params)


def to_tensor(batch: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 RGB -> float32 ``(N, 3, H, W)`` minus the VGGFace2 mean."""
    if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[3] != 3:
        raise ValueError(f"expected an (N, H, W, 3) RGB batch, got shape {getattr(batch, 'shape', None)}")
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float()
    mean = torch.tensor(VGGFACE2_MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean).contiguous()


_MEAN = torch.tensor(VGGFACE2_MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1)


def batch_tensor(images: np.ndarray, channels_last: bool = True) -> torch.Tensor:
    """``(N, S, S, 3)`` uint8 -> float32 ``(N, 3, S, S)`` minus the VGGFace2 mean.

    Channels-last keeps the uint8 array's own layout (no transposing copy);
    otherwise the result is contiguous NCHW.  Values are the same either way.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return (x.to(torch.float32, memory_format=fmt) - _MEAN).contiguous(memory_format=fmt)
