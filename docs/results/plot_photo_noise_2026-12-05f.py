"""Draws photo_noise_2026-12-05f.png from the tables benchmarks/photo_noise.py printed into
photo_noise_2026-12-05f.md: how far the shipped student's ages move when a camera's noise is on the
photo, per photo size, for plain area inputs, the crop rule alone and what `predict` does.

    .venv/bin/python docs/results/plot_photo_noise_2026-12-05f.py
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "photo_noise_2026-12-05f.md"


def read_tables(text: str) -> tuple[list[float], dict[int, dict[str, list[float]]]]:
    """{photo side: {way: [age shift at each noise]}} and the noise levels."""
    tables: dict[int, dict[str, list[float]]] = {}
    noises: list[float] = []
    side = None
    for line in text.splitlines():
        head = re.match(r"\| (\d+) px photos \| shift at noise ([\d. /]+) \|", line)
        if head:
            side, noises = int(head.group(1)), [float(v) for v in head.group(2).split(" / ")]
            tables[side] = {}
        elif side is not None and line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            tables[side][cells[0]] = [float(v) for v in cells[1].split(" / ")]
    return noises, tables


def main() -> None:
    noises, tables = read_tables(SOURCE.read_text())
    sides = sorted(tables)
    ways = list(tables[sides[0]])
    fig, axes = plt.subplots(1, len(noises), figsize=(4.2 * len(noises), 3.8), sharey=False)
    for ax, k in zip(axes, range(len(noises))):
        for way, style in zip(ways, ("o-", "s--", "^-")):
            ax.plot(sides, [tables[s][way][k] for s in sides], style, label=way)
        ax.set_title(f"noise of deviation {noises[k]:g} on the photo")
        ax.set_xlabel("photo side (px); the face is about 0.8 of it")
        ax.set_xticks(sides)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean |age(noisy) - age(clean)|, years")
    axes[0].legend(fontsize=8)
    fig.suptitle("A camera's noise: the shipped student's ages on 240 validation photos (benchmarks/photo_noise.py)",
                 fontsize=10)
    fig.tight_layout()
    out = HERE / "photo_noise_2026-12-05f.png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
