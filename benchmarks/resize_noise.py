"""Diagnosis: does the student's bilinear shrink (160 px crop -> 96 px input) let pixel noise
through that the teacher's area shrink averages away?  Scores one checkpoint on the clean faces
and on severities 1, 3 and 5 of a few LFW+C corruptions with its own input resize, or with
another rule (``--resize area``: area averaging, ``students.resize``) at test time only: a
temporary copy of the checkpoint that says that rule.  A diagnosis, not a recipe: weights
trained on one resize, run with another.

    git show 1231fef~1:models/mn3_small_distilled/best.pt > prev.pt   # the bilinear student shipped before
    .venv/bin/python benchmarks/resize_noise.py --profile corpus prev.pt
    .venv/bin/python benchmarks/resize_noise.py --profile corpus --resize area prev.pt

Prints ``corruption severity mae`` lines on stdout (docs/ROBUSTNESS.md has the numbers).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

CORRUPTIONS = ("gaussian_noise", "shot_noise", "spatter", "gaussian_blur", "jpeg", "pixelation")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--profile", default="corpus")
    ap.add_argument("--resize", choices=("bilinear", "area"), help="the input resize to run it with "
                    "(default: the checkpoint's own)")
    args = ap.parse_args(argv)
    import torch

    from agedistill_core.cli import setup_logging
    from agedistill_core.evaluate.robustness import finished_partitions, robustness_rows
    from agedistill_core.inference.student import checkpoint_resize
    from agedistill_core.settings import load_settings
    from agedistill_core.students.checkpoint import load_checkpoint

    setup_logging()
    torch.set_num_threads(1)
    ckpt = load_checkpoint(args.checkpoint)
    rule = args.resize or checkpoint_resize(ckpt["config"])
    ckpt["config"]["students"] = {**ckpt["config"].get("students", {}), "resize": rule}
    tmp = tempfile.TemporaryDirectory()
    student = Path(tmp.name) / "best.pt"
    torch.save(ckpt, student)
    settings = load_settings(args.profile, None)
    sets = {k: v for k, v in finished_partitions(settings).items() if k[0] in CORRUPTIONS and k[1] in (1, 3, 5)}
    if not sets:
        raise SystemExit(f"resize_noise: no LFW+C set of {', '.join(CORRUPTIONS)} under {settings.lfwc_dir}; "
                         f"run `agedistill --profile {args.profile} lfwc` first")
    for row in robustness_rows(settings, {"student": student}, teacher=False, partitions=sets):
        print(f"{rule} {row['corruption']} {row['severity']} {row['mae']:.2f}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
