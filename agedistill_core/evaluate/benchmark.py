"""Stage 5: the benchmark table, teacher and students on the test split.

Columns: ``model``, ``kind`` (teacher/student), ``run``, ``test_faces``,
``mae_to_teacher`` (the VMAGE-test column), ``mae_to_ground_truth`` (where
the data has real ages), ``group_top1`` / ``group_1off`` (where it has FairFace
groups), ``params_m``.

The demo profile's table also scores the shipped model (``models/mn3_small_distilled``,
kind ``shipped``: a student trained on the whole corpus) beside the demo's own few-epoch
student, so a newcomer sees what a trained student does on the same faces.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from agedistill_core.ages import AGE_BANDS, FAIRFACE_GROUPS, age_to_group, band_column, in_band
from agedistill_core.metrics import group_accuracy, mae
from agedistill_core.inference.student import DEFAULT_CHECKPOINT, load_student
from agedistill_core.progress import Progress
from agedistill_core.settings import Settings
from agedistill_core.shards import atomic_write_text, read_table, write_table
from agedistill_core.labeltable import load_split

LOG = logging.getLogger("agedistill.evaluate.benchmark")

COLUMNS = ["model", "kind", "run", "test_faces", "mae_to_teacher", "mae_to_ground_truth",
           "group_top1", "group_1off", "params_m"]
# MAE to ground truth per age band (SPEC section 5's corpus bands, ``ages``): where age tools fail most
BAND_COLUMNS = [band_column(lo, hi) for lo, hi in AGE_BANDS]
BREAKDOWN_COLUMNS = ["run", "source", "test_faces", "mae_to_ground_truth", "mae_to_teacher", *BAND_COLUMNS]


def band_maes(pred, truth) -> dict[str, float]:
    """MAE to ground truth within each age band of the true age (nan where a band is empty)."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    out = {}
    for col, (lo, hi) in zip(BAND_COLUMNS, AGE_BANDS):
        sel = in_band(truth, lo, hi)
        out[col] = mae(pred[sel], truth[sel]) if sel.any() else float("nan")
    return out


def breakdown(run: str, ages: np.ndarray, test) -> list[dict]:
    """One row per source of the test split (and ``all`` when there are several): MAEs and bands."""
    sources = np.asarray(test.source if test.source else ["all"] * len(test))
    names = sorted(set(sources.tolist()))
    groups = [(name, sources == name) for name in names]
    if len(names) > 1:
        groups.append(("all", np.ones(len(test), bool)))
    rows = []
    for name, sel in groups:
        rows.append(dict(run=run, source=name, test_faces=int(sel.sum()),
                         mae_to_ground_truth=mae(ages[sel], test.gt_age[sel]),
                         mae_to_teacher=mae(ages[sel], test.teacher_age[sel]),
                         **band_maes(ages[sel], test.gt_age[sel])))
    return rows


def _group_scores(ages: np.ndarray, groups: list[str | None]) -> tuple[float, float]:
    known = [i for i, g in enumerate(groups) if g in FAIRFACE_GROUPS]
    if not known:
        return float("nan"), float("nan")
    truth = np.array([FAIRFACE_GROUPS.index(groups[i]) for i in known])
    return group_accuracy(age_to_group(ages[known]), truth)


def _predict(student, jpegs: list, batch_size: int, desc: str, progress: bool) -> np.ndarray:
    """``student.predict_jpegs`` batch by batch (the same batches), with progress."""
    ages = []
    with Progress(len(jpegs), desc, "face", logger=LOG, enabled=progress) as bar:
        for lo in range(0, len(jpegs), batch_size):
            ages.append(student.predict_jpegs(jpegs[lo:lo + batch_size], batch_size))
            bar.update(len(ages[-1]))
    return np.concatenate(ages) if ages else np.zeros(0, np.float32)


def score_checkpoints(settings: Settings, checkpoints: list[str | Path], *, quiet: bool = False,
                      details: list[dict] | None = None, split: str = "test") -> list[dict]:
    """The teacher and each student checkpoint on the profile's test split (or ``split``): one row each.

    ``details``, when given, receives the per-source, per-age-band rows (``breakdown``); ``quiet``:
    no progress or per-checkpoint line (``agedistill.evaluate.benchmark``).
    """
    test = load_split(settings, split, "teacher")
    vmage = read_table(settings.vmage_path, ["image_id", "split", "gt_group"]).to_pydict()
    group_of = {i: g for i, s, g in zip(vmage["image_id"], vmage["split"], vmage["gt_group"]) if s == split}
    groups = [group_of.get(i) for i in test.image_id]
    t1, t1off = _group_scores(test.teacher_age, groups)
    rows = [dict(model="teacher", kind="teacher", run="+".join(map(str, settings.teacher.members)),
                 checkpoint="-", test_faces=len(test), mae_to_teacher=0.0,
                 mae_to_ground_truth=mae(test.teacher_age, test.gt_age), group_top1=t1, group_1off=t1off,
                 params_m=None)]
    if details is not None:
        details.extend(breakdown("teacher", test.teacher_age, test))
    bar = Progress(len(checkpoints), "benchmark", "checkpoint", logger=LOG, enabled=not quiet)
    for ckpt in checkpoints:
        student = load_student(ckpt)
        ages = _predict(student, test.jpeg, settings.evaluate.batch_size, f"benchmark {Path(ckpt).parent.name}",
                        not quiet)
        g1, g1off = _group_scores(ages, groups)
        n_params = sum(p.numel() for p in student.model.parameters()) / 1e6
        shipped = Path(ckpt).resolve() == DEFAULT_CHECKPOINT.resolve()
        rows.append(dict(model=student.arch, kind="shipped" if shipped else "student", run=Path(ckpt).parent.name,
                         checkpoint=str(ckpt),
                         test_faces=len(test), mae_to_teacher=mae(ages, test.teacher_age),
                         mae_to_ground_truth=mae(ages, test.gt_age), group_top1=g1, group_1off=g1off,
                         params_m=round(n_params, 2)))
        if details is not None:
            details.extend(breakdown(rows[-1]["run"], ages, test))
        if not quiet:
            LOG.info(f"{rows[-1]['run']}: MAE to teacher {rows[-1]['mae_to_teacher']:.2f}")
        bar.update()
    bar.close()
    return rows


def extra_checkpoints(settings: Settings) -> list[Path]:
    """Checkpoints the profile's benchmark scores beside its own runs: for the demo, the shipped
    model (so a newcomer sees what a trained student does).  dvc.yaml lists them as dependencies."""
    if settings.dataset.name == "demo" and DEFAULT_CHECKPOINT.is_file():
        return [DEFAULT_CHECKPOINT]
    return []


def run_benchmark(settings: Settings) -> pa.Table:
    """Score the teacher and every trained student of the profile; write the tables."""
    details: list[dict] = []
    checkpoints = sorted(Path(settings.students_dir).glob("*/best.pt")) + extra_checkpoints(settings)
    rows = score_checkpoints(settings, checkpoints, details=details)
    table = pa.Table.from_pylist(rows).select(COLUMNS)
    out = settings.benchmarks_dir
    write_table(table, out / "benchmark.parquet")
    write_table(pa.Table.from_pylist(details).select(BREAKDOWN_COLUMNS), out / "benchmark_by_source.parquet")
    atomic_write_text(out / "benchmark.md", to_markdown(rows, settings) + "\n" + breakdown_markdown(details))
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


def breakdown_markdown(details: list[dict]) -> str:
    return ("Per source of the test split, and MAE to ground truth per true-age band "
            "(years; '-' where a band is empty):\n\n" + markdown_table(details, BREAKDOWN_COLUMNS))


def to_markdown(rows: list[dict], settings: Settings) -> str:
    head = (f"Benchmark, profile `{settings.profile}` (dataset `{settings.dataset.name}`), test split. "
            "MAE in years; '-' where the data has no such label.\n\n")
    if any(r["kind"] == "shipped" for r in rows):
        head += ("`mn3_small_distilled` (kind `shipped`) is the model `agedistill predict` uses by default, trained "
                 "on the whole corpus (models/mn3_small_distilled/MODEL_CARD.md); the other students are this "
                 "profile's own few-epoch runs.\n\n")
    return head + markdown_table(rows, COLUMNS)
