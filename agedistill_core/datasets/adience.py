"""Adience (SPEC 5): 8 age groups, 5 official subject-disjoint folds.

``fold_0_data.txt`` .. ``fold_4_data.txt``: tab-separated with a header
``user_id, original_image, face_id, age, gender, x, y, dx, dy, tilt_ang,
fiducial_yaw_angle, fiducial_score``; images at
``faces/<user_id>/coarse_tilt_aligned_face.<face_id>.<original_image>``.

Age labels: the 8 groups ``(0, 2) (4, 6) (8, 12) (15, 20) (25, 32) (38, 43)
(48, 53) (60, 100)`` (SPEC names them 0-2, 4-6, 8-13, 15-20, 25-32, 38-43,
48-53, 60+).  The release also holds a few stray labels; cleaning, as usual:
a range inside one group (``(38, 42)``, ``(27, 32)``) joins it; a single age
joins the group that contains it; a range across groups (``(8, 23)``,
``(38, 48)``), an age between groups (e.g. ``35``) and ``None`` are dropped.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from agedistill_core.ages import ADIENCE_BOUNDS, ADIENCE_GROUPS
from agedistill_core.datasets.base import DATASETS, Item
from agedistill_core.errors import DataError

N_FOLDS = 5
COLUMNS = ("user_id", "original_image", "face_id", "age")


def adience_group(label: str) -> int | None:
    """Group index of an Adience age label, or None when it fits no single group."""
    nums = [int(v) for v in re.findall(r"\d+", label or "")]
    if not nums or len(nums) > 2:
        return None
    lo, hi = (nums[0], nums[0]) if len(nums) == 1 else (min(nums), max(nums))
    for k, (a, b) in enumerate(ADIENCE_BOUNDS):
        if a <= lo and hi <= b:
            return k
    return None


def face_path(user_id: str, face_id: str, original_image: str) -> str:
    return f"faces/{user_id}/coarse_tilt_aligned_face.{face_id}.{original_image}"


@dataclass(frozen=True)
class AdienceRow:
    path: str
    subject: str
    group: int
    fold: int


def read_adience(root: Path) -> tuple[list[AdienceRow], int]:
    """Rows with a usable group from all folds present, and how many were dropped."""
    root = Path(root)
    rows, dropped, found = [], 0, 0
    for fold in range(N_FOLDS):
        path = root / f"fold_{fold}_data.txt"
        if not path.is_file():
            continue
        found += 1
        try:
            more, lost = _read_fold(path, fold)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path} is not a readable UTF-8 tab-separated file ({' '.join(str(exc).split())[:120]}); "
                            "fix or replace it") from None
        rows.extend(more)
        dropped += lost
    if not found:
        raise DataError(f"no fold_0_data.txt .. fold_4_data.txt in {root}; point dataset.root at the Adience folder")
    return rows, dropped


def _read_fold(path: Path, fold: int) -> tuple[list[AdienceRow], int]:
    rows, dropped = [], 0
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter="\t")
        fields = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in COLUMNS if c not in fields]
        if missing:
            raise DataError(f"{path} lacks column(s) {', '.join(missing)}; expected the tab-separated "
                            "Adience header user_id, original_image, face_id, age, gender, ...")
        for r in reader:
            r = {k.strip(): (v or "").strip() for k, v in r.items() if k is not None}  # extra cells: key None
            group = adience_group(r["age"])
            if group is None or not r["user_id"] or not r["original_image"]:
                dropped += 1
                continue
            rows.append(AdienceRow(face_path(r["user_id"], r["face_id"], r["original_image"]),
                                   r["user_id"], group, fold))
    return rows, dropped


@DATASETS.register("adience")
def scan_adience(root: Path) -> Iterator[Item]:
    for r in read_adience(root)[0]:
        yield Item(path=r.path, subject=r.subject, age_group=ADIENCE_GROUPS[r.group], fold=r.fold)
