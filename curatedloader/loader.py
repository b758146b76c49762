"""CuratedLoader: a DataLoader that scores each super-batch of B samples and yields the b worth training on."""
from __future__ import annotations

import contextlib
import numbers
import os
import random
import time
from collections import deque
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Sampler
from torch.utils.data._utils.collate import default_collate

from .batch import attach, batch_len, cat_batches, get_field, index_batch
from .keeplist import load_keep
from .rng import derive_seed
from .schedules import Always, Schedule
from .scores import Scorer, as_scores
from .selection import JEST, uniform
from .stats import LoaderStats
from .weights import sample_weights

NAN_POLICIES = ("raise", "uniform")


def resolve_super_batch_size(batch_size: int, filter_ratio: Optional[float], super_batch_size: Optional[int]) -> int:
    """B from b and either filter_ratio (B = round(b / (1 - filter_ratio))) or super_batch_size."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if filter_ratio is not None and super_batch_size is not None:
        raise ValueError("give filter_ratio or super_batch_size, not both")
    if super_batch_size is None:
        ratio = 0.8 if filter_ratio is None else filter_ratio
        if not (isinstance(ratio, numbers.Real) and 0.0 <= ratio < 1.0):
            raise ValueError(f"filter_ratio must be in [0, 1), got {filter_ratio!r}")
        return max(batch_size, round(batch_size / (1.0 - ratio)))
    if not isinstance(super_batch_size, int) or super_batch_size < batch_size:
        raise ValueError(
            f"super_batch_size must be an int >= batch_size ({batch_size}), got {super_batch_size!r}"
        )
    return super_batch_size


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _WithIndex(Dataset):
    """Map-style dataset whose items carry their index: the stable sample id. Other attributes pass
    through to the dataset, so a worker_init_fn that sets up `get_worker_info().dataset` (opening a
    file per worker, say) sets up the user's dataset, as with DataLoader."""

    def __init__(self, dataset: Dataset):
        object.__setattr__(self, "dataset", dataset)

    def __getattr__(self, name: str):
        if name == "dataset":  # not set yet (unpickling in a worker): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self.dataset, name, value)

    def __getitem__(self, i: int):
        return i, self.dataset[i]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: list[int]) -> list:
        # keep the dataset's batched fetch (DataLoader calls __getitems__ when a dataset has one)
        getitems = getattr(self.dataset, "__getitems__", None)
        with _seeded(getattr(indices, "seed", None)):
            items = getitems(indices) if getitems else [self.dataset[i] for i in indices]
        return list(zip(indices, items))


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


class _CollateWithIds:
    def __init__(self, collate_fn: Callable):
        self.collate_fn = collate_fn

    def __call__(self, items):
        # ids travel as a list: a tensor would cost a shared-memory segment per batch
        return [i for i, _ in items], self.collate_fn([s for _, s in items])


class _EpochChunks(Sampler):
    """Batch sampler of the internal DataLoader: this rank's epoch order from the resume position on,
    in chunks of B while the schedule selects and of b otherwise, so workers collate whole super-batches.
    The order is drawn when iteration starts, so RNG calls happen in the same sequence as in a
    DataLoader with the same sampler/generator. Chunks read ahead of a schedule change (`Early`) are
    re-cut by the loader's row buffer, so chunk sizes affect speed only, never the batches."""

    def __init__(self, loader: "CuratedLoader"):
        self.loader = loader

    def __iter__(self) -> Iterator[list[int]]:
        loader = self.loader
        order, i, step = loader._epoch_order(), loader._position, loader._step
        while i < len(order):
            size = loader.super_batch_size if loader._selecting(step) else loader.batch_size
            chunk = _Chunk(order[i : i + size])
            if not loader._user_generator:  # with a user generator, workers seed as in DataLoader
                chunk.seed = derive_seed(loader.seed, loader.rank, loader._epoch, i, 4)
            yield chunk
            i, step = i + size, step + 1


class _Rows:
    """FIFO of collated pieces (ids, batch); takes exactly n rows, slicing a piece when needed."""

    def __init__(self) -> None:
        self.pieces: deque = deque()
        self.n = 0

    def put(self, ids, batch) -> None:
        n, rows = batch_len(ids), batch_len(batch)
        if rows != n:
            raise ValueError(
                f"collate_fn returned a batch of {rows or 'no'} rows for {n} samples; CuratedLoader slices "
                "batches by row, so each leaf must be a tensor or array with the rows in dim 0, or a list of "
                "per-row strings/numbers (a list of per-sample tuples, dicts or tensors reads as fields)"
            )
        if n:
            self.pieces.append((ids, batch, n))
            self.n += n

    def take(self, n: int):
        """(ids, batch, whole): the next n rows; `whole` when they are one piece as the workers sent it."""
        ids, batches, whole = [], [], self.pieces[0][2] == n
        while n > 0:
            pid, pb, pn = self.pieces.popleft()
            if pn > n:  # split the piece: keep its tail for the next step
                head, tail = torch.arange(n), torch.arange(n, pn)
                self.pieces.appendleft((index_batch(pid, tail), index_batch(pb, tail), pn - n))
                pid, pb, pn = index_batch(pid, head), index_batch(pb, head), n
            ids.append(pid)
            batches.append(pb)
            n -= pn
            self.n -= pn
        return cat_batches(ids), cat_batches(batches), whole


def _pin(batch: Any) -> Any:
    return torch.utils._pytree.tree_map(lambda t: t.pin_memory() if isinstance(t, Tensor) else t, batch)


class CuratedLoader:
    """A drop-in `DataLoader` with online batch selection (JEST, RHO-LOSS).

    Each step reads a super-batch of B = round(batch_size / (1 - filter_ratio)) samples, scores it with
    `scorer`, and yields the `batch_size` samples that `selector` picks. With `scorer=None`, or while
    `schedule` is inactive, it is a plain DataLoader: each sample once per epoch, nothing discarded.
    One epoch is one pass over the data, so with selection on it has about N / B steps.

    `subset` restricts a map-style dataset to a keep-list of indices (or a keep-list file's path);
    `class_weights` (a [K] tensor, e.g. the live `GroupDRO.weights`) adds per-sample weights under the
    name "weight" (a dict key, or one more tuple element), looked up by the class in `target_key`.

    >>> loader = CuratedLoader(dataset, batch_size=64, filter_ratio=0.8,
    ...                        scorer=CrossEntropyScorer(model, reference_losses=table))
    >>> for x, y in loader:
    ...     train_step(x, y)
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 1,
        *,
        filter_ratio: Optional[float] = None,
        super_batch_size: Optional[int] = None,
        scorer: Optional[Callable] = None,
        selector: Optional[Callable] = None,
        schedule: Optional[Schedule] = None,
        seed: int = 0,
        nan: str = "raise",
        subset: Optional[Sequence[int] | str | os.PathLike] = None,
        class_weights: Optional[Tensor] = None,
        target_key: Any = 1,
        shuffle: Optional[bool] = None,
        sampler: Optional[Sampler] = None,
        num_workers: int = 0,
        collate_fn: Optional[Callable] = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        generator: Optional[torch.Generator] = None,
        **dataloader_kwargs: Any,
    ):
        if "batch_sampler" in dataloader_kwargs:
            raise ValueError("batch_sampler is not supported: CuratedLoader forms the batches; pass sampler=")
        self.batch_size = batch_size
        self.super_batch_size = resolve_super_batch_size(batch_size, filter_ratio, super_batch_size)
        if scorer is not None and not callable(scorer):
            raise ValueError(f"scorer must be callable on a batch, got {type(scorer).__name__}")
        if selector is not None and not callable(selector):
            raise ValueError(f"selector must be callable, got {type(selector).__name__}")
        if schedule is not None and not callable(getattr(schedule, "active", None)):
            raise ValueError(f"schedule must have an active(step) method, got {type(schedule).__name__}")
        if nan not in NAN_POLICIES:
            raise ValueError(f"nan must be one of {NAN_POLICIES}, got {nan!r}")
        if not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.iterable = isinstance(dataset, IterableDataset)
        if self.iterable and (shuffle or sampler is not None or subset is not None):
            raise ValueError("shuffle, sampler and subset need a map-style dataset; got an IterableDataset")
        if sampler is not None and shuffle:
            raise ValueError("sampler is mutually exclusive with shuffle")
        self.dataset, self.scorer, self.seed, self.nan = dataset, scorer, seed, nan
        self.selector: Callable = JEST() if selector is None else selector
        self.schedule: Schedule = Always() if schedule is None else schedule
        if isinstance(subset, (str, os.PathLike)):
            subset = load_keep(subset)
        self.subset = None if subset is None else [int(i) for i in subset]
        if self.subset is not None and not all(0 <= i < len(dataset) for i in self.subset):
            raise ValueError(f"subset must hold dataset indices in [0, {len(dataset)}), e.g. from load_keep()")
        if class_weights is not None and (not isinstance(class_weights, Tensor) or class_weights.dim() != 1):
            raise ValueError("class_weights must be a 1-D tensor of per-class weights (e.g. GroupDRO(...).weights)")
        self.class_weights, self.target_key = class_weights, target_key
        self.shuffle, self.sampler, self.drop_last = bool(shuffle), sampler, drop_last
        self.pin_memory = pin_memory
        self._repin = pin_memory and torch.cuda.is_available()
        self.rank, self.world_size = _dist_rank_world()
        # a DistributedSampler already yields this rank's share: split it again and each rank gets 1/world²
        self._splits = self.world_size > 1 and not isinstance(sampler, DistributedSampler)
        self.stats = LoaderStats()
        self.collate_fn = default_collate if collate_fn is None else collate_fn

        # Shuffling and worker seeds come from the user's generator if given (DataLoader semantics),
        # else from two of ours, re-seeded from (seed, epoch) every epoch: kept apart, the order does
        # not depend on whether the DataLoader draws a worker seed (it does not with persistent workers).
        self._user_generator = generator is not None
        self._order_gen = generator if generator is not None else torch.Generator()
        self._worker_gen = generator if generator is not None else torch.Generator()
        self._select_gen = torch.Generator().manual_seed(derive_seed(seed, self.rank, 1))
        self._score_gen = torch.Generator().manual_seed(derive_seed(seed, self.rank, 2))
        if isinstance(scorer, Scorer):
            scorer.generator = self._score_gen
        self._epoch, self._position, self._step, self._in_epoch = 0, 0, 0, False
        self._resume = False  # load_state_dict asked to continue a saved epoch
        self._epoch_rng_state: Optional[Tensor] = None

        # a dataset with `pieces` (ShardStream) collates in its workers and resumes by seeking, not re-reading
        self._seeks = self.iterable and hasattr(dataset, "pieces")
        if self.iterable:
            self._loader = DataLoader(
                dataset, batch_size=None if self._seeks else batch_size, num_workers=num_workers,
                collate_fn=None if self._seeks else self.collate_fn,
                pin_memory=pin_memory, generator=self._worker_gen, **dataloader_kwargs,
            )
        else:
            self._loader = DataLoader(
                _WithIndex(dataset), batch_sampler=_EpochChunks(self), num_workers=num_workers,
                collate_fn=_CollateWithIds(self.collate_fn), pin_memory=pin_memory,
                generator=self._worker_gen, **dataloader_kwargs,
            )

    @classmethod
    def from_shards(cls, urls: Any, batch_size: int, **kwargs: Any) -> "CuratedLoader":
        """A CuratedLoader over WebDataset tar shards; see `curatedloader.shards.from_shards`.

        >>> loader = CuratedLoader.from_shards("data/train-{000000..000099}.tar", 256, to_tuple=("jpg", "cls"))
        """
        from .shards import from_shards

        return from_shards(cls, urls, batch_size, **kwargs)

    # ---- epoch order (map-style) ---------------------------------------------------------------

    def _base_indices(self) -> list[int]:
        return list(range(len(self.dataset))) if self.subset is None else self.subset

    def _epoch_order(self) -> list[int]:
        """This rank's indices for the current epoch, split across ranks like DistributedSampler."""
        base = self._base_indices()
        if self.sampler is not None:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(self._epoch)
            order = [base[i] for i in self.sampler] if self.subset is not None else list(self.sampler)
        elif self.shuffle:
            order = [base[i] for i in torch.randperm(len(base), generator=self._order_gen).tolist()]
        else:
            order = base
        if self._splits:
            order = self._split_for_rank(order)
        return order

    def _split_for_rank(self, order: list[int]) -> list[int]:
        n, w = len(order), self.world_size
        if self.drop_last:
            order = order[: n - n % w]
        elif n % w:
            pad = w - n % w
            order = order + (order * (pad // max(n, 1) + 1))[:pad]
        return order[self.rank :: w]

    def _rows_per_epoch(self) -> int:
        if self.iterable:
            return len(self.dataset)  # TypeError for iterables without __len__, as DataLoader
        n = len(self.sampler) if self.sampler is not None else len(self._base_indices())
        if self._splits:
            n = n // self.world_size if self.drop_last else -(-n // self.world_size)
        return n

    # ---- DataLoader surface --------------------------------------------------------------------

    def _selecting(self, step: int) -> bool:
        return self.scorer is not None and self.schedule.active(step)

    def __len__(self) -> int:
        """Batches in one epoch, following the schedule from the current step."""
        rows, step, steps = self._rows_per_epoch(), self._step, 0
        if self._in_epoch:
            rows -= self._position
        while rows > 0:
            need = self.super_batch_size if self._selecting(step) else self.batch_size
            if rows < need and self.drop_last:
                break
            rows, step, steps = rows - min(rows, need), step + 1, steps + 1
        return steps

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (its shuffle order) that the next iteration runs, as DistributedSampler."""
        self._epoch, self._position, self._in_epoch, self._resume = epoch, 0, False, False

    def __iter__(self) -> Iterator[Any]:
        if self._resume:  # continue the saved epoch: replay its order from the saved RNG state
            self._order_gen.set_state(self._epoch_rng_state)
        else:
            if self._in_epoch:  # the last iteration was abandoned: start the next epoch, as DataLoader
                self._epoch += 1
            self._position = 0
            if not self._user_generator:
                self._order_gen.manual_seed(derive_seed(self.seed, self._epoch))
            self._epoch_rng_state = self._order_gen.get_state()
        if not self._user_generator:
            self._worker_gen.manual_seed(derive_seed(self.seed, self._epoch, 3))
        self._in_epoch, self._resume = True, False
        if not self.iterable and self._rows_per_epoch() == 0:
            raise ValueError(
                f"rank {self.rank} of {self.world_size} has no data: the dataset has "
                f"{len(self._base_indices())} samples"
            )
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self._epoch)
        yield from self._run_epoch()
        self._epoch, self._position, self._in_epoch = self._epoch + 1, 0, False

    def _pieces(self) -> Iterator[tuple]:
        """(ids, batch) pieces from the internal DataLoader, from the current position on."""
        if not self.iterable:
            for ids, batch in self._loader:
                yield torch.tensor(ids, dtype=torch.long), batch
            return
        if self._seeks:
            yield from self.dataset.pieces(self._loader, lambda: self._position, self.stats)
            return
        pos, skip = 0, self._position  # generic iterables cannot seek: re-read and drop the consumed rows
        for batch in self._loader:
            n = batch_len(batch)
            ids = torch.arange(pos, pos + n)
            pos += n
            if pos <= skip:
                continue
            if pos - n < skip:
                keep = torch.arange(skip - (pos - n), n)
                ids, batch = index_batch(ids, keep), index_batch(batch, keep)
            yield ids, batch

    def _run_epoch(self) -> Iterator[Any]:
        rows, pieces, exhausted = _Rows(), self._pieces(), False
        b, B, stats = self.batch_size, self.super_batch_size, self.stats
        last = time.perf_counter()
        while True:
            selecting = self._selecting(self._step)
            need = B if selecting else b
            t0 = time.perf_counter()
            while rows.n < need and not exhausted:
                try:
                    rows.put(*next(pieces))
                except StopIteration:
                    exhausted = True
            stats.wait_ms += 1e3 * (time.perf_counter() - t0)
            n = min(need, rows.n)
            if n == 0 or (n < need and self.drop_last):
                return
            ids, batch, whole = rows.take(n)
            self._position += n
            if selecting:
                batch = self._select(ids, batch, max(1, round(n * b / B)) if n < B else b)
            if self.class_weights is not None:
                batch = self._weigh(batch)
            if self._repin and (selecting or not whole or self.class_weights is not None):
                batch = _pin(batch)  # rows gathered or joined here lost the workers' pinning
            stats.seen += n
            stats.trained += batch_len(batch)
            stats.steps += 1
            self._step += 1
            now = time.perf_counter()
            stats.step_ms += 1e3 * (now - last)
            yield batch
            last = time.perf_counter()

    def _select(self, ids, batch, k: int) -> Any:
        n = batch_len(batch)
        t0 = time.perf_counter()
        with torch.inference_mode():  # plain functions too: no autograd graph over the B samples
            out = self.scorer(batch, ids) if isinstance(self.scorer, Scorer) else self.scorer(batch)
        scores = as_scores(out, n)
        t1 = time.perf_counter()
        self.stats.score_ms += 1e3 * (t1 - t0)
        finite = scores.finite()
        bad = int((~finite).sum())
        # every rank updates the schedule every step (Early all-reduces), on the finite rows only
        self.schedule.update(self._step, scores.index(torch.nonzero(finite).squeeze(1)) if bad else scores)
        if bad:
            self.stats.nan_scores += bad
            if self.nan == "raise":
                raise ValueError(
                    f"scorer returned NaN/inf scores for {bad} of {n} samples at step {self._step}; "
                    "pass nan='uniform' to fall back to a uniform draw for such super-batches"
                )
            self.stats.nan_batches += 1
            chosen = uniform(n, k, self._select_gen)
        else:
            chosen = self.selector(scores, k, self._select_gen)
        chosen = torch.sort(chosen.cpu()).values
        sub = index_batch(batch, chosen)
        for name, value in scores.extras.items():
            sub = attach(sub, name, value[chosen.to(value.device)])
        self.stats.rejected += n - k
        self.stats.select_ms += 1e3 * (time.perf_counter() - t1)
        return sub

    def _weigh(self, batch: Any) -> Any:
        """Attach per-sample weights from the (live) class weights, under the name "weight"."""
        return attach(batch, "weight", sample_weights(self.class_weights, get_field(batch, self.target_key)))

    # ---- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """What exact resume needs: epoch, position, step, RNG states, schedule state, stats."""
        state = {
            "epoch": self._epoch,
            "position": self._position,
            "in_epoch": self._in_epoch,
            "step": self._step,
            "epoch_rng": self._epoch_rng_state,
            "select_rng": self._select_gen.get_state(),
            "score_rng": self._score_gen.get_state(),
            "schedule": self.schedule.state_dict(),
            "stats": self.stats.as_dict(),
        }
        if self._seeks:
            state["stream"] = self.dataset.state_dict(self._position)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state`: the next iteration yields what the saved run would have yielded next."""
        self._epoch, self._position = state["epoch"], state["position"]
        self._in_epoch, self._step = state["in_epoch"], state["step"]
        self._resume = state["in_epoch"]
        self._epoch_rng_state = state["epoch_rng"]
        self._select_gen.set_state(state["select_rng"])
        self._score_gen.set_state(state["score_rng"])
        self.schedule.load_state_dict(state["schedule"])
        self.stats.load(state["stats"])
        if self._seeks:
            self.dataset.load_state_dict(state["stream"])
