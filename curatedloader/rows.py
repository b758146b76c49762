"""A FIFO of collated pieces from which the loader takes exactly n rows at a time."""
from __future__ import annotations

from collections import deque
from typing import Any

import torch
from .batch import batch_len, cat_batches, index_batch


class RowBuffer:
    """Pieces `(ids, batch)` in arrival order; `take(n)` joins or splits them into the next n rows, and
    `unread` puts rows back in front (a step that failed leaves its rows for the next try).

    >>> buf = RowBuffer(); buf.put(torch.arange(3), torch.zeros(3, 2)); buf.put(torch.arange(3, 5), torch.ones(2, 2))
    >>> buf.take(4)[0]
    tensor([0, 1, 2, 3])
    """

    def __init__(self) -> None:
        self.pieces: deque = deque()
        self.n = 0

    def put(self, ids: Any, batch: Any) -> None:
        n, rows = len(ids), batch_len(batch)
        if rows != n:
            raise ValueError(
                f"collate_fn returned a batch of {rows or 'no'} rows for {n} samples; selection and re-cutting "
                "slice batches by row, so each leaf must be a tensor or array with the rows in dim 0, or a list "
                "of per-row strings/numbers (a list of per-sample tuples, dicts or tensors reads as fields)"
            )
        if n:
            self.pieces.append((ids, batch, n))
            self.n += n

    def take(self, n: int) -> tuple[Any, Any, bool]:
        """(ids, batch, whole): the next n rows; `whole` when they are one piece as it arrived."""
        ids, batches, whole = [], [], self.pieces[0][2] == n
        while n > 0:
            pid, pb, pn = self.pieces.popleft()
            if pn > n:  # split the piece: its tail waits for the next step
                head, tail = torch.arange(n), torch.arange(n, pn)
                self.pieces.appendleft((pid[n:], index_batch(pb, tail), pn - n))
                pid, pb, pn = pid[:n], index_batch(pb, head), n
            ids.append(pid)
            batches.append(pb)
            n -= pn
            self.n -= pn
        return cat_batches(ids), cat_batches(batches), whole

    def unread(self, ids: Any, batch: Any) -> None:
        """Put rows taken by `take` back in front."""
        self.pieces.appendleft((ids, batch, len(ids)))
        self.n += len(ids)
