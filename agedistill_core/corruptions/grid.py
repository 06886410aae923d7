"""A labelled PNG grid: one row per corruption, original + severities 1..5."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import check_image


def corruption_grid(image: np.ndarray, path, *, seed: int = 0, names=None,
                    cell_inches: float = 1.4, dpi: int = 100) -> None:
    """Write ``path`` (PNG): rows = corruptions (``corruption_names()`` order
    unless ``names`` is given), columns = original, s1..s5.  Matplotlib's Agg
    canvas is used directly, so the global pyplot backend is left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from . import SEVERITIES, corrupt, corruption_names

    image = check_image(image)
    names = list(corruption_names() if names is None else names)
    ncols = 1 + len(SEVERITIES)
    label_w = 1.5
    fig = Figure(figsize=(label_w + ncols * cell_inches, 0.3 + len(names) * cell_inches), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(names), ncols, squeeze=False)
    fig.subplots_adjust(left=label_w / (label_w + ncols * cell_inches), right=0.995,
                        top=1 - 0.3 / (0.3 + len(names) * cell_inches), bottom=0.002,
                        wspace=0.04, hspace=0.04)
    for r, name in enumerate(names):
        cells = [image] + [corrupt(image, name, s, seed=seed) for s in SEVERITIES]
        for c, cell in enumerate(cells):
            ax = axes[r][c]
            ax.imshow(cell, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else f"severity {SEVERITIES[c - 1]}", fontsize=9)
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
