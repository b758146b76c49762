"""Keep-lists: which samples of a dataset to train on, as a small text file.

Format (UTF-8, one id per line after a header):

    #curatedloader-ids v1 int        # or: str
    0
    17
    ...

Ids are dataset indices (int) for a map-style Dataset, or shard sample ids (str, see `shards.sample_id`)
for WebDataset shards. The same format holds the ids of an encoded feature file (`ids.txt`).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_HEADER = "#curatedloader-ids v1"


def save_keep(path: str | os.PathLike, ids: Sequence[int] | Sequence[str] | np.ndarray) -> None:
    """Write ids (all int or all str) to `path`, atomically (a temp file, then a rename).

    >>> save_keep("out/keep.txt", [0, 5, 9]); load_keep("out/keep.txt")
    array([0, 5, 9])
    """
    ids = list(ids.tolist() if isinstance(ids, np.ndarray) else ids)
    if all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
        kind = "int"
    elif all(isinstance(i, str) and i and "\n" not in i and i == i.strip() for i in ids):
        kind = "str"
    else:
        raise ValueError("ids: expected all ints (dataset indices) or all non-empty one-line strs (shard ids)")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{_HEADER} {kind}\n")
        f.writelines(f"{i}\n" for i in ids)
    os.replace(tmp, path)


def load_keep(path: str | os.PathLike) -> np.ndarray | list[str]:
    """Ids saved by `save_keep`: an int64 array of dataset indices, or a list of shard sample ids.

    >>> load_keep("out/keep.txt")[:3]
    array([0, 5, 9])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no keep-list file at {path}")
    with open(path, encoding="utf-8") as f:
        header = f.readline().split()
        if header[:2] != _HEADER.split() or len(header) != 3 or header[2] not in ("int", "str"):
            raise ValueError(f"path: {path} is not a curatedloader id list (header {_HEADER!r} int|str)")
        ids = f.read().splitlines()
    if header[2] == "str":
        return ids
    for line, value in enumerate(ids, 2):
        if not value.strip().lstrip("-").isdigit():
            raise ValueError(f"path: {path} line {line} is {value!r}, not an integer id (header says int)")
    return np.array(ids, dtype=np.int64)
