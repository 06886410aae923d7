"""What a student's input rule costs per face, beside the student itself (one thread, one run).

    .venv/bin/python benchmarks/input_rule_speed.py [--checkpoint models/mn3_small_distilled/model.onnx]

Times, per 160 px crop: each input rule of ``images.STUDENT_RESIZES`` on a clean crop and on one with
Gaussian noise of deviation 30 (only ``area_denoise`` differs between the two: it smooths the noisy one),
and the student's forward pass on onnxruntime at batch 1.  The crops are real faces when
../shared/data/utkface is there, else random pixels.  Prints a Markdown table with each rule's cost
as a share of the forward pass; all in one run, after a warm-up, blocks alternating
(``ship.interleaved_seconds``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agedistill_core.images import STUDENT_RESIZES, resize_input  # noqa: E402
from agedistill_core.inference.ship import interleaved_seconds  # noqa: E402

UTKFACE = REPO.parent / "shared" / "data" / "utkface" / "crop_part1"


def crops(n: int = 16) -> list[np.ndarray]:
    files = sorted(UTKFACE.glob("*.jpg"))[::601][:n] if UTKFACE.is_dir() else []
    if not files:
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (160, 160, 3), dtype=np.uint8) for _ in range(n)]
    return [cv2.resize(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), (160, 160), interpolation=cv2.INTER_AREA)
            for f in files]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(REPO / "models" / "mn3_small_distilled" / "model.onnx"),
                    help="an exported student (model.onnx) for the forward pass")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    from agedistill_core.inference.student import load_onnx_student

    student = load_onnx_student(args.checkpoint, threads=1)
    size = student.input_size
    clean = crops()
    rng = np.random.default_rng(1)
    noisy = [np.clip(c + rng.normal(0, 30, c.shape), 0, 255).astype(np.uint8) for c in clean]
    sess = student.session
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(2).standard_normal((1, 3, size, size)).astype(np.float32)

    def each(rule, faces):
        return lambda: [resize_input(c, size, rule) for c in faces]

    fns, names = [lambda: sess.run(None, {name: x})], ["student forward (onnxruntime, batch 1)"]
    for rule in STUDENT_RESIZES:
        for kind, faces in (("clean", clean), ("noisy", noisy)):
            fns.append(each(rule, faces))
            names.append(f"input rule `{rule}`, {kind} crop")
    seconds = interleaved_seconds(fns, args.rounds)
    per_face = [seconds[0]] + [s / len(clean) for s in seconds[1:]]
    print("| step | us per face | share of the forward pass |")
    print("|---|---|---|")
    for name, s in zip(names, per_face):
        print(f"| {name} | {s * 1e6:.0f} | {s / per_face[0]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
