"""FairFace-style folder: images plus ``ground_truth.json``, a list of
``{"id", "filename", "age": "30-39", "gender"}``.  Ages are groups, not years.

The whole set is an evaluation set (split ``test``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from agedistill_core.datasets.base import DATASETS, Item
from agedistill_core.errors import DataError

FAIRFACE_GROUPS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")


@DATASETS.register("fairface")
def scan_fairface(root: Path) -> Iterator[Item]:
    gt_path = root / "ground_truth.json"
    if not gt_path.is_file():
        raise DataError(f"{gt_path} not found; a FairFace-style root needs ground_truth.json")
    try:
        entries = json.loads(gt_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{gt_path} is not valid JSON ({exc})") from None
    for entry in entries:
        group = entry.get("age")
        if group not in FAIRFACE_GROUPS:
            raise DataError(f"{gt_path}: entry {entry.get('id')!r} has age group {group!r}; "
                            f"expected one of {', '.join(FAIRFACE_GROUPS)}")
        yield Item(path=entry["filename"], age_group=group, split="test")
