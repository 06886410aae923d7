"""Inference speed of the students (torch and ONNX) and of the teacher, per face.

    .venv/bin/python benchmarks/inference_speed.py [--archs mn3_small mn3_large ...] [--reps 3]
        [--threads 0] [--heavy-reps 1] [--no-onnx] [--no-teacher]

For each student: parameters, multiply-adds at its input size (counted by
``torch.utils.flop_counter.FlopCounterMode``: FLOPs / 2), and the per-face
latency at batch 1 and batch 32 with torch (eval, no_grad) and with
onnxruntime (CPU) on the exported model.  The teacher runs its whole labelling
path (``Teacher.label`` on 160 px crops: resizing, test-time variants, every
member, soft voting) with 1 and 8 variants.  ``teacher / student`` = how many
times faster the student is at the same batch size, both on onnxruntime (the
teacher's member is an ONNX network; the student's torch time when --no-onnx).  Timings are the median
of ``--reps`` runs after one warm-up (``--heavy-reps`` for VGG-16, SENet and
DenseNet at 224 px, which are slow on CPU).  Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agedistill_core.inference.ship import median_seconds as timed  # noqa: E402  (one warm-up, then the median)
from agedistill_core.students.zoo import STUDENTS, create_student  # noqa: E402

HEAVY = {"vgg16", "senet50", "densenet121"}


def macs(model: torch.nn.Module, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 2


def student_row(arch: str, reps: int, onnx: bool) -> dict:
    spec = STUDENTS.get(arch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_student(arch, 1).eval()
    s = spec.input_size
    row = {"model": arch, "input": s, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
           "gmacs": macs(model, s) / 1e9}
    for b in (1, 32):
        x = torch.randn(b, 3, s, s)
        with torch.no_grad():
            row[f"torch_b{b}_ms"] = timed(lambda: model(x), reps) / b * 1e3
    if onnx:
        import onnxruntime as ort

        from agedistill_core.inference.export import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(model, Path(tmp) / f"{arch}.onnx", s)
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            if torch.get_num_threads():
                opts.intra_op_num_threads = torch.get_num_threads()
            sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
            for b in (1, 32):
                x = np.random.default_rng(0).standard_normal((b, 3, s, s)).astype(np.float32)
                row[f"onnx_b{b}_ms"] = timed(lambda: sess.run(None, {"input": x}), reps) / b * 1e3
    return row


def teacher_rows(reps: int, crop_size: int = 160) -> list[dict]:
    from agedistill_core.settings import load_settings
    from agedistill_core.teacher.ensemble import build_teacher

    settings = load_settings("demo", REPO / "params.yaml")
    rows = []
    for variants in (1, 8):
        cfg = settings.teacher.__class__(**{**settings.teacher.__dict__, "variants": variants})
        teacher = build_teacher(cfg, base_dir=REPO)
        row = {"model": f"teacher ({'+'.join(cfg.members)}, {variants} variant{'s' * (variants > 1)})",
               "input": crop_size, "params_m": None, "gmacs": None}
        for b in (1, 32):
            crops = np.random.default_rng(b).integers(0, 255, (b, crop_size, crop_size, 3), dtype=np.uint8)
            row[f"torch_b{b}_ms"] = timed(lambda: teacher.label(crops), reps) / b * 1e3
        rows.append(row)
    return rows


def fmt(v, digits=2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="+", default=list(STUDENTS))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--heavy-reps", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-onnx", action="store_true")
    p.add_argument("--no-teacher", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = []
    for arch in a.archs:
        rows.append(student_row(arch, a.heavy_reps if arch in HEAVY else a.reps, not a.no_onnx))
        print(f"# {arch} done", file=sys.stderr, flush=True)
    teachers = [] if a.no_teacher else teacher_rows(a.reps)
    print(f"\nPer-face latency in ms (median of {a.reps} runs; {a.heavy_reps} for {', '.join(sorted(HEAVY))}), "
          f"torch threads {torch.get_num_threads()}, CPU.  teacher / student = how many times faster the "
          "student (onnxruntime, like the teacher) is than each teacher at the same batch.\n")
    head = ["model", "input", "params (M)", "GMACs", "torch b1", "torch b32", "onnx b1", "onnx b32"]
    head += [f"{t['model'].split('(')[1].split(',')[1].strip(' )')} teacher / student b1" for t in teachers]
    head += [f"{t['model'].split('(')[1].split(',')[1].strip(' )')} teacher / student b32" for t in teachers]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows + teachers:
        cells = [r["model"], str(r["input"]), fmt(r["params_m"]), fmt(r["gmacs"], 3), fmt(r["torch_b1_ms"]),
                 fmt(r["torch_b32_ms"]), fmt(r.get("onnx_b1_ms")), fmt(r.get("onnx_b32_ms"))]
        for b in (1, 32):
            for t in teachers:
                key = f"onnx_b{b}_ms" if r.get(f"onnx_b{b}_ms") else f"torch_b{b}_ms"
                cells.append("-" if r in teachers else f"{t[f'torch_b{b}_ms'] / r[key]:.1f}x")
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
