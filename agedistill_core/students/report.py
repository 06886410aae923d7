"""Score student checkpoints on the test split of one or more profiles' label tables.

    python -m agedistill_core.students.report --profile utkface --profile fairface \\
        data/utkface/students/mn3_small-short/best.pt data/utkface/students/mn3_small-gt-short/best.pt

For each profile (its label table must exist: ``agedistill --profile P manifest
crops label vmage``) and checkpoint: MAE to the ground truth, MAE to the
teacher, and FairFace-group top-1 / 1-off where the data has groups (zero-shot:
the predicted age is mapped to its group).  The teacher is scored too.  Prints
a Markdown table; ``--json`` also writes the rows.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from agedistill_core.errors import AgedistillError
from agedistill_core.evaluate.benchmark import _group_scores
from agedistill_core.evaluate.metrics import mae
from agedistill_core.evaluate.predict import load_student
from agedistill_core.settings import load_settings
from agedistill_core.shards import atomic_write_text, read_table
from agedistill_core.students.data import load_split

COLUMNS = ["profile", "model", "checkpoint", "test_faces", "mae_to_ground_truth", "mae_to_teacher",
           "group_top1", "group_1off"]


def score(profile: str, checkpoints: list[str], params: str | None = None, batch_size: int = 128) -> list[dict]:
    settings = load_settings(profile, params)
    test = load_split(settings, "test", "teacher")
    vm = read_table(settings.vmage_path, ["image_id", "split", "gt_group"]).to_pydict()
    group_of = {i: g for i, s, g in zip(vm["image_id"], vm["split"], vm["gt_group"]) if s == "test"}
    groups = [group_of.get(i) for i in test.image_id]
    rows = []
    t1, t1off = _group_scores(test.teacher_age, groups)
    rows.append(dict(profile=profile, model="teacher", checkpoint="-", test_faces=len(test),
                     mae_to_ground_truth=mae(test.teacher_age, test.gt_age), mae_to_teacher=0.0,
                     group_top1=t1, group_1off=t1off))
    for ckpt in checkpoints:
        student = load_student(ckpt)
        ages = student.predict_jpegs(test.jpeg, batch_size)
        g1, g1off = _group_scores(ages, groups)
        rows.append(dict(profile=profile, model=student.arch, checkpoint=str(ckpt), test_faces=len(test),
                         mae_to_ground_truth=mae(ages, test.gt_age), mae_to_teacher=mae(ages, test.teacher_age),
                         group_top1=g1, group_1off=g1off))
    return rows


def markdown(rows: list[dict]) -> str:
    def f(v):
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(f(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agedistill_core.students.report", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--profile", action="append", required=True)
    p.add_argument("--params")
    p.add_argument("--json")
    a = p.parse_args(argv)
    try:
        rows = [r for prof in a.profile for r in score(prof, a.checkpoints, a.params)]
    except AgedistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.json:
        clean = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in rows]
        atomic_write_text(Path(a.json), json.dumps(clean, indent=2))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
