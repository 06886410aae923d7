"""APPA-REAL / LAP adapter: the official CSV layout, splits, and clear errors."""
from __future__ import annotations

import pytest

from agedistill_core.datasets import DATASETS
from agedistill_core.datasets.appa_real import read_appa_real
from agedistill_core.errors import DataError
from agedistill_core.metrics import epsilon_error

HEADER = "file_name,num_ratings,apparent_age_avg,apparent_age_std,real_age"


def write(root, folder, rows):
    (root / folder).mkdir(exist_ok=True)
    (root / f"gt_avg_{folder}.csv").write_text("\n".join([HEADER, *rows]) + "\n")


def test_rows_and_splits(tmp_path):
    write(tmp_path, "train", ["000000.jpg,36,5.0,1.1462,4", "000001.jpg,63,20.3333,3.3333,18"])
    write(tmp_path, "valid", ["004113.jpg,38,27.2632,4.5,24"])
    write(tmp_path, "test", ["005613.jpg,35,42.0,5.0,"])
    items = list(DATASETS.get("appa_real")(tmp_path))
    assert [(i.path, i.split) for i in items] == [("train/000000.jpg", "train"), ("train/000001.jpg", "train"),
                                                  ("valid/004113.jpg", "val"), ("test/005613.jpg", "test")]
    assert items[1].age == pytest.approx(20.3333) and items[1].age_std == pytest.approx(3.3333)
    rows = read_appa_real(tmp_path)
    assert rows[0].real_age == 4 and rows[0].num_ratings == 36 and rows[-1].real_age is None


def test_bad_layouts(tmp_path):
    with pytest.raises(DataError, match="point dataset.root at the APPA-REAL folder"):
        read_appa_real(tmp_path)
    (tmp_path / "gt_avg_test.csv").write_text("file,age\n1.jpg,3\n")
    with pytest.raises(DataError, match="lacks column"):
        read_appa_real(tmp_path)
    write(tmp_path, "test", ["1.jpg,3,oops,1.0,4"])
    with pytest.raises(DataError, match=r"gt_avg_test.csv:2: column apparent_age_avg is 'oops'"):
        read_appa_real(tmp_path)


def test_epsilon_error_matches_spec():
    # one exact hit (0), one miss by one std (1 - e^-0.5), one voter-agreed face missed (1)
    assert epsilon_error([30, 25, 10], [30, 20, 11], [2, 5, 0]) == pytest.approx((0 + 1 - 0.6065307 + 1) / 3, abs=1e-6)
    assert epsilon_error([10], [10], [0]) == 0
