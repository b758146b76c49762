"""Write a dataset or a folder of files as WebDataset tar shards (`curatedloader shards write`)."""
from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

import numpy as np
import torch
import webdataset as wds

SORTED_RUNS = 0.1  # warn when the label runs are fewer than this share of a random order's
MIN_EXPECTED_RUNS = 20  # ... and a random order would give at least this many (enough samples to tell)


def _plain(value: Any) -> Any:
    """Tensors as webdataset's encoders expect them: numbers for .cls and friends, arrays for .npy."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.dim() == 0 else value.numpy(force=True)
    return value


def write_shards(
    dataset: Iterable,
    pattern: str,
    *,
    fields: Optional[Sequence[str]] = None,
    maxcount: int = 100_000,
    maxsize: float = 3e9,
    shuffle: bool = False,
    seed: int = 0,
) -> list[str]:
    """Write the samples of `dataset` to shards `pattern % 0`, `pattern % 1`, ... and return their paths.

    Samples are dicts {extension: value} (an optional `__key__`; the default key is the sample's
    index) or tuples named by `fields`. Values are encoded by extension, as `wds.TarWriter` does.
    shuffle: write in a seeded random order (a global shuffle: `dataset` must have len and [i]); a
        loader's shuffle buffer mixes only within a shard, so class-sorted shards give one-class batches.
        Unshuffled writes whose labels (the `cls` field, else the key's directory) come in long runs of
        one label warn.

    >>> write_shards(train_set, "data/train-%06d.tar", fields=("npy", "cls"), maxcount=10_000, shuffle=True)
    ['data/train-000000.tar', ...]
    """
    try:
        first = pattern % 0
    except TypeError:
        raise ValueError(
            f"pattern must hold a %-format for the shard number, e.g. 'train-%06d.tar', got {pattern!r}"
        ) from None
    if not isinstance(maxcount, int) or maxcount < 1:
        raise ValueError(f"maxcount must be a positive int, got {maxcount!r}")
    if not isinstance(shuffle, bool):
        raise TypeError(f"shuffle: expected a bool, got {type(shuffle).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    items: Iterable = enumerate(dataset)
    if shuffle:
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"dataset: shuffle=True needs len() and [i] (a map-style dataset or a list), "
                            f"got {type(dataset).__name__}")
        items = ((i, dataset[i]) for i in np.random.default_rng(seed).permutation(len(dataset)).tolist())
    os.makedirs(os.path.dirname(first) or ".", exist_ok=True)
    written: list[str] = []
    labels = _Runs()
    with wds.ShardWriter(pattern, maxcount=maxcount, maxsize=maxsize, post=written.append, verbose=0) as sink:
        for i, item in items:
            if isinstance(item, Mapping):
                sample = dict(item)
            elif fields is not None:
                values = item if isinstance(item, (tuple, list)) else (item,)
                if len(values) != len(fields):
                    raise ValueError(f"fields names {len(fields)} values, sample {i} has {len(values)}")
                sample = dict(zip(fields, values))
            else:
                raise ValueError(
                    f"fields must name the values of non-dict samples, e.g. ('npy', 'cls'); "
                    f"sample {i} is a {type(item).__name__}"
                )
            sample = {k: _plain(v) for k, v in sample.items()}
            sample.setdefault("__key__", f"{i:09d}")
            labels.add(sample)
            sink.write(sample)
    if not shuffle and labels.sorted():
        warnings.warn(f"write_shards: samples written in label-sorted order ({labels.runs} runs of one label "
                      f"over {labels.n} samples; a random order gives ~{labels.expected():.0f}): a loader's "
                      "shuffle buffer mixes within a shard only, so batches will hold one class; write with "
                      "shuffle=True (curatedloader shards write --shuffle)", UserWarning, stacklevel=2)
    return written


class _Runs:
    """Counts runs of equal consecutive labels, and each label's samples."""

    def __init__(self):
        self.n, self.runs, self.last, self.counts = 0, 0, object(), {}

    def add(self, sample: dict) -> None:
        label = sample.get("cls")
        if label is None:
            key = str(sample["__key__"])
            label = key.rsplit("/", 1)[0] if "/" in key else None
        if label is None:
            return
        label = label if isinstance(label, (int, float, str, bytes)) else repr(label)
        self.n += 1
        self.runs += label != self.last
        self.last = label
        self.counts[label] = self.counts.get(label, 0) + 1

    def expected(self) -> float:
        """Expected runs in a random order of the same labels: 1 + (n - 1)·(1 − Σ p²)."""
        p = np.array(list(self.counts.values()), dtype=np.float64) / max(self.n, 1)
        return 1 + (self.n - 1) * (1 - (p * p).sum())

    def sorted(self) -> bool:
        return self.expected() >= MIN_EXPECTED_RUNS and self.runs < SORTED_RUNS * self.expected()


class FolderSamples(Sequence):
    """The samples of `folder_samples`, read from disk when indexed."""

    def __init__(self, root: str, groups: dict[str, dict[str, str]]):
        self.root, self.keys, self.groups = root, list(groups), groups

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict:
        key = self.keys[i]
        sample: dict[str, Any] = {"__key__": key}
        for ext, path in self.groups[key].items():
            with open(os.path.join(self.root, path), "rb") as f:
                sample[ext] = f.read()
        return sample


def folder_samples(root: str) -> FolderSamples:
    """Samples of a folder: files sharing a path up to the first dot of their name form one sample
    (`a/x.jpg`, `a/x.cls` -> key `a/x`, fields jpg and cls), in sorted order, each read when indexed.
    Hidden files are left out.

    >>> write_shards(folder_samples("images/"), "shards/%06d.tar", shuffle=True, seed=0)
    """
    if not os.path.isdir(root):
        raise ValueError(f"source must be a directory, got {root!r}")
    groups: dict[str, dict[str, str]] = {}
    for path in sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs):
        name = os.path.basename(path)
        if name.startswith("."):
            continue
        if "." not in name:
            raise ValueError(f"source file {path!r} has no extension: the extension names the field")
        stem, ext = name.split(".", 1)
        groups.setdefault(os.path.join(os.path.dirname(path), stem).replace(os.sep, "/"), {})[ext] = path
    return FolderSamples(root, groups)


def main(argv: Optional[list[str]] = None) -> int:
    """`curatedloader shards write SOURCE PATTERN [--maxcount N] [--maxsize BYTES] [--shuffle [--seed S]]`."""
    parser = argparse.ArgumentParser(prog="curatedloader shards", description="WebDataset shards")
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="write a folder of files as tar shards")
    write.add_argument("source", help="folder; files sharing a name up to the first dot form one sample")
    write.add_argument("pattern", help="output shard names with a %%-format, e.g. shards/train-%%06d.tar")
    write.add_argument("--maxcount", type=int, default=100_000, help="samples per shard (default 100000)")
    write.add_argument("--maxsize", type=float, default=3e9, help="bytes per shard (default 3e9)")
    write.add_argument("--shuffle", action="store_true",
                       help="write in a seeded random order (a folder sorted by class otherwise gives one-class "
                            "batches: a loader's shuffle buffer mixes within a shard only)")
    write.add_argument("--seed", type=int, default=0, help="seed of --shuffle (default 0)")
    args = parser.parse_args(argv)
    try:
        paths = write_shards(folder_samples(args.source), args.pattern, maxcount=args.maxcount, maxsize=args.maxsize,
                             shuffle=args.shuffle, seed=args.seed)
    except ValueError as e:
        parser.error(str(e))
    print(f"wrote {len(paths)} shard(s): {paths[0]} ... {paths[-1]}")
    return 0
