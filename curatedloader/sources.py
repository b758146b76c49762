"""Sources: where a CuratedLoader's rows come from, one epoch at a time.

Every source speaks one protocol (`Source`): `start(epoch)` returns a `Run`, an iterator of pieces
`(ids, batch, errors)` from the epoch's resume position on, whose `advance(n)` says that the training
loop has consumed n more rows; `state_dict()` / `load_state_dict()` (argument-free) save and restore
where the source stands. Workers, pinning and prefetch are those of a real `torch.utils.data.DataLoader`
that each source builds once. `MapSource` serves map-style datasets, `IterableSource` any
`IterableDataset`; WebDataset shards bring their own (`curatedloader.shards`).
"""
from __future__ import annotations

import contextlib
import random
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, RandomSampler, Sampler, TensorDataset
from torch.utils.data._utils.collate import default_collate

from .batch import index_batch
from .rng import derive_seed

# words that keep the seeds of the order, the internal DataLoader and the worker tasks independent
_ORDER, _LOADER, _TASK = 0x31, 0x32, 0x33


@dataclass
class Epoch:
    """What a source needs to start an epoch.

    `chunk(k)` is the number of rows the k-th chunk read from the start position should hold (B while
    the schedule selects, b otherwise); a source may deliver other sizes, chunk sizes only change speed.
    `fixed` says every chunk has `chunk(0)` rows (no selection this epoch). `seed` is the loader's
    explicit seed (None: DataLoader's own seeding). `resume`: go on from the state given to the source's
    `load_state_dict` (else start the epoch afresh).
    """

    epoch: int
    rank: int
    world: int
    seed: Optional[int]
    chunk: Callable[[int], int]
    fixed: bool
    resume: bool = False


class Run(Protocol):
    """One epoch of a source: pieces `(ids, batch, errors)` in order; `advance(n)`: the loop consumed n more
    rows; `state_dict()`: where the epoch goes on. Several runs of one source may be live, as DataLoader
    iterators may."""

    def __next__(self) -> tuple: ...
    def advance(self, n: int) -> None: ...
    def state_dict(self) -> dict: ...


class Source(Protocol):
    """`rows(rank, world)`: rows per epoch (None if unknown); `start(epoch)`: a Run; `state_dict()`: the latest
    run's; `load_state_dict(state)`: the state the next `start(Epoch(resume=True))` goes on from.
    `yields_batches`: its pieces are the batches a DataLoader would yield (passed through untouched while
    not selecting), rather than fragments to be joined into batches. `exact_rows`: `rows()` depends on the
    configuration alone, so a saved state's row count must match it."""

    loader: DataLoader
    yields_batches: bool
    exact_rows: bool

    def rows(self, rank: int, world: int) -> Optional[int]: ...
    def start(self, epoch: Epoch) -> Run: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def draw_seed(generator: Optional[torch.Generator] = None) -> int:
    """One int64 from `generator` (torch's global generator if None), drawn as DataLoader draws its seeds."""
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


# ---- map-style ------------------------------------------------------------------------------------

class _Chunk(list):
    """The indices of one worker task and the seed of its samples' randomness (None: the worker's own)."""

    seed: Optional[int] = None


@contextlib.contextmanager
def _seeded(seed: Optional[int]) -> Iterator[None]:
    """Seed torch's CPU generator, random and numpy for the block, so that augmentations depend on
    (seed, epoch, position) alone: the same whatever the workers, and exact after resume. In the main
    process (num_workers=0) the training loop's RNG states are restored afterwards."""
    if seed is None:
        yield
        return
    main = torch.utils.data.get_worker_info() is None
    if main:
        states = torch.default_generator.get_state(), random.getstate(), np.random.get_state()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        if main:
            torch.default_generator.set_state(states[0])
            random.setstate(states[1])
            np.random.set_state(states[2])


class _TaskSeeded(Dataset):
    """The user's map-style dataset, each worker task seeded from its chunk (only with an explicit
    `seed=`). Other attributes pass through, so a worker_init_fn that sets up
    `get_worker_info().dataset` sets up the user's dataset."""

    def __init__(self, dataset: Dataset):
        object.__setattr__(self, "dataset", dataset)

    def __getattr__(self, name: str):
        if name == "dataset":  # not set yet (unpickling in a worker): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self.dataset, name, value)

    def __getitem__(self, i: int):
        return self.dataset[i]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: list[int]) -> list:
        getitems = getattr(self.dataset, "__getitems__", None)  # keep the dataset's batched fetch
        with _seeded(getattr(indices, "seed", None)):
            return getitems(indices) if getitems else [self.dataset[i] for i in indices]


def _columns(rows: tuple) -> list:
    """A TensorDataset's rows gathered by an index array, as the list of contiguous columns that
    default_collate stacks."""
    return [t.contiguous() for t in rows]


def _gathers(dataset: Dataset, collate_fn: Callable) -> bool:
    """A plain TensorDataset collated by default_collate: indexed by a whole chunk at once (one gather per
    tensor instead of a `__getitem__` per row and a stack: the same batch at a fraction of the cost; it
    draws no randomness, so needs no task seeding)."""
    return type(dataset) is TensorDataset and collate_fn is default_collate


class _Chunks(Sampler):
    """Batch sampler of a MapSource's DataLoader: the order of the epoch run being started, from its
    resume position on, in the chunk sizes the epoch asks for. Each chunk's indices also go to the run's
    FIFO, in order, so the main process knows the ids of every batch without shipping them through workers."""

    def __init__(self, source: "MapSource"):
        self.source = weakref.proxy(source)  # the source holds the DataLoader that holds this: no cycle

    def __len__(self) -> int:
        run = self.source.current
        return 0 if run is None else -(-(len(run.order()) - run.position) // max(1, run.epoch.chunk(0)))

    def __iter__(self) -> Iterator[list[int]]:
        # bound now (DataLoader calls iter() when an iteration starts), weakly: the run holds the DataLoader
        # iterator that holds this generator, and a cycle would keep persistent workers alive
        return self._chunks(weakref.proxy(self.source.current))

    def _chunks(self, run: "_MapRun") -> Iterator[Any]:
        ep, i, k = run.epoch, run.position, 0
        order = np.asarray(run.order(), dtype=np.int64)  # sliced per chunk as views, ids shared with the FIFO
        gathers = self.source.gathers
        while i < len(order):
            size = ep.chunk(k)
            ids = order[i : i + size]
            if len(ids) < size and ep.fixed and run.source.drop_last:
                return  # the short last batch would be dropped: don't load it
            run.fifo.append(torch.from_numpy(ids))
            if gathers:  # one index for the whole chunk (an int array: cheap to send to workers and to index with)
                yield ids
            else:
                chunk = _Chunk(ids.tolist())
                if ep.seed is not None:
                    chunk.seed = derive_seed(ep.seed, ep.rank, ep.epoch, i, _TASK)
                yield chunk
            i, k = i + len(ids), k + 1


_FAILED = object()


class _Spans:
    """Rows handed to the loader, in order, as [rows left, info, rows consumed] spans; `consume(n)` moves
    the position over n consumed rows, passing over spans that failed to load (info is `_FAILED`)."""

    def __init__(self, position: int) -> None:
        self.position, self.spans = position, deque()

    def add(self, n: int, info: Any = None) -> None:
        self.spans.append([n, info, 0])

    def consume(self, n: int) -> None:
        spans = self.spans
        while spans and (n > 0 or spans[0][1] is _FAILED):
            span = spans[0]
            take = span[0] if span[1] is _FAILED else min(n, span[0])
            span[0], span[2], self.position = span[0] - take, span[2] + take, self.position + take
            n -= 0 if span[1] is _FAILED else take
            if span[0] == 0:
                spans.popleft()


class _RunsOf:
    """What every source keeps between runs: a weak reference to the latest run, and a loaded state."""

    def __init__(self) -> None:
        self._current: Callable[[], Optional[Run]] = lambda: None
        self._pending: dict = {}

    @property
    def current(self) -> Optional[Run]:
        """The latest run, while it lives."""
        return self._current()

    def _take_pending(self, epoch: Epoch) -> dict:
        state, self._pending = self._pending if epoch.resume else {}, {}
        return state

    def state_dict(self) -> dict:
        run = self.current
        return {} if run is None else run.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._pending = dict(state)


class MapSource(_RunsOf):
    """A map-style dataset: this rank's share of the epoch order (shuffle, sampler or subset; split
    across ranks as `DistributedSampler` does), read in chunks by a DataLoader.

    Without an explicit `seed` the order is drawn as DataLoader draws it (`generator=`, or torch's global
    generator; under torch.distributed from (0, epoch), as DistributedSampler's default seed), so
    `CuratedLoader(scorer=None)` yields DataLoader's batches; with a seed, the order and each worker
    task's randomness derive from (seed, epoch, position).
    """

    yields_batches = exact_rows = True
    history = None  # a LossHistory whose current plan filters the epoch's indices before loading

    def __init__(self, dataset: Dataset, *, sampler: Optional[Sampler], shuffle: bool,
                 subset: Optional[Sequence[int]], drop_last: bool, generator: Optional[torch.Generator],
                 seed: Optional[int], collate_fn: Callable, dataloader_kwargs: dict):
        self.dataset, self.sampler, self.shuffle, self.subset = dataset, sampler, shuffle, subset
        self.drop_last, self.user_generator = drop_last, generator
        # DataLoader draws its workers' base seed from this generator when an iteration starts
        self.generator = generator if generator is not None else torch.Generator() if seed is not None else None
        super().__init__()
        self.gathers = _gathers(dataset, collate_fn)
        if self.gathers:  # each chunk is one index: the dataset gathers its rows
            chunks = dict(sampler=_Chunks(self), batch_size=None, collate_fn=_columns)
        else:
            chunks = dict(batch_sampler=_Chunks(self), collate_fn=collate_fn)
            dataset = _TaskSeeded(dataset) if seed is not None else dataset
        self.loader = DataLoader(dataset, generator=self.generator, **chunks, **dataloader_kwargs)

    def base(self) -> Sequence[int]:
        base = range(len(self.dataset)) if self.subset is None else self.subset
        return base if self.history is None else self.history.kept(base)

    def splits(self, world: int) -> bool:
        # a DistributedSampler already yields this rank's share: split it again and each rank gets 1/world²
        return world > 1 and not isinstance(self.sampler, DistributedSampler)

    def rows(self, rank: int, world: int) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.base())
        saved = self._pending.get("world", world)
        if saved != world:  # a loaded state from another world size: its consumed rows, then a share of the rest
            position = self._pending["position"]
            rest = len(pad_for_world(range(n), saved, self.drop_last)) - saved * position
            return position + (rest // world if self.drop_last else -(-rest // world))
        if self.splits(world):
            n = n // world if self.drop_last else -(-n // world)
        return n

    def resizable(self) -> bool:
        """Whether a state saved on some number of ranks can resume on another (elastic resume): the order
        is split here, not by a DistributedSampler bound to its world size."""
        return not isinstance(self.sampler, DistributedSampler)

    def start(self, epoch: Epoch) -> "_MapRun":
        state = self._take_pending(epoch)
        if self.user_generator is not None and "generator" in state:  # replay its draws (base seed, permutation)
            self.user_generator.set_state(state["generator"])
        elif self.user_generator is None and self.generator is not None:
            self.generator.manual_seed(derive_seed(epoch.seed, epoch.epoch, _LOADER))
        run = _MapRun(self, epoch, state)
        self._current = weakref.ref(run)  # the loader's iterator owns the run; the source only looks
        run.it = iter(self.loader)
        return run




class _MapRun:
    """One epoch of a MapSource: its order, the FIFO of chunk ids, the consumed position. An exception
    from the dataset or collate_fn for one batch propagates, and the next call goes on with the
    following batch, as in DataLoader."""

    def __init__(self, source: MapSource, epoch: Epoch, state: dict):
        self.source, self.epoch, self.fifo = source, epoch, deque()
        self.position = state.get("position", 0)
        self.saved_world = state.get("world", epoch.world)  # another world size: an elastic resume
        self.spans = _Spans(self.position)
        self.order_seed: Optional[int] = state.get("order_seed")
        generator = source.user_generator
        self.generator_state = None if generator is None else generator.get_state()
        if self.order_seed is None and self._draws_order_seed() and epoch.seed is None and epoch.world > 1:
            self.order_seed = derive_seed(0, epoch.epoch, _ORDER)  # ranks must agree without a collective
        self._order: Optional[list[int]] = None
        self.it: Iterator = iter(())

    def _draws_order_seed(self) -> bool:
        src = self.source
        return src.sampler is None and src.shuffle and src.user_generator is None

    def order(self) -> list[int]:
        """This rank's order for the epoch; drawn when the DataLoader first asks for indices (as
        DataLoader's RandomSampler draws it), then fixed for the epoch."""
        if self._order is not None:
            return self._order
        src, ep, base = self.source, self.epoch, self.source.base()
        if src.sampler is not None:
            if hasattr(src.sampler, "set_epoch"):
                src.sampler.set_epoch(ep.epoch)
            order = [base[i] for i in src.sampler] if src.subset is not None else list(src.sampler)
        elif src.shuffle:
            generator = src.user_generator
            if generator is None:
                if self.order_seed is None:
                    self.order_seed = draw_seed() if ep.seed is None else derive_seed(ep.seed, ep.epoch, _ORDER)
                generator = torch.Generator().manual_seed(self.order_seed)
            # RandomSampler itself, so a user generator advances exactly as in DataLoader
            order = [base[i] for i in RandomSampler(range(len(base)), generator=generator)]
        else:
            order = list(base)
        if self.saved_world != ep.world:
            # the saved ranks each consumed `position` rows of their share, together the first
            # saved_world * position of the padded order: the new ranks split the rest. The first
            # `position` entries stand for this rank's consumed rows (never read again), so that the
            # epoch's steps and chunk sizes go on as saved.
            padded = pad_for_world(order, self.saved_world, src.drop_last)
            rest = padded[self.saved_world * self.position:]
            order = padded[: self.position] + split_for_rank(rest, ep.rank, ep.world, src.drop_last)
        elif src.splits(ep.world):
            order = split_for_rank(order, ep.rank, ep.world, src.drop_last)
        self._order = order
        return order

    def __iter__(self) -> "_MapRun":
        return self

    def __next__(self) -> tuple:
        try:
            batch = next(self.it)
        except StopIteration:
            raise
        except BaseException:
            if self.fifo:  # the failed batch's indices: its rows are lost, the position passes over them
                self.spans.add(len(self.fifo.popleft()), _FAILED)
            raise
        ids = self.fifo.popleft()
        self.spans.add(len(ids))
        return ids, batch, None

    def advance(self, n: int) -> None:
        self.spans.consume(n)

    def state_dict(self) -> dict:
        state = {"position": self.spans.position, "order_seed": self.order_seed, "world": self.epoch.world}
        if self.generator_state is not None:
            state["generator"] = self.generator_state
        return state


def pad_for_world(order: Sequence[int], world: int, drop_last: bool) -> list[int]:
    """`order` padded by repetition (or cut with drop_last) to a multiple of `world`, as DistributedSampler.

    >>> pad_for_world([0, 1, 2, 3, 4], 2, False)
    [0, 1, 2, 3, 4, 0]
    """
    order, n = list(order), len(order)
    if drop_last:
        return order[: n - n % world]
    pad = -n % world
    return order + (order * (pad // max(n, 1) + 1))[:pad]


def split_for_rank(order: Sequence[int], rank: int, world: int, drop_last: bool) -> list[int]:
    """This rank's share of `order`, as DistributedSampler: padded (or cut) to a multiple of `world`, then
    every world-th index from `rank`.

    >>> split_for_rank([0, 1, 2, 3, 4], 1, 2, False)
    [1, 3, 0]
    """
    return pad_for_world(order, world, drop_last)[rank::world]


# ---- iterable ---------------------------------------------------------------------------------------

class _CountRows:
    """collate_fn wrapper that also returns how many samples went into the batch."""

    def __init__(self, collate_fn: Callable):
        self.collate_fn = collate_fn

    def __call__(self, samples: list) -> tuple[int, Any]:
        return len(samples), self.collate_fn(samples)


def is_stateful(obj: Any) -> bool:
    """torchdata's Stateful contract: `state_dict()` and `load_state_dict(state)`."""
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def _unsplit_hf_iterable(dataset: Any) -> bool:
    module = type(dataset).__module__
    return module.startswith("datasets.") and type(dataset).__name__ == "IterableDataset" \
        and getattr(dataset, "_distributed", None) is None


class IterableSource(_RunsOf):
    """An IterableDataset, batched within each worker's stream as DataLoader does. Ids are stream positions.

    A dataset with its own `state_dict()` / `load_state_dict()` resumes through them (read by
    torchdata's `StatefulDataLoader`, which also snapshots them inside workers); any other stream is
    read again from its start and the consumed rows are dropped.
    """

    yields_batches = exact_rows = True
    history = None  # a LossHistory whose current plan filters the epoch's indices before loading

    def __init__(self, dataset: IterableDataset, *, batch_size: int, collate_fn: Callable,
                 generator: Optional[torch.Generator], dataloader_kwargs: dict):
        self.dataset, self.stateful = dataset, is_stateful(dataset)
        if self.stateful:
            from torchdata.stateful_dataloader import StatefulDataLoader as loader_class
        else:
            loader_class = DataLoader
        self._make_loader = lambda ds: loader_class(ds, batch_size=batch_size, collate_fn=_CountRows(collate_fn),  # noqa: E731
                                                    generator=generator, **dataloader_kwargs)
        self.loader = self._make_loader(dataset)
        self._split_for: Optional[tuple[int, int]] = None
        super().__init__()

    def _split_by_node(self, rank: int, world: int) -> None:
        """A Hugging Face `datasets.IterableDataset` not yet split by node is split for this rank by
        `datasets.distributed.split_dataset_by_node` (when the epoch starts: the rank is known then)."""
        if world == 1 or self._split_for == (rank, world) or not _unsplit_hf_iterable(self.dataset):
            return
        from datasets.distributed import split_dataset_by_node

        self.loader = self._make_loader(split_dataset_by_node(self.dataset, rank=rank, world_size=world))
        self._split_for = (rank, world)

    def rows(self, rank: int, world: int) -> Optional[int]:
        return len(self.dataset) if hasattr(self.dataset, "__len__") else None  # None: a stream of unknown length

    def start(self, epoch: Epoch) -> "_IterRun":
        state = self._take_pending(epoch)
        self._split_by_node(epoch.rank, epoch.world)
        if self.loader.dataset is not self.dataset and hasattr(self.loader.dataset, "set_epoch"):
            self.loader.dataset.set_epoch(epoch.epoch)  # the split copy reshuffles as the user's dataset would
        position = state.get("position", 0)
        skip = position
        if self.stateful and "loader" in state:
            self.loader.load_state_dict(state["loader"])
            skip = state["skip"]
        run = _IterRun(self, iter(self.loader), position - skip, skip)
        self._current = weakref.ref(run)  # the loader's iterator owns the run; the source only looks
        return run




class _IterRun:
    """One epoch of an IterableSource, from the resume position on."""

    def __init__(self, source: IterableSource, it: Iterator, row: int, skip: int):
        self.source, self.it, self.row, self.skip = source, it, row, skip
        self.spans = _Spans(row)

    def __iter__(self) -> "_IterRun":
        return self

    def __next__(self) -> tuple:
        src = self.source
        while True:
            before = src.loader.state_dict() if src.stateful else None
            n, batch = next(self.it)
            ids = torch.arange(self.row, self.row + n)
            self.row += n
            self.spans.add(n, before)
            if not self.skip:
                return ids, batch, None
            drop = min(self.skip, n)  # rows the saved run had consumed
            self.spans.consume(drop)
            self.skip -= drop
            if drop < n:
                return ids[drop:], index_batch(batch, torch.arange(drop, n)), None

    def advance(self, n: int) -> None:
        self.spans.consume(n)

    def state_dict(self) -> dict:
        state = {"position": self.spans.position}
        if self.source.stateful:
            spans = self.spans.spans
            if spans:  # rows of a piece still unconsumed: resume from before it, skipping its consumed rows
                state.update(loader=spans[0][1], skip=spans[0][2])
            else:
                state.update(loader=self.source.loader.state_dict(), skip=0)
        return state
