"""Score student checkpoints on the test split of one or more profiles' label tables.

    agedistill report --profile utkface --profile fairface \\
        data/utkface/students/mn3_small-short/best.pt data/utkface/students/mn3_small-gt-short/best.pt

For each profile (its label table must exist: ``agedistill --profile P manifest
crops label vmage``) and checkpoint: MAE to the ground truth, MAE to the
teacher, and FairFace-group top-1 / 1-off where the data has groups (zero-shot:
the predicted age is mapped to its group).  The teacher is scored too.  Prints
a Markdown table; ``--json`` also writes the rows.

``--split val`` scores the validation split instead: the one to choose between recipes with
(the test splits only report; ``ship`` refuses a report of another split).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from agedistill_core.evaluate.benchmark import BREAKDOWN_COLUMNS, markdown_table, score_checkpoints
from agedistill_core.settings import load_settings
from agedistill_core.shards import atomic_write_text

COLUMNS = ["profile", "split", "model", "checkpoint", "test_faces", "mae_to_ground_truth", "mae_to_teacher",
           "group_top1", "group_1off"]


def score(profile: str | None, checkpoints: list[str], params: str | None = None,
          details: list[dict] | None = None, split: str = "test") -> list[dict]:
    """Rows for one profile (None: the default one); ``details`` receives its per-source, per-age-band rows."""
    settings = load_settings(profile, params)
    profile = settings.profile
    mine: list[dict] = []
    rows = [{"profile": profile, "split": split, **row}
            for row in score_checkpoints(settings, checkpoints, quiet=True, details=mine, split=split)]
    if details is not None:
        details.extend({"profile": profile, "split": split, **d} for d in mine)
    return rows


def command(a: argparse.Namespace) -> int:
    """``agedistill report``: the table on stdout (and the per-source, per-band rows where there is
    ground truth); ``--json`` also writes both for ``agedistill ship``."""
    details: list[dict] = []
    profiles = a.sub_profiles or [a.profile]   # None: the default profile
    rows = [r for prof in profiles for r in score(prof, a.checkpoints, a.params, details, a.split)]
    if a.json:
        clean = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in rows]
        clean_d = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
                   for r in details]
        atomic_write_text(Path(a.json), json.dumps({"rows": clean, "by_source": clean_d}, indent=2))
    print(markdown_table(rows, COLUMNS))
    with_gt = [d for d in details if np.isfinite(d["mae_to_ground_truth"])]
    if with_gt:
        print(markdown_table(with_gt, ["profile", *BREAKDOWN_COLUMNS]))
    return 0
