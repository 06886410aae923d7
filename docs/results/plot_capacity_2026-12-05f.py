"""Draws capacity_2026-12-05f.png: validation MAE to the teacher per epoch of the capacity runs
(mn3_small and mn3_large at 96 px from scratch on the same schedule, then each continued 12 epochs
at a lower rate), from their curves committed beside this script.

    .venv/bin/python docs/results/plot_capacity_2026-12-05f.py
"""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
# (label, curve file, epochs before it, style)
RUNS = [
    ("mn3_small, seed 0", "curves_mn3_small-distribution-band_sqrt-area-cap-cf6104.csv", 0, "C0-"),
    ("mn3_small, seed 1", "curves_mn3_small-distribution-band_sqrt-area-s1-cap-cf6104.csv", 0, "C0:"),
    ("mn3_small, seed 0 continued", "curves_mn3_small-distribution-band_sqrt-area-ft-capc-1f575d.csv", 20, "C0--"),
    ("mn3_large, seed 0", "curves_mn3_large-distribution-band_sqrt-area-cap-cf6104.csv", 0, "C3-"),
    ("mn3_large, seed 0 continued", "curves_mn3_large-distribution-band_sqrt-area-ft-capc-c7e7bb.csv", 20, "C3--"),
]


def main() -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, name, before, style in RUNS:
        path = HERE / name
        if not path.is_file():
            continue
        rows = list(csv.DictReader(path.open()))
        ax.plot([before + int(r["epoch"]) for r in rows], [float(r["val_mae"]) for r in rows], style, label=label)
    ax.axhline(2.5, color="grey", lw=0.8, ls="-.", label="issue 15's bar (corpus test)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation MAE to the teacher (years, 5,299 faces)")
    ax.set_ylim(2.0, 8.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Same 96 px input, same schedule: mn3_small (1.6M) against mn3_large (4.3M)", fontsize=10)
    fig.tight_layout()
    out = HERE / "capacity_2026-12-05f.png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
