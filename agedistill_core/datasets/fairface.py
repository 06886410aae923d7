"""FairFace-style folder: images plus ``ground_truth.json``, a list of
``{"id", "filename", "age": "30-39", "gender"}``.  Ages are groups, not years.

The whole set is an evaluation set (split ``test``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from agedistill_core.ages import FAIRFACE_GROUPS
from agedistill_core.datasets.base import DATASETS, Item
from agedistill_core.errors import DataError


@DATASETS.register("fairface")
def scan_fairface(root: Path) -> Iterator[Item]:
    gt_path = root / "ground_truth.json"
    if not gt_path.is_file():
        raise DataError(f"{gt_path} not found; a FairFace-style root needs ground_truth.json")
    try:
        entries = json.loads(gt_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{gt_path} is not valid JSON ({' '.join(str(exc).split())[:120]}); fix or replace it") from None
    if not isinstance(entries, list):
        raise DataError(f"{gt_path} holds a {_kind(entries)}, not a list of entries; expected "
                        f'[{{"id": ..., "filename": "img.jpg", "age": "30-39"}}, ...]')
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DataError(f"{gt_path}: entry [{k}] is a {_kind(entry)}, not a mapping with id, filename and age; "
                            f"fix that entry")
        name = f"entry [{k}] (id {entry.get('id')!r})"
        filename = entry.get("filename")
        if not isinstance(filename, str) or not filename:
            raise DataError(f"{gt_path}: {name} has no filename (got {filename!r}); give it the image's path "
                            f"relative to {root}")
        group = entry.get("age")
        if group not in FAIRFACE_GROUPS:
            raise DataError(f"{gt_path}: entry {entry.get('id')!r} has age group {group!r}; "
                            f"expected one of {', '.join(FAIRFACE_GROUPS)}")
        # a filename outside the root (absolute, with ..) is left out and named by the manifest
        yield Item(path=filename, age_group=group, split="test")


def _kind(value: object) -> str:
    return {dict: "mapping", list: "list", str: "string"}.get(type(value), type(value).__name__)
