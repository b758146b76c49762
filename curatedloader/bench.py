"""One benchmark harness: timing with warm-up and repeats, peak memory, a device banner, result rows
as JSON lines (device, date, commit, versions), plots into an output folder, Markdown tables from rows.

    >>> t = measure(lambda: sum(range(1000)), warmup=1, repeats=5)
    >>> len(t.ms), t.median <= t.q3
    (5, True)

`python -m curatedloader.bench report rows.jsonl` prints the rows' Markdown tables;
`python -m curatedloader.bench update benchmarks/RESULTS.md` regenerates the tables that RESULTS.md
marks with `<!-- rows: FILE.jsonl -->` ... `<!-- end rows -->` from those files.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch

# fields every row carries besides its own measurements; tables show them once, above the table
CONTEXT_KEYS = ("bench", "device", "date", "commit", "versions")


# ---- timing ---------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Milliseconds of `repeats` timed calls (warm-up excluded), with their median and spread.

    >>> Timing([1.0, 2.0, 3.0, 10.0]).median, Timing([1.0, 2.0, 3.0, 10.0]).max
    (2.5, 10.0)
    """

    ms: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.ms)

    @property
    def q1(self) -> float:
        return _quantile(self.ms, 0.25)

    @property
    def q3(self) -> float:
        return _quantile(self.ms, 0.75)

    @property
    def min(self) -> float:
        return min(self.ms)

    @property
    def max(self) -> float:
        return max(self.ms)

    def row(self, name: str) -> dict[str, float]:
        """`{name}_ms` (median), `{name}_q1_ms`, `{name}_q3_ms`, `{name}_min_ms`, `{name}_max_ms`."""
        return {f"{name}_ms": self.median, f"{name}_q1_ms": self.q1, f"{name}_q3_ms": self.q3,
                f"{name}_min_ms": self.min, f"{name}_max_ms": self.max}

    def __str__(self) -> str:
        return f"{self.median:.3g} ms (IQR {self.q1:.3g}–{self.q3:.3g}, n={len(self.ms)})"


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), for any number of values."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def synchronize(device: Optional[torch.device | str] = None) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5,
            device: Optional[torch.device | str] = None) -> Timing:
    """Time `fn()` `repeats` times after `warmup` untimed calls, synchronising `device` (CUDA) around
    each call so that queued kernels count where they run.

    >>> measure(lambda: None, warmup=0, repeats=3).ms.__len__()
    3
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        ms.append(1e3 * (time.perf_counter() - t0))
    return Timing(ms)


def throughput(batches: Iterable, rows: Callable[[Any], int] = len) -> float:
    """Rows per second over one pass of `batches` (a loader's start-up included, as an epoch pays it).

    >>> throughput([[0] * 10] * 3) > 0
    True
    """
    t0, n = time.perf_counter(), 0
    for batch in batches:
        n += rows(batch)
    return n / (time.perf_counter() - t0)


def interleaved(contenders: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each contender once per round, `repeats` rounds, so that machine noise hits all alike.

    >>> interleaved({"a": lambda: 1.0, "b": lambda: 2.0}, 2)
    {'a': [1.0, 1.0], 'b': [2.0, 2.0]}
    """
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            runs[name].append(fn())
    return runs


# ---- memory ---------------------------------------------------------------------------------------


def _rss() -> Optional[int]:
    """The process's resident set now, in bytes (Linux), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def peak_memory(device: Optional[torch.device | str] = None, interval_s: float = 0.01) -> Iterator[dict[str, float]]:
    """Fill a dict with the peak memory of the block:

    - `host_extra_mib`: peak resident set above its level at entry, sampled every `interval_s` by a thread
      (Linux; a spike shorter than the interval can be missed);
    - `host_peak_mib`: the process's peak resident set so far (getrusage: a high-water mark over the
      process's life, so an upper bound for the block);
    - on CUDA, `device_peak_mib`: peak allocated beyond what was allocated when the block began.

    >>> with peak_memory() as mem:
    ...     block = bytearray(64 << 20)
    >>> mem["host_peak_mib"] >= mem["host_extra_mib"] >= 0
    True
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    out: dict[str, float] = {}
    cuda = device.type == "cuda"
    if cuda:
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    start = _rss()
    peak, stop = [start or 0], threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            peak[0] = max(peak[0], _rss() or 0)

    sampler = threading.Thread(target=sample, daemon=True)
    if start is not None:
        sampler.start()
    try:
        yield out
    finally:
        if cuda:
            synchronize(device)
            out["device_peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        stop.set()
        if start is not None:
            sampler.join()
            out["host_extra_mib"] = (max(peak[0], _rss() or 0) - start) / 2**20
        # ru_maxrss is KiB on Linux, bytes on macOS
        scale = 1 if sys.platform == "darwin" else 1024
        out["host_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


# ---- device, context, rows ------------------------------------------------------------------------


def device_name(device: Optional[torch.device | str] = None) -> str:
    """The GPU's name, or the CPU's model and core count.

    >>> "core" in device_name("cpu")
    True
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores"


def commit() -> str:
    """The checked-out commit of the source tree (with `+dirty` for uncommitted changes), or "unknown"."""
    root = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "") if sha else "unknown"


def versions() -> dict[str, str]:
    """Versions that move benchmark figures: Python, torch (and its CUDA), numpy, curatedloader."""
    import numpy

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    if torch.version.cuda:
        out["cuda"] = torch.version.cuda
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        out["curatedloader"] = version("curatedloader")
    return out


def context(bench: str, device: Optional[torch.device | str] = None) -> dict[str, Any]:
    """The fields every row of a run carries: bench name, device, UTC date, commit, versions."""
    return {"bench": bench, "device": device_name(device),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
            "commit": commit(), "versions": versions()}


def banner(device: Optional[torch.device | str] = None) -> str:
    """One line naming the device and the versions, to print above results.

    >>> banner("cpu").startswith("device: ")
    True
    """
    v = versions()
    extra = f", CUDA {v['cuda']}" if "cuda" in v else ""
    return f"device: {device_name(device)}; torch {v['torch']}{extra}, Python {v['python']}; commit {commit()}"


def write_rows(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Append rows to a JSON-lines file (never a file git tracks), creating its folder."""
    path = guard_output(path)
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")
    return path


def read_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSON-lines file."""
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


# ---- outputs --------------------------------------------------------------------------------------


def guard_output(path: str | os.PathLike) -> Path:
    """`path`, with its folder created, after checking that git does not track it (figures committed by
    a full run are not overwritten by a quick one); raises ValueError if it does."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", path.name], cwd=path.parent,
                                 capture_output=True, timeout=10).returncode == 0
        if tracked:
            raise ValueError(f"{path} is tracked by git; write benchmark outputs to an output folder (e.g. out/)")
    return path


@contextlib.contextmanager
def figure(path: str | os.PathLike, *args: Any, dpi: int = 110, **kwargs: Any) -> Iterator[tuple]:
    """`(fig, axes)` of `plt.subplots(*args, **kwargs)`, saved to `path` (guarded) and closed on exit.

    >>> import tempfile; folder = tempfile.mkdtemp()
    >>> with figure(f"{folder}/example.png") as (fig, ax):
    ...     _ = ax.plot([1, 2], [3, 4])
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = guard_output(path)
    fig, axes = plt.subplots(*args, **kwargs)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def output_args(parser: argparse.ArgumentParser, name: str) -> None:
    """Add `--out FOLDER` (default `out/`, git-ignored) for a benchmark's rows (`FOLDER/{name}.jsonl`) and plots."""
    parser.add_argument("--out", type=Path, default=Path("out"),
                        help=f"folder for rows ({name}.jsonl, appended) and plots (default out/)")


# ---- tables ---------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    return "" if value is None else str(value)


def markdown_table(rows: Sequence[dict], columns: Optional[Sequence[str]] = None) -> str:
    """A Markdown table of `rows` (`columns`: default every key but the context ones, in first-seen order).

    >>> print(markdown_table([{"n": 1000, "ms": 1.25}, {"n": 2000, "ms": 2.5}]))
    | n | ms |
    |---|---|
    | 1,000 | 1.25 |
    | 2,000 | 2.5 |
    """
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r if k not in CONTEXT_KEYS))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def report(rows: Sequence[dict], columns: Optional[Sequence[str]] = None) -> str:
    """Markdown for rows: per bench and device, a line with device, dates, commits and torch, then a table."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("bench", "?"), r.get("device", "?")), []).append(r)
    parts = []
    for (bench, device), group in groups.items():
        dates = sorted({str(r.get("date", "?")) for r in group})
        commits = list(dict.fromkeys(str(r.get("commit", "?")) for r in group))
        torches = sorted({str(r.get("versions", {}).get("torch", "?")) for r in group})
        parts.append(f"`{bench}` on {device}; {', '.join(dates)}; commit {', '.join(commits)}; "
                     f"torch {', '.join(torches)}\n\n{markdown_table(group, columns)}")
    return "\n\n".join(parts)


_MARKED = re.compile(r"(<!-- rows: (?P<file>\S+?)(?: columns: (?P<cols>[^>]*?))? -->\n)(?P<body>.*?)(<!-- end rows -->)",
                     re.S)


def update_document(path: str | os.PathLike) -> bool:
    """Regenerate every `<!-- rows: FILE [columns: a,b] -->` ... `<!-- end rows -->` block of a Markdown
    file from FILE (relative to the document); returns whether the text changed."""
    path = Path(path)
    text = path.read_text()

    def fill(m: re.Match) -> str:
        cols = [c.strip() for c in m["cols"].split(",")] if m["cols"] else None
        return m[1] + report(read_rows(path.parent / m["file"]), cols) + "\n\n" + m[5]

    new = _MARKED.sub(fill, text)
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m curatedloader.bench", description="Markdown from benchmark rows")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("report", help="print Markdown tables of JSON-lines rows")
    r.add_argument("rows", nargs="+", type=Path)
    r.add_argument("--columns", help="comma-separated columns (default: all measured fields)")
    u = sub.add_parser("update", help="regenerate the marked tables of a Markdown file from their rows")
    u.add_argument("document", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "report":
        rows = [row for f in args.rows for row in read_rows(f)]
        print(report(rows, args.columns.split(",") if args.columns else None))
    else:
        print(f"{args.document}: {'updated' if update_document(args.document) else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
