"""Any folder of images (searched recursively), unlabelled."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from agedistill_core.datasets.base import DATASETS, Item, list_images


@DATASETS.register("folder")
def scan_folder(root: Path) -> Iterator[Item]:
    for rel in list_images(root):
        yield Item(path=rel)
