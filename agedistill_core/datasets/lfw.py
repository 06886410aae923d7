"""Labeled Faces in the Wild, flattened: ``Person_Name_NNNN.jpg``; no ages.

The person's name is the subject, so every split is identity-disjoint.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from agedistill_core.datasets.base import DATASETS, Item, list_images

_NAME = re.compile(r"^(?P<person>.+)_\d+$")


def subject_of(rel: str) -> str | None:
    m = _NAME.match(Path(rel).stem)
    return m.group("person") if m else None


@DATASETS.register("lfw")
def scan_lfw(root: Path) -> Iterator[Item]:
    for rel in list_images(root):
        yield Item(path=rel, subject=subject_of(rel))
