"""Compare face detectors on framing quality and speed (docs/DETECTORS.md).

    python benchmarks/compare_detectors.py [--detectors ssd dlib mtcnn] [--mtcnn-path DIR]
                                           [--lfw 200] [--utk 200] [--fairface 540]

For each detector, with the shipped model's framing otherwise (dlib5 chip, 160 px, min score 0.5):

* LFW sample (``sorted(lfw/*.jpg)[::38][:200]``, one person a photo): the share of photos with
  exactly one face as ``predict`` counts them (detections at min score, overlap suppression),
  and the detector's median time per photo;
* UTKFace chips (faces that fill the frame, every k-th of crop_part1): recall, the share with a
  detection at min score (no whole-image fallback);
* FairFace (448 px photos, 9 age groups): the largest face of each photo framed as ``predict``
  frames it, aged by the teacher (the profile's, its labelling path) and the shipped student;
  group top-1 and 1-off against ground_truth.json.

MTCNN (``facenet-pytorch``'s bundled weights) is measured when ``--mtcnn-path`` points at an
unpacked facenet-pytorch wheel: the package pins torch<2.3 and numpy<2, so it is never
installed beside this project's pins (``pip download --no-deps facenet-pytorch==2.6.0`` and
unzip it).  Everything runs on one process, one thread per library where they allow it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def register_mtcnn(path: str) -> None:
    """The ``mtcnn`` detector (facenet-pytorch's MTCNN on CPU, one thread), for this process."""
    sys.path.insert(0, path)
    import torch
    from facenet_pytorch import MTCNN

    from agedistill_core.faces import Detection
    from agedistill_core.faces.detectors import DETECTORS

    torch.set_num_threads(1)

    @DETECTORS.register("mtcnn")
    def make_mtcnn(**_):
        net = MTCNN(keep_all=True, device="cpu", min_face_size=20)

        def detect(rgb):
            boxes, probs = net.detect(np.ascontiguousarray(rgb))
            if boxes is None:
                return []
            h, w = rgb.shape[:2]
            return [Detection((float(max(b[0], 0)), float(max(b[1], 0)), float(min(b[2], w)), float(min(b[3], h))),
                              float(p)) for b, p in zip(boxes, probs)]
        return detect


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detectors", nargs="+", default=["ssd", "dlib"])
    ap.add_argument("--mtcnn-path", help="an unpacked facenet-pytorch wheel (adds the mtcnn detector)")
    ap.add_argument("--lfw", type=int, default=200)
    ap.add_argument("--utk", type=int, default=200)
    ap.add_argument("--fairface", type=int, default=540)
    ap.add_argument("--no-teacher", action="store_true")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    if args.mtcnn_path:
        register_mtcnn(args.mtcnn_path)
    from dataclasses import replace

    from agedistill_core.ages import FAIRFACE_GROUPS, age_to_group
    from agedistill_core.metrics import group_accuracy
    from agedistill_core.inference.predict import AgeEstimator, frame_faces, load_teacher
    from agedistill_core.faces import make_detector
    from agedistill_core.images import read_image
    from agedistill_core.settings import load_settings

    lfw = sorted((DATA / "lfw").glob("*.jpg"))[::38][:args.lfw]
    utk_all = sorted((DATA / "utkface" / "crop_part1").glob("*.jpg"))
    utk = utk_all[::max(1, len(utk_all) // max(args.utk, 1))][:args.utk]
    truth = {r["filename"]: r["age"] for r in json.loads((DATA / "fairface" / "ground_truth.json").read_text())}
    fair = sorted(truth)[:args.fairface]
    settings = load_settings(None, REPO / "params.yaml")
    settings = replace(settings, teacher=replace(settings.teacher, threads=1))
    teacher = None if args.no_teacher else load_teacher(settings)
    results = []
    for name in args.detectors:
        est = AgeEstimator(detector=name, threads=1)
        det = make_detector(name)
        count_cfg = replace(est.faces, align="none")
        one, times = 0, []
        for p in lfw:
            rgb = read_image(p)
            t0 = time.perf_counter()
            det(rgb)
            times.append(time.perf_counter() - t0)
            one += sum(f.status == "ok" for f in frame_faces(rgb, count_cfg, detector=det)) == 1
        found = sum(any(d.score >= est.faces.min_score for d in det(read_image(p))) for p in utk)
        jpegs, groups, statuses = [], [], {}
        t0 = time.perf_counter()
        for fn in fair:
            photo = est.frame(DATA / "fairface" / fn)
            rows = [(r, j) for r, j in zip(photo.rows, photo.jpegs)]
            statuses[photo.rows[0].status] = statuses.get(photo.rows[0].status, 0) + 1
            if not rows:
                continue
            r, j = max(rows, key=lambda rj: (rj[0].box[2] - rj[0].box[0]) * (rj[0].box[3] - rj[0].box[1]))
            jpegs.append(j)
            groups.append(FAIRFACE_GROUPS.index(truth[fn]))
        frame_s = (time.perf_counter() - t0) / max(len(fair), 1)
        row = dict(detector=name, lfw_photos=len(lfw), lfw_exactly_one=one / max(len(lfw), 1),
                   detect_ms_median=1e3 * statistics.median(times) if times else float("nan"),
                   utk_chips=len(utk), utk_recall=found / max(len(utk), 1),
                   fairface_photos=len(fair), fairface_aged=len(jpegs), fairface_status=statuses,
                   frame_ms_per_photo=1e3 * frame_s)
        for who, model in (("student", est.model), ("teacher", teacher)):
            if model is None or not jpegs:
                continue
            ages = model.predict_jpegs(jpegs)
            t1, t1off = group_accuracy(age_to_group(ages), np.asarray(groups))
            row[f"{who}_top1"], row[f"{who}_1off"] = t1, t1off
        results.append(row)
        print(json.dumps(row), flush=True)
    cols = ["detector", "lfw_exactly_one", "utk_recall", "detect_ms_median", "frame_ms_per_photo",
            "student_top1", "student_1off", "teacher_top1", "teacher_1off"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in cols)
              + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
