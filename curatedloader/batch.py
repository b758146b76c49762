"""Row operations on collated batches: tensors, arrays, dicts, lists, tuples and lists of strings.

A collated batch is a nested structure whose leaves are tensors/arrays with the batch in dim 0, or
lists with one entry per row. These helpers slice, join and extend such batches row-wise.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor


def _is_sample(x) -> bool:
    return isinstance(x, Mapping) or (isinstance(x, tuple) and not hasattr(x, "_fields"))


def _is_row_list(x) -> bool:
    """One entry per row: a list, or the tuple default_collate makes of strings, holding leaves (not a
    namedtuple, and not a list of fields holding tensors or sequences); or a list of per-sample dicts or
    tuples (an identity collate_fn: default_collate never puts dicts or tuples in a list)."""
    if not isinstance(x, (list, tuple)) or hasattr(x, "_fields"):
        return False
    if len(x) == 0 or not isinstance(x[0], (Tensor, np.ndarray, Mapping, list, tuple)):
        return True
    return isinstance(x, list) and all(_is_sample(v) for v in x)


def batch_len(batch: Any) -> Optional[int]:
    """Number of rows in a collated batch.

    >>> batch_len({"x": torch.zeros(3, 2), "name": ["a", "b", "c"]})
    3
    """
    if isinstance(batch, (Tensor, np.ndarray)):
        return int(batch.shape[0]) if batch.ndim else None  # a scalar has no rows
    if isinstance(batch, Mapping):
        for v in batch.values():
            n = batch_len(v)
            if n is not None:
                return n
        return None
    if _is_row_list(batch):
        return len(batch)
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        for v in batch:
            n = batch_len(v)
            if n is not None:
                return n
    return None


def index_batch(batch: Any, idx: Tensor) -> Any:
    """Rows `idx` (a LongTensor) of a collated batch, keeping its structure.

    >>> index_batch((torch.arange(4), ["a", "b", "c", "d"]), torch.tensor([3, 1]))
    (tensor([3, 1]), ['d', 'b'])
    """
    if isinstance(batch, Tensor):  # index_select: a few times faster than batch[idx] on CPU
        return batch.index_select(0, idx.to(batch.device))
    if isinstance(batch, np.ndarray):
        return batch[idx.cpu().numpy()]
    if isinstance(batch, Mapping):
        return {k: index_batch(v, idx) for k, v in batch.items()}
    if _is_row_list(batch):
        return type(batch)(batch[i] for i in idx.tolist())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(index_batch(v, idx) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(index_batch(v, idx) for v in batch)
    return batch


def cat_batches(batches: list) -> Any:
    """Join collated batches of the same structure row-wise.

    >>> cat_batches([{"x": torch.zeros(2)}, {"x": torch.ones(1)}])
    {'x': tensor([0., 0., 1.])}
    """
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    if isinstance(first, Tensor):
        return torch.cat(batches)
    if isinstance(first, np.ndarray):
        return np.concatenate(batches)
    if isinstance(first, Mapping):
        return {k: cat_batches([b[k] for b in batches]) for k in first}
    if _is_row_list(first):
        return type(first)(x for b in batches for x in b)
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(cat_batches(list(vs)) for vs in zip(*batches)))
    if isinstance(first, (list, tuple)):
        return type(first)(cat_batches(list(vs)) for vs in zip(*batches))
    return first


def attach(batch: Any, name: str, value: Any) -> Any:
    """Add a per-row field to a batch: a new key of a dict, or one more element of a tuple/list.

    >>> attach((torch.zeros(2), torch.ones(2)), "weight", torch.full((2,), 0.5))[2]
    tensor([0.5000, 0.5000])
    """
    if isinstance(batch, Mapping):
        return {**batch, name: value}
    if isinstance(batch, (list, tuple)) and not _is_row_list(batch):
        return type(batch)([*batch, value]) if not hasattr(batch, "_fields") else (*batch, value)
    return (batch, value)


def get_field(batch: Any, key) -> Any:
    """`batch[key]` for dicts, tuples and lists, with a clear error naming the key. A batch that is a
    single tensor (a dataset of bare images) is its own field 0: indexing it would take its first row.

    >>> get_field(torch.zeros(4, 3), 0).shape
    torch.Size([4, 3])
    """
    if isinstance(batch, (Tensor, np.ndarray)):
        if key in (0, None):
            return batch
        raise ValueError(f"batch is a single {type(batch).__name__}, it has no field {key!r}")
    try:
        return batch[key]
    except (KeyError, IndexError, TypeError) as e:
        raise ValueError(f"batch has no field {key!r} (batch type {type(batch).__name__})") from e
