"""UTKFace: ``AGE_GENDER_RACE_DATETIME.jpg[.chip.jpg]``; the age is the first field.

No identities are published, so every file is its own subject.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from agedistill_core.datasets.base import DATASETS, Item, list_images


def parse_age(filename: str) -> float | None:
    head = Path(filename).name.split("_", 1)[0]
    return float(head) if head.isdigit() else None


@DATASETS.register("utkface")
def scan_utkface(root: Path) -> Iterator[Item]:
    for rel in list_images(root):
        yield Item(path=rel, age=parse_age(rel))
