"""Noise: Gaussian and shot (Poisson), on [0, 1] then clipped (SPEC section 6).

The ``*_raw`` functions accept either a ``numpy.random.Generator`` (what
``corrupt`` passes) or a legacy ``RandomState`` (what ImageNet-C uses): with a
``RandomState`` they draw exactly as ImageNet-C does, so tests can reproduce
its output bit for bit.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .base import register_corruption, to_float

_BINS = 1024  # resolution of the shot-noise inverse-CDF lookup (table fits in L2)


def gaussian_noise_raw(x: np.ndarray, sigma: float, rng) -> np.ndarray:
    """``x + N(0, sigma^2)`` (unclipped; ``to_uint8`` clips)."""
    if isinstance(rng, np.random.Generator):
        noise = rng.standard_normal(size=x.shape, dtype=np.float32)
        noise *= np.float32(sigma)
    else:
        noise = rng.normal(size=x.shape, scale=sigma)
    return x + noise


def shot_noise_raw(x: np.ndarray, q: float, rng) -> np.ndarray:
    """``Poisson(x q) / q`` for any float ``x`` (``rng.poisson``)."""
    lam = np.asarray(x, dtype=np.float64) * q
    return (rng.poisson(lam) / float(q)).astype(np.float32)


@lru_cache(maxsize=16)
def _poisson_tables(q: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Inverse-CDF tables of Poisson(k q / 255) for the levels k = 0..255.

    Returns ``(flat, grid, n)``: ``flat[k n + j] = k + P(X <= j)`` (sorted, for
    one ``searchsorted`` over all levels; the tail beyond ``n`` -- mass
    < 1e-15 -- is folded into ``j = n - 1``) and ``grid[k (BINS+1) + b] =
    #{j : P(X <= j) <= b / BINS}`` (uint8).
    """
    lam = np.arange(256, dtype=np.float64) * (q / 255.0)
    n = int(q + 12.0 * math.sqrt(q) + 20.0)
    if n > 255:
        raise ValueError(f"shot noise q={q} is too large for the uint8 lookup")
    j = np.arange(n, dtype=np.float64)
    log_fact = np.concatenate(([0.0], np.cumsum(np.log(j[1:]))))
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = -lam[:, None] + j[None, :] * np.log(lam[:, None]) - log_fact[None, :]
    pmf = np.exp(logp)
    pmf[0] = 0.0
    pmf[0, 0] = 1.0  # lam = 0: X = 0
    cdf = np.cumsum(pmf, axis=1)
    cdf[:, -1] = 1.0
    edges = np.arange(_BINS + 1, dtype=np.float64) / _BINS
    grid = np.stack([np.searchsorted(row, edges, side="right") for row in cdf])
    flat = (cdf + np.arange(256)[:, None]).ravel()
    grid = grid.astype(np.uint8).ravel()
    flat.setflags(write=False)
    grid.setflags(write=False)
    return flat, grid, n


def shot_noise_levels(image: np.ndarray, q: float, rng: np.random.Generator) -> np.ndarray:
    """``Poisson((image / 255) q) / q`` for uint8 ``image`` by inverse-CDF
    sampling: one uniform ``u`` per pixel, ``X = #{j : P(X <= j) <= u}``.

    A per-level lookup on a 1/1024 grid of ``u`` settles almost every pixel;
    the ~2% whose grid cell holds a CDF step are resolved exactly with one
    ``searchsorted``.  Same distribution as ``rng.poisson`` (tail < 1e-15
    dropped; CDF compared at ~1e-13 precision), about 4x faster, different
    draws.  ``q`` up to ~150.
    """
    flat, grid, n = _poisson_tables(float(q))
    levels = image.reshape(-1).astype(np.intp)
    u = rng.random(levels.size)
    cell = levels * (_BINS + 1) + (u * _BINS).astype(np.intp)
    lo = np.take(grid, cell)
    hi = np.take(grid, cell + 1)
    amb = np.flatnonzero(lo != hi)
    out = lo.astype(np.float32)
    if amb.size:
        k = levels[amb]
        x = np.searchsorted(flat, k + u[amb], side="right") - k * n
        out[amb] = np.clip(x, lo[amb], hi[amb])
    out *= np.float32(1.0 / q)
    return out.reshape(image.shape)


@register_corruption("gaussian_noise", random=True)
def _gaussian_noise(image, p, rng):
    return gaussian_noise_raw(to_float(image), float(p), rng)


@register_corruption("shot_noise", random=True)
def _shot_noise(image, p, rng):
    return shot_noise_levels(image, float(p), rng)
