"""Adience adapter: fold files, image paths, and the age-label cleaning."""
from __future__ import annotations

import pytest

from agedistill_core.datasets import DATASETS
from agedistill_core.datasets.adience import ADIENCE_GROUPS, adience_group, face_path, read_adience
from agedistill_core.errors import DataError

HEADER = ("user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\t"
          "fiducial_yaw_angle\tfiducial_score")


@pytest.mark.parametrize("label,group", [
    ("(0, 2)", 0), ("(4, 6)", 1), ("(8, 12)", 2), ("(8, 13)", 2), ("(15, 20)", 3), ("(25, 32)", 4),
    ("(38, 43)", 5), ("(48, 53)", 6), ("(60, 100)", 7), ("(38, 42)", 5), ("(27, 32)", 4), ("65", 7), ("57", None), ("3", None),
    ("35", None), ("(8, 23)", None), ("(38, 48)", None), ("None", None), ("", None)])
def test_label_cleaning(label, group):
    assert adience_group(label) == group


def test_folds_and_paths(tmp_path):
    for fold in range(5):
        rows = [HEADER,
                f"30601258@N03\t10399646885_67c7d20df9_o.jpg\t{fold + 1}\t(25, 32)\tf\t0\t414\t1086\t1383\t-115\t30\t17",
                f"30601258@N03\t10424815813_e94629b1ec_o.jpg\t2\tNone\tm\t301\t105\t640\t641\t0\t0\t94"]
        (tmp_path / f"fold_{fold}_data.txt").write_text("\n".join(rows) + "\n")
    rows, dropped = read_adience(tmp_path)
    assert dropped == 5 and [r.fold for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0].path == "faces/30601258@N03/coarse_tilt_aligned_face.1.10399646885_67c7d20df9_o.jpg"
    assert rows[0].path == face_path("30601258@N03", "1", "10399646885_67c7d20df9_o.jpg")
    items = list(DATASETS.get("adience")(tmp_path))
    assert {i.age_group for i in items} == {ADIENCE_GROUPS[4]} and items[3].fold == 3
    assert items[0].subject == "30601258@N03"  # folds are subject-disjoint


def test_missing_or_malformed(tmp_path):
    with pytest.raises(DataError, match="fold_0_data.txt"):
        read_adience(tmp_path)
    (tmp_path / "fold_0_data.txt").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match="lacks column"):
        read_adience(tmp_path)
