"""The demo corpus: real faces that ship inside scikit-image, so a fresh clone
needs no download.

- 100 LFW faces from ``skimage.data.lfw_subset()`` (25x25 grey crops, the first
  half of that array; the second half are non-faces and are not used), and
- three photos: ``astronaut`` (Eileen Collins), ``camera`` (the cameraman) and
  ``coffee`` (no face: shows how "no face" is recorded),
- one deliberately truncated JPEG, to show that a bad file is recorded, not fatal.

The demo has no age labels: it exercises every stage, it does not measure
accuracy (use the ``utkface`` profile for that).  The files are written into the
data root on first use.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from agedistill_core.datasets.base import DATASETS, Item, list_images
from agedistill_core.images import encode_jpeg, encode_png
from agedistill_core.shards import atomic_write_bytes

N_LFW_FACES = 100


def write_demo_files(root: Path) -> None:
    import skimage.data as skd

    root.mkdir(parents=True, exist_ok=True)
    marker = root / ".complete"
    if marker.exists():
        return
    faces = skd.lfw_subset()[:N_LFW_FACES]
    for i, face in enumerate(faces):
        grey = (face * 255).round().astype(np.uint8)
        atomic_write_bytes(root / "lfw" / f"lfw_{i:03d}.png", encode_png(np.dstack([grey] * 3)))
    for name in ("astronaut", "camera", "coffee"):
        img = getattr(skd, name)()
        if img.ndim == 2:
            img = np.dstack([img] * 3)
        atomic_write_bytes(root / "photos" / f"{name}.jpg", encode_jpeg(img[..., :3], 92))
    good = encode_jpeg(np.full((64, 64, 3), 128, np.uint8))
    atomic_write_bytes(root / "photos" / "truncated.jpg", good[: len(good) // 2])
    marker.touch()


@DATASETS.register("demo")
def scan_demo(root: Path) -> Iterator[Item]:
    write_demo_files(root)
    for rel in list_images(root):
        yield Item(path=rel)


scan_demo.creates_root = True  # type: ignore[attr-defined]  # the demo writes its own files
