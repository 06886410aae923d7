"""Image corruptions of LFW+C (SPEC section 6): 13 corruptions x 5 severities.

Public API::

    corrupt(image, name, severity, *, seed)      # uint8 RGB HxWx3 -> same
    image_seed(image_id, name, severity, seed)   # stable per-image seed
    corruption_names()                           # SPEC table order
    SEVERITIES                                   # (1, 2, 3, 4, 5)
    corrupt_table(table, name, severity, *, seed=0, workers=1)
    corruption_grid(image, path)                 # labelled PNG grid
    CORRUPTIONS                                  # Registry name -> Corruption

Parameters live in ``params.py`` (plain data, checked against SPEC by a test);
each corruption module registers its function in ``CORRUPTIONS``.  Outputs are
clipped to [0, 1] and rounded to the nearest uint8 (ImageNet-C truncates),
except defocus blur, truncated as the authors' code did (SPEC section 6).
"""
from __future__ import annotations

import hashlib

import numpy as np

from agedistill_core.errors import ConfigError

# importing the modules registers the corruptions
from . import blur, digital, noise, photometric, spatter  # noqa: F401
from .base import CORRUPTIONS, Corruption, check_image, check_severity, register_corruption
from .grid import corruption_grid
from .params import PARAMS, SEVERITIES
from .table import corrupt_table

__all__ = [
    "CORRUPTIONS", "Corruption", "PARAMS", "SEVERITIES", "corrupt", "corrupt_table",
    "corruption_grid", "corruption_names", "image_seed", "register_corruption",
]


def corruption_names() -> list[str]:
    """Registered corruption names: SPEC table order, then any others by name."""
    order = {n: i for i, n in enumerate(PARAMS)}
    return sorted(CORRUPTIONS.names(), key=lambda n: (order.get(n, len(order)), n))


def image_seed(image_id: str, name: str, severity: int, seed: int) -> int:
    """A 64-bit seed from SHA-256 of (image id, corruption, severity, seed):
    the same on every process, platform and Python run."""
    key = "\x1f".join((str(image_id), str(name), str(int(severity)), str(int(seed))))
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def corrupt(image: np.ndarray, name: str, severity: int, *, seed: int) -> np.ndarray:
    """Corrupt uint8 RGB ``image`` (HxWx3, any size) with corruption ``name`` at
    ``severity`` (1..5); random choices come from ``numpy.random.default_rng(seed)``.
    Returns a new uint8 array of the same shape."""
    corr = CORRUPTIONS.get(name)
    severity = check_severity(severity)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"corruption seed must be a non-negative integer; got {seed!r}")
    image = check_image(image)
    out = corr.apply(image, severity, np.random.default_rng(int(seed)))
    assert out.shape == image.shape and out.dtype == np.uint8
    return out
