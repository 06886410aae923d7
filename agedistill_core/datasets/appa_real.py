"""APPA-REAL / LAP apparent age (SPEC 5): ``gt_avg_{train,valid,test}.csv`` and
``train/``, ``valid/``, ``test/`` image folders.

CSV columns: ``file_name, num_ratings, apparent_age_avg, apparent_age_std,
real_age``.  ``age`` is the apparent age (the human-vote mean), ``age_std`` the
vote standard deviation (for the epsilon-error); the official split is kept
(``valid`` -> ``val``).  The real age is read by ``read_appa_real`` for
reports.  The images are the full photos; with ``faces.detector`` a face is
found in each (the release's ``*_face.jpg`` aligned crops can be used instead
with ``faces.detector: none`` by listing them in the CSV).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from agedistill_core.datasets.base import DATASETS, Item
from agedistill_core.errors import DataError

SPLITS = {"train": "train", "valid": "val", "test": "test"}
COLUMNS = ("file_name", "apparent_age_avg", "apparent_age_std")


@dataclass(frozen=True)
class AppaRow:
    path: str            # relative to the root: <folder>/<file_name>
    split: str           # train | val | test
    apparent_age: float
    apparent_std: float
    real_age: float | None
    num_ratings: int | None


def _float(value: str, where: str, col: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise DataError(f"{where}: column {col} is {value!r}, not a number; fix or remove that row")
    return number


def read_appa_real(root: Path, folders=tuple(SPLITS)) -> list[AppaRow]:
    """All rows of the requested ``folders`` (train/valid/test) that exist."""
    root = Path(root)
    rows: list[AppaRow] = []
    found = False
    for folder in folders:
        csv_path = root / f"gt_avg_{folder}.csv"
        if not csv_path.is_file():
            continue
        found = True
        try:
            rows.extend(_read_csv(csv_path, folder))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{csv_path} is not a readable UTF-8 CSV ({' '.join(str(exc).split())[:120]}); "
                            "fix or replace it") from None
    if not found:
        raise DataError(f"no gt_avg_train.csv / gt_avg_valid.csv / gt_avg_test.csv in {root}; "
                        "point dataset.root at the APPA-REAL folder")
    return rows


def _read_csv(csv_path: Path, folder: str) -> list[AppaRow]:
    rows = []
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{csv_path} lacks column(s) {', '.join(missing)}; "
                            "expected the APPA-REAL header file_name,num_ratings,apparent_age_avg,"
                            "apparent_age_std,real_age")
        for n, r in enumerate(reader, start=2):
            where = f"{csv_path}:{n}"
            real = r.get("real_age")
            ratings = r.get("num_ratings")
            name = r.get("file_name")
            if not name:
                raise DataError(f"{where}: column file_name is empty; fix or remove that row")
            rows.append(AppaRow(
                path=f"{folder}/{name}", split=SPLITS[folder],
                apparent_age=_float(r["apparent_age_avg"], where, "apparent_age_avg"),
                apparent_std=_float(r["apparent_age_std"], where, "apparent_age_std"),
                real_age=_float(real, where, "real_age") if real not in (None, "") else None,
                num_ratings=int(_float(ratings, where, "num_ratings")) if ratings not in (None, "") else None))
    return rows


@DATASETS.register("appa_real")
def scan_appa_real(root: Path) -> Iterator[Item]:
    for r in read_appa_real(root):
        yield Item(path=r.path, age=r.apparent_age, age_std=r.apparent_std, split=r.split)
