"""Materialise the whole asset graph of one profile through Dagster's own executors, into a Dagster instance.

``python -m agedistill_dag.materialize [--profile demo] [--jobs N] [--executor in_process|multiprocess|celery]``
(what ``make demo`` runs) and the end-to-end test both use this.

The stages come from the asset graph itself, in topological order: assets that share a
partitioning and follow each other (crops then labels of one shard) form one stage, and
stages on the same level of the graph (LFW+C partitions and students) run together.
Each stage is one Dagster run per partition (one run for an unpartitioned asset), all
launched with ``dagster.execute_job`` on a reconstructable job, ``--jobs`` runs at a time
in separate processes: Dagster runs one partition per run, so independent partitions run
in parallel as parallel runs, as a backfill does.  With ``--jobs`` above 1 every run, a wave of
one run included, goes to a pool process, so Dagster never takes over this process' SIGINT and
SIGTERM handlers (``--jobs 1`` runs them in this process, and hands a Ctrl-C or SIGTERM that
arrived during a run back to the caller when the run has stopped).  Pool processes ignore SIGINT
while idle and die with this process (PR_SET_PDEATHSIG).  Runs are recorded in ``$DAGSTER_HOME``
so that ``dagster dev`` afterwards shows the materialised graph.  Every stage skips work
whose version is unchanged, so a second run is quick.

With ``--executor celery`` the runs' steps go to Celery workers (``agedistill_dag.cluster``
starts Redis and workers; docs/DEPLOY.md).  The job is rebuilt in every process, worker
included, from this module's ``profile_job`` with the profile, the params path and the
executor as arguments: a worker needs no environment variable to know the profile.
"""
from __future__ import annotations

import argparse
import functools
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import uuid
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit, urlunsplit

import dagster as dg

from agedistill_core.cli import setup_logging
from agedistill_core.errors import run_command
from agedistill_core.errors import AgedistillError, ConfigError
from agedistill_core.pipeline import STAGES, stage_keys
from agedistill_core.settings import find_params
from agedistill_dag.definitions import build_definitions, graph_jobs
from agedistill_dag.partitions import lfwc_key, lfwc_partitions
from agedistill_dag.profile import Profile
from agedistill_dag.supervise import quiet_pool_init, sigint_blocked, signals_deferred

LOG = logging.getLogger("agedistill.dag.materialize")


# Tag on every run of one materialize_all call.
LAUNCH_TAG = "agedistill/launch"

# Dagster's console logger prints every engine event at DEBUG; keep INFO and up.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def profile_job(profile: str, params: str | None, executor: str, job: str) -> dg.JobDefinition:
    """Job ``job`` of ``profile``'s definitions (``definitions.graph_jobs``), with ``executor``.
    Module-level so that a run's process and a Celery worker can rebuild it from its arguments.
    Dagster rebuilds a job several times per run; it is built once per process and params file
    version (a long-lived worker sees an edited params.yaml)."""
    try:
        stamp = os.stat(find_params(params)).st_mtime_ns
    except (OSError, AgedistillError):
        stamp = None                 # let build_definitions report the missing file
    return _cached_job(profile, params, executor, job, stamp)


@functools.lru_cache(maxsize=32)
def _cached_job(profile: str, params: str | None, executor: str, job: str, stamp) -> dg.JobDefinition:
    return build_definitions(profile, params, executor=executor).resolve_job_def(job)


def reconstructable_job(job_args: tuple):
    """``profile_job(*job_args)`` as Dagster rebuilds it in another process (a pool process, a worker)."""
    return dg.build_reconstructable_job("agedistill_dag.materialize", "profile_job",
                                        reconstructable_args=tuple(job_args),
                                        reconstructor_working_directory=os.getcwd())


@dataclass(frozen=True)
class Stage:
    """Assets materialised together in one run per partition."""
    assets: tuple[str, ...]                  # asset names (without the profile prefix), upstream first
    partitions_def: dg.PartitionsDefinition | None
    job: str = ""                            # the job of the definitions that covers them

    @property
    def name(self) -> str:
        return "+".join(self.assets)


def stage_waves(p: Profile, defs: dg.Definitions) -> list[list[Stage]]:
    """The graph's assets as waves of stages, from its topological levels: a level's assets with
    the same partitioning as the previous wave's single stage join it (crops -> labels per shard);
    the stages of one wave do not depend on each other."""
    graph = defs.resolve_asset_graph()
    job_of = {key: name for name, keys in graph_jobs(list(defs.assets)).items() for key in keys}
    waves: list[list[Stage]] = []
    for level in graph.toposorted_asset_keys_by_level:
        by_def: dict[int, list] = {}
        for key in sorted(level, key=lambda k: k.to_user_string()):
            by_def.setdefault(id(graph.get(key).partitions_def), []).append(key)
        stages = [Stage(tuple(k.path[-1] for k in keys), graph.get(keys[0]).partitions_def, job_of[keys[0]])
                  for keys in by_def.values()]
        prev = waves[-1] if waves else []
        if (len(stages) == 1 and len(prev) == 1 and stages[0].partitions_def is not None
                and stages[0].partitions_def is prev[0].partitions_def):
            waves[-1] = [Stage(prev[0].assets + stages[0].assets, prev[0].partitions_def, prev[0].job)]
        else:
            waves.append(stages)
    return waves


STAGE_OF_ASSET = {st.asset: st.name for st in STAGES}


def wanted_partitions(p: Profile, stage: Stage, archs: Iterable[str] | None = None) -> list:
    """The partitions of ``stage`` this profile asks for (``agedistill_core.pipeline.stage_keys``:
    the current manifest's shards, the selected LFW+C corruptions x severities, the run of each
    configured student); ``[None]`` for an unpartitioned stage."""
    keys = stage_keys(p.settings, STAGE_OF_ASSET[stage.assets[0]], list(archs) if archs else None)
    return [lfwc_key(*k) for k in keys] if stage.partitions_def is lfwc_partitions else keys


@dataclass
class RunOutcome:
    label: str            # e.g. "demo/face_crops+teacher_soft_labels[shard-00000]"
    run_id: str
    success: bool
    error: str = ""       # the first step failure, one line
    seconds: float = 0.0


@dataclass
class Materialized:
    """What ``materialize_all`` ran: every run in order, and the wall time of each wave."""
    instance: dg.DagsterInstance
    runs: list[RunOutcome] = field(default_factory=list)
    wave_seconds: list[tuple[str, float]] = field(default_factory=list)

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.runs]

    @property
    def success(self) -> bool:
        return all(r.success for r in self.runs)

    def events(self, event_type: dg.DagsterEventType) -> list[dg.EventLogEntry]:
        return [e for rid in self.run_ids for e in self.instance.all_logs(rid, of_type=event_type)]

    def materializations(self) -> list[dg.EventLogEntry]:
        return self.events(dg.DagsterEventType.ASSET_MATERIALIZATION)

    def check_evaluations(self) -> list:
        return [e.dagster_event.event_specific_data
                for e in self.events(dg.DagsterEventType.ASSET_CHECK_EVALUATION)]


def _first_error(result) -> str:
    for event in result.all_events:
        if event.is_step_failure:
            err = event.step_failure_data.error
            while err is not None and err.cause is not None and "AgedistillError" not in err.cls_name:
                err = err.cause                       # the error the stage raised, not Dagster's wrapper
            if err is not None:
                return f"{event.step_key}: {err.message.strip().splitlines()[-1]}"
    return "the run failed (see its events in the Dagster UI)"


# The instance settings ``make demo`` writes (Makefile, ``$(DAGSTER_HOME)/dagster.yaml``): telemetry off, and
# the stages' own ``agedistill.*`` log lines (messages, progress) captured into each run's event log.
INSTANCE_YAML = ("telemetry:\n  enabled: false\n"
                 "python_logs:\n  managed_python_loggers:\n    - agedistill\n  python_log_level: INFO\n")


def quiet_instance_home(home: str | os.PathLike | None) -> None:
    """A ``$DAGSTER_HOME`` without a dagster.yaml gets ``INSTANCE_YAML`` (telemetry off, the
    ``agedistill`` loggers captured: what ``make demo`` writes); an existing one is left as it is."""
    if not home:
        return
    home = Path(home)
    if (home / "dagster.yaml").exists() or (home / "dagster.yml").exists():
        return
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / f".dagster.yaml.{os.getpid()}"
    tmp.write_text(INSTANCE_YAML)
    os.replace(tmp, home / "dagster.yaml")


class QuietPool(ProcessPoolExecutor):
    """Spawned pool processes that die with this process and never print a KeyboardInterrupt
    traceback of their own: a terminal's Ctrl-C goes to the whole process group, and a process
    still importing the main module (before any initializer runs) would otherwise raise it.
    ``submit`` (which starts processes on demand) holds SIGINT back, so each process starts with
    it blocked; this process gets its Ctrl-C when ``submit`` returns."""

    def __init__(self, jobs: int):
        super().__init__(jobs, mp_context=multiprocessing.get_context("spawn"),
                         initializer=quiet_pool_init, initargs=(os.getpid(),))

    def submit(self, fn, /, *args, **kwargs):
        with sigint_blocked():
            return super().submit(fn, *args, **kwargs)


class _SignalsDuringRun:
    """Around a run executed in this process' main thread: Dagster's ``capture_interrupts`` turns
    SIGINT (and SIGTERM) into a flag that the run consumes, then restores SIGINT's handler and
    points SIGTERM at it.  This notes, through the signal wakeup fd (written for every signal,
    whichever handler runs), that one arrived, restores both handlers and, after the run,
    raises as the caller's handlers would have."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.active = threading.current_thread() is threading.main_thread()
        if not self.active:
            return self
        self.handlers = {sig: signal.getsignal(sig) for sig in self.SIGNALS}
        self.rsock, self.wsock = socket.socketpair()
        for sock in (self.rsock, self.wsock):
            sock.setblocking(False)
        self.old_fd = signal.set_wakeup_fd(self.wsock.fileno(), warn_on_full_buffer=False)
        return self

    def __exit__(self, *exc) -> None:
        if not self.active:
            return
        signal.set_wakeup_fd(self.old_fd)
        for sig, handler in self.handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        try:
            got = self.rsock.recv(4096)
        except (BlockingIOError, OSError):
            got = b""
        finally:
            self.rsock.close()
            self.wsock.close()
        if exc[0] is not None:
            return
        for sig in self.SIGNALS:
            if sig in got:
                handler = self.handlers[sig]
                if callable(handler):
                    handler(sig, None)               # KeyboardInterrupt, SystemExit, ...
                elif handler == signal.SIG_DFL:
                    if sig == signal.SIGINT:
                        raise KeyboardInterrupt
                    signal.signal(sig, signal.SIG_DFL)
                    os.kill(os.getpid(), sig)


def _execute(job_args: tuple, instance_or_ref, run_config: dict, tags: dict, asset_keys: list[str],
             label: str) -> RunOutcome:
    """One run: in this process (an instance) or in a pool process (an instance ref)."""
    start = time.perf_counter()
    # dagster-celery registers its task again for every run in a process; celery warns each time
    warnings.filterwarnings("ignore", message="Task name 'execute_plan' is already registered")
    recon = reconstructable_job(job_args)
    owned = not isinstance(instance_or_ref, dg.DagsterInstance)
    instance = dg.DagsterInstance.from_ref(instance_or_ref) if owned else instance_or_ref
    try:
        result = dg.execute_job(recon, instance, run_config=run_config, tags=tags,
                                asset_selection=[dg.AssetKey.from_user_string(k) for k in asset_keys])
        with result:
            error = "" if result.success else _first_error(result)
            return RunOutcome(label, result.run_id, result.success, error, time.perf_counter() - start)
    finally:
        if owned:
            instance.dispose()


def materialize_all(profile: str | None = None, params: str | None = None,
                    instance: dg.DagsterInstance | None = None, archs: list[str] | None = None,
                    jobs: int | None = None, executor: str = "in_process",
                    run_config: dict | None = None, assets: Iterable[str] | None = None,
                    in_pool: bool | None = None) -> Materialized:
    """Run every stage of the graph (or of ``assets``, names without the prefix) wave by wave,
    ``jobs`` runs at a time (default: the CPU count; 1 runs everything in this process, unless
    ``in_pool``: then in one pool process, leaving this process' signal handlers alone).
    Raises ConfigError naming the failed runs when a wave fails; later waves are not started."""
    p = Profile.load(profile, params)
    defs = build_definitions(p, executor=executor)
    instance = instance or dg.DagsterInstance.get()
    jobs = max(1, jobs or os.cpu_count() or 1)
    in_pool = jobs > 1 if in_pool is None else in_pool
    if in_pool and not instance.is_persistent:
        raise ConfigError("materialising with jobs > 1 needs a persistent Dagster instance (set DAGSTER_HOME); "
                          "pass jobs=1 to run in this process")
    params_path = str(find_params(p.params))       # absolute: the same file wherever the job is rebuilt
    config = {**QUIET, **(run_config or {})}
    only = set(assets) if assets is not None else None
    launch = {LAUNCH_TAG: uuid.uuid4().hex}       # marks this call's runs (to cancel them when interrupted)
    done = Materialized(instance)
    pool = QuietPool(jobs) if in_pool else None
    try:
        for wave in stage_waves(p, defs):
            todo = []
            for stage in wave:
                names = [a for a in stage.assets if only is None or a in only]
                if not names:
                    continue
                for key in wanted_partitions(p, stage, archs):
                    tags = {**launch, **({} if key is None else stage.partitions_def.get_tags_for_partition_key(str(key)))}
                    label = f"{p.prefix}/{'+'.join(names)}" + ("" if key is None else f"[{key}]")
                    todo.append((label, (p.name, params_path, executor, stage.job),
                                 [p.key(a).to_user_string() for a in names], tags))
            if not todo:
                continue
            start = time.perf_counter()
            for label, *_ in todo:
                LOG.info(f"materialising {label}")
            if pool is None:
                outcomes = []
                for label, job_args, keys, tags in todo:
                    with _SignalsDuringRun():
                        outcomes.append(_execute(job_args, instance, config, tags, keys, label))
            else:
                ref = instance.get_ref()
                futures = [pool.submit(_execute, job_args, ref, config, tags, keys, label)
                           for label, job_args, keys, tags in todo]
                outcomes = [f.result() for f in futures]
            seconds = time.perf_counter() - start
            done.runs += outcomes
            done.wave_seconds.append((" | ".join(sorted({t[0].split("[")[0] for t in todo})), seconds))
            failed = [o for o in outcomes if not o.success]
            if failed:
                raise ConfigError("; ".join(f"{o.label} failed (run {o.run_id}): {o.error}" for o in failed))
            LOG.info(f"  {len(outcomes)} run(s) in {seconds:.1f} s")
    except BaseException:          # Ctrl-C, SIGTERM (as SystemExit), a failed wave
        with signals_deferred():   # a second Ctrl-C waits until the runs are stopped and marked
            if pool is not None:   # runs in flight in the pool: stop their processes now (SIGKILL:
                procs = list((getattr(pool, "_processes", None) or {}).values())  # Dagster's run loop outlives SIGTERM)
                for proc in procs:
                    proc.kill()
                for proc in procs:
                    proc.join(10)
                pool.shutdown(wait=False, cancel_futures=True)
                pool = None
            _cancel_unfinished(instance, launch)
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return done


def _cancel_unfinished(instance: dg.DagsterInstance, launch: dict) -> None:
    """Mark this call's runs that never finished (their process was stopped) as canceled."""
    unfinished = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING,
                  dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
    for run in instance.get_runs(filters=dg.RunsFilter(tags=launch, statuses=unfinished)):
        instance.report_run_canceled(run, message="interrupted: agedistill_dag.materialize was stopped")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile")
    ap.add_argument("--params")
    ap.add_argument("--jobs", type=int, default=None, help="runs at a time (default: the CPU count)")
    ap.add_argument("--executor", default="in_process", choices=["in_process", "multiprocess", "celery"],
                    help="the executor inside each run; celery sends the steps to running workers "
                         "(--broker; docs/DEPLOY.md); `make cluster-demo` starts Redis and workers itself")
    ap.add_argument("--broker", help="Celery broker URL, e.g. redis://:PASSWORD@10.0.0.1:6379/0 (with --executor "
                    "celery; default: $AGEDISTILL_CELERY_BROKER, which keeps the password off the command line "
                    "and out of the runs' stored config)")
    ap.add_argument("--backend", help="Celery result backend URL (default: $AGEDISTILL_CELERY_BACKEND, else the "
                    "broker's host, db 1)")
    args = ap.parse_args(argv)
    from agedistill_dag.cluster import BACKEND_ENV, BROKER_ENV
    run_config = None
    if args.executor == "celery":
        broker = args.broker or os.environ.get(BROKER_ENV)
        if not broker:
            ap.error(f"--executor celery needs --broker URL or ${BROKER_ENV} (the workers' broker; docs/DEPLOY.md)")
        if args.backend:
            backend = args.backend
        elif os.environ.get(BACKEND_ENV):
            backend = {"env": BACKEND_ENV}
        else:
            backend = urlunsplit(urlsplit(broker)._replace(path="/1"))
        run_config = {"execution": {"config": {"broker": args.broker or {"env": BROKER_ENV}, "backend": backend}}}
    quiet_instance_home(os.environ.get("DAGSTER_HOME"))
    # this command's own lines; the stages' lines reach stderr through each run's Dagster console
    # logger (the instance captures the ``agedistill`` loggers), once
    setup_logging(name="agedistill.dag")
    start = time.perf_counter()
    out: dict = {}

    def body() -> int:
        try:
            materialize_all(args.profile, args.params, jobs=args.jobs, executor=args.executor, run_config=run_config)
        except BrokenProcessPool:
            print("error: a run's process died (killed, or out of memory); its unfinished runs are marked "
                  "canceled and every finished partition is kept: run the same command again to finish",
                  file=sys.stderr)
            return 2
        out["settings"] = Profile.load(args.profile, args.params).settings
        return 0

    rc = run_command(body, interrupted="interrupted: unfinished runs marked canceled; every finished stage is kept",
                     stopped="unfinished runs marked canceled; every finished stage is kept")
    if rc:
        return rc
    settings = out["settings"]
    bench = settings.benchmarks_dir / "benchmark.md"
    if bench.is_file():
        print(bench.read_text())
    print(f"results in {settings.workdir} (label table: {settings.vmage_path}; "
          f"checkpoints: {settings.students_dir}; tables: {settings.benchmarks_dir}); "
          f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    # Through the module's own name, so that pool processes find these functions under it.
    from agedistill_dag.cluster import install_exit_handlers
    from agedistill_dag.materialize import main as _main
    install_exit_handlers()          # SIGTERM/SIGHUP: SystemExit, so that runs are canceled and the pool stopped
    sys.exit(_main())
