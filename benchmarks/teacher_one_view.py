"""How far one forward pass of the teacher is from the teacher's own label.

The corpus labels are the teacher's soft vote over SPEC 3's 8 test-time variants.  A student
sees one view per face at predict time, so "MAE to the teacher" has a floor that is not the
student's fault: the teacher network itself, run once on the original crop (variants 1),
already differs from its 8-variant label.  This prints that floor on one split of a profile's
label table, overall and per band of the teacher's age, beside the spread of the 8 variants:

    .venv/bin/python benchmarks/teacher_one_view.py --profile corpus --split test [--json out.json]

It runs the label stage's own code on the stored crops (``children_teacher.teacher_ages``).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

import numpy as np

from agedistill_core.ages import AGE_BANDS, age_band, band_label
from agedistill_core.labeltable import load_split
from agedistill_core.settings import load_settings
from children_teacher import teacher_ages  # benchmarks/: the label stage's code on stored crops

LOG = logging.getLogger("agedistill.benchmarks.teacher_one_view")


def rows(label: np.ndarray, one: np.ndarray) -> list[dict]:
    ok = np.isfinite(one) & np.isfinite(label)
    label, one = label[ok], one[ok]
    bands = np.array(age_band(label))
    out = []
    for name, mask in [(band_label(lo, hi), bands == band_label(lo, hi)) for lo, hi in AGE_BANDS] + \
                      [("all", np.ones(len(label), bool))]:
        if mask.any():
            err = one[mask] - label[mask]
            out.append({"band": name, "faces": int(mask.sum()), "mae": round(float(np.mean(np.abs(err))), 3),
                        "bias": round(float(np.mean(err)), 3)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="corpus")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    settings = load_settings(args.profile, overrides={"teacher": {"variants": 1}})
    faces = load_split(settings, args.split)
    LOG.info("%s %s: %d faces, the teacher once per face (original view)", args.profile, args.split, len(faces))
    one, _ = teacher_ages(settings, faces.jpeg, faces.image_id)
    table = rows(faces.teacher_age, one)
    print("| band of the teacher's age | faces | one view vs the 8-variant label: MAE | bias |")
    print("|---|---|---|---|")
    for r in table:
        print(f"| {r['band']} | {r['faces']} | {r['mae']:.2f} | {r['bias']:+.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"profile": args.profile, "split": args.split, "rows": table}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
