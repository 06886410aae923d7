"""The corruption registry and the small helpers every corruption shares.

A corruption is a ``Corruption``: its name, its five-severity parameter table
(from ``params.PARAMS``) and a function ``fn(image, p, rng)`` where ``image`` is
uint8 RGB HxWx3, ``p`` is the table entry of the requested severity and ``rng``
a ``numpy.random.Generator`` (ignored by deterministic corruptions).  ``fn``
returns either uint8 (final) or float on the [0, 1] scale; ``Corruption.apply``
clips, rounds to nearest and returns uint8.

Adding one (e.g. another ImageNet-C corruption) is a table in ``params.py`` and::

    @register_corruption("frost")
    def _frost(image, p, rng): ...

Nothing else changes: ``corrupt``, ``corrupt_table``, ``corruption_grid`` and
``corruption_names`` all read ``CORRUPTIONS``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from agedistill_core.errors import ConfigError
from agedistill_core.registry import Registry

from .params import PARAMS, SEVERITIES

CorruptionFn = Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Corruption:
    name: str
    params: tuple  # five entries, severity s at index s - 1
    fn: CorruptionFn
    random: bool = False  # True when the output depends on the seed

    def param(self, severity: int) -> Any:
        check_severity(severity)
        return self.params[severity - 1]

    def apply(self, image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
        out = to_uint8(self.fn(image, self.param(severity), rng))
        if out is image or not out.flags.writeable or not out.flags.c_contiguous:
            out = np.array(out, order="C")  # always a fresh, writable array
        return out


CORRUPTIONS: Registry[Corruption] = Registry("corruption")


def register_corruption(name: str, *, params: tuple | None = None, random: bool = False):
    """Decorator: register ``fn(image, p, rng)`` under ``name``.

    ``params`` defaults to ``params.PARAMS[name]``.
    """

    def deco(fn: CorruptionFn) -> CorruptionFn:
        table = PARAMS[name] if params is None else params
        if len(table) != len(SEVERITIES):
            raise ValueError(f"corruption {name!r} needs {len(SEVERITIES)} severities")
        CORRUPTIONS.register(name)(Corruption(name, tuple(table), fn, random))
        return fn

    return deco


def check_severity(severity: Any) -> int:
    if isinstance(severity, (bool, np.bool_)) or not isinstance(severity, (int, np.integer)) \
            or int(severity) not in SEVERITIES:
        raise ConfigError(
            f"corruption severity {severity!r} is not valid; choose one of: "
            + ", ".join(map(str, SEVERITIES))
        )
    return int(severity)


def check_image(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        desc = (f"{type(image).__name__} {getattr(image, 'dtype', '')} "
                f"{getattr(image, 'shape', '')}").strip()
        raise ConfigError(f"corrupt() needs a uint8 RGB image of shape HxWx3; got {desc}")
    return np.ascontiguousarray(image)


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 -> float32 on [0, 1]."""
    return image.astype(np.float32) * np.float32(1 / 255)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8, clipped and rounded to nearest (uint8 passes through)."""
    if x.dtype == np.uint8:
        return x
    y = np.clip(x, 0.0, 1.0) * np.float32(255.0)
    y += np.float32(0.5)
    return y.astype(np.uint8)  # truncation of (v + 0.5) == round half up, v >= 0
