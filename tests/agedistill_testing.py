"""Test helpers shared by every test folder: where the real face data is, temporary params files.

(Not named conftest: several test folders have their own conftest.py.)"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
UTKFACE = SHARED_DATA / "utkface" / "crop_part1"
FAIRFACE = SHARED_DATA / "fairface"

needs_utkface = pytest.mark.skipif(
    not UTKFACE.is_dir(), reason=f"needs real faces in ../shared/data/utkface/crop_part1 ({UTKFACE} missing)")
needs_fairface = pytest.mark.skipif(
    not FAIRFACE.is_dir(), reason=f"needs real faces in ../shared/data/fairface ({FAIRFACE} missing)")


@contextlib.contextmanager
def agedistill_messages(on_message: Callable[[str], None] | None = None) -> Iterator[list[str]]:
    """The messages the ``agedistill.*`` loggers emit inside the block (INFO and up), as a list that
    fills as they come; ``on_message`` is called with each (raising in it stops the work there, as
    a kill would)."""
    seen: list[str] = []

    class _Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            seen.append(msg)
            if on_message is not None:
                on_message(msg)

    logger, handler = logging.getLogger("agedistill"), _Handler(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def write_params(folder: Path, profiles: dict, base: dict | None = None, default: str | None = None) -> Path:
    """Write a params.yaml with ``base`` (the repo's own by default) and ``profiles``."""
    repo_params = yaml.safe_load((REPO / "params.yaml").read_text())
    doc = {"base": repo_params["base"] if base is None else base, "profiles": profiles}
    if default:
        doc["default_profile"] = default
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path




class ProcessOutput:
    """Reads a subprocess' text stdout in a thread (so a full pipe never blocks it) and waits for
    a line: ``out.wait_for(lambda line: ..., timeout)``; ``out.text`` is everything read so far."""

    def __init__(self, proc):
        import threading
        self.proc, self.lines, self._cond = proc, [], threading.Condition()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.lines.append(None)                  # end of output
            self._cond.notify_all()

    @property
    def text(self) -> str:
        with self._cond:
            return "".join(line for line in self.lines if line is not None)

    def wait_for(self, predicate, timeout: float) -> str:
        """The first line for which ``predicate`` is true; AssertionError (with the output) if the
        output ends or ``timeout`` seconds pass first."""
        import time
        deadline, seen = time.monotonic() + timeout, 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if line is None:
                        raise AssertionError(f"the process ended first:\n{self.text[-4000:]}")
                    if predicate(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such line within {timeout:.0f} s:\n{self.text[-4000:]}")
                self._cond.wait(left)

    def finish(self, timeout: float = 60) -> str:
        """All the output, once the process has closed it."""
        self._thread.join(timeout)
        return self.text


class Stopped:
    """What ``stopped_group`` collects: ``text`` (all of the output) and ``rest`` (the lines from the
    interrupt on)."""

    def __init__(self, proc, out: ProcessOutput):
        self.proc, self.out, self.before, self.text, self.rest = proc, out, 0, "", ""

    def interrupt(self, send: Callable[[], None], timeout: float = 180) -> None:
        """Mark the output, ``send`` the signal (to the process or its group), wait for the exit."""
        self.before = len(self.out.lines)
        send()
        self.proc.wait(timeout=timeout)


@contextlib.contextmanager
def stopped_group(proc, out: ProcessOutput) -> Iterator[Stopped]:
    """The shutdown of a test that interrupts a launcher started with ``start_new_session=True``:
    on the way out its process group is SIGKILLed if the launcher still runs (so a failed wait
    never leaves it behind), then its output is collected into the ``Stopped`` yielded."""
    import os
    import signal

    stop = Stopped(proc, out)
    try:
        yield stop
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stop.text = out.finish()
    stop.rest = "".join(line for line in out.lines[stop.before:] if line is not None)
