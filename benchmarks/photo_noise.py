"""Noise on whole photos, before ``predict``'s framing: how far the shipped student's ages move.

    .venv/bin/python benchmarks/photo_noise.py [--faces 240] [--side 240] [--noise 10 25 50]

LFW+C adds noise to the 160 px crop; a camera adds it to the photo, and framing (SSD, dlib's chip,
JPEG) resamples it before the student's input rule sees it.  This takes validation chips of
UTKFace crop_part1 (profile ``corpus``: never trained on, real ages), enlarges each to a
``--side`` px photo, adds Gaussian noise of each ``--noise`` deviation, frames clean and noisy
photos as ``agedistill predict`` does, and runs the shipped network on the crops with plain
``area`` inputs, with the shipped ``area_denoise`` rule and with stronger blurs (``--blur``: the
factor ``a`` of the blur ``a e^0.7`` px above the gate).  Prints, per rule, the mean shift of the
ages from the clean photo's and the MAE to the real age (docs/RESULTS.md, fifth session).
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
    ap.add_argument("--side", type=int, default=240, help="the photo's side in px (the chip is 200 px)")
    ap.add_argument("--noise", type=float, nargs="+", default=[10.0, 25.0, 50.0])
    ap.add_argument("--blur", type=float, nargs="+", default=[0.35, 0.5], help="stronger blur factors to compare")
    args = ap.parse_args(argv)

    from agedistill_core.cli import setup_logging
    from agedistill_core.images import NOISE_GATE, decode_image, denoise, estimate_noise, resize, resize_input
    from agedistill_core.inference.predict import AgeEstimator
    from agedistill_core.inference.student import DEFAULT_ONNX
    from agedistill_core.labeltable import load_split
    from agedistill_core.settings import load_settings

    setup_logging()
    settings = load_settings("corpus", None)
    root = settings.source("utkface").root
    val = load_split(settings, "val", "teacher")
    rows = [i for i, k in enumerate(val.image_id) if k.startswith("utkface/")]
    rng = np.random.default_rng(0)
    rows = rng.choice(rows, min(args.faces, len(rows)), replace=False)
    estimator = AgeEstimator(DEFAULT_ONNX)
    model = estimator.model

    size = model.input_size
    rules = {"area": lambda c: resize_input(c, size, "area"),
             "area_denoise (shipped)": lambda c: resize_input(c, size, "area_denoise"),
             **{f"blur {a:g} e^0.7": (lambda c, a=a: resize(denoise(c, a), size)) for a in args.blur}}
    crops: dict[str, list] = {"clean": [], **{n: [] for n in args.noise}}
    truth = []
    for i in rows:
        path = Path(root) / str(val.image_id[i]).split("/", 1)[1]
        if not path.is_file():
            continue
        photo = cv2.resize(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), (args.side, args.side),
                           interpolation=cv2.INTER_CUBIC)
        framed = [estimator.frame(photo)] + [
            estimator.frame(np.clip(photo + rng.normal(0, n, photo.shape), 0, 255).astype(np.uint8))
            for n in args.noise]
        if not all(f.jpegs for f in framed):
            continue
        for key, f in zip(crops, framed):
            crops[key].append(decode_image(f.jpegs[0]))
        truth.append(float(val.gt_age[i]))
    truth = np.array(truth)

    def ages(rule, faces):
        return model.predict_inputs(np.stack([rule(c) for c in faces]))

    noise = " / ".join(f"{n:g}" for n in args.noise)
    read = " / ".join(f"{np.median([estimate_noise(c) for c in crops[n]]):.1f}" for n in args.noise)
    print(f"{len(truth)} validation photos of {args.side} px; the crops' noise estimate (median) at noise {noise}: "
          f"{read} (gate {NOISE_GATE:g})\n")
    print(f"| input rule | shift at noise {noise} | MAE clean / {noise} |")
    print("|---|---|---|")
    for name, rule in rules.items():
        clean = ages(rule, crops["clean"])
        noisy = [ages(rule, crops[n]) for n in args.noise]
        shift = " / ".join(f"{np.abs(a - clean).mean():.2f}" for a in noisy)
        mae = " / ".join(f"{np.abs(a - truth).mean():.2f}" for a in [clean, *noisy])
        print(f"| {name} | {shift} | {mae} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
