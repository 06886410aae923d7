"""``python -m agedistill_dag.supervise FD GRACE -- COMMAND...``: run COMMAND tied to its launcher.

``agedistill_dag.cluster`` starts Redis and each Celery worker through this wrapper, in a process
group (session) of its own, with the read end ``FD`` of a pipe whose write end only the launcher
holds.  The wrapper runs COMMAND as its child, in the same group, and stops the whole group
(COMMAND and whatever it started: celery's pool processes) when

- the pipe reads end-of-file: the launcher closed it to stop the cluster, or the launcher died
  (even by SIGKILL: the kernel closes its descriptors), so nothing outlives the launcher;
- COMMAND exits by itself (the wrapper then exits with its status);
- the group is sent SIGTERM or SIGINT (COMMAND gets it too; the wrapper waits for it).

Stopping is SIGTERM to the group (Redis' clean exit, celery's warm shutdown), then SIGKILL to
whatever is left after GRACE seconds.  COMMAND also gets PR_SET_PDEATHSIG=SIGKILL, so it dies if
the wrapper itself is killed.  Only the standard library: it starts in a few milliseconds.
"""
from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent (the thread that started
    it) ends; exit at once if ``parent`` is given and already gone (it died before the call)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return                                    # not Linux: the pipe still stops the group
    if parent is not None and os.getppid() != parent:
        os._exit(1)


@contextmanager
def sigint_blocked():
    """SIGINT held back in this thread for the block (then delivered, once, if it came): what a
    process started meanwhile inherits, so it cannot be interrupted before it decides how to."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def quiet_pool_init(parent: int) -> None:
    """In each process of ``agedistill_dag.materialize.QuietPool``: die with the launcher; drop a
    Ctrl-C that came while it started (SIG_IGN discards a pending signal) and ignore later ones (a
    run in progress still sees them: Dagster installs its own handler)."""
    die_with_parent(signal.SIGKILL, parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextmanager
def signals_deferred():
    """SIGINT and SIGTERM wait until the block ends (then go to the handler that was there), so a
    second Ctrl-C cannot cut a shutdown short and leave processes behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, frame: got.append(signum))
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if got:
            handler = old[got[0]]
            if callable(handler):
                handler(got[0], None)
            elif handler != signal.SIG_IGN:
                os.kill(os.getpid(), got[0])


def _members(pgid: int) -> list[int]:
    out = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry))
    return out


def main(argv: list[str]) -> int:
    fd, grace, sep, *command = argv
    assert sep == "--" and command, "usage: supervise FD GRACE -- COMMAND..."
    fd, grace = int(fd), float(grace)
    signalled = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: signalled.append(signum))
    me, pgid = os.getpid(), os.getpgid(0)
    child = subprocess.Popen(command, pass_fds=(), preexec_fn=lambda: die_with_parent(signal.SIGKILL, me))
    stop_at = None                                 # when SIGKILL goes to the group
    while True:
        if child.poll() is not None:
            break
        if stop_at is None and signalled:          # the group got the signal: the child too
            stop_at = time.monotonic() + grace
        try:
            ready, _, _ = select.select([fd], [], [], 0.2)
        except InterruptedError:
            ready = []
        if ready and stop_at is None:
            try:
                eof = os.read(fd, 64) == b""
            except OSError:
                eof = True
            if eof:                                # the launcher closed its end or died
                try:
                    os.killpg(pgid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                stop_at = time.monotonic() + grace
        if stop_at is not None and time.monotonic() > stop_at:
            break
    # the child ended (or overstayed its grace): nothing else of the group may outlive it
    others = [p for p in _members(pgid) if p != me]
    for pid in others:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    rc = child.wait()
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
