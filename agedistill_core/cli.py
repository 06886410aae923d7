"""``agedistill``: the command-line face of the core (used by dvc.yaml too).

    agedistill [--profile P] [--params FILE] manifest|crops|label|vmage|lfwc|train|evaluate|all|export|predict

Errors a user can fix print as one line (``error: ...``) with exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from agedistill_core.errors import AgedistillError
from agedistill_core.settings import load_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agedistill", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", help="params.yaml profile (default: $AGEDISTILL_PROFILE or default_profile)")
    p.add_argument("--params", help="path to params.yaml (default: ./params.yaml)")
    p.add_argument("--data-root", help="override dataset.root of the profile")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("manifest", help="scan the data set into the manifest (sticky shards)")
    for name, helptext in (("crops", "detect and crop faces, one shard at a time"),
                           ("label", "label the crops with the teacher, one shard at a time")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--shard", action="append", help="only this shard (repeatable)")
    sub.add_parser("vmage", help="join the labels into the label table and check it")
    tp = sub.add_parser("train", help="train students")
    tp.add_argument("--arch", action="append", help="only this architecture (repeatable)")
    lp = sub.add_parser("lfwc", help="corrupt the evaluation crops (13 corruptions x 5 severities)")
    lp.add_argument("--corruption", action="append", help="only this corruption (repeatable)")
    lp.add_argument("--severity", type=int, action="append", help="only this severity (repeatable)")
    sub.add_parser("evaluate", help="write the benchmark tables (and robustness, where lfwc exists)")
    sub.add_parser("all", help="run every stage in order")
    ep = sub.add_parser("export", help="export a student checkpoint to ONNX (prints the parity check)")
    ep.add_argument("--arch", help="the student architecture the checkpoint holds (checked; default: the checkpoint's)")
    ep.add_argument("--checkpoint", required=True, help="a student checkpoint (best.pt)")
    ep.add_argument("--out", required=True, help="the .onnx file to write")
    pp = sub.add_parser("predict", help="one row per face (CSV or JSON on stdout): box, score, age, status",
                        description="Frame every face as the crops stage frames it for the profile's `faces` "
                                    "settings (or the checkpoint's, when it records them), then age it as the "
                                    "label stage (teacher) or the students' evaluation (student) does.")
    pp.add_argument("inputs", nargs="+", metavar="PHOTO_OR_FOLDER")
    who = pp.add_mutually_exclusive_group()
    who.add_argument("--checkpoint", help="a student checkpoint (default: the shipped "
                                          "models/mn3_small_distilled/best.pt)")
    who.add_argument("--teacher", action="store_true", help="use the profile's teacher instead of a student")
    pp.add_argument("--format", choices=("csv", "json"), default="csv",
                    help="stdout format: csv (header + one row a face) or a JSON array (default csv)")
    pp.add_argument("--annotate", metavar="OUT_DIR", help="also write each photo with boxes and ages here "
                                                          "(<file name>_age.jpg, e.g. face.bmp_age.jpg)")
    pp.add_argument("--detector", help="override faces.detector of the profile (none = photos are crops)")
    pp.add_argument("--nms-iou", type=float, default=0.3,
                    help="drop a detection overlapping a more confident face by more than this IoU (default 0.3)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        overrides = {"dataset": {"root": args.data_root}} if args.data_root else None
        settings = load_settings(args.profile, args.params, overrides)
        from agedistill_core import pipeline
        from agedistill_core.datasets import build_manifest
        from agedistill_core.evaluate.benchmark import run_benchmark
        from agedistill_core.evaluate.robustness import run_robustness

        if args.command == "manifest":
            table = build_manifest(settings)
            print(f"manifest: {table.num_rows} images -> {settings.manifest_path}")
        elif args.command == "crops":
            pipeline.run_crops(settings, args.shard)
        elif args.command == "label":
            pipeline.run_labels(settings, args.shard)
        elif args.command == "vmage":
            summary = pipeline.run_vmage(settings)
            print(json.dumps(summary, indent=2))
        elif args.command == "train":
            for r in pipeline.run_students(settings, args.arch):
                print(json.dumps(r))
        elif args.command == "lfwc":
            pipeline.run_lfwc(settings, args.corruption, args.severity)
        elif args.command == "evaluate":
            run_benchmark(settings)
            run_robustness(settings)
            print((settings.benchmarks_dir / "benchmark.md").read_text())
        elif args.command == "all":
            print(pipeline.run_all(settings))
            print(f"results: {settings.workdir}")
        elif args.command == "export":
            from agedistill_core.students.export import export_checkpoint
            print(export_checkpoint(args.checkpoint, args.out, arch=args.arch))
        elif args.command == "predict":
            _predict(args, settings)
    except AgedistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _predict(args, settings) -> None:
    """``agedistill predict``: rows on stdout, every message on stderr."""
    from agedistill_core.evaluate.predict import (RowWriter, describe_framing, framing_for, load_student,
                                                  load_teacher, predict_photos, resolve_checkpoint)

    if args.teacher:
        estimator, config = load_teacher(settings), None
    else:
        estimator = load_student(resolve_checkpoint(args.checkpoint))
        config = estimator.config
    faces, source = framing_for(settings.faces, config, args.detector)
    origin = f"profile {settings.profile}" if source == "profile" else "the checkpoint's config"
    print(f"predict: {estimator.name}; framing from {origin}"
          f"{' (detector from --detector)' if args.detector else ''}: {describe_framing(faces)}", file=sys.stderr)
    if faces.detector == "none":
        print("predict: detector none: each image is taken as a face crop; for photos pass --detector ssd",
              file=sys.stderr)
    writer = RowWriter(sys.stdout, args.format)
    predict_photos(args.inputs, estimator, faces, annotate_dir=args.annotate, writer=writer, nms_iou=args.nms_iou)
    writer.close()


if __name__ == "__main__":
    sys.exit(main())
