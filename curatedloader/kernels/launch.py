"""Choosing between the Triton kernels and the PyTorch references, sizing grids, and picking launch settings.

Nothing here imports triton at module load, so the package works (PyTorch references) where triton is missing.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

IMPLS = ("auto", "triton", "torch")
T = TypeVar("T")


def use_triton(impl: str, device: torch.device) -> bool:
    """``impl="auto"`` runs Triton on CUDA tensors and PyTorch otherwise.

    >>> use_triton("auto", torch.device("cpu"))
    False
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "torch" or (impl == "auto" and device.type != "cuda"):
        return False
    if device.type != "cuda" and not interpreting():
        raise ValueError(f"impl='triton' on {device.type} tensors needs TRITON_INTERPRET=1 set before triton runs")
    return True


def interpreting() -> bool:
    """True under Triton's CPU interpreter, where kernels upcast before ``tl.dot`` and use one pinned launch."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def cdiv(a: int, b: int) -> int:
    """Ceiling division, ``triton.cdiv`` without importing triton.

    >>> cdiv(7, 2)
    4
    """
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= ``n`` (1 for n <= 1).

    >>> next_power_of_2(1000), next_power_of_2(1024)
    (1024, 1024)
    """
    return 1 << max(0, n - 1).bit_length()


def num_splits(device: torch.device, row_programs: int, n_tiles: int, splits: int | None = None) -> tuple[int, int]:
    """Split each row's ``n_tiles`` tiles into chunks so that the grid fills the GPU.

    Returns ``(splits, tiles_per_split)`` with every split non-empty; the partial results are combined
    afterwards in a fixed order, so the result is deterministic. Under the interpreter one split is fastest.

    >>> num_splits(torch.device("cpu"), row_programs=4, n_tiles=10, splits=3)
    (3, 4)
    """
    if splits is None:
        wanted = 8 * torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
        splits = cdiv(wanted, row_programs)
    tiles_per_split = cdiv(n_tiles, max(1, min(splits, n_tiles)))
    return cdiv(n_tiles, tiles_per_split), tiles_per_split


@dataclass(frozen=True)
class Launch:
    """What one kernel launch compiles: the kernel's tile constexprs, its warps and its pipeline stages."""

    tiles: Mapping[str, int] = field(hash=False)
    num_warps: int
    num_stages: int = 3


@dataclass(frozen=True)
class RowTile:
    """A row-wise kernel's tile: ``elements`` per step, one long row or up to ``max_rows`` short ones, over
    ``num_warps`` (fewer for small tiles: at least 16 values per thread)."""

    elements: int
    num_warps: int
    max_rows: int | None = None


def row_launches(tiles: Sequence[RowTile], n_rows: int, n_cols: int, names: tuple[str, str]) -> list[Launch]:
    """One launch per tile for a row-wise pass over ``[n_rows, n_cols]``; ``names`` are the kernel's
    (rows, cols) constexprs. Short rows share a tile, so each program still moves a full tile.

    >>> row_launches([RowTile(8192, 8)], n_rows=300, n_cols=17, names=("BLOCK_ROWS", "BLOCK_V"))
    [Launch(tiles={'BLOCK_ROWS': 256, 'BLOCK_V': 32}, num_warps=8, num_stages=3)]
    """
    launches = []
    for tile in tiles:
        cols = min(tile.elements, next_power_of_2(n_cols))
        rows = min(tile.elements // cols, next_power_of_2(n_rows), tile.max_rows or tile.elements)
        warps = max(4, min(tile.num_warps, rows * cols // 512))
        launches.append(Launch(dict(zip(names, (rows, cols))), num_warps=warps))
    return launches


_FASTEST: dict[tuple, int] = {}  # (op, shape bucket) -> index of the fastest launch, measured once


def run_fastest(op: str, bucket: tuple, launches: Sequence[Launch], run: Callable[[Launch], T]) -> T:
    """``run(launch)`` with the fastest of ``launches`` for this shape bucket.

    On the first call per ``(op, bucket)`` every launch is timed (``triton.testing.do_bench``) and the
    fastest is kept; ``run`` must therefore be repeatable (it writes its outputs, never accumulates into
    them). A single launch (the interpreter's pinned one) runs without timing.
    """
    if len(launches) == 1:
        return run(launches[0])
    best = _FASTEST.get((op, bucket))
    if best is None:
        from triton.testing import do_bench

        times = [do_bench(lambda launch=launch: run(launch), warmup=5, rep=25) for launch in launches]
        best = _FASTEST[(op, bucket)] = times.index(min(times))
    return run(launches[best])
