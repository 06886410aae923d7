"""Stage 5: the benchmark table, teacher and students on the test split.

Columns: ``model``, ``kind`` (teacher/student), ``run``, ``test_faces``,
``mae_to_teacher`` (the VMAGE-test column), ``mae_to_ground_truth`` (where
the data has real ages), ``group_top1`` / ``group_1off`` (where it has FairFace
groups), ``params_m``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from agedistill_core.evaluate.metrics import FAIRFACE_GROUPS, age_to_group, group_accuracy, mae
from agedistill_core.evaluate.predict import load_student
from agedistill_core.settings import Settings
from agedistill_core.shards import atomic_write_text, read_table, write_table
from agedistill_core.students.data import load_split

COLUMNS = ["model", "kind", "run", "test_faces", "mae_to_teacher", "mae_to_ground_truth",
           "group_top1", "group_1off", "params_m"]


def _group_scores(ages: np.ndarray, groups: list[str | None]) -> tuple[float, float]:
    known = [i for i, g in enumerate(groups) if g in FAIRFACE_GROUPS]
    if not known:
        return float("nan"), float("nan")
    truth = np.array([FAIRFACE_GROUPS.index(groups[i]) for i in known])
    return group_accuracy(age_to_group(ages[known]), truth)


def score_checkpoints(settings: Settings, checkpoints: list[str | Path], log=print) -> list[dict]:
    """The teacher and each student checkpoint on the profile's test split: one row each."""
    test = load_split(settings, "test", "teacher")
    vmage = read_table(settings.vmage_path, ["image_id", "split", "gt_group"]).to_pydict()
    group_of = {i: g for i, s, g in zip(vmage["image_id"], vmage["split"], vmage["gt_group"]) if s == "test"}
    groups = [group_of.get(i) for i in test.image_id]
    t1, t1off = _group_scores(test.teacher_age, groups)
    rows = [dict(model="teacher", kind="teacher", run="+".join(map(str, settings.teacher.members)),
                 checkpoint="-", test_faces=len(test), mae_to_teacher=0.0,
                 mae_to_ground_truth=mae(test.teacher_age, test.gt_age), group_top1=t1, group_1off=t1off,
                 params_m=None)]
    for ckpt in checkpoints:
        student = load_student(ckpt)
        ages = student.predict_jpegs(test.jpeg, settings.evaluate.batch_size)
        g1, g1off = _group_scores(ages, groups)
        n_params = sum(p.numel() for p in student.model.parameters()) / 1e6
        rows.append(dict(model=student.arch, kind="student", run=Path(ckpt).parent.name, checkpoint=str(ckpt),
                         test_faces=len(test), mae_to_teacher=mae(ages, test.teacher_age),
                         mae_to_ground_truth=mae(ages, test.gt_age), group_top1=g1, group_1off=g1off,
                         params_m=round(n_params, 2)))
        log(f"{rows[-1]['run']}: MAE to teacher {rows[-1]['mae_to_teacher']:.2f}")
    return rows


def run_benchmark(settings: Settings, log=print) -> pa.Table:
    """Score the teacher and every trained student of the profile; write the tables."""
    rows = score_checkpoints(settings, sorted(Path(settings.students_dir).glob("*/best.pt")), log)
    table = pa.Table.from_pylist(rows).select(COLUMNS)
    out = settings.benchmarks_dir
    write_table(table, out / "benchmark.parquet")
    atomic_write_text(out / "benchmark.md", to_markdown(rows, settings))
    metrics = {r["run"]: {k: (None if isinstance(r[k], float) and not np.isfinite(r[k]) else r[k])
                          for k in COLUMNS[3:]} for r in rows}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return table


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_markdown(rows: list[dict], settings: Settings) -> str:
    head = (f"Benchmark, profile `{settings.profile}` (dataset `{settings.dataset.name}`), test split. "
            "MAE in years; '-' where the data has no such label.\n\n")
    return head + markdown_table(rows, COLUMNS)
