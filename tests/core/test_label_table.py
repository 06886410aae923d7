"""Re-binning, the teacher on real faces, and the label table's checks."""
import numpy as np
import pyarrow as pa
import pytest

from agedistill_core.images import read_image, resize
from agedistill_core.settings import TeacherSettings
from agedistill_core.teacher import AGE_AXIS, build_teacher, rebin
from agedistill_core.ages import age_band
from agedistill_core.teacher.vmage import check_vmage
from agedistill_testing import UTKFACE, needs_utkface


def test_rebin_keeps_mass_and_expected_age():
    rng = np.random.default_rng(0)
    bins = np.r_[0.25, np.arange(1, 81)]
    p = rng.dirichlet(np.ones(81), size=5)
    q = rebin(p, bins)
    assert q.shape == (5, 101)
    np.testing.assert_allclose(q.sum(1), 1, atol=1e-12)
    np.testing.assert_allclose(q @ AGE_AXIS, p @ bins, atol=1e-9)


@needs_utkface
def test_bundled_teacher_on_real_faces():
    files = sorted(UTKFACE.glob("*.jpg"))[::97][:96]
    ages = np.array([float(f.name.split("_")[0]) for f in files])
    crops = np.stack([resize(read_image(f), 64) for f in files])
    out = build_teacher(TeacherSettings()).label(crops)
    mae = np.abs(out.age - ages).mean()
    assert mae < 10, mae
    np.testing.assert_allclose(out.probs.sum(1), 1, atol=1e-5)
    assert out.member_probs.shape == (96, 1, 101) and (out.age_spread == 0).all()


def test_spec_age_groups():
    assert age_band(np.array([0, 15.4, 15.6, 25, 45.4, 60, 61, 100, 116])) == [
        "0-15", "0-15", "16-25", "16-25", "36-45", "46-60", "61-120", "61-120", "61-120"]


def _table(ages, probs, ids):
    return pa.table({"image_id": ids, "face": pa.array([0] * len(ids), pa.int16()), "teacher_age": ages,
                     "probs": pa.array(list(probs), pa.list_(pa.float32(), 101))})


def test_checks_catch_each_defect():
    good = np.full((3, 101), 1 / 101, np.float32)
    crops = pa.table({"image_id": ["a", "b", "c", "d"], "status": ["ok", "ok", "whole_image", "unreadable"]})
    assert all(c.passed for c in check_vmage(_table([1.0, 2.0, 3.0], good, ["a", "b", "c"]), crops))
    bad = good.copy()
    bad[0] *= 2
    results = {c.name: c for c in check_vmage(_table([1.0, 120.0, 3.0], bad, ["a", "a", "c"]), crops)}
    assert {n for n, c in results.items() if not c.passed} == {"ages_in_range", "vectors_sum_to_one", "unique_ids"}
    # the measured numbers (Dagster plots them per check): 1 bad age, a vector summing to 2, 1 duplicate
    assert results["ages_in_range"].value == 1 and results["unique_ids"].value == 1
    assert abs(results["vectors_sum_to_one"].value - 1.0) < 1e-4
    short = _table([1.0, 2.0], good[:2], ["a", "b"])
    results = {c.name: c for c in check_vmage(short, crops)}
    assert {n for n, c in results.items() if not c.passed} == {"counts_match_crops"}
    assert results["counts_match_crops"].value == -1          # 2 labelled faces, 3 usable crops


def test_a_stored_table_naming_the_old_last_band_still_reads():
    """Label tables written before ``ages.MAX_AGE`` name the last band 61-100: it counts as 61-120."""
    from agedistill_core.ages import BAND_LABELS
    from agedistill_core.teacher.vmage import summarize

    table = pa.table({"age_group": ["61-100", "61-120", "0-15"], "split": ["train"] * 3,
                      "teacher_age": [70.0, 101.0, 3.0], "gt_age": [None, None, None]})
    hist = summarize(table)["age_groups"]
    assert list(hist) == list(BAND_LABELS) and hist["61-120"] == 2 and hist["0-15"] == 1
