"""Features: encode a dataset or WebDataset shards into a float32 [N, d] array, resumably on disk.

On disk (`out` directory): `features.npy` (memory-mapped), `ids.txt` (keep-list format, see curatedloader/keeplist.py)
and, while an encode is unfinished, `encode.partial.json` recording how many rows are written; all three
keyed in `manifest.json` by the encoder and the source (see cache.py). A run with the same `out`, encoder
and source resumes after the last written row; a finished one is loaded, not recomputed.

Under torch.distributed (e.g. torchrun), each rank encodes a contiguous share of the rows into its own
`part-RRRRR-of-WWWWW/` directory (resumable per rank), and rank 0 merges the parts in id order.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from .cache import RunDir, digest, listing, stable_repr
from .encoders import as_encoder, encoder_identity
from ..keeplist import load_keep, save_keep
from ..shards import sample_id as shard_sample_id

FEATURES, IDS, MARKER = "features.npy", "ids.txt", "encode.partial.json"
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")  # shard fields tried, in order
CHUNK = 65536  # rows per step when a pass over all features must bound its memory


@dataclass
class Features:
    """Encoded samples: `array` float32 [N, d] (memory-mapped when loaded from disk), `ids` per row, an
    array (dataset indices as int64, or shard sample ids as str), so `ids[sel["indices"]]` works for both;
    `key`, when known, a digest of what made them (encoder and source), which keys later stages' outputs."""

    array: np.ndarray
    ids: np.ndarray
    key: str | None = None

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids)

    def __len__(self) -> int:
        return len(self.array)

    @classmethod
    def load(cls, out: str | os.PathLike) -> Features:
        """Features written by `encode(..., out=out)`.

        >>> feats = Features.load("runs/prune")
        """
        out = Path(out)
        if (out / MARKER).exists():
            raise ValueError(f"out: {out} holds an unfinished encode; call encode(..., out=...) again to resume")
        if not (out / FEATURES).is_file():
            raise FileNotFoundError(f"out: no {FEATURES} in {out}")
        entry = RunDir(out).manifest.get(FEATURES)
        return cls(np.load(out / FEATURES, mmap_mode="r"), load_keep(out / IDS), entry and entry["key"])


def as_features(x, name: str = "features") -> np.ndarray:
    """`x` (Features or array-like) as a float32 C-contiguous [N, d] array, checked to be finite.

    >>> as_features(np.ones((4, 8)))  # float64 in, float32 out
    """
    x = x.array if isinstance(x, Features) else x
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise ValueError(f"{name}: expected a floating-point array, got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty [N, d] array, got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    for s in range(0, len(x), CHUNK):
        bad = ~np.isfinite(x[s:s + CHUNK]).all(1)
        if bad.any():
            raise ValueError(f"{name}: non-finite values in row {s + int(np.argmax(bad))}")
    return x


def encode(source, encoder, *, batch_size: int = 256, device=None, out: str | os.PathLike | None = None,
           progress: bool = True, num_workers: int = 0, recompute: bool = True) -> Features:
    """Encode every sample of `source` with `encoder`, in order.

    source: a map-style Dataset (item: an image, or a tuple whose first element is the image; ids are
        the indices), or WebDataset shard url(s) (read twice: once for the keys, once to encode; ids are
        `curatedloader.shards.sample_id(__url__, __key__)`; the image is the first of the jpg/jpeg/png/webp fields).
    encoder: an open_clip config name, `(name, checkpoint_path)` (`(name, None)`: random weights, to try
        the pipeline offline), an open_clip model (its eval transform is applied to PIL images), or any
        callable mapping a batch tensor to [B, d].
    device: where batches are sent (default: the encoder's parameters' device, else CPU).
    out: a directory; features are written memory-mapped there and an interrupted run resumes. Its
        features are keyed by the encoder (config, checkpoint digest) and the source (file listing with
        sizes and mtimes): features made by another encoder or source are recomputed, saying so, or
        with recompute=False refused (ValueError).
    num_workers: DataLoader workers for a map-style Dataset (shards are read in this process).
    Under torch.distributed with `out`, call it on every rank: each encodes a contiguous share of the
    rows into out/part-RRRRR-of-WWWWW/ (resumable per rank) and rank 0 merges the parts in id order.

    >>> feats = encode(ImageFolder("data/train"), ("ViT-B-32", "vit_b_32.pt"), out="runs/prune")
    >>> feats.array.shape, feats.ids[:2]
    ((50000, 512), array([0, 1]))
    """
    if num_workers and not isinstance(source, Dataset):  # workers would interleave the shards out of order
        raise ValueError(f"num_workers: shards are read in order in this process; expected 0, got {num_workers}")
    made_by = {**encoder_identity(encoder), "source": _source_identity(source)}
    key = digest(made_by)
    kw = dict(batch_size=batch_size, device=device, progress=progress, num_workers=num_workers)
    rank, world = _rank_world()
    if out is None or world == 1:
        return _encode_share(source, encoder, out and RunDir(out, recompute=recompute), key, made_by, (0, 1), **kw)
    run = RunDir(out, recompute=recompute)
    entries = run.manifest
    if all(entries.get(name, {}).get("key") == key and (run.path / name).exists() for name in (FEATURES, IDS)) \
            and not (run.path / MARKER).exists():  # merged by an earlier run (checked read-only: ranks race)
        return Features.load(out)
    part = RunDir(run.path / _part(rank, world), recompute=recompute)
    _encode_share(source, encoder, part, digest(key, rank, world), {**made_by, "part": f"{rank} of {world}"},
                  (rank, world), **kw)
    import torch.distributed as dist

    dist.barrier()
    if rank == 0:
        _merge(run, key, made_by, world)
    dist.barrier()
    return Features.load(out)


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _part(rank: int, world: int) -> str:
    return f"part-{rank:05d}-of-{world:05d}"


def _encode_share(source, encoder, run: RunDir | None, key: str, made_by: dict, share: tuple[int, int], *,
                  batch_size: int, device, progress: bool, num_workers: int) -> Features:
    """Encode rank `share[0]`'s contiguous share of `share[1]` of the source's rows into `run` (or memory)."""
    done = 0
    if run is not None:
        fresh = [run.check(name, key, made_by) for name in (FEATURES, IDS, MARKER)]
        if fresh == [True, True, False]:
            return Features.load(run.path)
        if fresh[1] and fresh[2]:  # an unfinished encode of this encoder and source: resume it
            done = json.loads((run.path / MARKER).read_text())["done"] if fresh[0] else 0
        if not done:
            for name in (FEATURES, IDS, MARKER):
                run.discard(name)
    fn, preprocess, module = as_encoder(encoder, device)
    all_ids, rows = _source(source, preprocess)
    if len(all_ids) < share[1]:
        raise ValueError(f"source: {len(all_ids)} samples, fewer than the {share[1]} ranks encoding them")
    lo, hi = (len(all_ids) * share[0] // share[1], len(all_ids) * (share[0] + 1) // share[1])
    ids, n = all_ids[lo:hi], hi - lo
    if device is None:
        p = next(module.parameters(), None) if module is not None else None
        device = p.device if p is not None else "cpu"
    array = None
    if run is not None:
        if not done:
            save_keep(run.path / IDS, ids)
            run.record(IDS, key, made_by)
            _mark(run, 0, key, made_by)
        elif n:
            array = np.load(run.path / FEATURES, mmap_mode="r+")
    loader = DataLoader(rows(lo + done, hi), batch_size=batch_size, num_workers=num_workers)
    desc = "encode" if share[1] == 1 else f"encode rank {share[0]}"
    with tqdm(total=n, initial=done, disable=not progress, desc=desc, unit="sample") as bar, \
            torch.inference_mode(), _eval(module):
        for batch_ids, images in loader:
            f = fn(images.to(device)).float().cpu().numpy()
            if f.ndim != 2 or len(f) != len(images):
                raise ValueError(f"encoder: expected [{len(images)}, d] features, got shape {f.shape}")
            got = batch_ids.tolist() if torch.is_tensor(batch_ids) else list(batch_ids)
            if got != list(ids[done:done + len(f)]):
                raise ValueError(f"source: samples changed since encoding started (at row {lo + done})")
            if not np.isfinite(f).all():
                raise ValueError(f"encoder: non-finite features in rows {lo + done}..{lo + done + len(f) - 1}")
            if array is None:
                shape = (n, f.shape[1])
                array = (np.lib.format.open_memmap(run.path / FEATURES, mode="w+", dtype=np.float32, shape=shape)
                         if run is not None else np.empty(shape, np.float32))
                if run is not None:
                    run.record(FEATURES, key, made_by)
            elif f.shape[1] != array.shape[1]:  # resuming with an encoder that changed under the same key
                raise ValueError(f"encoder: gives {f.shape[1]}-d features; the unfinished encode in {run.path} "
                                 f"holds {array.shape[1]}-d ones: resume with its encoder, or choose another out")
            array[done:done + len(f)] = f
            done += len(f)
            if run is not None:
                array.flush()
                _mark(run, done, key, made_by)
            bar.update(len(f))
    if done != n:
        raise ValueError(f"source: yielded {done} samples, expected {n}")
    if run is None:
        return Features(array, ids, key)
    del array
    run.discard(MARKER)
    return Features.load(run.path)


def _merge(run: RunDir, key: str, made_by: dict, world: int) -> None:
    """Rank 0: concatenate the ranks' parts (contiguous shares, so in id order) into `run`, then drop them."""
    parts = [Features.load(run.path / _part(r, world)) for r in range(world)]
    for name in (FEATURES, IDS, MARKER):
        run.check(name, key, made_by)  # says so when it replaces features of other inputs
    array = np.lib.format.open_memmap(run.path / FEATURES, mode="w+", dtype=np.float32,
                                      shape=(sum(map(len, parts)), parts[0].array.shape[1]))
    start = 0
    for part in parts:
        for s in range(0, len(part), CHUNK):
            block = part.array[s:s + CHUNK]
            array[start + s:start + s + len(block)] = block
        start += len(part)
    array.flush()
    del array
    save_keep(run.path / IDS, np.concatenate([p.ids for p in parts]))
    run.record(FEATURES, key, made_by)
    run.record(IDS, key, made_by)
    for r in range(world):
        shutil.rmtree(run.path / _part(r, world))


def _mark(run: RunDir, done: int, key: str, made_by: dict) -> None:
    tmp = run.path / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"done": done}))
    os.replace(tmp, run.path / MARKER)
    if not done:
        run.record(MARKER, key, made_by)


@contextmanager
def _eval(module):
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    try:
        yield
    finally:
        if was_training:
            module.train()


class _Rows(Dataset):
    """(index, image) for each item of a map-style dataset."""

    def __init__(self, dataset, preprocess):
        self.dataset, self.preprocess = dataset, preprocess

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.dataset[i]
        image = item[0] if isinstance(item, (tuple, list)) else item
        return i, self.preprocess(image) if self.preprocess else image


def _source(source, preprocess):
    """(ids, rows) where rows(start, stop) is a dataset of (id, image) of rows start:stop."""
    if isinstance(source, Dataset) and hasattr(source, "__len__"):
        rows = _Rows(source, preprocess)
        return np.arange(len(source)), lambda start, stop: Subset(rows, range(start, stop))
    if isinstance(source, str) or (isinstance(source, (list, tuple)) and all(isinstance(u, str) for u in source)):
        return _shards(source, preprocess)
    raise ValueError(f"source: expected a map-style Dataset or shard url(s), got {type(source).__name__}")


def _source_identity(source) -> dict:
    """What a source is made of, cheaply (no sample read): an image folder's files with sizes and mtimes,
    shard files likewise, another dataset by its type, length and transform."""
    if isinstance(source, Dataset) and hasattr(source, "__len__"):
        files = getattr(source, "samples", None)  # torchvision's ImageFolder / DatasetFolder
        ident = {"dataset": type(source).__qualname__, "samples": len(source),
                 "transform": stable_repr(getattr(source, "transform", None))}
        if isinstance(files, list):
            ident["files"] = digest(listing(p for p, _ in files), [t for _, t in files])
            ident["root"] = os.fspath(getattr(source, "root", ""))
        return ident
    if isinstance(source, (str, list, tuple)):
        from webdataset.shardlists import expand_urls

        urls = expand_urls(source) if isinstance(source, str) else [u for s in source for u in expand_urls(s)]
        return {"shards": len(urls), "first": urls[0] if urls else None, "files": digest(listing(urls))}
    return {"source": type(source).__qualname__}


def _shards(urls, preprocess):
    import webdataset as wds

    def sample_id(s):
        return shard_sample_id(s["__url__"], s["__key__"])

    def row(s):
        image = next((s[k] for k in IMAGE_KEYS if k in s), None)
        if image is None:
            raise ValueError(f"source: sample {sample_id(s)} has none of the fields {IMAGE_KEYS}")
        return sample_id(s), preprocess(image) if preprocess else image

    ids = [sample_id(s) for s in wds.WebDataset(urls, shardshuffle=False)]
    decode = "pil" if preprocess else "torchrgb"
    return ids, lambda start, stop: wds.WebDataset(urls, shardshuffle=False).slice(start, stop).decode(decode).map(row)
