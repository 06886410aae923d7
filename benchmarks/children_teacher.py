"""The teacher before and after SPEC 3's children gate, on the real ages of the UTKFace splits.

Both teachers run through the label stage's own code (``teacher.label.label_crops``) on the
stored crops of one split of the corpus label table (the faces the label stage labelled, as it
decodes them): ``before`` is the ``--profile``'s teacher, ``after`` the same teacher with the
children members of ``--with-children`` (a profile whose ``teacher.children`` lists them).
Prints, per source (``utkface`` = crop_part1, ``utkface_rest``) and true-age band, the MAE of
both and how many faces the gate sent to the children; ``wrongly gated`` counts gated faces
whose true age is over 15 (the gate's side effect on young adults).

    .venv/bin/python benchmarks/children_teacher.py --profile corpus \\
        --with-children corpus_children --split val [--json out.json]

Use ``--split val`` to choose (epochs, size, members) and ``--split test`` once, for the
final before/after; FairFace is scored by ``agedistill predict --teacher`` instead.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from agedistill_core.ages import AGE_BANDS, age_band, band_label
from agedistill_core.labeltable import load_split
from agedistill_core.settings import load_settings
from agedistill_core.teacher.label import get_teacher, label_crops

LOG = logging.getLogger("agedistill.benchmarks.children_teacher")
SOURCES = ("utkface", "utkface_rest")


def teacher_ages(settings, jpegs: list, ids: list) -> tuple[np.ndarray, np.ndarray]:
    """The settings' teacher on the crops: (age, gated), nan where a crop did not decode."""
    outs, kept = label_crops(get_teacher(settings), jpegs, ids, batch_size=settings.teacher.batch_size)
    age, gated = np.full(len(ids), np.nan), np.zeros(len(ids), bool)
    if outs:
        age[kept] = np.concatenate([o.age for o in outs])
        gated[kept] = np.concatenate([o.gated for o in outs])
    return age, gated


def rows_for(source: str, gt: np.ndarray, before: np.ndarray, after: np.ndarray, gated: np.ndarray) -> list[dict]:
    bands = np.array(age_band(gt))
    rows = []
    for name, mask in [(band_label(lo, hi), bands == band_label(lo, hi)) for lo, hi in AGE_BANDS[:2]] + \
                      [("26+", gt > 25.5), ("all", np.ones(len(gt), bool))]:
        if not mask.any():
            continue
        rows.append({"source": source, "band": name, "faces": int(mask.sum()),
                     "mae_before": round(float(np.mean(np.abs(before[mask] - gt[mask]))), 3),
                     "mae_after": round(float(np.mean(np.abs(after[mask] - gt[mask]))), 3),
                     "gated": int(gated[mask].sum()),
                     "wrongly_gated": int((gated[mask] & (gt[mask] > 15)).sum())})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="corpus", help="the teacher before (and the label table)")
    ap.add_argument("--with-children", required=True, help="a profile whose teacher has the children members")
    ap.add_argument("--split", default="val", choices=("train", "val", "test"))
    ap.add_argument("--params", default=None, help="params.yaml (default: the repo's)")
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    base = load_settings(profile=args.profile, params=args.params)
    kids = load_settings(profile=args.with_children, params=args.params)
    if not kids.teacher.children:
        raise SystemExit(f"profile {args.with_children} has no teacher.children; list the members there")
    rows = []
    for source in SOURCES:
        faces = load_split(base, args.split, "ground_truth", [source])
        gt = np.asarray(faces.gt_age, np.float64)
        t0 = time.perf_counter()
        before, _ = teacher_ages(base, faces.jpeg, faces.image_id)
        after, gated = teacher_ages(kids, faces.jpeg, faces.image_id)
        ok = np.isfinite(before) & np.isfinite(after)
        LOG.info("%s %s: %d faces, %d gated, %.0f s", source, args.split, int(ok.sum()), int(gated.sum()),
                 time.perf_counter() - t0)
        rows += rows_for(source, gt[ok], before[ok], after[ok], gated[ok])
    print(f"| {args.split} source | band | faces | MAE before | MAE after | gated | wrongly gated (>15) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['band']} | {r['faces']} | {r['mae_before']:.2f} | {r['mae_after']:.2f} "
              f"| {r['gated']} | {r['wrongly_gated']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
