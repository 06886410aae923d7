"""Paths and loaders shared by the corruption tests (a uniquely named module,
so that it never collides with another test folder's ``conftest``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# repo at /work/main, shared data at /work/shared/data
DATA = Path(__file__).resolve().parents[2].parent / "shared/data"
UTK = DATA / "utkface/crop_part1"  # 200x200 faces
FAIRFACE = DATA / "fairface"  # 448x448 faces

needs_faces = pytest.mark.skipif(
    not UTK.exists(), reason="needs ../shared/data/utkface/crop_part1 (real faces)"
)


def load_faces(n: int) -> list[np.ndarray]:
    """``n`` faces spread over the sorted file list."""
    files = sorted(UTK.glob("*.jpg"))
    return [np.asarray(Image.open(f).convert("RGB")) for f in files[:: max(1, len(files) // n)][:n]]


def load_fairface(n: int) -> list[np.ndarray]:
    """``n`` 448x448 FairFace faces spread over the sorted file list."""
    files = sorted(FAIRFACE.glob("*.jpg"))
    return [np.asarray(Image.open(f).convert("RGB")) for f in files[:: max(1, len(files) // n)][:n]]
