"""Measure the teacher against ground truth: framing x test-time variants.

Runs the pipeline's own code (``faces.extract_face`` with a detector and
aligner, JPEG round trip as stored, ``labels.label_crops`` with the teacher)
on a labelled data set, without writing shards, and prints one Markdown row
per (framing, variants): MAE for data sets with ages (UTKFace), top-1 / 1-off
group accuracy for data sets with groups (FairFace).

    python -m agedistill_core.teacher.measure --dataset utkface \\
        --root ../shared/data/utkface/crop_part1 --framing none:none --framing none:dlib5 \\
        --framing dlib:dlib5 --variants 1 --variants 8 [--limit 3000] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from agedistill_core.faces.crops import crop_one
from agedistill_core.labeltable import USABLE
from agedistill_core.datasets import DATASETS
from agedistill_core.errors import run_command
from agedistill_core.ages import FAIRFACE_GROUPS, age_to_group
from agedistill_core.metrics import group_accuracy, mae
from agedistill_core.teacher.label import label_crops
from agedistill_core.settings import FaceSettings, TeacherSettings
from agedistill_core.teacher import build_teacher


def crop_all(paths: list[Path], ids: list[str], faces: FaceSettings, workers: int) -> list[dict]:
    work = partial(crop_one, cfg=faces)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            return list(pool.map(work, paths, ids, chunksize=64))
    return [work(p, i) for p, i in zip(paths, ids)]


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--framing", action="append", default=None,
                    help="DETECTOR:ALIGN, e.g. none:none, dlib:dlib5 (repeatable)")
    ap.add_argument("--variants", action="append", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="fixed-seed sample of this many images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--no-fallback", action="store_true", help="record no_face instead of the whole image")
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args(argv)

    root = Path(args.root)
    items = list(DATASETS.get(args.dataset)(root))
    if args.limit and args.limit < len(items):
        items = random.Random(args.seed).sample(items, args.limit)
    paths = [root / it.path for it in items]
    ids = [it.path for it in items]
    gt_age = np.array([np.nan if it.age is None else it.age for it in items], np.float64)
    gt_group = np.array([FAIRFACE_GROUPS.index(it.age_group) if it.age_group in FAIRFACE_GROUPS else -1
                         for it in items])
    rows = []
    for framing in args.framing or ["none:none"]:
        det, align = framing.split(":")
        faces = replace(FaceSettings(), detector=det, align=align,
                        whole_image_fallback=not args.no_fallback)
        t0 = time.perf_counter()
        crops = crop_all(paths, ids, faces, args.workers)
        t_crop = time.perf_counter() - t0
        status = {s: sum(r["status"] == s for r in crops) for s in ("ok", "whole_image", "no_face", "unreadable")}
        use = [i for i, r in enumerate(crops) if r["status"] in USABLE]
        for v in args.variants or [1]:
            teacher = build_teacher(replace(TeacherSettings(), variants=v))
            t0 = time.perf_counter()
            outs, kept = label_crops(teacher, [crops[i]["jpeg"] for i in use], [ids[i] for i in use],
                                     batch_size=args.batch_size)
            t_label = time.perf_counter() - t0
            pred = np.full(len(items), np.nan)
            pred[[use[k] for k in kept]] = np.concatenate([o.age for o in outs]) if outs else []
            row = {"dataset": args.dataset, "framing": framing, "variants": v, "images": len(items),
                   "labelled": int(np.isfinite(pred).sum()), **status,
                   "crop_s": round(t_crop, 1), "label_s": round(t_label, 1)}
            if np.isfinite(gt_age).any():
                row["mae"] = round(mae(pred, gt_age), 3)
            if (gt_group >= 0).any():
                ok = np.isfinite(pred) & (gt_group >= 0)
                top1, one_off = group_accuracy(age_to_group(pred[ok]), gt_group[ok])
                row["top1"], row["one_off"] = round(top1, 4), round(one_off, 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    sys.exit(run_command(lambda: main() and 0))
