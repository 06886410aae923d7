"""SPEC section 6 parameter tables (LFW+C), as plain data.

One entry per corruption, in the SPEC table order; each entry holds the five
per-severity values (severity s is index s - 1).  Multi-valued parameters are
tuples in the order the SPEC column lists them.  These are the values *before*
any image-size scaling: only ``defocus_blur`` and ``motion_blur`` are scaled,
by ``height / 48`` (see their implementations).

``motion_blur`` is stored as the authors' ImageMagick arguments ``(r0, s0)``;
their code scales them by H/48 and floor-divides by 3, so the SPEC table shows
them divided by 3 (3.3; 1 ... 6.7; 5) -- ``MOTION_BLUR_TABLE`` keeps that
printed form for the SPEC comparison test.

Adding a corruption: add its table here, then register a function (see
``base.register_corruption``); callers need no change.
"""
from __future__ import annotations

PARAMS: dict[str, tuple] = {
    # sigma, in pixels (NOT scaled with the image)
    "gaussian_blur": (1, 1.8, 2.6, 3.4, 4),
    # (disc radius r, alias-blur sigma), for a 48 px high image; scaled by H/48
    "defocus_blur": ((1.5, 0.1), (2, 0.2), (2, 0.3), (2.5, 0.4), (3, 0.4)),
    # (zmax, step): factors np.arange(1, zmax, step)
    "zoom_blur": ((1.11, 0.01), (1.18, 0.01), (1.26, 0.02), (1.32, 0.02), (1.4, 0.03)),
    # ImageMagick (radius r0, sigma s0) for a 48 px high image; floor(v * H/48 / 3)
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    # sigma of N(0, sigma^2) on [0, 1]
    "gaussian_noise": (0.08, 0.12, 0.18, 0.24, 0.30),
    # q of Poisson(x q) / q
    "shot_noise": (60, 29, 15, 8, 5),
    # q of (x - channel mean) q + channel mean
    "contrast_increase": (1.5, 1.9, 2.6, 3.3, 5),
    "contrast_decrease": (0.4, 0.33, 0.24, 0.16, 0.1),
    # q added to V of HSV
    "brightness_increase": (0.1, 0.2, 0.3, 0.4, 0.5),
    "brightness_decrease": (-0.1, -0.2, -0.3, -0.4, -0.5),
    # (c0 loc, c1 scale, c2 blur sigma, c3 threshold, c4 mode: 0 liquid / 1 mud)
    "spatter": (
        (0.65, 0.3, 4, 0.69, 0),
        (0.65, 0.3, 3, 0.68, 0),
        (0.65, 0.3, 2, 0.68, 0),
        (0.65, 0.3, 1, 0.65, 1),
        (0.67, 0.4, 1, 0.65, 1),
    ),
    # JPEG quality
    "jpeg": (25, 18, 15, 10, 7),
    # scale factor q of the box downscale
    "pixelation": (0.6, 0.5, 0.41, 0.3, 0.25),
}

#: ImageNet-C spatter's extra blur parameter (liquid: multiplier of the
#: spatter layer; mud: sigma of the mud-mask blur), per severity (SPEC facts).
SPATTER_EXTRA: tuple = (0.6, 0.6, 0.5, 1.5, 1.5)

#: The SPEC table's printed motion-blur row (r; sigma) = (r0, s0) / 3, rounded.
MOTION_BLUR_TABLE: tuple = ((3.3, 1), (5, 1.7), (5, 2.7), (5, 4), (6.7, 5))

#: Reference image height the size-scaled corruptions are expressed for.
REFERENCE_HEIGHT = 48

#: Corruptions whose distances scale with height / REFERENCE_HEIGHT.
SIZE_SCALED = ("defocus_blur", "motion_blur")

SEVERITIES = (1, 2, 3, 4, 5)
