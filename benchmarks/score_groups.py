"""Score `agedistill predict` output against FairFace-style age groups, as a user would.

    agedistill predict ../shared/data/fairface --format csv > ff.csv
    python benchmarks/score_groups.py ff.csv ../shared/data/fairface/ground_truth.json

Keeps the largest face of each photo (a photo with no face counts as wrong), maps the age to
its group and prints top-1 and 1-off accuracy overall and per group (Markdown), and the mean
of the three youngest groups.  ``--json`` writes the same numbers.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from agedistill_core.ages import FAIRFACE_GROUPS, age_to_group


def largest_faces(rows: list[dict]) -> dict[str, float]:
    """The age of the largest face of each photo, keyed by file name."""
    best: dict[str, tuple[float, float]] = {}
    for r in rows:
        if r.get("status") != "ok" or not r.get("age"):
            continue
        area = (float(r["x1"]) - float(r["x0"])) * (float(r["y1"]) - float(r["y0"]))
        name = Path(r["path"]).name
        if name not in best or area > best[name][0]:
            best[name] = (area, float(r["age"]))
    return {k: v[1] for k, v in best.items()}


def score(rows: list[dict], truth: list[dict]) -> dict:
    ages = largest_faces(rows)
    want = np.array([FAIRFACE_GROUPS.index(t["age"]) for t in truth])
    got = np.array([int(age_to_group(np.array([ages[t["filename"]]]))[0]) if t["filename"] in ages else -10
                    for t in truth])
    out = {"photos": len(truth), "no_face": int((got == -10).sum()),
           "top1": float((got == want).mean()), "one_off": float((np.abs(got - want) <= 1).mean()), "groups": {}}
    for k, g in enumerate(FAIRFACE_GROUPS):
        sel = want == k
        out["groups"][g] = {"n": int(sel.sum()), "top1": float((got[sel] == k).mean()),
                            "one_off": float((np.abs(got[sel] - k) <= 1).mean())}
    out["youngest3_top1"] = float(np.mean([out["groups"][g]["top1"] for g in FAIRFACE_GROUPS[:3]]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", help="predict --format csv output ('-' = stdin)")
    p.add_argument("ground_truth", help="FairFace-style ground_truth.json: [{filename, age: '30-39'}, ...]")
    p.add_argument("--json")
    a = p.parse_args(argv)
    text = sys.stdin.read() if a.csv == "-" else Path(a.csv).read_text()
    res = score(list(csv.DictReader(text.splitlines())), json.loads(Path(a.ground_truth).read_text()))
    print(f"photos {res['photos']} (no face: {res['no_face']}), top-1 {res['top1']:.3f}, 1-off {res['one_off']:.3f}, "
          f"mean top-1 of 0-2/3-9/10-19 {res['youngest3_top1']:.3f}")
    print("| group | " + " | ".join(FAIRFACE_GROUPS) + " |")
    print("|---|" + "---|" * len(FAIRFACE_GROUPS))
    print("| top-1 | " + " | ".join(f"{res['groups'][g]['top1']:.2f}" for g in FAIRFACE_GROUPS) + " |")
    print("| 1-off | " + " | ".join(f"{res['groups'][g]['one_off']:.2f}" for g in FAIRFACE_GROUPS) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
