"""Noise on whole photos, before ``predict``'s framing: how far the shipped student's ages move.

    .venv/bin/python benchmarks/photo_noise.py [--faces 240] [--side 80 120 160 240] [--noise 10 25 50]

LFW+C adds noise to the 160 px crop; a camera adds it to the photo, and framing (SSD, dlib's chip,
JPEG) resamples it before the student's input rule sees it.  This takes validation chips of
UTKFace crop_part1 (profile ``corpus``: never trained on, real ages), resizes each to a
``--side`` px photo (the chip is 200 px: below about 200 px the face is enlarged into its 160 px
crop, and the photo's noise with it, coarse-grained), adds Gaussian noise of each ``--noise``
deviation, frames clean and noisy photos as ``agedistill predict`` does, and runs the shipped
network three ways: plain ``area`` inputs; the ``area_denoise`` crop rule alone; and what
``predict`` does for an ``area_denoise`` student, the photo smoothed at its own scale first
(``images.denoise_photo``), then the crop rule.  Prints, per photo size and way, the mean shift
of the ages from the clean photo's and the MAE to the real age (docs/RESULTS.md, fifth and sixth
sessions).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=240, help="validation chips to use (fixed seed)")
    ap.add_argument("--side", type=int, nargs="+", default=[80, 120, 160, 240],
                    help="the photos' side in px, one table each (the chip is 200 px)")
    ap.add_argument("--noise", type=float, nargs="+", default=[10.0, 25.0, 50.0])
    args = ap.parse_args(argv)

    from agedistill_core.cli import setup_logging
    from agedistill_core.inference.predict import AgeEstimator
    from agedistill_core.inference.student import DEFAULT_ONNX
    from agedistill_core.labeltable import load_split
    from agedistill_core.settings import load_settings

    setup_logging()
    settings = load_settings("corpus", None)
    root = settings.source("utkface").root
    val = load_split(settings, "val", "teacher")
    rows = [i for i, k in enumerate(val.image_id) if k.startswith("utkface/")]
    rows = np.random.default_rng(0).choice(rows, min(args.faces, len(rows)), replace=False)
    estimator = AgeEstimator(DEFAULT_ONNX)
    for side in args.side:
        _one_side(side, args.noise, rows, val, root, estimator, rng=np.random.default_rng(side))
    return 0


def _one_side(side, noises, rows, val, root, estimator, rng) -> None:
    """One table: the photos at ``side`` px, clean and with each noise, framed with and without
    the photo-level smoothing, aged with each crop rule."""
    from agedistill_core.images import NOISE_GATE, PHOTO_NOISE_GATE, decode_image, estimate_noise, resize_input

    model, size = estimator.model, estimator.model.input_size
    ways = {"area": (False, "area"), "area_denoise, crop rule alone": (False, "area_denoise"),
            "area_denoise as predict runs it (photo, then crop)": (True, "area_denoise")}
    crops: dict[bool, dict] = {d: {"clean": [], **{n: [] for n in noises}} for d in (False, True)}
    native: dict = {n: [] for n in noises}
    truth = []
    for i in rows:
        path = Path(root) / str(val.image_id[i]).split("/", 1)[1]
        if not path.is_file():
            continue
        photo = cv2.resize(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), (side, side),
                           interpolation=cv2.INTER_CUBIC)
        photos = [photo] + [np.clip(photo + rng.normal(0, n, photo.shape), 0, 255).astype(np.uint8) for n in noises]
        framed = {}
        for d in (False, True):
            estimator.denoise = d
            framed[d] = [estimator.frame(p) for p in photos]
        if not all(f.jpegs for d in framed for f in framed[d]):
            continue
        for d in framed:
            for key, f in zip(crops[d], framed[d]):
                crops[d][key].append(decode_image(f.jpegs[0]))
        for n, p, f in zip(noises, photos[1:], framed[False][1:]):
            x0, y0, x1, y1 = (max(int(round(v)), 0) for v in f.rows[0].box)
            native[n].append(estimate_noise(p[y0:y1, x0:x1]))
        truth.append(float(val.gt_age[i]))
    estimator.denoise = True
    truth = np.array(truth)

    label = " / ".join(f"{n:g}" for n in noises)
    crop_read = " / ".join(f"{np.median([estimate_noise(c) for c in crops[False][n]]):.1f}" for n in noises)
    photo_read = " / ".join(f"{np.median(native[n]):.1f}" for n in noises)
    print(f"\n{len(truth)} validation photos of {side} px, noise {label}: estimate (median) in the crop "
          f"{crop_read}, in the photo's face box {photo_read} (gates {NOISE_GATE:g} and {PHOTO_NOISE_GATE:g})\n")
    print(f"| {side} px photos | shift at noise {label} | MAE clean / {label} |")
    print("|---|---|---|")
    for name, (d, rule) in ways.items():
        ages = {k: model.predict_inputs(np.stack([resize_input(c, size, rule) for c in v]))
                for k, v in crops[d].items()}
        shift = " / ".join(f"{np.abs(ages[n] - ages['clean']).mean():.2f}" for n in noises)
        mae = " / ".join(f"{np.abs(a - truth).mean():.2f}" for a in ages.values())
        print(f"| {name} | {shift} | {mae} |", flush=True)

if __name__ == "__main__":
    raise SystemExit(main())
