"""LFW+C-style robustness: corrupt the evaluation crops 13 x 5 ways, measure MAE.

One partition = one (corruption, severity): ``lfwc/<name>-s<k>/part-NNNNN.parquet``
(lossless PNGs, one row per base face, status + reason) and ``_COMPLETE.json``,
written last, which makes the partition count as finished.  The evaluation runs
the teacher and every trained student on each partition present and writes the
paper's Table 6 (MAE per corruption, averaged over severities) and Figure 4 (a
bar chart), next to the long table (one row per model x corruption x severity).

MAE is to ground truth where the base set has real ages (as LFW+ has), else to
the teacher's label of the clean face; the ``target`` column says which.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from agedistill_core.corruptions.lfwc import base_faces, complete_parts, partition_dir, partition_faces, selected
from agedistill_core.metrics import mae
from agedistill_core.inference.student import load_model
from agedistill_core.teacher.label import get_teacher, label_crops
from agedistill_core.progress import Progress
from agedistill_core.settings import Settings
from agedistill_core.shards import atomic_write_text, write_table

LOG = logging.getLogger("agedistill.evaluate.robustness")


def finished_partitions(settings: Settings) -> dict[tuple[str, int], list[Path]]:
    """The finished LFW+C partitions on disk, ``(corruption, severity) -> part files``, in the
    profile's order; unfinished ones are logged (with the command that finishes them) and left out."""
    finished = {(n, s): complete_parts(settings, n, s) for n, s in selected(settings)}
    partial = [f"{n}-s{s}" for (n, s), parts in finished.items()
               if parts is None and any(partition_dir(settings, n, s).glob("part-*.parquet"))]
    if partial:
        LOG.info(f"robustness: skipping {len(partial)} unfinished LFW+C partition(s) ({', '.join(partial[:5])}"
            f"{', ...' if len(partial) > 5 else ''}); run `agedistill lfwc` to finish them")
    return {key: parts for key, parts in finished.items() if parts}


def robustness_rows(settings: Settings, checkpoints: dict[str, str | Path], *, teacher: bool = True,
                    partitions: dict[tuple[str, int], list[Path]] | None = None) -> list[dict]:
    """MAE per model x (clean + each finished partition): one row per model, corruption and severity.

    ``checkpoints`` maps a model name (the row's ``model``) to a student checkpoint or ONNX
    model; ``teacher`` adds the profile's teacher first, as ``"teacher"``.  The clean base faces
    are the row ``("clean", 0)``.  ``partitions`` defaults to ``finished_partitions(settings)``.
    Rows: ``model, corruption, severity, faces, mae, target`` (``ground_truth`` where the base
    set has real ages, else ``teacher_clean``)."""
    if teacher and "teacher" in checkpoints:
        raise ValueError("robustness_rows: the name 'teacher' is the teacher's; rename that checkpoint")
    done = finished_partitions(settings) if partitions is None else partitions
    base = base_faces(settings)
    has_gt = bool(np.isfinite(base.gt_age).any())
    target_of = dict(zip(base.image_id, base.gt_age if has_gt else base.teacher_age))
    models: list[tuple[str, object]] = [("teacher", None)] if teacher else []
    models += [(name, load_model(path)) for name, path in checkpoints.items()]
    net = get_teacher(settings) if teacher else None

    def predict(model, ids, images) -> np.ndarray:
        if model is None:
            outputs, kept = label_crops(net, images, ids, batch_size=settings.teacher.batch_size)
            ages = np.full(len(ids), np.nan)
            if outputs:
                ages[kept] = np.concatenate([o.age for o in outputs])
            return ages
        return model.predict_jpegs(images, settings.evaluate.batch_size)

    rows: list[dict] = []
    cases = [("clean", 0, base.image_id, base.jpeg)] + [
        (n, s, *partition_faces(parts)) for (n, s), parts in done.items()]
    bar = Progress(len(cases), "robustness", "partition", logger=LOG)
    for name, sev, ids, images in cases:
        target = np.array([target_of[i] for i in ids], np.float64)
        for run, model in models:
            rows.append(dict(model=run, corruption=name, severity=int(sev), faces=len(ids),
                             mae=mae(predict(model, ids, images), target),
                             target="ground_truth" if has_gt else "teacher_clean"))
        if models:
            LOG.info(f"robustness {name} s{sev}: " + ", ".join(f"{r['model']} {r['mae']:.2f}" for r in rows[-len(models):]))
        bar.update()
    bar.close()
    return rows


def run_robustness(settings: Settings) -> pa.Table | None:
    """MAE of the teacher and every trained student (each run folder's ``best.pt``) per
    corruption x severity over the partitions on disk (None if none); writes the long table,
    Table 6 (Markdown) and Figure 4 under the profile's benchmarks folder."""
    done = finished_partitions(settings)
    if not done:
        return None
    students = {ckpt.parent.name: ckpt for ckpt in sorted(Path(settings.students_dir).glob("*/best.pt"))}
    rows = robustness_rows(settings, students, teacher=True, partitions=done)
    models = ["teacher", *students]
    has_gt = rows[0]["target"] == "ground_truth"
    table = pa.Table.from_pylist(rows)
    out = settings.benchmarks_dir
    write_table(table, out / "robustness.parquet")
    atomic_write_text(out / "robustness.md", table6_markdown(rows, models, has_gt))
    plot_robustness(rows, models, out / "robustness.png")
    return table


def table6(rows: list[dict], models: list[str]) -> list[dict]:
    """MAE per corruption averaged over severities (the paper's Table 6), plus overall."""
    names = [n for n in dict.fromkeys(r["corruption"] for r in rows)]
    out = []
    for n in names:
        line = {"corruption": n}
        for m in models:
            vals = [r["mae"] for r in rows if r["corruption"] == n and r["model"] == m]
            line[m] = float(np.mean(vals))
        out.append(line)
    corrupted = [r for r in rows if r["corruption"] != "clean"]
    if corrupted:
        out.append({"corruption": "all corruptions",
                    **{m: float(np.mean([r["mae"] for r in corrupted if r["model"] == m])) for m in models}})
    return out


def table6_markdown(rows: list[dict], models: list[str], has_gt: bool) -> str:
    target = "ground truth" if has_gt else "the teacher's label of the clean face"
    lines = [f"MAE (years) to {target} per corruption, averaged over the severities present.\n",
             "| corruption | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for line in table6(rows, models):
        best = min(line[m] for m in models)
        cells = [f"**{line[m]:.2f}**" if line[m] == best and len(models) > 1 else f"{line[m]:.2f}" for m in models]
        lines.append(f"| {line['corruption']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_robustness(rows: list[dict], models: list[str], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = table6(rows, models)
    x = np.arange(len(lines))
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(8, len(lines) * 0.8), 4))
    for k, m in enumerate(models):
        ax.bar(x + (k - (len(models) - 1) / 2) * width, [line[m] for line in lines], width, label=m)
    ax.set_xticks(x, [line["corruption"] for line in lines], rotation=35, ha="right")
    ax.set_ylabel("MAE (years)")
    ax.set_title("Robustness: MAE per corruption (mean over severities)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8)  # outside: never hides bars
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path
