"""``agedistill``: the command-line face of the core (used by dvc.yaml too).

    agedistill [--profile P] [--params FILE] manifest|crops|label|vmage|lfwc|train|evaluate|all|dvc-yaml|export|predict

The stage subcommands (manifest ... evaluate) come from ``agedistill_core.pipeline.STAGES``.

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
    from agedistill_core.pipeline import STAGES  # the stage subcommands come from the stage table
    for st in STAGES:
        sp = sub.add_parser(st.name, help=st.help)
        for opt in st.options:
            sp.add_argument(opt.flag, dest=opt.dest, type=opt.type, action="append", help=opt.help)
    sub.add_parser("all", help="run every stage in order")
    dp = sub.add_parser("dvc-yaml", help="write dvc.yaml from the stage table for params.yaml's dvc.profile")
    dp.add_argument("--check", action="store_true", help="only check: exit 2 when dvc.yaml differs from the table")
    dp.add_argument("--out", default=None, help="file to write (default: dvc.yaml beside params.yaml)")
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
        if args.command == "dvc-yaml" and not args.profile:  # dvc.yaml is made for params.yaml's dvc.profile
            from agedistill_core.dvcyaml import dvc_profile
            args.profile = dvc_profile(args.params)
        settings = load_settings(args.profile, args.params, overrides)
        from agedistill_core import pipeline

        if args.command in pipeline.STAGE:
            st = pipeline.STAGE[args.command]
            result = st.run(settings, **{o.dest: getattr(args, o.dest) for o in st.options})
            if args.command == "vmage":
                print(json.dumps(result, indent=2))
            elif args.command == "train":
                for r in result:
                    print(json.dumps(r))
            elif args.command == "evaluate":
                print(result)
        elif args.command == "all":
            print(pipeline.run_all(settings))
            print(f"results: {settings.workdir}")
        elif args.command == "dvc-yaml":
            from agedistill_core.dvcyaml import write_dvc_yaml
            return write_dvc_yaml(settings, out=args.out, check=args.check)
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
    from agedistill_core.evaluate.predict import (RowWriter, describe_framing, framing_for, load_teacher, predict_photos, resolve_checkpoint)
    from agedistill_core.students.inference import load_student

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
