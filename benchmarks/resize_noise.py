"""Diagnosis: does the student's bilinear shrink (160 px crop -> 96 px input) let pixel noise
through that the teacher's area shrink averages away?  Scores one checkpoint on the clean faces
and on severities 1, 3 and 5 of a few LFW+C corruptions with its own bilinear resize, or
(``--resize area``) with every shrinking ``cv2.resize`` switched to area averaging, at test
time only.  A diagnosis, not a recipe: the weights were trained on bilinear inputs.

    .venv/bin/python benchmarks/resize_noise.py --profile corpus models/mn3_small_distilled/best.pt
    .venv/bin/python benchmarks/resize_noise.py --profile corpus --resize area models/mn3_small_distilled/best.pt

Prints ``corruption severity mae`` lines on stdout (docs/ROBUSTNESS.md has the numbers).
"""
from __future__ import annotations

import argparse

import cv2

CORRUPTIONS = ("gaussian_noise", "shot_noise", "spatter", "gaussian_blur", "jpeg", "pixelation")


def area_when_shrinking() -> None:
    """Make every bilinear ``cv2.resize`` that shrinks an image use area averaging instead."""
    original = cv2.resize

    def resize(img, dsize, *args, interpolation=cv2.INTER_LINEAR, **kwargs):
        if interpolation == cv2.INTER_LINEAR and dsize and img.shape[0] > dsize[1]:
            interpolation = cv2.INTER_AREA
        return original(img, dsize, *args, interpolation=interpolation, **kwargs)

    cv2.resize = resize


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--profile", default="corpus")
    ap.add_argument("--resize", choices=("bilinear", "area"), default="bilinear")
    args = ap.parse_args(argv)
    import torch

    from agedistill_core.cli import setup_logging
    from agedistill_core.evaluate.robustness import finished_partitions, robustness_rows
    from agedistill_core.settings import load_settings

    setup_logging()
    torch.set_num_threads(1)
    if args.resize == "area":
        area_when_shrinking()
    settings = load_settings(args.profile, None)
    sets = {k: v for k, v in finished_partitions(settings).items() if k[0] in CORRUPTIONS and k[1] in (1, 3, 5)}
    if not sets:
        raise SystemExit(f"resize_noise: no LFW+C set of {', '.join(CORRUPTIONS)} under {settings.lfwc_dir}; "
                         f"run `agedistill --profile {args.profile} lfwc` first")
    for row in robustness_rows(settings, {"student": args.checkpoint}, teacher=False, partitions=sets):
        print(f"{args.resize} {row['corruption']} {row['severity']} {row['mae']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
