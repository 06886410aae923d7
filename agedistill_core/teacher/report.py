"""The label table's age-group histogram (SPEC 5 groups): a table and a PNG.

``age_group_report(table, workdir)`` writes ``<workdir>/vmage_age_groups.png``
and returns the rows (group, faces, share, gated faces, mean spread) for
Dagster metadata or a Markdown table.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from agedistill_core.ages import AGE_BANDS, age_band, band_label

PLOT_NAME = "vmage_age_groups.png"


def age_group_rows(table: pa.Table) -> list[dict]:
    """One row per SPEC group of the teacher's ages (``teacher_age``, or ``age`` in a labels shard)."""
    col = "teacher_age" if "teacher_age" in table.column_names else "age"
    ages = table[col].to_numpy(zero_copy_only=False).astype(np.float64)
    groups = np.array(age_band(ages)) if len(ages) else np.array([], str)
    gated = (table["gated"].to_numpy(zero_copy_only=False).astype(bool)
             if "gated" in table.column_names else np.zeros(len(ages), bool))
    spread = (table["age_spread"].to_numpy(zero_copy_only=False).astype(np.float64)
              if "age_spread" in table.column_names else np.full(len(ages), np.nan))
    rows = []
    for lo, hi in AGE_BANDS:
        g = band_label(lo, hi)
        sel = groups == g
        n = int(sel.sum())
        rows.append({"group": g, "faces": n, "share": round(n / max(len(ages), 1), 4),
                     "gated": int(gated[sel].sum()),
                     "mean_spread": round(float(np.nanmean(spread[sel])), 3) if n and np.isfinite(spread[sel]).any()
                     else None})
    return rows


def rows_markdown(rows: list[dict]) -> str:
    lines = ["| group | faces | share | gated | mean member spread |", "|---|---|---|---|---|"]
    for r in rows:
        spread = "" if r["mean_spread"] is None else f"{r['mean_spread']:.2f}"
        lines.append(f"| {r['group']} | {r['faces']} | {100 * r['share']:.1f}% | {r['gated']} | {spread} |")
    return "\n".join(lines)


def age_group_report(table: pa.Table, workdir: str | Path, title: str = "teacher ages by SPEC group") -> dict:
    """Write ``<workdir>/vmage_age_groups.png``; return ``{"path", "rows", "markdown"}``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = age_group_rows(table)
    path = Path(workdir) / PLOT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    names = [r["group"] for r in rows]
    counts = [r["faces"] for r in rows]
    bars = ax.bar(names, counts, color="#4C72B0")
    gated = [r["gated"] for r in rows]
    if any(gated):
        ax.bar(names, gated, color="#DD8452", label="children gate")
        ax.legend(loc="upper right", fontsize=8)
    for b, r in zip(bars, rows):
        ax.annotate(f"{100 * r['share']:.0f}%", (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("age group (years)")
    ax.set_ylabel("faces")
    ax.set_title(f"{title} (n={table.num_rows})", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return {"path": path, "rows": rows, "markdown": rows_markdown(rows)}
