"""The crop stage on real and deliberately broken files: nothing is dropped silently."""
import shutil

import numpy as np
import pyarrow.compute as pc

from agedistill_core.faces.crops import CROPS_SCHEMA, crop_shard
from agedistill_core.datasets import build_manifest
from agedistill_core.images import decode_image, encode_jpeg
from agedistill_core.settings import load_settings
from agedistill_core.shards import read_table
from agedistill_testing import UTKFACE, needs_utkface, write_params


@needs_utkface
def test_bad_files_are_recorded_with_reasons_and_the_shard_goes_on(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for f in sorted(UTKFACE.glob("*.jpg"))[:3]:
        shutil.copy(f, root / f.name)
    good = (root / sorted(p.name for p in root.iterdir())[0]).read_bytes()
    (root / "20_0_0_truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "21_0_0_empty.jpg").write_bytes(b"")
    (root / "22_0_0_text.jpg").write_text("this is not an image")
    p = write_params(tmp_path, {"u": {"workdir": str(tmp_path / "w"),
                                      "dataset": {"name": "utkface", "root": str(root)},
                                      "faces": {"detector": "none", "crop_size": 64}}})
    s = load_settings("u", p)
    build_manifest(s)
    result = crop_shard(s, "shard-00000")
    table = read_table(result.path)
    assert table.schema.remove_metadata() == CROPS_SCHEMA
    assert table.num_rows == 6 and result.counts == {"ok": 3, "unreadable": 3}
    rows = {r["image_id"].split("/")[-1]: r for r in table.to_pylist()}
    assert "truncated" in rows["20_0_0_truncated.jpg"]["reason"]
    assert "empty file" in rows["21_0_0_empty.jpg"]["reason"]
    assert "not a decodable image" in rows["22_0_0_text.jpg"]["reason"]
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert all(decode_image(r["jpeg"]).shape == (64, 64, 3) for r in ok)
    # a second call with the same settings reuses the shard
    assert crop_shard(s, "shard-00000").skipped


def test_detector_finds_the_astronaut_and_not_the_coffee(tmp_path):
    import skimage.data as skd

    root = tmp_path / "photos"
    root.mkdir()
    (root / "astronaut.jpg").write_bytes(encode_jpeg(skd.astronaut()))
    (root / "coffee.jpg").write_bytes(encode_jpeg(skd.coffee()))
    p = write_params(tmp_path, {"f": {"workdir": str(tmp_path / "w"),
                                      "dataset": {"name": "folder", "root": str(root)},
                                      "faces": {"detector": "haar", "whole_image_fallback": False}}})
    s = load_settings("f", p)
    build_manifest(s)
    table = read_table(crop_shard(s, "shard-00000").path)
    rows = {r["image_id"]: r for r in table.to_pylist()}
    astro = rows["folder/astronaut.jpg"]
    assert astro["status"] == "ok"
    x0, y0, x1, y1 = astro["box"]
    assert 150 < (x0 + x1) / 2 < 300 and 50 < (y0 + y1) / 2 < 180     # Eileen Collins' face
    assert rows["folder/coffee.jpg"]["status"] == "no_face" and rows["folder/coffee.jpg"]["jpeg"] is None


def test_whole_image_fallback_only_for_crop_sized_images(tmp_path):
    """A photo without a face is no_face; a small undetected crop is used whole."""
    import skimage.data as skd

    root = tmp_path / "imgs"
    root.mkdir()
    (root / "coffee.jpg").write_bytes(encode_jpeg(skd.coffee()))          # 600x400 photo, no face
    (root / "small.jpg").write_bytes(encode_jpeg(skd.coffee()[::8, ::8]))  # 75x50: crop-sized
    p = write_params(tmp_path, {"f": {"workdir": str(tmp_path / "w"),
                                      "dataset": {"name": "folder", "root": str(root)},
                                      "faces": {"detector": "haar", "align": "none", "whole_image_fallback": True,
                                                "whole_image_max_side": 512}}})
    s = load_settings("f", p)
    build_manifest(s)
    rows = {r["image_id"]: r for r in read_table(crop_shard(s, "shard-00000").path).to_pylist()}
    assert rows["folder/coffee.jpg"]["status"] == "no_face"
    assert "whole_image_max_side=512" in rows["folder/coffee.jpg"]["reason"]
    assert rows["folder/small.jpg"]["status"] == "whole_image" and rows["folder/small.jpg"]["jpeg"]
