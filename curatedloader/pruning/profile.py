"""Time and peak memory of each stage of a pruning run (for summary.json and benchmarks/prune_scale.py)."""
from __future__ import annotations

import ctypes
import resource
import sys
import threading
import time


def rss() -> int:
    """Anonymous resident memory of this process in bytes: what it holds, not counting file pages of
    memory-mapped features (the kernel can drop those). Linux: /proc/self/status; elsewhere the peak
    resident memory so far."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _release_freed_memory() -> None:
    """Hand memory freed by earlier stages back to the system (glibc keeps it), so a stage's extra
    memory is measured from what the process really holds."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class PeakRSS:
    """Wall time and peak resident memory while the block runs, sampled every `interval` seconds in a
    thread: `.seconds`, `.peak` (bytes), `.extra` (peak above the level at entry).

    >>> with PeakRSS() as m:
    ...     x = bytearray(1 << 26)
    >>> m.extra >= 0 and m.seconds >= 0
    True
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval

    def __enter__(self) -> PeakRSS:
        _release_freed_memory()
        self.base = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())
        self.extra = self.peak - self.base

    def row(self) -> dict:
        """{"seconds", "peak_rss_gib", "extra_rss_gib"} (anonymous memory, see `rss`) for a summary."""
        return {"seconds": round(self.seconds, 3), "peak_rss_gib": round(self.peak / 2**30, 3),
                "extra_rss_gib": round(self.extra / 2**30, 3)}
