"""WebDataset shards as a CuratedLoader source: seeded shard order, exact resume, corrupt input counted.

Each epoch the shard order is drawn from (seed, epoch), split by rank, then by worker (a fixed slice
each). A worker reads its shards one after the other: tar reading of its own (tarfile, so that it
knows where a tar breaks and which samples are complete), then webdataset's sample shuffle buffer
(seeded per shard) and decode, and yields collated pieces of `batch_size` rows (the
last one shorter). The DataLoader takes pieces from the workers in a fixed round-robin, so a stream
position is a (shard, row) cursor per worker, and resuming only skips rows inside the shard a
worker was reading.

>>> loader = CuratedLoader.from_shards("data/train-{000000..000099}.tar", batch_size=256,
...                                    to_tuple=("jpg", "cls"), num_workers=4)
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import os
import random
import sys
import tarfile
import time
import zlib
from collections import Counter, deque
from dataclasses import dataclass
from itertools import count, islice
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torch.utils.data._utils.collate import default_collate
from torch.utils.data._utils.pin_memory import pin_memory

from .batch import index_batch
from .distributed import rank_world
from .keeplist import load_keep
from .rng import derive_seed
from .shard_writer import main, write_shards  # noqa: F401  (curatedloader.shards.write_shards is the public name)
from .sources import Epoch

if TYPE_CHECKING:
    from .loader import CuratedLoader

# words that keep the seeds of the shard order, resampling and sample shuffle independent
_ORDER, _RESAMPLE, _SHUFFLE = 0x5A, 0x5B, 0x5C
_END = sys.maxsize  # the cursor of a worker that has read all its shards
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")  # the files a directory listing takes as shards
_DEATH_WAIT_S = 5.0  # how long a lost connection to a worker waits for the worker to be seen dead
_T = TypeVar("_T")
_READ_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)  # what a cut or garbled shard raises


def expand_urls(urls: str | os.PathLike | Sequence[str]) -> list[str]:
    """Shard URLs from a brace pattern, a local directory of shards (`.tar`, `.tar.gz`, `.tgz`), or a list.

    >>> expand_urls("data/train-{000..002}.tar")
    ['data/train-000.tar', 'data/train-001.tar', 'data/train-002.tar']
    """
    if isinstance(urls, (str, os.PathLike)):
        path = os.fspath(urls)
        if os.path.isdir(path):
            out = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(SHARD_SUFFIXES))
        else:
            out = wds.shardlists.expand_urls(path)
    else:
        out = [os.fspath(u) for u in urls]
    if not out:
        raise ValueError(f"urls names no shards: {urls!r}")
    names = [os.path.basename(u) for u in out]
    if len(set(names)) < len(names):
        raise ValueError("urls: shard file names must be unique, they are part of the sample ids")
    return out


def sample_id(url: str, key: str) -> str:
    """The stable id of a sample, as in a keep-list: its shard's file name and its `__key__`.

    >>> sample_id("/data/train-000003.tar", "000123")
    'train-000003.tar/000123'
    """
    return f"{os.path.basename(url)}/{key}"


class _Header(tarfile.TarInfo):
    """A TarInfo that notes on its archive each header block it could not read, as (offset, error): with
    `ignore_zeros` tarfile passes over zero blocks (the end-of-archive marker) and garbled blocks alike,
    and stops at a cut one or the end of the file; these notes tell them apart."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except Exception as e:
            tar.__dict__.setdefault("unread", []).append((tar.offset, e))
            raise


def _open_shard(url: str, headers_only: bool) -> tuple[IO[bytes], Optional[int]]:
    """A shard's tar bytes (a local file decompressed here, so that a cut compressed stream raises) and,
    for a local uncompressed tar read for headers only, its size: random access then skips the data."""
    if not os.path.exists(url):
        return wds.gopen(url), None  # tarfile detects the compression
    with open(url, "rb") as f:
        magic = f.read(6)
    for prefix, opener in ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ", lzma.open)):
        if magic.startswith(prefix):
            return opener(url, "rb"), None
    return open(url, "rb"), os.path.getsize(url) if headers_only else None


class _TarFiles:
    """The files of one shard in order, as (name, data) pairs (data None: the shard is cut inside it;
    `data=False`: headers only, data b""). After garbled blocks, reading goes on at the next block that
    is a valid header (as `tar --ignore-zeros`). Once read, `damage` says what was unreadable ("" if
    nothing, and the tar ends with its end-of-archive marker, two zero blocks)."""

    def __init__(self, url: str, data: bool = True):
        self.url, self.data, self.damage = url, data, ""

    def __iter__(self) -> Iterator[tuple[str, Optional[bytes]]]:
        fileobj, size = _open_shard(self.url, headers_only=not self.data)
        tar, end = None, 0  # end: where the end-of-archive marker must start, after the last file's data
        try:
            mode = "r:" if size is not None else "r|" if os.path.exists(self.url) else "r|*"
            tar = tarfile.open(fileobj=fileobj, mode=mode, tarinfo=_Header, ignore_zeros=True)
            for member in tar:
                end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                name = member.name
                if not member.isreg() or "/" not in name and name.startswith("__") and name.endswith("__"):
                    continue  # webdataset skips these too
                if size is not None:  # the data is there if the file reaches its end
                    data = b"" if member.offset_data + member.size <= size else None
                else:
                    try:  # read even for headers only: a stream tells a cut in the data only so
                        data = tar.extractfile(member).read()
                    except _READ_ERRORS:
                        data = None
                    data = data if self.data or data is None else b""
                if data is None:
                    self.damage = f"cut off inside {name!r} (its data starts at byte {member.offset_data})"
                    yield name, None
                    return
                yield name, data
                tar.members = []  # tarfile keeps every header otherwise
            unread = tar.__dict__.get("unread", [])
            garbled = [at for at, e in unread if isinstance(e, tarfile.InvalidHeaderError)]
            zeros = {at for at, e in unread if isinstance(e, tarfile.EOFHeaderError)}
            if garbled:
                self.damage = f"{len(garbled)} unreadable block(s) of 512 bytes, the first at byte {garbled[0]}"
            elif not {end, end + tarfile.BLOCKSIZE} <= zeros:
                self.damage = f"cut off after byte {end}, where its end-of-archive marker should be"
        except _READ_ERRORS as e:
            self.damage = f"unreadable from byte {0 if tar is None else tar.offset}: {e!r}"
        finally:
            fileobj.close()


def _grouped(files: Iterable[tuple[str, Optional[bytes]]]) -> Iterator[tuple[str, dict, str]]:
    """(key, {field: data}, problem) per run of files sharing a key, as webdataset groups them (lower-case
    field names); `problem` says why the sample cannot be used ("" if it can)."""
    seen: set[str] = set()
    key, fields, problem = None, {}, ""
    for name, data in files:
        base, ext = wds.tariterators.base_plus_ext(name)
        if base is None:
            continue
        if base != key:
            if key is not None:
                yield key, fields, problem
            key, fields = base, {}
            problem = "its key repeats an earlier sample's" if base in seen else ""
            seen.add(base)
        ext = ext.lower()
        if data is None:
            problem = f"the shard is cut off inside its field {ext!r}"
        elif ext in fields and not problem:
            problem = f"its field {ext!r} appears twice"
        fields[ext] = data
    if key is not None:
        yield key, fields, problem


def _missing(fields: Iterable[str], required: Sequence[str]) -> list[str]:
    """The `required` fields (webdataset specs: "jpg;png" takes either) that `fields` lacks."""
    have = {*fields, "__key__", "__url__"}
    return [spec for spec in required if not have.intersection(spec.split(";"))]


def _scan(url: str, keep: Optional[frozenset] = None) -> Counter:
    """{field names: samples} of a shard's usable samples (those in `keep`, if given), from its tar headers."""
    out: Counter = Counter()
    for key, fields, problem in _grouped(_TarFiles(url, data=False)):
        if not problem and (keep is None or sample_id(url, key) in keep):
            out[frozenset(fields)] += 1
    return out


def count_samples(url: str, keep: Optional[frozenset] = None, fields: Sequence[str] = ()) -> int:
    """Samples in a shard that the loader delivers (those in `keep`, and having `fields`, if given), from
    its tar headers: a sample whose key repeats, or with a field twice, is not counted; a broken shard
    counts its samples complete before the break."""
    return sum(n for names, n in _scan(url, keep).items() if not _missing(names, fields))


def _with_last(items: Iterable) -> Iterator[tuple[Any, bool]]:
    """(item, is_last) pairs, one item of lookahead."""
    it = iter(items)
    for prev in it:
        for item in it:
            yield prev, False
            prev = item
        yield prev, True


def _copy(state: dict) -> dict:
    return {**state, "cursors": [list(c) for c in state["cursors"]]}


class _Errors:
    """What a worker skipped since its last piece: samples, unreadable shards, and one warning per shard;
    the counts travel to the main process inside the pieces."""

    def __init__(self) -> None:
        self.skipped, self.bad_shards, self.messages = 0, 0, []
        self.url, self.warned = "", False

    def start(self, url: str) -> None:
        self.url, self.warned = url, False

    def bad_shard(self, why: str) -> None:
        self.bad_shards += 1
        self._warn(f"unreadable part, reading of the shard stopped: {why}")

    def bad_sample(self, why: str) -> None:
        self.skipped += 1
        self._warn(f"skipped sample: {why}")

    def undecodable(self, exn: Exception) -> bool:
        """webdataset's error handler for decoding: skip the sample, go on with the next."""
        self.bad_sample(f"failed to decode: {exn!r}")
        return True

    def _warn(self, what: str) -> None:
        if not self.warned:
            self.warned = True
            self.messages.append(f"{self.url}: {what} (counted in loader.stats; one warning per shard)")

    def take(self) -> tuple[int, int, list[str]]:
        out = self.skipped, self.bad_shards, self.messages
        self.skipped, self.bad_shards, self.messages = 0, 0, []
        return out


def _deaths_named(it: Iterator[_T]) -> Iterator[_T]:
    """DataLoader iterator `it`, where a worker that died (killed, out of memory) while the main process
    was taking a piece from it raises as when DataLoader sees the death first (a RuntimeError naming the
    worker), not as the lost connection to it (ConnectionResetError, EOFError)."""
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except (ConnectionError, EOFError) as e:
            workers = getattr(it, "_workers", ())  # the worker processes of a multi-process DataLoader iterator
            deadline = time.monotonic() + _DEATH_WAIT_S
            while workers and time.monotonic() < deadline:  # the connection may drop before the process is gone
                dead = [w.pid for w in workers if not w.is_alive()]
                if dead:
                    raise RuntimeError(f"DataLoader worker (pid(s) {', '.join(map(str, dead))}) exited "
                                       f"unexpectedly while the loader read shards from it") from e
                time.sleep(0.02)
            raise
        yield item


@dataclass
class _Piece:
    """Rows `done`, `done` + 1, ... of a worker's stream, with the errors met since its previous piece.
    A cursor [shard_pos, offset] says where a worker's stream goes on: its `shard_pos`-th shard, row `offset`."""

    worker: int
    done: int  # rows the worker yielded before this piece
    where: list[tuple[int, int]]  # the cursor of each row
    after: tuple[int, int]  # the cursor after the last row
    ids: list[str]
    batch: Any
    skipped: int
    bad_shards: int
    messages: list[str]

    def pin_memory(self) -> "_Piece":  # called by DataLoader(pin_memory=True)
        self.batch = pin_memory(self.batch)
        return self


class ShardStream(IterableDataset):
    """The shards of this rank as collated pieces, for `CuratedLoader` (see `from_shards`).

    `len()` is the rows this rank yields per epoch, from the tar headers: all samples (in `keep`);
    under torch.distributed or with `resampled`, total / world_size rounded up (down with
    `drop_last`), and each rank's stream is cut or padded (by reading its shards again) to it.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        batch_size: int,
        *,
        decode: Any = "torch",
        to_tuple: Optional[str | Sequence[str]] = None,
        shuffle: bool = True,
        shuffle_buffer: int = 1000,
        resampled: bool = False,
        keep: Optional[Iterable[str]] = None,
        collate_fn: Optional[Callable] = None,
        num_workers: int = 0,
        seed: int = 0,
        drop_last: bool = False,
    ):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be an int >= 0, got {shuffle_buffer!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if isinstance(to_tuple, str):
            to_tuple = to_tuple.split()
        if to_tuple is not None and (not to_tuple or not all(isinstance(f, str) for f in to_tuple)):
            raise ValueError(f"to_tuple must name fields, e.g. ('jpg', 'cls'), got {to_tuple!r}")
        if isinstance(keep, (str, os.PathLike)):  # a keep-list file, e.g. from `curatedloader prune`
            keep = load_keep(keep)
        keep = None if keep is None else frozenset(keep)  # before the check: a generator is read once
        if keep is not None and not all(isinstance(k, str) for k in keep):
            raise ValueError("keep must hold shard sample ids (str, see sample_id), e.g. load_keep(path)")
        decoders = [] if decode is None else list(decode) if isinstance(decode, (list, tuple)) else [decode]
        if not all(isinstance(d, str) or callable(d) for d in decoders):
            raise ValueError(
                f"decode must be a webdataset image spec ('torch', 'pil', ...), a handler or a list, got {decode!r}"
            )
        self.urls = expand_urls(urls)
        self.batch_size, self.decoders, self.to_tuple = batch_size, decoders, to_tuple
        self.shuffle, self.shuffle_buffer, self.resampled = bool(shuffle), shuffle_buffer, bool(resampled)
        self.keep = keep
        self.collate_fn = default_collate if collate_fn is None else collate_fn
        self.seed, self.drop_last, self.workers = seed, drop_last, max(1, num_workers)
        self.epoch, self.position = 0, 0
        self._use_ranks(*rank_world())  # again when each epoch starts: the process group may come later
        self._headers: Optional[list[Counter]] = None  # {field names: samples} per shard, from the tar headers
        self._common: Optional[tuple[str, ...]] = None  # the fields of dict rows: those most samples have
        # what workers read this epoch: [epoch, rank, world size, first worker, (shard_pos, offset, done) per
        # worker]; in shared memory so that persistent workers see it too
        self._plan = torch.zeros(4 + 3 * self.workers, dtype=torch.long).share_memory_()
        self._loaded: Optional[dict] = None  # from load_state_dict, for the next pieces()
        self._state: dict = self._fresh()  # where workers resume once the consumed pieces of _log are folded in
        self._log: deque = deque()  # (start row, end row, piece info or None for "the rank's shards start again")

    def _use_ranks(self, rank: int, world: int) -> None:
        if not self.resampled and len(self.urls) // world < self.workers:
            raise ValueError(
                f"urls has {len(self.urls)} shards: too few for {world} rank(s) x {self.workers} "
                f"worker(s), some would get none; use fewer num_workers or more shards"
            )
        self.rank, self.world_size = rank, world

    def as_source(self, dataloader_kwargs: dict) -> "ShardSource":
        """This stream as a CuratedLoader source, read by a DataLoader with `dataloader_kwargs`."""
        return ShardSource(self, dataloader_kwargs)

    # ---- main process ----------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.rows(*rank_world())

    def rows(self, rank: int, world: int) -> int:
        """Rows that `rank` of `world` yields per epoch, from the tar headers."""
        required = self.required()
        total = sum(n for scan in self._scans() for names, n in scan.items() if not _missing(names, required))
        if world == 1 and not self.resampled:
            return total
        return total // world if self.drop_last else -(-total // world)

    def _scans(self) -> list[Counter]:
        if self._headers is None:
            self._headers = [_scan(u, self.keep) for u in self.urls]
        return self._headers

    def required(self) -> tuple[str, ...]:
        """The fields each row takes: `to_tuple`'s, else those most samples have (from the tar headers; the
        workers get them from the main process, which reads the headers before the first epoch)."""
        if self.to_tuple is not None:
            return tuple(self.to_tuple)
        if self._common is None:
            total = sum(self._scans(), Counter())
            names = max(total.items(), key=lambda kv: (kv[1], sorted(kv[0])))[0] if total else ()
            self._common = tuple(sorted(names))
        return self._common

    def pieces(self, loader: DataLoader, resume: bool) -> Iterator[tuple[list[str], Any, Optional[dict]]]:
        """(ids, batch, errors) pieces of this epoch from `loader` (a DataLoader over this stream), from the
        loaded state's position on if `resume`; `advance(n)` tells how many rows the caller consumed."""
        if resume and self._loaded is not None and self._loaded["epoch"] == self.epoch:
            state = self._loaded
        elif resume:
            raise ValueError(f"no saved stream state for epoch {self.epoch}: call load_state_dict")
        else:
            state = self._fresh()
        self.required()  # before the workers start: they take the fields from here
        self._loaded, self._state, self._log = None, _copy(state), deque()
        self.position = start = state.get("position", 0)
        limit = len(self) if self.world_size > 1 or self.resampled else None
        row, resumed = start, start > 0
        while True:  # more than one pass only to pad this rank to `limit` rows
            plan = [self.epoch, self.rank, self.world_size, state["first"], *sum(state["cursors"], [])]
            self._plan.copy_(torch.tensor(plan))
            rows = bad = 0
            for piece in _deaths_named(iter(loader)):
                bad += piece.bad_shards
                errors = None  # the per-piece path: a dict only when the piece met errors
                if piece.skipped or piece.bad_shards or piece.messages:
                    errors = {"skipped_samples": piece.skipped, "bad_shards": piece.bad_shards,
                              "messages": piece.messages}
                n = len(piece.ids) if limit is None else min(len(piece.ids), limit - row)
                self._log.append((row, row + n, (piece.worker, piece.done, piece.where, piece.after)))
                self._fold(self.position)
                if n == len(piece.ids) > 0:
                    yield piece.ids, piece.batch, errors
                elif n:  # the end of this rank's epoch cuts the piece
                    yield piece.ids[:n], index_batch(piece.batch, torch.arange(n)), errors
                elif errors:
                    yield [], None, errors
                row, rows = row + n, rows + n
                if limit is not None and row >= limit:
                    return
            if rows == 0 and not resumed:
                raise self.no_samples(f"{bad} unreadable, see the warnings")
            if limit is None:
                return
            state, resumed = self._fresh(), False
            self._log.append((row, row, None))

    def no_samples(self, why: str) -> ValueError:
        kept = "" if self.keep is None else f"; or keep ({len(self.keep)} ids) names none of their samples"
        return ValueError(f"rank {self.rank} of {self.world_size} read no samples from its shards ({why}{kept}) "
                          f"of urls {self.urls[0]!r}... ({len(self.urls)} shards)")

    def advance(self, n: int) -> None:
        """The caller consumed n more rows."""
        self.position += n
        self._fold(self.position)

    def state_dict(self) -> dict:
        """Where each worker resumes so that the epoch goes on at the consumed position."""
        position = self.position
        self._fold(position)
        state = {**_copy(self._state), "position": position}
        if self._log and self._log[0][0] < position:  # a piece partly consumed: its worker resumes inside it
            start, _, (worker, done, where, _) = self._log[0]
            state["cursors"][worker] = [*where[position - start], done + position - start]
            state["first"] = worker
        return state

    def load_state_dict(self, state: dict) -> None:
        self._loaded = state

    def _fresh(self) -> dict:
        return {"epoch": self.epoch, "first": 0, "cursors": [[0, 0, 0] for _ in range(self.workers)],
                "urls": len(self.urls)}

    def _fold(self, position: int) -> None:
        """Move the pieces consumed up to row `position` from the log into the resume state."""
        while self._log and self._log[0][1] <= position:
            _, _, info = self._log.popleft()
            if info is None:
                self._state = self._fresh()
                continue
            worker, done, where, after = info
            self._state["cursors"][worker] = [*after, done + len(where)]
            self._state["first"] = (worker + 1) % self.workers

    # ---- workers -----------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[_Piece]:
        """This worker's pieces: cut where its row count is a multiple of batch_size, so a resumed
        worker cuts where the first run did and the DataLoader's round-robin over workers matches."""
        info = get_worker_info()
        epoch, self.rank, self.world_size, first, *cursors = self._plan.tolist()
        worker = ((info.id if info is not None else 0) + first) % self.workers
        shard_pos, offset, done = cursors[3 * worker : 3 * worker + 3]
        errors, rows = _Errors(), []
        for row in self._rows(epoch, worker, shard_pos, offset, errors):
            rows.append(row)
            if (done + len(rows)) % self.batch_size == 0:
                yield self._piece(worker, done, rows, errors)
                done, rows = done + len(rows), []
        if rows or errors.skipped or errors.bad_shards:
            yield self._piece(worker, done, rows, errors)

    def _shards(self, epoch: int, worker: int) -> Iterator[tuple[int, int]]:
        """(shard, sample-shuffle seed) in the order this rank's `worker` reads them in `epoch`."""
        n = len(self.urls)
        if self.resampled:  # with replacement and endless: the main process ends the epoch
            rng = np.random.default_rng(derive_seed(self.seed, epoch, self.rank, worker, _RESAMPLE))
            for k in count():
                yield int(rng.integers(n)), derive_seed(self.seed, epoch, self.rank, worker, k, _SHUFFLE)
        else:
            rng = np.random.default_rng(derive_seed(self.seed, epoch, _ORDER))
            order = rng.permutation(n).tolist() if self.shuffle else list(range(n))
            for shard in order[self.rank :: self.world_size][worker :: self.workers]:
                yield shard, derive_seed(self.seed, epoch, shard, _SHUFFLE)

    def _rows(self, epoch: int, worker: int, shard_pos: int, offset: int, errors: _Errors) -> Iterator[tuple]:
        """(cursor, cursor after, id, item) of each row of this worker's stream from [shard_pos, offset] on."""
        barren: set[int] = set()  # shards read whole without a row; once all are, an endless resampled stream stops
        for k, (shard, seed) in enumerate(islice(self._shards(epoch, worker), shard_pos, None), shard_pos):
            errors.start(self.urls[shard])
            start = offset if k == shard_pos else 0
            samples = islice(self._samples(self.urls[shard], seed, errors), start, None)
            i = start - 1
            for i, ((sid, item), last) in enumerate(_with_last(samples), start):
                if i == start > 0:
                    errors.take()  # met before the resume point: the saved run counted them
                yield (k, i), ((k + 1, 0) if last else (k, i + 1)), sid, item
            if i < 0:  # read from its start and gave no row
                barren.add(shard)
                if len(barren) == len(self.urls):
                    return

    def _samples(self, url: str, seed: int, errors: _Errors) -> wds.DataPipeline:
        """(id, item) rows of one shard: read, shuffle buffer, decode."""
        stages: list = [lambda: self._tar_samples(url, errors)]
        if self.shuffle and self.shuffle_buffer > 1:
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=random.Random(seed)))
        if self.decoders:
            stages.append(wds.decode(*self.decoders, handler=errors.undecodable))
        stages.append(wds.map(self._row))
        return wds.DataPipeline(*stages)

    def _tar_samples(self, url: str, errors: _Errors) -> Iterator[dict]:
        """The usable samples of a shard in `keep`, each with the fields rows take (webdataset's raw samples):
        every sample complete before an unreadable part; one that is cut, lacks a field, has a field
        twice or repeats a key is skipped and counted, as is the unreadable part."""
        files = _TarFiles(url)
        required = self.required()
        for key, fields, problem in _grouped(files):
            if self.keep is not None and sample_id(url, key) not in self.keep:
                continue
            missing = _missing(fields, required)
            if problem or missing:
                has = ", ".join(sorted(fields))
                errors.bad_sample(f"{key!r}: {problem or f'it has no field {missing[0]!r} (it has {has})'}")
                continue
            if self.to_tuple is None:  # dict batches hold the same fields in every row
                fields = {f: fields[f] for f in required}
            yield {"__key__": key, "__url__": url, **fields}
        if files.damage:
            errors.bad_shard(files.damage)

    def _row(self, sample: dict) -> tuple[str, Any]:
        sid = sample_id(sample["__url__"], sample["__key__"])
        if self.to_tuple is not None:
            return sid, tuple(wds.filters.getfirst(sample, f) for f in self.to_tuple)
        return sid, {k: v for k, v in sample.items() if k != "__url__"}

    def _piece(self, worker: int, done: int, rows: list, errors: _Errors) -> _Piece:
        where, after, ids, items = zip(*rows) if rows else ((), [(_END, 0)], (), ())
        batch = self.collate_fn(list(items)) if rows else None
        return _Piece(worker, done, list(where), after[-1], list(ids), batch, *errors.take())


class ShardSource:
    """A ShardStream as a CuratedLoader source: the stream and the DataLoader that reads its pieces (each
    worker's fragments, joined into batches of exactly batch_size rows)."""

    yields_batches = exact_rows = False

    def __init__(self, stream: ShardStream, dataloader_kwargs: dict):
        self.stream = stream
        self.loader = DataLoader(stream, batch_size=None, **dataloader_kwargs)

    def rows(self, rank: int, world: int) -> int:
        return self.stream.rows(rank, world)

    def start(self, epoch: Epoch) -> "_ShardRun":
        stream = self.stream
        stream.set_epoch(epoch.epoch)
        stream._use_ranks(epoch.rank, epoch.world)
        if stream.rows(epoch.rank, epoch.world) == 0:
            raise stream.no_samples(f"their tar headers name no complete sample with the fields {stream.required()}")
        return _ShardRun(stream, stream.pieces(self.loader, epoch.resume))

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state.get("urls", len(self.stream.urls)) != len(self.stream.urls):
            raise ValueError(f"state was saved over {state['urls']} shards, the urls now name "
                             f"{len(self.stream.urls)}; resuming would repeat or skip samples")
        saved, now = len(state.get("cursors", ())), self.stream.workers
        if saved and saved != now:  # each worker's cursor is in its own list of shards, which the count decides
            same = f"num_workers={saved}" if saved > 1 else "num_workers=0 or 1"
            raise ValueError(f"num_workers: the state was saved reading shards with {saved} worker(s), this loader "
                             f"has num_workers={self.loader.num_workers}; resume a shard stream with {same}")
        self.stream.load_state_dict(state)


class _ShardRun:
    """One epoch of a ShardSource (the stream keeps the cursor: one live run at a time)."""

    def __init__(self, stream: ShardStream, pieces: Iterator[tuple]):
        self.stream, self.pieces = stream, pieces

    def __iter__(self) -> "_ShardRun":
        return self

    def __next__(self) -> tuple:
        return next(self.pieces)

    def advance(self, n: int) -> None:
        self.stream.advance(n)

    def state_dict(self) -> dict:
        return self.stream.state_dict()


def from_shards(
    cls: type["CuratedLoader"],
    urls: str | Sequence[str],
    batch_size: int,
    *,
    decode: Any = "torch",
    to_tuple: Optional[str | Sequence[str]] = None,
    shuffle: bool = True,
    shuffle_buffer: int = 1000,
    resampled: bool = False,
    keep: Optional[Iterable[str]] = None,
    collate_fn: Optional[Callable] = None,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    **kwargs: Any,
) -> "CuratedLoader":
    """`CuratedLoader.from_shards`: a CuratedLoader over WebDataset tar shards.

    `urls` is a brace pattern, a list, or a local directory of shards (SHARD_SUFFIXES). Batches are dicts of the
    decoded fields plus `__key__` (a list of str), or tuples of the `to_tuple` fields. A sample's id
    is `sample_id(__url__, __key__)`; `keep` is a keep-list of such ids. The other keyword arguments
    (scorer, filter_ratio, pin_memory, ...) are CuratedLoader's.

    >>> loader = CuratedLoader.from_shards("data/{000..009}.tar", 64, to_tuple=("npy", "cls"),
    ...                                    num_workers=2, scorer=scorer, filter_ratio=0.5)
    """
    if kwargs.get("in_order", True) is not True:
        raise ValueError("in_order must be True: the stream's order and resume depend on it")
    stream = ShardStream(
        urls, batch_size, decode=decode, to_tuple=to_tuple, shuffle=shuffle, shuffle_buffer=shuffle_buffer,
        resampled=resampled, keep=keep, collate_fn=collate_fn, num_workers=num_workers, seed=seed,
        drop_last=drop_last,
    )
    return cls(stream, batch_size, num_workers=num_workers, seed=seed, drop_last=drop_last, **kwargs)
