"""Compare face detectors on framing quality and speed (docs/DETECTORS.md).

    python benchmarks/compare_detectors.py [--detectors ssd dlib mtcnn] [--mtcnn-path DIR]
                                           [--lfw 200] [--utk 200] [--fairface 540] [--rest 300]

For each detector, with the shipped model's framing otherwise (dlib5 chip, 160 px, min score 0.5):

* LFW sample (``sorted(lfw/*.jpg)[::38][:200]``, one person a photo): the share of photos with
  exactly one face as ``predict`` counts them (detections at min score, overlap suppression),
  and the detector's median time per photo;
* UTKFace chips (faces that fill the frame, every k-th of crop_part1): recall, the share with a
  detection at min score (no whole-image fallback);
* FairFace (448 px photos, 9 age groups): the largest face of each photo framed as ``predict``
  frames it, aged by the teacher (the profile's, its labelling path) and the shipped student;
  group top-1 and 1-off against ground_truth.json;
* UTKFace rest (200 px aligned chips, ages in the file names ``AGE_GENDER_RACE_...jpg``): the
  largest face of each photo framed as ``predict`` frames it, aged by the same two models; MAE in
  years.  Only images of the corpus label table's test split (``data/corpus/vmage.parquet``,
  source ``utkface_rest``), never a training or validation face: ``--rest`` of them, evenly
  spaced in image_id order.  A photo where the detector finds no face is counted; ``predict``'s
  whole-image rule (images of 512 px or less) still ages it, and it stays in the MAE.

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
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CORPUS = REPO / "data" / "corpus"


def rest_sample(corpus: Path, n: int) -> tuple[list[Path], np.ndarray, str]:
    """``n`` test-split UTKFace-rest photos of the corpus label table, evenly spaced in sorted
    image_id order, with their real ages (from the file names) and a line saying how they were drawn."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from agedistill_core.shards import read_table

    vmage = read_table(corpus / "vmage.parquet", ["image_id", "dataset", "split"])
    vmage = vmage.filter(pc.and_(pc.equal(vmage["dataset"], "utkface_rest"), pc.equal(vmage["split"], "test")))
    test = sorted(set(vmage["image_id"].to_pylist()))
    manifest = read_table(corpus / "manifest.parquet", ["image_id", "path", "split", "age"])
    manifest = manifest.filter(pc.is_in(manifest["image_id"], pa.array(test, pa.string())))
    rows = {r["image_id"]: r for r in manifest.to_pylist()}
    if len(rows) != len(test) or any(r["split"] != "test" for r in rows.values()):
        raise SystemExit(f"{corpus}: the label table's utkface_rest test split ({len(test)} images) does not "
                         f"match the manifest's; rebuild the corpus before measuring on it")
    pick = [test[i] for i in (np.arange(min(n, len(test))) * len(test)) // max(min(n, len(test)), 1)]
    paths = [DATA / "utkface" / "rest" / rows[i]["path"] for i in pick]
    ages = np.asarray([float(p.name.split("_", 1)[0]) for p in paths], np.float32)
    differ = sum(a != rows[i]["age"] for a, i in zip(ages, pick))
    how = (f"UTKFace rest: {len(paths)} of the {len(test)} test-split utkface_rest images of {corpus}/vmage.parquet "
           f"(sorted by image_id, index i*{len(test)}//{len(paths)}); ages from the file names"
           f"{f' ({differ} differ from the manifest)' if differ else ' (the same as the manifest)'}")
    return paths, ages, how


def largest_faces(est, paths) -> tuple[list[bytes], list[int], list[str], float]:
    """Each photo framed as ``predict`` frames it: the JPEG of its largest face, the indices of
    the photos that have one, each photo's first-face status, and the seconds per photo."""
    jpegs, kept, statuses = [], [], []
    t0 = time.perf_counter()
    for k, path in enumerate(paths):
        photo = est.frame(path)
        statuses.append(photo.rows[0].status)
        if not photo.jpegs:
            continue
        _, j = max(zip(photo.rows, photo.jpegs),
                   key=lambda rj: (rj[0].box[2] - rj[0].box[0]) * (rj[0].box[3] - rj[0].box[1]))
        jpegs.append(j)
        kept.append(k)
    return jpegs, kept, statuses, (time.perf_counter() - t0) / max(len(paths), 1)


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
    ap.add_argument("--rest", type=int, default=300, help="UTKFace-rest photos of the corpus's test split")
    ap.add_argument("--corpus", default=str(CORPUS), help="the corpus workdir (its label table names the test split)")
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
    corpus = Path(args.corpus)
    rest, rest_ages = [], np.zeros(0, np.float32)
    if args.rest > 0 and not all((corpus / f).is_file() for f in ("vmage.parquet", "manifest.parquet")):
        print(f"{corpus}: no label table (vmage.parquet + manifest.parquet), so no UTKFace-rest measure", flush=True)
    elif args.rest > 0:
        rest, rest_ages, how = rest_sample(corpus, args.rest)
        print(how, flush=True)
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
        jpegs, kept, status, frame_s = largest_faces(est, [DATA / "fairface" / fn for fn in fair])
        groups = [FAIRFACE_GROUPS.index(truth[fair[k]]) for k in kept]
        statuses = dict(Counter(status))
        rest_jpegs, rest_kept, rest_status, rest_s = largest_faces(est, rest)
        detected = np.asarray([rest_status[k] == "ok" for k in rest_kept], bool)
        row = dict(detector=name, lfw_photos=len(lfw), lfw_exactly_one=one / max(len(lfw), 1),
                   detect_ms_median=1e3 * statistics.median(times) if times else float("nan"),
                   utk_chips=len(utk), utk_recall=found / max(len(utk), 1),
                   fairface_photos=len(fair), fairface_aged=len(jpegs), fairface_status=statuses,
                   frame_ms_per_photo=1e3 * frame_s)
        if rest:
            # "ok": a detected face; any other status means the detector found none (whole_image: aged
            # whole by predict's fallback, kept in the MAE; no_face / too_small: not aged, left out)
            row.update(rest_photos=len(rest), rest_aged=len(rest_jpegs),
                       rest_no_face=len(rest) - rest_status.count("ok"), rest_status=dict(Counter(rest_status)),
                       rest_frame_ms_per_photo=1e3 * rest_s)
        for who, model in (("student", est.model), ("teacher", teacher)):
            if model is None:
                continue
            if jpegs:
                ages = model.predict_jpegs(jpegs)
                t1, t1off = group_accuracy(age_to_group(ages), np.asarray(groups))
                row[f"{who}_top1"], row[f"{who}_1off"] = t1, t1off
            if rest_jpegs:
                err = np.abs(model.predict_jpegs(rest_jpegs) - rest_ages[rest_kept])
                row[f"{who}_rest_mae"] = float(err.mean())
                # the same, over the photos with a detected face only (no whole-image fallback)
                row[f"{who}_rest_mae_detected"] = float(err[detected].mean()) if detected.any() else float("nan")
        results.append(row)
        print(json.dumps(row), flush=True)
    cols = ["detector", "lfw_exactly_one", "utk_recall", "detect_ms_median", "frame_ms_per_photo",
            "student_top1", "student_1off", "teacher_top1", "teacher_1off",
            "rest_no_face", "student_rest_mae", "teacher_rest_mae"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in cols)
              + " |")
    if rest:
        print(f"\nUTKFace rest ({len(rest)} test-split photos): rest_no_face counts the photos where the detector found no "
              f"face; predict ages those whole (its whole-image rule: status whole_image) and they stay in the MAE, "
              f"and a photo with no crop at all would be left out of it. Per detector: "
              + "; ".join(f"{r['detector']} {r['rest_status']}, aged {r['rest_aged']}, MAE over detected faces only "
                          f"student {r.get('student_rest_mae_detected', float('nan')):.2f} / "
                          f"teacher {r.get('teacher_rest_mae_detected', float('nan')):.2f}" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
