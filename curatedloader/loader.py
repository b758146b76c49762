"""CuratedLoader: a DataLoader that scores each super-batch of B samples and yields the b worth training on.

`CuratedLoader` holds validated configuration and the epoch counter; `iter(loader)` returns a
`CuratedLoaderIterator`, which owns one epoch: its plan (rank, world size, length), the cursor, the row
buffer and the timings. Data flows one way: source (`sources.py`, `shards.py`) → row buffer
(`rows.py`) → scores and selection (`curation.py`) → the training loop.
"""
from __future__ import annotations

import numbers
import os
import time
import weakref
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, Sampler
from torch.utils.data._utils.collate import default_collate

from .batch import attach, get_field, index_batch
from .curation import Curation, Generators
from .distributed import gather_ints, gather_objects, rank_world
from .history import LossHistory
from .keeplist import load_keep
from .rng import derive_seed
from .rows import RowBuffer
from .sources import Epoch, IterableSource, MapSource, draw_seed
from .stats import LoaderStats
from .weights import sample_weights

_CURATION = 0x41  # the word that seeds an epoch's selection from a drawn seed (seed=None)


def resolve_super_batch_size(batch_size: int, filter_ratio: Optional[float], super_batch_size: Optional[int]) -> int:
    """B from b and either filter_ratio (B = round(b / (1 - filter_ratio))) or super_batch_size.

    >>> resolve_super_batch_size(64, 0.8, None)
    320
    """
    if batch_size is None:
        raise ValueError("batch_size=None (unbatched loading) is not supported: CuratedLoader yields batches; "
                         "use a DataLoader for unbatched samples")
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


def check_subset(subset: Any, n: int) -> Optional[list[int]]:
    """A keep-list of dataset indices (a sequence of ints, an int array/tensor, or a keep-list file) as a list."""
    if subset is None:
        return None
    if isinstance(subset, (str, os.PathLike)):
        subset = load_keep(subset)
    values = np.asarray(subset.cpu() if isinstance(subset, Tensor) else list(subset))
    if values.size and not np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_ or values.ndim > 1:
        raise TypeError(f"subset must hold integer dataset indices (a keep-list), got {values.dtype} values of "
                        f"shape {values.shape}; for a boolean mask pass mask.nonzero()")
    if values.size and (values.min() < 0 or values.max() >= n):
        raise ValueError(f"subset must hold dataset indices in [0, {n}), e.g. from load_keep(); got "
                         f"{values.min()}..{values.max()}")
    return values.astype(np.int64).tolist()


def _pin(batch: Any) -> Any:
    return torch.utils._pytree.tree_map(lambda t: t.pin_memory() if isinstance(t, Tensor) else t, batch)


class _EpochView(Sampler):
    """`loader.sampler` / `loader.batch_sampler`: what frameworks read off a DataLoader. `set_epoch`
    reaches the loader (Lightning calls it on both), `len` is the loader's (rows or batches per epoch)."""

    def __init__(self, loader: "CuratedLoader", batches: bool):
        self._ref, self._batches = weakref.ref(loader), batches  # no cycle: a dropped loader frees its workers

    @property
    def _loader(self) -> "CuratedLoader":
        loader = self._ref()
        if loader is None:
            raise ReferenceError("the CuratedLoader of this sampler view was deleted")
        return loader

    @property
    def batch_size(self) -> int:
        return self._loader.batch_size

    @property
    def drop_last(self) -> bool:
        return self._loader.drop_last

    @property
    def sampler(self) -> Any:
        return self._loader.sampler

    def set_epoch(self, epoch: int) -> None:
        self._loader.set_epoch(epoch)

    def __len__(self) -> int:
        loader = self._loader
        return len(loader) if self._batches else loader._rows(*rank_world())

    def __iter__(self) -> Iterator:
        raise TypeError("CuratedLoader plans its own batches: iterate the loader, not its sampler/batch_sampler "
                        "(to skip the batches a resumed run trained, e.g. instead of accelerate's "
                        "skip_first_batches, call loader.skip_first_batches(n))")


class CuratedLoader:
    """A drop-in `DataLoader` with online batch selection (JEST, RHO-LOSS).

    Each step reads a super-batch of B = round(batch_size / (1 - filter_ratio)) samples, scores it with
    `scorer`, and yields the `batch_size` samples that `selector` picks. With `scorer=None`, or while
    `schedule` is inactive, it is a DataLoader: the same arguments in the same order, the same batches.
    One epoch is one pass over the data, so with selection on it has about N / B steps.

    `seed=None` (default) seeds like DataLoader (its `generator=`, else torch's global generator); an
    int makes the order, every worker task's randomness and the selection draws depend on (seed, epoch,
    position) alone. `subset` restricts a map-style dataset to a keep-list of indices (or a keep-list
    file's path); `class_weights` (a [K] tensor, e.g. the live `GroupDRO.weights`) adds per-sample
    weights under the name "weight", looked up by the class in `target_key`. `gather_state=True`:
    `state_dict()` gathers every rank's state (a collective: every rank calls it, as Lightning and
    Accelerate do when they checkpoint), so a checkpoint that rank 0 alone writes resumes each rank.
    `id_key` names a batch field of stable row ids (e.g. an "id" column) that scorers receive as `ids`
    (e.g. to look up `reference_losses`), instead of dataset indices or, for a stream, stream positions.
    `history` (a `LossHistory`, map-style data) leaves well-learned samples out of each epoch before loading
    them, from the losses the training loop reports with `loader.record(losses)`, and adds their unbiasing
    weights as "weight".
    Cheaper scoring: `score_transform(batch)` gives the view of a super-batch that the scorer sees (lower
    resolution, a token prefix; the selected rows come from the full batch), `score_autocast` a dtype to
    score under autocast (torch.bfloat16 on a GPU).

    >>> from torch.utils.data import TensorDataset
    >>> dataset = TensorDataset(torch.randn(100, 3), torch.randint(0, 2, (100,)))
    >>> loader = CuratedLoader(dataset, batch_size=10, filter_ratio=0.5, scorer=lambda batch: batch[0][:, 0])
    >>> [len(y) for x, y in loader], len(loader)
    ([10, 10, 10, 10, 10], 5)
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: Optional[int] = 1,
        shuffle: Optional[bool] = None,
        sampler: Optional[Sampler] = None,
        batch_sampler: Optional[Sampler] = None,
        num_workers: int = 0,
        collate_fn: Optional[Callable] = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Optional[Callable] = None,
        multiprocessing_context: Any = None,
        generator: Optional[torch.Generator] = None,
        *,
        prefetch_factor: Optional[int] = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
        filter_ratio: Optional[float] = None,
        super_batch_size: Optional[int] = None,
        scorer: Optional[Callable] = None,
        selector: Optional[Callable] = None,
        schedule: Any = None,
        seed: Optional[int] = None,
        nan: str = "raise",
        subset: Optional[Sequence[int] | str | os.PathLike] = None,
        class_weights: Optional[Tensor] = None,
        target_key: Any = 1,
        history: Optional[LossHistory] = None,
        score_transform: Optional[Callable[[Any], Any]] = None,
        score_autocast: Optional[torch.dtype] = None,
        gather_state: bool = False,
        id_key: Any = None,
    ):
        if batch_sampler is not None:
            raise ValueError("batch_sampler is not supported: CuratedLoader forms the batches; pass sampler= "
                             "(the order) and batch_size=")
        self.super_batch_size = resolve_super_batch_size(batch_size, filter_ratio, super_batch_size)
        if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if class_weights is not None and (not isinstance(class_weights, Tensor) or class_weights.dim() != 1):
            raise ValueError("class_weights must be a 1-D tensor of per-class weights (e.g. GroupDRO(...).weights)")
        iterable = isinstance(dataset, IterableDataset)
        if iterable and (shuffle or sampler is not None or subset is not None):
            raise ValueError("shuffle, sampler and subset need a map-style dataset; got an IterableDataset")
        if sampler is not None and shuffle:
            raise ValueError("sampler is mutually exclusive with shuffle")
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.collate_fn = default_collate if collate_fn is None else collate_fn
        self.seed, self.nan, self.generator, self.in_order = None if seed is None else int(seed), nan, generator, in_order
        self.class_weights, self.target_key = class_weights, target_key
        if history is not None:
            if not isinstance(history, LossHistory):
                raise TypeError(f"history must be a LossHistory, e.g. LossHistory(prune=0.5, epochs=E); got "
                                f"{type(history).__name__}")
            if iterable or sampler is not None:
                raise ValueError("history needs a map-style dataset ordered by the loader (shuffle or not), without "
                                 "a sampler: it filters the epoch's indices before loading them")
        self.history = history
        self.ids: Optional[Tensor] = None  # the dataset indices of the batch yielded last
        if not isinstance(gather_state, bool):
            raise TypeError(f"gather_state must be a bool, got {type(gather_state).__name__}")
        self.gather_state, self.id_key = gather_state, id_key
        self.stats = LoaderStats()
        self._curation = Curation(scorer, selector, schedule, nan, self.stats, score_transform, score_autocast)
        if self._curation.scorer is not None and not in_order and num_workers > 0 and not iterable:
            raise ValueError("in_order=False: selection needs each batch's sample ids, which come in order; "
                             "use in_order=True (the default)")
        self.subset = None if iterable else check_subset(subset, len(dataset))
        self._repin = pin_memory and torch.cuda.is_available()
        kwargs = dict(num_workers=num_workers, pin_memory=pin_memory, timeout=timeout, worker_init_fn=worker_init_fn,
                      multiprocessing_context=multiprocessing_context, prefetch_factor=prefetch_factor,
                      persistent_workers=persistent_workers, pin_memory_device=pin_memory_device, in_order=in_order)
        as_source = getattr(dataset, "as_source", None)  # a dataset that is its own source (shards)
        if as_source is not None:
            self._source = as_source(kwargs)
        elif iterable:
            self._source = IterableSource(
                dataset, batch_size=batch_size, collate_fn=self.collate_fn, generator=generator,
                dataloader_kwargs={**kwargs, "drop_last": drop_last and self._curation.scorer is None},
            )
        else:
            self._source = MapSource(
                dataset, sampler=sampler, shuffle=bool(shuffle), subset=self.subset, drop_last=drop_last,
                generator=generator, seed=self.seed, collate_fn=self.collate_fn, dataloader_kwargs=kwargs,
            )
        self._source.history = history
        internal = self._source.loader  # DataLoader's own checks and defaults (prefetch_factor, context)
        for name in ("num_workers", "pin_memory", "timeout", "worker_init_fn", "multiprocessing_context",
                     "prefetch_factor", "persistent_workers", "pin_memory_device", "in_order"):
            setattr(self, name, getattr(internal, name))
        self.sampler = sampler if sampler is not None else _EpochView(self, batches=False)
        self.batch_sampler = _EpochView(self, batches=True)
        self._next_epoch, self._step = 0, 0
        self._pending: Optional[dict] = None  # a state to resume from, from load_state_dict
        # the latest iterator, weakly (no loader-iterator cycle: a dropped loader frees its workers at once);
        # an iterator dropped mid-epoch leaves its state in _dropped
        self._live_ref: Callable[[], Optional[CuratedLoaderIterator]] = lambda: None
        self._dropped: Optional[dict] = None

    @property
    def _live(self) -> Optional["CuratedLoaderIterator"]:
        """The latest iterator, while it lives (a weak reference: no loader-iterator cycle)."""
        return self._live_ref()

    @classmethod
    def from_shards(cls, urls: Any, batch_size: int, **kwargs: Any) -> "CuratedLoader":
        """A CuratedLoader over WebDataset tar shards; see `curatedloader.shards.from_shards`::

            loader = CuratedLoader.from_shards("data/train-{000000..000099}.tar", 256, to_tuple=("jpg", "cls"))
        """
        from .shards import from_shards

        return from_shards(cls, urls, batch_size, **kwargs)

    # ---- curation (kept as attributes for users who read them) ---------------------------------

    @property
    def scorer(self) -> Any:
        return self._curation.scorer

    @scorer.setter
    def scorer(self, scorer: Any) -> None:
        self._curation.scorer = scorer

    @property
    def selector(self) -> Any:
        return self._curation.selector

    @property
    def schedule(self) -> Any:
        return self._curation.schedule

    # ---- epochs --------------------------------------------------------------------------------

    def _rows(self, rank: int, world: int) -> Optional[int]:
        return self._source.rows(rank, world)

    def _plan(self, epoch: int) -> None:
        """Draw (or keep) the history's plan for `epoch`: it decides which rows the epoch loads."""
        if self.history is not None:
            self.history.plan(epoch, len(self.dataset))

    def record(self, losses: Tensor, ids: Optional[Tensor] = None) -> None:
        """Report per-sample training losses to the `history` (`ids`: the dataset indices, by default
        those of the batch yielded last, `loader.ids`)."""
        if self.history is None:
            raise ValueError("record() needs a history: CuratedLoader(..., history=LossHistory(...))")
        ids = self.ids if ids is None else ids
        if ids is None:
            raise ValueError("record() without ids needs a batch yielded first (loader.ids holds its indices)")
        self.history.record(ids, losses)

    def epoch_length(self, rows: Optional[int], start_step: int) -> Optional[int]:
        """Batches in an epoch of `rows` rows that starts at global step `start_step`. Exact while the
        schedule's decisions are known ahead (`Always`, `Steps`); with one that learns from scores
        (`Early`), an upper bound: selection is assumed to end after the epoch's first step. None for a
        stream of unknown length."""
        if rows is None:
            return None
        b, B, curation = self.batch_size, self.super_batch_size, self._curation
        predictable, steps = curation.predictable(), 0
        while rows > 0:
            need = B if curation.selecting(start_step + steps) and (predictable or steps == 0) else b
            if rows < need and self.drop_last:
                break
            rows, steps = rows - min(rows, need), steps + 1
        return steps

    def __len__(self) -> int:
        """Batches in the epoch that is running, or else in the next one: constant while it runs."""
        if self._live is not None and not self._live.done:
            length = self._live.length
        else:
            pending = self._pending["loader"] if self._pending is not None else None
            in_epoch = pending is not None and pending["in_epoch"]
            start = pending["epoch_start_step"] if in_epoch else self._step
            self._plan(pending["epoch"] if in_epoch else self._next_epoch)
            length = self.epoch_length(self._rows(*rank_world()), start)
        if length is None:
            raise TypeError(f"{type(self.dataset).__name__} has no len(), so neither has the loader (as DataLoader)")
        return length

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (its order and draws) that the next `iter()` runs, as DistributedSampler.
        Setting the epoch a loaded state was saved in keeps its position."""
        if not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        pending = self._pending["loader"] if self._pending is not None else None
        if pending is not None and pending["in_epoch"] and pending["epoch"] != epoch:
            self._pending = None  # the saved position belongs to another epoch
            if isinstance(self._source, MapSource):
                self._source.load_state_dict({})  # and so does the source's (its rows() read an elastic one)
        self._next_epoch = int(epoch)
        live = self._live
        if live is not None and not live.done and not live.started and live.epoch != epoch:
            # DataLoader iterates its sampler at the first batch, so set_epoch between iter() and the first
            # batch chooses that iterator's epoch: Lightning calls iter() first (twice: once to check the
            # loader is iterable), then set_epoch
            live.restart()

    def __iter__(self) -> "CuratedLoaderIterator":
        return CuratedLoaderIterator(self)

    def skip_first_batches(self, num_batches: int) -> "CuratedLoader":
        """Start the next epoch (or the iterator not yet advanced) after its first `num_batches` batches,
        without reading them, and return the loader: resume for a script that counts its steps, as with
        Accelerate's `skip_first_batches` (which rebuilds a plain DataLoader, so cannot serve this loader).
        The rows are those of the uninterrupted epoch when its order is reproducible (`seed=` an int, or no
        shuffle); the epoch's selection draws start afresh. `state_dict()` resumes exactly, draws included.

        >>> from torch.utils.data import TensorDataset
        >>> def make():
        ...     return CuratedLoader(TensorDataset(torch.arange(10)), batch_size=2, shuffle=True, seed=0)
        >>> [x.tolist() for x, in make()][2:] == [x.tolist() for x, in make().skip_first_batches(2)]
        True
        """
        if not isinstance(num_batches, numbers.Integral) or isinstance(num_batches, bool) or num_batches < 0:
            raise ValueError(f"num_batches must be an int >= 0, got {num_batches!r}")
        if not isinstance(self._source, (MapSource, IterableSource)):
            raise ValueError(f"skip_first_batches needs a map-style or iterable dataset, got "
                             f"{type(self.dataset).__name__}; resume shards with state_dict() / load_state_dict()")
        if getattr(self._source, "shuffle", False) and self.seed is None:
            raise ValueError("skip_first_batches with shuffle=True needs seed=<int>: with seed=None the skipped "
                             "epoch's order cannot be drawn again; or resume with state_dict() / load_state_dict()")
        if not self._curation.predictable():
            raise ValueError(f"skip_first_batches needs a schedule whose steps are known ahead, got "
                             f"{type(self.schedule).__name__}; resume with state_dict() / load_state_dict()")
        live = self._live
        waiting = live is not None and not live.done and not live.started
        rank, world = rank_world()
        epoch, start, rows = live.epoch if waiting else self._next_epoch, self._step, self._rows(rank, world)
        position = sum(self.super_batch_size if self._curation.selecting(start + k) else self.batch_size
                       for k in range(num_batches))
        self._step = start + num_batches
        self._pending = self._state(in_epoch=True, epoch=epoch, start_step=start, rows=rows, world=world,
                                    source={"position": position if rows is None else min(position, rows)})
        self._source.load_state_dict(self._pending["source"])
        if waiting:
            live.restart()
        return self

    # ---- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """What exact resume needs, one entry per stage: the loader's epoch and step, the source's position,
        the selection's generators and schedule, and the stats. With `gather_state=True`, `{"ranks": [...]}`:
        every rank's state, gathered (every rank must call it)."""
        state = self._own_state()
        return {"ranks": gather_objects(state)} if self.gather_state else state

    def _own_state(self) -> dict:
        if self._live is not None and not self._live.done:
            return self._live.state_dict()
        if self._dropped is not None:  # an iterator dropped mid-epoch (a `break`): where it stood
            return self._dropped
        if self._pending is not None:
            return self._pending
        rank, world = rank_world()
        return self._state(in_epoch=False, epoch=self._next_epoch, start_step=self._step, rows=self._rows(rank, world),
                           world=world, source={})

    def _state(self, *, in_epoch: bool, epoch: int, start_step: int, rows: Optional[int], world: int, source: dict,
               rng: Optional[dict] = None) -> dict:
        if not self.in_order and self.num_workers > 0:
            raise ValueError("in_order=False: batches come in completion order, which a saved position cannot "
                             "replay; use in_order=True for state_dict()")
        state = {
            "loader": {"epoch": epoch, "in_epoch": in_epoch, "step": self._step, "epoch_start_step": start_step,
                       "rows": rows, "world_size": world, "rank": rank_world()[0], "batch_size": self.batch_size,
                       "super_batch_size": self.super_batch_size, "rng": rng},
            "source": source,
            "curation": self._curation.state_dict(),
            "stats": self.stats.as_dict(),
        }
        if self.history is not None:
            state["history"] = self.history.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state`: the next batches are those the saved run would have yielded next. Works
        before `iter()` and on a live iterator (which then goes on from the state). A gathered state
        (`gather_state=True`) gives each rank its own entry."""
        rank, world = rank_world()
        if isinstance(state, dict) and "ranks" in state:
            state = self._rank_entry(state["ranks"], rank, world)
        if not isinstance(state, dict) or not {"loader", "source", "curation", "stats"} <= state.keys():
            raise ValueError("state must be a dict from CuratedLoader.state_dict() with keys loader, source, "
                             f"curation, stats; got {type(state).__name__}")
        saved = state["loader"]
        if (self.history is not None) != ("history" in state):
            raise ValueError("state was saved " + ("without" if self.history is not None else "with")
                             + " a history; resume with the same history= setting")
        if self.history is not None:  # first: its saved plan sets the epoch's rows
            self.history.load_state_dict(state["history"])
        resized = saved["world_size"] != world and saved.get("rank", rank) == rank  # elastic (see _rank_entry)
        if saved.get("rank", rank) != rank:  # e.g. a checkpoint that rank 0 alone wrote, loaded on every rank
            raise ValueError(f"state was saved on rank {saved['rank']}, this is rank {rank}: each rank resumes from "
                             "its own state; build the loader with gather_state=True so that state_dict() holds "
                             "every rank's")
        mine = {"batch_size": self.batch_size, "super_batch_size": self.super_batch_size, "world_size": world}
        if resized and (not saved["in_epoch"] or self._resizable()):
            mine["world_size"] = saved["world_size"]  # the rows are checked for the saved world size instead
        if self._source.exact_rows:  # shards count rows from tar headers: their state checks the shard list
            mine["rows"] = self._rows(rank, mine["world_size"])
        differ = [f"{k} (saved {saved[k]}, now {v})" for k, v in mine.items() if saved[k] != v]
        if differ:
            raise ValueError("state was saved with another configuration: " + ", ".join(differ)
                             + "; resuming would repeat or skip samples")
        if saved["in_epoch"]:  # first: the source checks its own state (shard list, workers) before any change
            self._source.load_state_dict(state["source"])
        self._curation.load_state_dict(state["curation"])
        self.stats.load(state["stats"])
        self._dropped = None
        self._next_epoch, self._step = saved["epoch"], saved["step"]
        self._pending = state if saved["in_epoch"] else None
        if self._live is not None and not self._live.done:
            if saved["in_epoch"]:
                self._live.restart()  # the live iterator goes on from the saved position
            else:
                self._live.done = True  # the saved epoch is complete: the next iter() runs the next one

    def _resizable(self) -> bool:
        return isinstance(self._source, MapSource) and self._source.resizable()

    def _rank_entry(self, states: list, rank: int, world: int) -> dict:
        """This rank's entry of a gathered state. Saved on another number of ranks (elastic resume), map-style
        data goes on from the saved ranks' common position, split anew: the rows of the interrupted epoch
        that no saved rank consumed, each once (padded or cut to equal shares as DistributedSampler). The
        selection draws start afresh, the counts of a rank that did not exist start from zero."""
        if len(states) == world:
            return states[rank]
        if not self._resizable() and any(s["loader"]["in_epoch"] for s in states):
            raise ValueError(f"state was saved with another configuration: world_size (saved {len(states)}, now "
                             f"{world}); only a map-style dataset split by the loader (no DistributedSampler) or a "
                             "state saved at an epoch's end resumes on another number of ranks")
        entry = states[rank] if rank < len(states) else states[0]
        loader = {**entry["loader"], "rank": rank, "rng": None}
        stats = entry["stats"] if rank < len(states) else LoaderStats().as_dict()
        return {**entry, "loader": loader, "stats": stats}


class CuratedLoaderIterator:
    """One epoch of a CuratedLoader. Created by `iter(loader)`, it plans the epoch at once (rank and world
    size, length, seeds) and owns the cursor, the row buffer and the timings."""

    def __init__(self, loader: CuratedLoader):
        self.loader = loader
        self.restart()

    def restart(self) -> None:
        """Plan the epoch: the one a loaded state was saved in (going on from its position), else the next."""
        loader, curation = self.loader, self.loader._curation
        pending, loader._pending = loader._pending, None
        resume = pending is not None
        self.rank, self.world = rank_world()
        self.epoch = pending["loader"]["epoch"] if resume else loader._next_epoch
        self.start_step = pending["loader"]["epoch_start_step"] if resume else loader._step
        loader._next_epoch = self.epoch + 1  # the next iter() runs the following epoch, as DataLoader
        self.step = loader._step
        loader._plan(self.epoch)
        self.rows = loader._rows(self.rank, self.world)
        if self.rows == 0 and self.world > 1:
            raise ValueError(f"rank {self.rank} of {self.world} has no data: the dataset has "
                             f"{len(loader.dataset) if hasattr(loader.dataset, '__len__') else 'no'} samples")
        self.length = loader.epoch_length(self.rows, self.start_step)
        if self.world > 1 and not curation.predictable():
            # the schedule all-reduces every step: ranks must agree on the epoch's plan first
            plans = gather_ints([self.rows, self.length])
            if any(p != plans[0] for p in plans):
                raise ValueError(f"ranks disagree on the epoch (rows, batches) by rank: {plans}; every rank needs the "
                                 "same dataset length (a node missing files?)")
        seed = loader.seed
        self.rng = None
        if curation.scorer is not None:
            if seed is not None:
                base = seed
            elif loader.generator is not None:  # its seed, without drawing from it (DataLoader's draws stay)
                base = derive_seed(loader.generator.initial_seed(), _CURATION)
            else:
                base = derive_seed(draw_seed(), _CURATION)
            self.rng = Generators(base, self.rank, self.epoch)
            if resume and pending["loader"]["rng"] is not None:  # None: skip_first_batches, fresh draws
                self.rng.load_state_dict(pending["loader"]["rng"])
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(self.epoch)
        b, B, first = loader.batch_size, loader.super_batch_size, loader._step
        chunk = lambda k: B if curation.selecting(first + k) else b  # noqa: E731
        self.pieces = loader._source.start(Epoch(self.epoch, self.rank, self.world, seed, chunk,
                                                 fixed=curation.scorer is None, resume=resume))
        self.buffer, self.exhausted, self.done = RowBuffer(), False, False
        self.started = False  # no batch asked for yet: set_epoch may still re-plan the epoch
        self._last = time.perf_counter()
        loader._live_ref, loader._dropped = weakref.ref(self), None

    def __iter__(self) -> "CuratedLoaderIterator":
        return self

    def __len__(self) -> int:
        return len(self.loader) if self.length is None else self.length

    def __del__(self) -> None:
        loader = self.__dict__.get("loader")
        if loader is not None and not self.__dict__.get("done", True) and loader._live_ref() in (None, self):
            try:
                loader._dropped = self.state_dict()
            except Exception:  # noqa: BLE001 - never raise from a finalizer (e.g. at interpreter exit)
                pass

    def _next_piece(self) -> Optional[tuple]:
        """The next piece with rows (counting the errors pieces report), or None at the end of the epoch."""
        while True:
            try:
                ids, batch, errors = next(self.pieces)
            except StopIteration:
                self.exhausted = True
                return None
            if errors:
                self.loader.stats.count_errors(errors)
            if len(ids):
                return ids, batch

    def __next__(self) -> Any:
        if self.done:
            raise StopIteration
        self.started = True
        loader, stats = self.loader, self.loader.stats
        curation, b, B = loader._curation, loader.batch_size, loader.super_batch_size
        selecting = curation.selecting(self.step)
        t0 = time.perf_counter()
        ids, batch, whole = None, None, True
        if not selecting and loader._source.yields_batches:
            ids, batch = self._next_whole_piece()
        if batch is None:  # rows from the buffer: a super-batch, or a batch re-cut after a schedule change
            need = B if selecting else b
            while self.buffer.n < need and not self.exhausted:
                piece = self._next_piece()
                if piece is not None:
                    self.buffer.put(*piece)
            if self.buffer.n == 0 or (self.buffer.n < need and loader.drop_last):
                self.done = True
                raise StopIteration
            ids, batch, whole = self.buffer.take(min(need, self.buffer.n))
        n = len(ids)
        stats.wait_ms += 1e3 * (time.perf_counter() - t0)
        if selecting:
            k = b if n == B else max(1, round(n * b / B))
            try:
                batch, chosen = curation.select(self._row_ids(ids, batch), batch, k, self.step, self.rng)
            except BaseException:
                self.buffer.unread(ids, batch)  # a failed step consumes nothing: retried, or saved unconsumed
                raise
            stats.trained += k
            ids = index_batch(ids, chosen)  # a tensor of indices, or a list of shard sample ids
        else:
            stats.trained += n
        self.pieces.advance(n)
        loader.ids = ids
        weighted = loader.class_weights is not None or loader.history is not None
        if weighted:
            batch = attach(batch, "weight", self._weights(ids, batch))
        if loader._repin and (selecting or not whole or weighted):
            batch = _pin(batch)  # rows gathered or joined here lost the workers' pinning
        stats.seen += n
        stats.steps += 1
        self.step += 1
        loader._step = self.step
        now = time.perf_counter()
        stats.step_ms += 1e3 * (now - self._last)
        self._last = now
        return batch

    def _weights(self, ids: Tensor, batch: Any) -> Tensor:
        """Per-sample loss weights: the class weights', the history's, or their product."""
        loader, weight = self.loader, None
        if loader.class_weights is not None:
            weight = sample_weights(loader.class_weights, get_field(batch, loader.target_key))
        if loader.history is not None:
            unbias = loader.history.weights(ids)
            weight = unbias if weight is None else weight * unbias.to(weight.device)
        return weight

    def _row_ids(self, ids: Any, batch: Any) -> Any:
        """What the scorer gets as ids: the `id_key` field of the batch when given, else the positions."""
        key = self.loader.id_key
        if key is None:
            return ids
        field = get_field(batch, key)
        if len(field) != len(ids):
            raise ValueError(f"id_key {key!r} holds {len(field)} values for a batch of {len(ids)} rows; "
                             "expected one id per row")
        return field

    def _next_whole_piece(self) -> tuple[Any, Any]:
        """Selection off and nothing buffered: the next piece as the DataLoader collated it, never sliced
        (any collate output passes through). (None, None) when rows must come from the buffer instead."""
        while not self.buffer.n and not self.exhausted:
            piece = self._next_piece()
            if piece is None:
                break
            ids, batch = piece
            n, b = len(ids), self.loader.batch_size
            if n > b:  # a super-batch read ahead of a schedule change: cut it
                self.buffer.put(ids, batch)
                break
            if n < b and self.loader.drop_last:  # a stream's short last batch
                self.pieces.advance(n)
                continue
            return ids, batch
        return None, None

    def state_dict(self) -> dict:
        loader = self.loader
        return loader._state(in_epoch=True, epoch=self.epoch, start_step=self.start_step, rows=self.rows,
                             world=self.world, source=self.pieces.state_dict(),
                             rng=None if self.rng is None else self.rng.state_dict())
