"""corruption_grid writes a decodable, labelled PNG of 13 x 6 cells."""
from __future__ import annotations

import numpy as np
from PIL import Image

from agedistill_core.corruptions import corruption_grid


def test_grid_png(tmp_path, synthetic):
    path = tmp_path / "sub" / "grid.png"
    corruption_grid(synthetic, path)
    assert path.stat().st_size > 10_000
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        arr = np.asarray(im.convert("RGB"))
    # figure: (1.5 + 6 x 1.4) x (0.3 + 13 x 1.4) inches at 100 dpi
    assert abs(w - 990) <= 2 and abs(h - 1850) <= 2
    assert arr.std() > 10  # not blank
