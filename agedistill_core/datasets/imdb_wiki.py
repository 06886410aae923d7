"""IMDB-WIKI (real age of celebrities): ``imdb.mat`` / ``wiki.mat`` metadata.

The official crops release has ``imdb_crop/imdb.mat`` (struct ``imdb``) and
``wiki_crop/wiki.mat`` (struct ``wiki``), each next to its image folders
(``00/`` .. ``99/``).  ``dataset.root`` may be one of those folders or their
parent (then both are read, paths prefixed by ``imdb_crop/`` / ``wiki_crop/``).

Struct fields used: ``full_path`` (cell of relative paths), ``dob`` (MATLAB
datenum of the birth date), ``photo_taken`` (year), ``face_score``,
``second_face_score``, and ``celeb_id`` (imdb) or ``name`` (wiki) as subject.

Cleaning, the usual one (as in the widely used yu4u/age-gender-estimation
filter):

* exactly one face: ``second_face_score`` is NaN;
* a confident face: ``face_score >= MIN_FACE_SCORE`` (1.0; ``-inf`` = no face);
* valid dates: a finite ``dob`` that converts to a date, ``photo_taken`` in
  1900..2030 and not before the birth year;
* the photo is assumed taken on 1 July of ``photo_taken``, so the age is
  ``photo_taken - birth year``, minus one when born in July or later;
  kept when 0 <= age <= 100.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Iterator

import numpy as np

from agedistill_core.datasets.base import DATASETS, Item
from agedistill_core.errors import DataError

MIN_FACE_SCORE = 1.0
MAX_AGE = 100


def datenum_to_date(dn: float) -> date | None:
    """MATLAB datenum (days since year 0, day 1 = 1 Jan 0000) -> date; None when invalid."""
    if not np.isfinite(dn) or dn < 367:  # before 1 Jan 0001
        return None
    try:
        return date.fromordinal(int(dn) - 366)
    except (OverflowError, ValueError):
        return None


def age_at_photo(dob: date, photo_taken: int) -> int:
    """Age on 1 July of ``photo_taken`` (the year the photo was taken)."""
    return int(photo_taken) - dob.year - (1 if dob.month >= 7 else 0)


@dataclass(frozen=True)
class CleanReport:
    total: int
    kept: int
    no_face_or_low_score: int
    second_face: int
    bad_date: int
    age_out_of_range: int


def _cell_str(v) -> str:
    a = np.asarray(v).ravel()
    return str(a[0]) if a.size else ""


def _field(meta, name: str, where: Path) -> np.ndarray:
    if name not in (meta.dtype.names or ()):
        raise DataError(f"{where} lacks the field {name!r}; expected the official IMDB-WIKI .mat layout")
    return np.asarray(meta[name]).ravel()


def read_mat(mat_path: Path, min_face_score: float = MIN_FACE_SCORE) -> tuple[list[Item], CleanReport]:
    """Clean rows of one ``imdb.mat`` / ``wiki.mat`` as manifest items (paths relative to its folder)."""
    from scipy.io import loadmat

    mat_path = Path(mat_path)
    key = mat_path.stem  # imdb | wiki
    try:
        mat = loadmat(str(mat_path))
    except Exception as exc:  # scipy raises several types for a damaged file
        raise DataError(f"{mat_path} is not a readable MATLAB file ({type(exc).__name__}); "
                        "download it again") from None
    if key not in mat:
        raise DataError(f"{mat_path} has no struct {key!r}; expected imdb.mat with 'imdb' or wiki.mat with 'wiki'")
    meta = mat[key][0, 0]
    paths = _field(meta, "full_path", mat_path)
    dob = _field(meta, "dob", mat_path).astype(np.float64)
    taken = _field(meta, "photo_taken", mat_path).astype(np.float64)
    score = _field(meta, "face_score", mat_path).astype(np.float64)
    second = _field(meta, "second_face_score", mat_path).astype(np.float64)
    if "celeb_id" in (meta.dtype.names or ()):
        subjects = [f"{key}:{int(v)}" for v in np.asarray(meta["celeb_id"]).ravel()]
    elif "name" in (meta.dtype.names or ()):
        subjects = [f"{key}:{_cell_str(v)}" if _cell_str(v) else None for v in np.asarray(meta["name"]).ravel()]
    else:
        subjects = [None] * len(paths)
    n = len(paths)
    if not (len(dob) == len(taken) == len(score) == len(second) == len(subjects) == n):
        raise DataError(f"{mat_path}: the struct fields have different lengths; the file is damaged")
    items, counts = [], dict(no_face_or_low_score=0, second_face=0, bad_date=0, age_out_of_range=0)
    for i in range(n):
        if not (np.isfinite(score[i]) and score[i] >= min_face_score):
            counts["no_face_or_low_score"] += 1
            continue
        if not np.isnan(second[i]):
            counts["second_face"] += 1
            continue
        born = datenum_to_date(dob[i])
        if born is None or not np.isfinite(taken[i]) or not (1900 <= taken[i] <= 2030) or taken[i] < born.year:
            counts["bad_date"] += 1
            continue
        age = age_at_photo(born, int(taken[i]))
        if not 0 <= age <= MAX_AGE:
            counts["age_out_of_range"] += 1
            continue
        items.append(Item(path=_cell_str(paths[i]), subject=subjects[i], age=float(age)))
    return items, CleanReport(n, len(items), **counts)


def find_mats(root: Path) -> list[tuple[Path, str]]:
    """(mat file, path prefix) pairs under ``root``."""
    root = Path(root)
    out = [(root / f"{k}.mat", "") for k in ("imdb", "wiki") if (root / f"{k}.mat").is_file()]
    if not out:
        out = [(root / f"{k}_crop" / f"{k}.mat", f"{k}_crop/") for k in ("imdb", "wiki")
               if (root / f"{k}_crop" / f"{k}.mat").is_file()]
    return out


@DATASETS.register("imdb_wiki")
def scan_imdb_wiki(root: Path) -> Iterator[Item]:
    mats = find_mats(root)
    if not mats:
        raise DataError(f"no imdb.mat / wiki.mat in {root} (or its imdb_crop/, wiki_crop/); "
                        "point dataset.root at the IMDB-WIKI folder")
    for mat_path, prefix in mats:
        items, _ = read_mat(mat_path)
        for it in items:
            yield Item(path=prefix + it.path, subject=it.subject, age=it.age)
