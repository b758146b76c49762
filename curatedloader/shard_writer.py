"""Write a dataset or a folder of files as WebDataset tar shards (`curatedloader shards write`)."""
from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any, Iterable, Iterator, Optional, Sequence

import torch
import webdataset as wds


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
) -> list[str]:
    """Write the samples of `dataset` to shards `pattern % 0`, `pattern % 1`, ... and return their paths.

    Samples are dicts {extension: value} (an optional `__key__`; the default key is the sample's
    index) or tuples named by `fields`. Values are encoded by extension, as `wds.TarWriter` does.

    >>> write_shards(train_set, "data/train-%06d.tar", fields=("npy", "cls"), maxcount=10_000)
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
    os.makedirs(os.path.dirname(first) or ".", exist_ok=True)
    written: list[str] = []
    with wds.ShardWriter(pattern, maxcount=maxcount, maxsize=maxsize, post=written.append, verbose=0) as sink:
        for i, item in enumerate(dataset):
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
            sink.write(sample)
    return written


def folder_samples(root: str) -> Iterator[dict]:
    """Samples of a folder: files sharing a path up to the first dot of their name form one sample
    (`a/x.jpg`, `a/x.cls` -> key `a/x`, fields jpg and cls), in sorted order. Hidden files are left out.

    >>> write_shards(folder_samples("images/"), "shards/%06d.tar")
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
    for key, files in groups.items():
        sample: dict[str, Any] = {"__key__": key}
        for ext, path in files.items():
            with open(os.path.join(root, path), "rb") as f:
                sample[ext] = f.read()
        yield sample


def main(argv: Optional[list[str]] = None) -> int:
    """`curatedloader shards write SOURCE PATTERN [--maxcount N] [--maxsize BYTES]`."""
    parser = argparse.ArgumentParser(prog="curatedloader shards", description="WebDataset shards")
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="write a folder of files as tar shards")
    write.add_argument("source", help="folder; files sharing a name up to the first dot form one sample")
    write.add_argument("pattern", help="output shard names with a %%-format, e.g. shards/train-%%06d.tar")
    write.add_argument("--maxcount", type=int, default=100_000, help="samples per shard (default 100000)")
    write.add_argument("--maxsize", type=float, default=3e9, help="bytes per shard (default 3e9)")
    args = parser.parse_args(argv)
    try:
        paths = write_shards(folder_samples(args.source), args.pattern, maxcount=args.maxcount, maxsize=args.maxsize)
    except ValueError as e:
        parser.error(str(e))
    print(f"wrote {len(paths)} shard(s): {paths[0]} ... {paths[-1]}")
    return 0
