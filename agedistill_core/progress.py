"""Progress of long work (crops, labels, LFW+C, training, evaluation, predict): one helper.

On a terminal (stderr is a tty) a tqdm bar; otherwise -- a pipe, a log file, a Dagster run --
a throttled log line through ``logging`` (the caller's ``agedistill.*`` logger): when another
``every`` items are done (default: a quarter of the total) or ``every_s`` seconds have passed,
whichever comes first, with the throughput and the time left::

    crops shard-00001: 500/2000 images, 7.4 images/s, 203 s left

    with Progress(len(ids), "crops shard-00001", "image", logger=log) as bar:
        for ... :
            bar.update()
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator

EVERY_S = 30.0
LOG = logging.getLogger("agedistill.progress")


def on_terminal() -> bool:
    """Whether stderr is a terminal (a bar) rather than a pipe or a file (log lines)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stderr
        return False


class Progress:
    """``total`` items of ``unit``; ``update(k)`` as they are done.  ``enabled`` False: silent."""

    def __init__(self, total: int, desc: str, unit: str = "item", *, logger: logging.Logger = LOG,
                 every: int | None = None, every_s: float = EVERY_S, enabled: bool = True,
                 scale: int = 1, scale_unit: str | None = None):
        self.total, self.desc, self.unit, self.logger = int(total), desc, unit, logger
        self.every = max(1, int(every) if every else -(-self.total // 4))
        self.every_s, self.n = every_s, 0
        self.scale, self.scale_unit = scale, scale_unit   # e.g. batches of 64 faces: throughput in faces/s
        # off when the logger is quieter than INFO (``agedistill -q``, or logging never set up)
        self.enabled = enabled and self.total > 1 and logger.isEnabledFor(logging.INFO)
        self.t0 = self.last_t = time.perf_counter()
        self.last_n = 0
        self.bar = None
        if self.enabled and on_terminal():
            from tqdm.auto import tqdm
            self.bar = tqdm(total=self.total, desc=desc, unit=unit, file=sys.stderr, leave=False)

    def update(self, k: int = 1) -> None:
        self.n += k
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(k)
            return
        now = time.perf_counter()
        if self.n >= self.total or (self.n - self.last_n < self.every and now - self.last_t < self.every_s):
            return   # the last item: the caller reports the result
        self.last_n, self.last_t = self.n, now
        self.logger.info(self.line(now))

    def line(self, now: float | None = None) -> str:
        """``desc: n/total units, R units/s, S s left``."""
        elapsed = max((now or time.perf_counter()) - self.t0, 1e-9)
        rate = self.n / elapsed
        left = (self.total - self.n) / rate if rate > 0 else float("inf")
        per_s = (f"{rate * self.scale:.1f} {self.scale_unit}s/s" if self.scale_unit else f"{rate:.1f} {self.unit}s/s")
        return f"{self.desc}: {self.n}/{self.total} {self.unit}s, {per_s}, {left:.0f} s left"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wrap(self, it: Iterable) -> Iterator:
        """Yield ``it``'s items, counting each as done once the consumer asks for the next."""
        try:
            for item in it:
                yield item
                self.update()
        finally:
            self.close()
