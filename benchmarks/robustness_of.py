"""Robustness (LFW+C construction) of named checkpoints against the teacher: the paper's Table 6.

Scores the teacher and each ``NAME=CHECKPOINT`` (a student ``best.pt`` or an exported ONNX)
on the clean base faces and on every finished LFW+C partition of the profile (build them
with ``agedistill --profile P lfwc``), rather than every run folder as ``agedistill evaluate``
does::

    .venv/bin/python benchmarks/robustness_of.py --profile corpus --threads 1 \\
        shipped=models/mn3_small_distilled/best.pt \\
        distc=data/corpus/students/mn3_small-distribution-band_sqrt-ft-s0-distc-4978ad/best.pt \\
        --teacher-json data/corpus/benchmarks/robustness_teacher.json --json robustness.json

Prints Markdown on stdout: Table 6 (MAE per corruption, averaged over the severities, with
the clean faces and the mean over all corrupted sets) and the MAE per severity.  ``--json``
writes the long rows (model x corruption x severity) and both tables.  The teacher is the
slow part (its test-time variants on every face of every set): ``--teacher-json`` keeps its
rows, and a later call reuses them when the profile's teacher, base faces and corruption
settings are unchanged and the file covers every set scored (else it scores and rewrites).
Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from agedistill_core.cli import setup_logging
from agedistill_core.corruptions.lfwc import partition_version
from agedistill_core.evaluate.robustness import (finished_partitions, plot_robustness, robustness_rows, table6,
                                                  table6_markdown)
from agedistill_core.settings import load_settings
from agedistill_core.shards import atomic_write_text

LOG = logging.getLogger("agedistill.benchmarks.robustness_of")


def named_checkpoints(pairs: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` arguments as an ordered mapping (one-line errors for a bad pair or file)."""
    out: dict[str, Path] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"robustness_of: {pair!r} is not NAME=CHECKPOINT (e.g. shipped=models/mn3_small_distilled/best.pt)")
        if name == "teacher" or name in out:
            raise SystemExit(f"robustness_of: model name {name!r} is {'taken' if name in out else 'reserved'}; pick another")
        if not Path(path).is_file():
            raise SystemExit(f"robustness_of: {name}: no checkpoint at {path}")
        out[name] = Path(path)
    return out


def teacher_key(settings) -> dict:
    """What the teacher's rows depend on: the profile, its teacher and its LFW+C partitions (not the
    thread count, which ``--threads`` sets and the ages do not depend on)."""
    teacher = replace(settings, teacher=replace(settings.teacher, threads=0))
    return {"profile": settings.profile, "teacher": teacher.section_hash("teacher"),
            "lfwc_version": partition_version(settings)}


def cached_teacher_rows(path: Path, key: dict, sets: set[tuple[str, int]]) -> list[dict] | None:
    """The teacher's rows from ``path`` when its key matches and it covers ``sets``, else None."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("key") != key:
        LOG.info(f"robustness_of: {path} is for another teacher, profile or LFW+C build; scoring the teacher again")
        return None
    rows = [r for r in saved.get("rows", []) if (r["corruption"], r["severity"]) in sets]
    if {(r["corruption"], r["severity"]) for r in rows} != sets:
        LOG.info(f"robustness_of: {path} lacks some of the {len(sets)} sets; scoring the teacher again")
        return None
    return rows


def by_severity(rows: list[dict], models: list[str]) -> list[dict]:
    """Per model: clean MAE, the mean over all corrupted sets, its increase, and the mean per severity."""
    out = []
    for m in models:
        mine = [r for r in rows if r["model"] == m]
        clean = float(np.mean([r["mae"] for r in mine if r["corruption"] == "clean"]))
        corrupted = [r for r in mine if r["corruption"] != "clean"]
        line = {"model": m, "clean": clean, "sets": len(corrupted)}
        if corrupted:
            line["all"] = float(np.mean([r["mae"] for r in corrupted]))
            line["increase"] = line["all"] / clean - 1
            for s in sorted({r["severity"] for r in corrupted}):
                line[f"s{s}"] = float(np.mean([r["mae"] for r in corrupted if r["severity"] == s]))
        out.append(line)
    return out


def by_severity_markdown(lines: list[dict]) -> str:
    sevs = sorted({k for line in lines for k in line if k.startswith("s") and k[1:].isdigit()})
    head = ["model", "clean", f"mean over {lines[0]['sets']} sets", "increase", *sevs]
    md = ["| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1)]
    for line in lines:
        cells = [line["model"], f"{line['clean']:.2f}"]
        cells += [f"{line['all']:.2f}", f"{line['increase']:+.0%}"] if "all" in line else ["-", "-"]
        cells += [f"{line[s]:.2f}" for s in sevs]
        md.append("| " + " | ".join(cells) + " |")
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", metavar="NAME=CHECKPOINT", help="models to score, in column order")
    ap.add_argument("--profile", default="corpus")
    ap.add_argument("--params", help="params.yaml (default: the project's)")
    ap.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads (default 1)")
    ap.add_argument("--no-teacher", action="store_true", help="score the named checkpoints only")
    ap.add_argument("--teacher-json", type=Path, help="reuse the teacher's rows from here, or write them here")
    ap.add_argument("--json", type=Path, help="also write the long rows and the tables here")
    ap.add_argument("--plot", type=Path, help="also draw Figure 4 (MAE per corruption, one bar per model) here")
    args = ap.parse_args(argv)
    setup_logging()
    checkpoints = named_checkpoints(args.checkpoints)

    import torch

    torch.set_num_threads(max(1, args.threads))
    settings = load_settings(args.profile, args.params, {"teacher": {"threads": max(1, args.threads)}})
    done = finished_partitions(settings)
    if not done:
        raise SystemExit(f"robustness_of: no finished LFW+C partition under {settings.lfwc_dir}; "
                         f"run `agedistill --profile {settings.profile} lfwc` first")
    LOG.info(f"robustness_of: {len(checkpoints)} checkpoint(s){'' if args.no_teacher else ' and the teacher'} "
             f"on the clean faces and {len(done)} LFW+C set(s) of profile {settings.profile!r}")
    rows: list[dict] = []
    if not args.no_teacher:
        key, sets = teacher_key(settings), {("clean", 0), *done}
        cached = cached_teacher_rows(args.teacher_json, key, sets) if args.teacher_json else None
        if cached is not None:
            LOG.info(f"robustness_of: the teacher's rows from {args.teacher_json}")
            rows += cached
        else:
            teacher_rows = robustness_rows(settings, {}, teacher=True, partitions=done)
            if args.teacher_json:
                atomic_write_text(args.teacher_json, json.dumps({"key": key, "rows": teacher_rows}, indent=1))
            rows += teacher_rows
    rows += robustness_rows(settings, checkpoints, teacher=False, partitions=done)
    models = ([] if args.no_teacher else ["teacher"]) + list(checkpoints)
    has_gt = rows[0]["target"] == "ground_truth"
    severity = by_severity(rows, models)
    print(table6_markdown(rows, models, has_gt))
    print(by_severity_markdown(severity))
    if args.json:
        atomic_write_text(args.json, json.dumps({
            "profile": settings.profile, "lfwc_dir": str(settings.lfwc_dir), "base_faces": rows[0]["faces"],
            "target": rows[0]["target"], "sets": len(done), "checkpoints": {k: str(v) for k, v in checkpoints.items()},
            "table6": table6(rows, models), "by_severity": severity, "rows": rows}, indent=1))
        LOG.info(f"robustness_of: wrote {args.json}")
    if args.plot:
        LOG.info(f"robustness_of: wrote {plot_robustness(rows, models, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
