"""docs/results/bands_2026-12-05c.png: per age band, each recipe's MAE minus the teacher's on the
two UTKFace test splits together (report_2026-12-05c_test.json; seeds averaged where there are two).

    .venv/bin/python docs/results/plot_bands_2026-12-05c.py
"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).parent
BANDS = ["mae_0_15", "mae_16_25", "mae_26_35", "mae_36_45", "mae_46_60", "mae_61_plus"]
RECIPES = {  # label -> run folders (seeds)
    "previous shipped (KL, 62 epochs)": ["mn3_small_distilled"],
    "KL, 12 more epochs": ["mn3_small-distribution-band_sqrt-ft-s0-distc-4978ad",
                           "mn3_small-distribution-band_sqrt-ft-s1-distc-4978ad"],
    "KL, every band weighs the same (1 seed)": ["mn3_small-distribution-band-ft-s0-distb-4978ad"],
    "KL, no augmentation (1 seed)": ["mn3_small-distribution-band_sqrt-ft-s0-distn-732c13"],
    "KL + real ages, gt_weight 0.5": ["mn3_small-distribution-band_sqrt-gt0.5-ft-s0-distg-bc236b",
                                      "mn3_small-distribution-band_sqrt-gt0.5-ft-s1-distg-bc236b"],
    "KL + real ages, gt_weight 1 (shipped: seed 1)": ["mn3_small-distribution-band_sqrt-gt1-ft-s0-distg-d18e44",
                                                      "mn3_small-distribution-band_sqrt-gt1-ft-s1-distg-d18e44"],
}

rows = json.loads((HERE / "report_2026-12-05c_test.json").read_text())["by_source"]
band = {r["run"]: np.array([r[b] for b in BANDS]) for r in rows if r["source"] == "all" and r["profile"] == "corpus"}
teacher = band["teacher"]
fig, ax = plt.subplots(figsize=(9, 4.2))
width = 0.8 / len(RECIPES)
for k, (label, runs) in enumerate(RECIPES.items()):
    gap = np.mean([band[r] for r in runs], axis=0) - teacher
    ax.bar(np.arange(len(BANDS)) + (k - (len(RECIPES) - 1) / 2) * width, gap, width, label=label)
ax.axhline(0, color="black", lw=0.8)
ax.axhline(1.0, color="grey", ls="--", lw=0.8)
ax.text(len(BANDS) - 0.5, 1.02, "issue bar: 1 year behind", ha="right", va="bottom", fontsize=8, color="grey")
ax.set_xticks(np.arange(len(BANDS)), ["0-15", "16-25", "26-35", "36-45", "46-60", "61+"])
ax.set_xlabel("real age band (UTKFace crop_part1 + rest test splits, 4,630 faces)")
ax.set_ylabel("MAE minus the teacher's (years)")
ax.set_title("Students against the teacher per age band (below 0: better than the teacher)")
ax.legend(fontsize=7.5, loc="lower left")
fig.tight_layout()
fig.savefig(HERE / "bands_2026-12-05c.png", dpi=110)
print(HERE / "bands_2026-12-05c.png")
