"""corrupt_table: one row per input, in order; unreadable rows recorded."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from agedistill_core.corruptions import corrupt, corrupt_table, image_seed
from agedistill_core.corruptions.table import decode_rgb
from agedistill_core.errors import ConfigError, DataError

from _corruption_data import UTK


def _jpeg(img: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _faces_bytes(n: int) -> list[bytes]:
    if UTK.exists():
        return [f.read_bytes() for f in sorted(UTK.glob("*.jpg"))[:n]]
    rng = np.random.default_rng(0)  # no shared data: synthetic JPEGs
    return [_jpeg(rng.integers(0, 256, (60, 50, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def table() -> pa.Table:
    good = _faces_bytes(4)
    truncated = good[1][: len(good[1]) // 2]
    rows = [("a", good[0]), ("trunc", truncated), ("b", good[2]), ("empty", b""),
            ("c", good[3]), ("null", None), ("junk", b"not an image at all")]
    return pa.table({"image_id": [r[0] for r in rows], "jpeg": pa.array([r[1] for r in rows], pa.binary())})


def test_truncated_jpeg_is_refused_by_decoder(table):
    with pytest.raises(Exception):
        decode_rgb(table.column("jpeg")[1].as_py())


@pytest.mark.parametrize("name,severity", [("gaussian_noise", 3), ("spatter", 5)])
def test_unreadable_rows_recorded_in_order(table, name, severity):
    out = corrupt_table(table, name, severity, seed=5)
    assert out.num_rows == table.num_rows
    assert out.column("image_id").to_pylist() == table.column("image_id").to_pylist()
    assert out.column("corruption").to_pylist() == [name] * table.num_rows
    assert out.column("severity").to_pylist() == [severity] * table.num_rows
    status = out.column("status").to_pylist()
    assert status == ["ok", "unreadable", "ok", "unreadable", "ok", "unreadable", "unreadable"]
    reasons = out.column("reason").to_pylist()
    pngs = out.column("png").to_pylist()
    for st, reason, png in zip(status, reasons, pngs):
        assert (reason is None) == (st == "ok")
        assert (png is None) == (st != "ok")
    assert "truncated" in reasons[1]
    assert "empty" in reasons[3]
    # each PNG is the lossless image corrupt() gives with the per-image seed
    for i in (0, 2, 4):
        image_id = table.column("image_id")[i].as_py()
        src = decode_rgb(table.column("jpeg")[i].as_py())
        expected = corrupt(src, name, severity, seed=image_seed(image_id, name, severity, 5))
        got = np.asarray(Image.open(io.BytesIO(pngs[i])).convert("RGB"))
        np.testing.assert_array_equal(got, expected)
        assert pngs[i][:8] == b"\x89PNG\r\n\x1a\n"


def test_workers_give_the_same_table(table):
    big = pa.concat_tables([table] * 3)
    one = corrupt_table(big, "motion_blur", 2, seed=1, workers=1)
    two = corrupt_table(big, "motion_blur", 2, seed=1, workers=2)
    assert one.equals(two)
    assert one.column("status").to_pylist().count("ok") == 9


def test_bad_arguments(table):
    with pytest.raises(ConfigError, match="pixelation"):
        corrupt_table(table, "nope", 1)
    with pytest.raises(ConfigError):
        corrupt_table(table, "jpeg", 0)
    with pytest.raises(ConfigError):
        corrupt_table(table, "jpeg", 1, workers=0)
    with pytest.raises(DataError, match="jpeg"):
        corrupt_table(table.drop(["jpeg"]), "jpeg", 1)


def test_empty_table():
    t = pa.table({"image_id": pa.array([], pa.string()), "jpeg": pa.array([], pa.binary())})
    out = corrupt_table(t, "jpeg", 1, workers=4)
    assert out.num_rows == 0
    assert out.column_names == ["image_id", "corruption", "severity", "png", "status", "reason"]
