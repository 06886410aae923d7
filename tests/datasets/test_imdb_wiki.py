"""IMDB-WIKI adapter on a synthetic .mat in the official layout (written by scipy.io.savemat)."""
from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from scipy.io import savemat

from agedistill_core.datasets import DATASETS
from agedistill_core.datasets.imdb_wiki import age_at_photo, datenum_to_date, read_mat
from agedistill_core.errors import DataError

NAN, INF = float("nan"), float("inf")


def datenum(d: date) -> float:
    return d.toordinal() + 366.0  # MATLAB: day 1 = 1 Jan 0000


def cells(values) -> np.ndarray:
    out = np.empty((1, len(values)), dtype=object)
    for i, v in enumerate(values):
        out[0, i] = np.array([v])
    return out


# (path, dob, photo_taken, face_score, second_face_score, subject) -> expected age or None (dropped)
ROWS = [
    ("01/nm01_rm1_1970-3-15_2000.jpg", datenum(date(1970, 3, 15)), 2000, 3.2, NAN, 1, 30),
    ("01/nm01_rm2_1970-3-15_2010.jpg", datenum(date(1970, 3, 15)), 2010, 1.0, NAN, 1, 40),   # score == 1.0 kept
    ("02/nm02_rm1_1970-9-1_2000.jpg", datenum(date(1970, 9, 1)) + 0.5, 2000, 2.5, NAN, 2, 29),  # born July+: -1
    ("03/nm03_rm1_1980-1-1_2000.jpg", datenum(date(1980, 1, 1)), 2000, -INF, NAN, 3, None),  # no face
    ("03/nm03_rm2_1980-1-1_2001.jpg", datenum(date(1980, 1, 1)), 2001, 0.9, NAN, 3, None),   # low score
    ("04/nm04_rm1_1960-1-1_2000.jpg", datenum(date(1960, 1, 1)), 2000, 4.0, 1.7, 4, None),   # second face
    ("05/nm05_rm1_2010-1-1_2000.jpg", datenum(date(2010, 1, 1)), 2000, 4.0, NAN, 5, None),   # taken before birth
    ("06/nm06_rm1_0-1-1_2000.jpg", 1.0, 2000, 4.0, NAN, 6, None),                             # invalid dob
    ("07/nm07_rm1_1850-1-1_2000.jpg", datenum(date(1850, 1, 1)), 2000, 4.0, NAN, 7, None),   # age 150
    ("08/nm08_rm1_1990-6-30_1990.jpg", datenum(date(1990, 6, 30)), 1990, 2.0, NAN, 8, 0),    # age 0 kept
]


def write_mat(path, key: str = "imdb", rows=ROWS) -> None:
    n = len(rows)
    struct = {
        "dob": np.array([[r[1] for r in rows]]),
        "photo_taken": np.array([[r[2] for r in rows]], dtype=np.uint16),
        "full_path": cells([r[0] for r in rows]),
        "gender": np.ones((1, n)),
        "name": cells([f"Person {r[5]}" for r in rows]),
        "face_location": cells([np.array([1.0, 1.0, 50.0, 50.0]) for _ in rows]),
        "face_score": np.array([[r[3] for r in rows]]),
        "second_face_score": np.array([[r[4] for r in rows]]),
    }
    if key == "imdb":
        struct["celeb_names"] = cells([f"Person {i}" for i in range(1, 9)])
        struct["celeb_id"] = np.array([[r[5] for r in rows]], dtype=np.uint16)
    savemat(str(path), {key: struct})


def test_dates_and_age():
    assert datenum_to_date(datenum(date(1970, 3, 15))) == date(1970, 3, 15)
    assert datenum_to_date(730000.7) == date.fromordinal(730000 - 366)
    assert datenum_to_date(NAN) is None and datenum_to_date(5.0) is None
    assert age_at_photo(date(1970, 6, 30), 2000) == 30 and age_at_photo(date(1970, 7, 1), 2000) == 29


def test_imdb_cleaning(tmp_path):
    write_mat(tmp_path / "imdb.mat")
    items, report = read_mat(tmp_path / "imdb.mat")
    expect = [(r[0], r[6]) for r in ROWS if r[6] is not None]
    assert [(it.path, it.age) for it in items] == expect
    assert [it.subject for it in items] == ["imdb:1", "imdb:1", "imdb:2", "imdb:8"]
    assert (report.total, report.kept, report.no_face_or_low_score, report.second_face, report.bad_date,
            report.age_out_of_range) == (10, 4, 2, 1, 2, 1)


def test_scan_both_crops_folders_and_manifest_subjects(tmp_path):
    (tmp_path / "imdb_crop").mkdir()
    (tmp_path / "wiki_crop").mkdir()
    write_mat(tmp_path / "imdb_crop" / "imdb.mat")
    write_mat(tmp_path / "wiki_crop" / "wiki.mat", key="wiki", rows=ROWS[:3])
    items = list(DATASETS.get("imdb_wiki")(tmp_path))
    assert len(items) == 4 + 3
    assert items[0].path == "imdb_crop/01/nm01_rm1_1970-3-15_2000.jpg"
    assert items[-1].path.startswith("wiki_crop/") and items[-1].subject == "wiki:Person 2"


def test_bad_files_name_the_fix(tmp_path):
    with pytest.raises(DataError, match="point dataset.root"):
        list(DATASETS.get("imdb_wiki")(tmp_path))
    (tmp_path / "imdb.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(DataError, match="not a readable MATLAB file"):
        read_mat(tmp_path / "imdb.mat")
    savemat(str(tmp_path / "wiki.mat"), {"other": np.zeros(3)})
    with pytest.raises(DataError, match="no struct 'wiki'"):
        read_mat(tmp_path / "wiki.mat")
