"""``agedistill``: the command-line face of the core (used by dvc.yaml too).

    agedistill [--profile P] [--params FILE] manifest|crops|label|vmage|lfwc|train|evaluate|all|dvc-yaml|export|predict|report|ship|finetune

The stage subcommands (manifest ... evaluate) come from ``agedistill_core.pipeline.STAGES``;
``report`` (score checkpoints across profiles), ``ship`` (the shipped model and its card) and
``finetune`` (the SPEC 5 protocols) run what their modules' ``command`` functions do.

Errors a user can fix print as one line (``error: ...``) with exit code 2, through one handler
(``errors.run_command``, which ``agedistill_dag``'s commands use too); so do argument errors (with the
command to get help).  Messages and progress go through ``logging``
(``agedistill.*``) to stderr; stdout carries results only.  Stage functions are imported
when a stage runs, so ``--help`` and argument errors load none of the training stack.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys

from agedistill_core.errors import run_command


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: <prog>: <message> (see <prog> --help)``."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (so redirections and test capture work)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def setup_logging(level: int = logging.INFO, name: str = "agedistill") -> None:
    """The ``name`` logger (and those below it) to stderr, message only (one handler, however often
    it is called).  The stages log their messages and progress there; stdout is left to results."""
    logger = logging.getLogger(name)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def _iou(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and 0 < v <= 1):
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r} (default 0.3)")
    return v


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return v


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="agedistill", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", help="params.yaml profile (default: $AGEDISTILL_PROFILE or default_profile)")
    p.add_argument("--params", help="path to params.yaml (default: ./params.yaml)")
    p.add_argument("--data-root", help="override dataset.root of the profile")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_true", help="debug messages too (on stderr)")
    loud.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only on stderr (no progress)")
    sub = p.add_subparsers(dest="command", required=True)
    from agedistill_core.pipeline import STAGES  # the stage subcommands come from the stage table
    for st in STAGES:
        sp = sub.add_parser(st.name, help=st.help)
        _profile_options(sp)
        for opt in st.options:
            sp.add_argument(opt.flag, dest=opt.dest, type=opt.type, action="append", help=opt.help)
    _profile_options(sub.add_parser("all", help="run every stage in order"))
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
    _profile_options(pp)
    who = pp.add_mutually_exclusive_group()
    who.add_argument("--checkpoint", help="a student: model.onnx (with its model.json; onnxruntime) or a torch "
                                          "checkpoint best.pt (default: the shipped "
                                          "models/mn3_small_distilled/model.onnx)")
    who.add_argument("--teacher", action="store_true", help="use the profile's teacher instead of a student")
    pp.add_argument("--format", choices=("csv", "json"), default="csv",
                    help="stdout format: csv (header + one row a face) or a JSON array (default csv)")
    pp.add_argument("--annotate", metavar="OUT_DIR", help="also write each photo with boxes and ages here "
                                                          "(<file name>_age.jpg, e.g. face.bmp_age.jpg)")
    pp.add_argument("--detector", help="override faces.detector of the profile (none = photos are crops)")
    pp.add_argument("--nms-iou", type=_iou, default=0.3,
                    help="drop a detection overlapping a more confident face by more than this IoU, in (0, 1] "
                         "(default 0.3)")
    pp.add_argument("--workers", type=_count, default=0,
                    help="processes that read, detect and align photos (default 0: all cores)")
    pp.add_argument("--max-pixels", type=_count, default=None,
                    help="refuse (status too_large) an image declaring more pixels than this (default: "
                         "$AGEDISTILL_MAX_PIXELS or 50000000; 0: no cap)")
    _commands(sub)
    return p


def _profile_options(sp: argparse.ArgumentParser, *, many: bool = False, help: str = "") -> None:
    """``--profile`` / ``--params`` after the subcommand too (``agedistill ship --profile corpus``), as the
    commands took them before they were subcommands; they override the ones before it."""
    sp.add_argument("--profile", dest="sub_profiles" if many else "sub_profile", action="append" if many else "store",
                    help=help or "params.yaml profile (as --profile before the subcommand)")
    sp.add_argument("--params", dest="sub_params", help="path to params.yaml (as --params before the subcommand)")


FINETUNE_PROTOCOLS = ("adience", "appa_real", "fairface")   # the older form's data set layouts


def _commands(sub) -> None:
    """``report``, ``ship`` and ``finetune``: their arguments here (so that ``--help`` imports none of
    their modules), their work in their modules' ``command(args)``."""
    rp = sub.add_parser("report", help="score student checkpoints on one or more profiles' test splits "
                                       "(Markdown on stdout; --json for ship)")
    rp.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT")
    _profile_options(rp, many=True, help="a profile to score on (repeatable; default: --profile before the "
                                         "subcommand, else the default profile)")
    rp.add_argument("--json", help="also write the rows here (what `agedistill ship --report` reads)")
    rp.add_argument("--split", choices=("test", "val"), default="test",
                    help="the split to score (default test; val chooses between recipes)")
    sp = sub.add_parser("ship", help="ship a student: weights-only best.pt, model.onnx, model.json and MODEL_CARD.md")
    _profile_options(sp, help="the profile the checkpoint was trained on (its teacher is timed beside it)")
    sp.add_argument("--checkpoint", required=True, help="the student checkpoint to ship (best.pt)")
    sp.add_argument("--report", required=True, help="JSON from `agedistill report --json` for this checkpoint")
    sp.add_argument("--out", required=True, help="the folder to write (e.g. models/mn3_small_distilled)")
    sp.add_argument("--resize", help="ship with this input rule instead of the one it was trained with; only a rule "
                                     "that sees every clean crop alike (area -> area_denoise)")
    fp = sub.add_parser("finetune", help="fine-tune a distilled student on a SPEC 5 protocol (a profile's recipe); "
                                         "JSON on stdout")
    fp.add_argument("protocol", nargs="?", choices=FINETUNE_PROTOCOLS,
                    help="older form: the data set's layout (with --root and --checkpoint)")
    _profile_options(fp, help="a profile of params.yaml (its data set and students recipe)")
    fp.add_argument("--root", help="older form: the data set folder")
    fp.add_argument("--checkpoint", help="the distilled student to start from (students.init_from)")
    fp.add_argument("--json", help="also write the result here")
    fp.add_argument("--no-teacher", action="store_true", help="do not score the teacher (group protocol)")
    for f in ("epochs", "folds", "seed", "threads", "batch_size", "lr_step_epochs"):
        fp.add_argument(f"--{f.replace('_', '-')}", type=int)
    for f in ("lr", "lr_factor", "momentum"):
        fp.add_argument(f"--{f.replace('_', '-')}", type=float)
    fp.add_argument("--loss", choices=("groups", "ordinal", "paper", "l1", "distribution"))
    fp.add_argument("--no-augment", action="store_true")


# Ctrl-C: one line, exit 130.  Every stage writes atomically (a shard, a partition, a checkpoint
# is there whole or not at all) and skips what is already done, and training resumes from last.pt.
INTERRUPTED = ("interrupted: finished work is kept (each finished shard or partition, the last epoch's "
               "last.pt); run the same command to go on from there")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    if getattr(args, "sub_params", None):
        args.params = args.sub_params
    if getattr(args, "sub_profile", None):
        args.profile = args.sub_profile
    return run_command(lambda: _run(args), interrupted=INTERRUPTED)


def _run(args: argparse.Namespace) -> int:
    from agedistill_core.settings import load_settings

    overrides = {"dataset": {"root": args.data_root}} if args.data_root else None
    if args.command == "predict":  # the profile only when needed (--teacher, a model without framing)
        try:
            return _predict(args, lambda: load_settings(args.profile, args.params, overrides))
        except BrokenPipeError:
            # the reader went away (`agedistill predict DIR | head -1`): stop quietly
            _silence_stdout()
            return 0
        except KeyboardInterrupt:
            print("predict: interrupted", file=sys.stderr)
            return 130
    if args.command in ("report", "ship", "finetune"):
        module = {"report": "agedistill_core.evaluate.report", "ship": "agedistill_core.inference.ship",
                  "finetune": "agedistill_core.evaluate.finetune"}[args.command]
        import importlib

        return importlib.import_module(module).command(args)
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
        logging.getLogger("agedistill.cli").info(f"results: {settings.workdir}")
    elif args.command == "dvc-yaml":
        from agedistill_core.dvcyaml import write_dvc_yaml
        return write_dvc_yaml(settings, out=args.out, check=args.check)
    elif args.command == "export":
        from agedistill_core.inference.export import export_checkpoint
        print(export_checkpoint(args.checkpoint, args.out, arch=args.arch))
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor (tests)
        pass


def _predict(args, settings) -> int:
    """``agedistill predict``: rows on stdout, every message on stderr.  ``settings``: a loader
    of the profile, called only for the teacher or a model that records no framing."""
    from agedistill_core.inference.predict import AgeEstimator, RowWriter, predict_photos

    log = logging.getLogger("agedistill.predict")
    est = AgeEstimator(args.checkpoint, teacher=args.teacher, settings=settings, detector=args.detector,
                       nms_iou=args.nms_iou, workers=args.workers, max_pixels=args.max_pixels)
    origin = (f"profile {est.settings.profile}" if est.framing_source == "profile" else
              f"the model ({est.model_path.name})")
    log.info(f"predict: {est.name}; framing from {origin}"
             f"{' (detector from --detector)' if args.detector else ''}: {est.describe()}")
    if est.faces.detector == "none":
        log.info("predict: detector none: each image is taken as a face crop; for photos pass --detector ssd")
    writer = RowWriter(sys.stdout, args.format)
    predict_photos(args.inputs, est, annotate_dir=args.annotate, writer=writer)
    writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
