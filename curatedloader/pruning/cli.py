"""`curatedloader prune`: encode, score, deduplicate and select, writing everything to --out."""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .cache import RunDir, digest, listing
from .dedup import near_duplicates
from .features import FEATURES, IDS, MARKER, Features, encode
from .profile import PeakRSS
from ..keeplist import save_keep
from .scoring import METHODS, score
from .select import STRATEGIES, select

ENCODE_OUTPUTS = (FEATURES, IDS, MARKER)
OUTPUTS = ("scores.npy", "drop.npy", "groups.npy", "keep.txt", "weights.npy", "summary.json")

DESCRIPTION = """\
Prune a dataset offline: encode it with an open_clip image encoder, score how typical each sample is,
optionally drop SemDeDup near-duplicates, and keep a coreset.

SOURCE is one of:
  DIR          a directory of images, one subfolder per class (torchvision ImageFolder); the classes
               are the groups for exact per-class quotas; ids are ImageFolder indices
  FILE.npy     precomputed float features [N, d] (no encoding); ids are row numbers
  URLS         WebDataset shard url(s), brace patterns allowed ("data/train-{000000..000099}.tar");
               ids are "<shard file name>/<__key__>" (curatedloader.shards.sample_id)

Writes to OUT: features.npy + ids.txt (when encoding; an interrupted run resumes), scores.npy,
drop.npy (with --dedup), groups.npy (when there are groups), keep.txt (the keep-list: one id per
line after a header, for CuratedLoader(subset=...) / from_shards(keep=...)), weights.npy (per kept
sample, in keep.txt order), summary.json (counts, and time and peak memory per stage) and
manifest.json. OUT is a cache: manifest.json keys each output by what made it (encoder config and
checkpoint sha256 or random init, the source's files with sizes and mtimes, the stage's parameters).
A rerun reuses outputs whose inputs are unchanged, recomputes the others (saying why; refused with
--no-recompute), and removes outputs of an earlier run that this run does not make (e.g. drop.npy
when --dedup is off now).

No weights at hand? --random-init encodes with random weights: everything runs, nothing is chosen
for a reason; use it to try the pipeline.

Under torchrun (torchrun --nproc-per-node 4 -m curatedloader.cli prune ...), each rank encodes a
contiguous share of SOURCE into OUT/part-RRRRR-of-WWWWW/ (resumable per rank); rank 0 merges the
parts in id order and runs the later stages alone."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of `curatedloader prune`; `argv` excludes the "prune" word. Returns the exit code.

    >>> main(["data/train", "--encoder", "ViT-B-32", "--random-init", "--out", "runs/try"])
    0
    """
    args = _parser().parse_args(argv)
    try:
        _prune(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"curatedloader prune: error: {e}", file=sys.stderr)
        return 2
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="curatedloader prune", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SOURCE", help="image directory, features .npy, or shard url(s)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--encoder", help="open_clip config name (e.g. ViT-B-32) or path of a JSON model config")
    p.add_argument("--checkpoint", help="local open_clip checkpoint file (to encode; or --random-init)")
    p.add_argument("--random-init", action="store_true",
                   help="encode with random weights (seed 0) instead of a checkpoint: try the pipeline offline")
    p.add_argument("--score", choices=sorted(METHODS), default="prototype", help="typicality score")
    p.add_argument("--k", type=int, help="centroids (prototype) or neighbour rank (knn); default per method")
    p.add_argument("--keep", type=_keep, default=0.5,
                   help="fraction in (0, 1] (has a '.') or count of the candidates to keep (default 0.5)")
    p.add_argument("--strategy", choices=STRATEGIES, default="ccs", help="easy, hard or ccs (default)")
    p.add_argument("--dedup", type=_eps, metavar="EPS",
                   help="first drop near-duplicates: cosine similarity > 1 - EPS within k-means clusters")
    p.add_argument("--groups", help=".npy of per-sample class labels (default: an image directory's classes)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-workers", type=int, default=0, help="image loading workers (image directory only)")
    p.add_argument("--device", help="encoder device, e.g. cuda (default: cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-recompute", action="store_true",
                   help="refuse (exit 2) rather than recompute an output of OUT made by other inputs or parameters")
    return p


def _keep(text: str) -> float | int:
    value = float(text) if "." in text else int(text)
    if not (0 < value <= 1 if isinstance(value, float) else value >= 0):
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1] or a count >= 0, got {text}")
    return value


def _eps(text: str) -> float:
    if not 0 <= float(text) < 1:
        raise argparse.ArgumentTypeError(f"expected 0 <= EPS < 1, got {text}")
    return float(text)


def _prune(args) -> None:
    _check(args)
    run = RunDir(args.out, recompute=not args.no_recompute)
    profile: dict[str, dict] = {}
    with _ranks(args), PeakRSS() as m:
        feats, groups, groups_from = _features(args, run)
    if int(os.environ.get("RANK", 0)):
        return  # under torchrun the ranks encode their shares; rank 0 merges them and goes on alone
    profile["encode"] = m.row()
    if args.groups:
        groups, groups_from = np.load(_file(args.groups, "--groups")), {"groups": listing([args.groups])}
    made = {"scores.npy", "keep.txt", "weights.npy", "summary.json"} | ({"drop.npy"} if args.dedup is not None else set()) \
        | ({"groups.npy"} if groups is not None else set())
    run.remove_except(made, OUTPUTS)
    n = len(feats)
    gkey = digest(np.asarray(groups).tolist()) if groups is not None else None
    if groups is not None:
        _cached(run, "groups.npy", {**groups_from, "labels": gkey}, lambda: np.asarray(groups), profile)
    scores = _cached(run, "scores.npy", {"features": feats.key, "score": args.score, "k": args.k, "seed": args.seed,
                                         "groups": gkey},
                     lambda: score(feats, args.score, groups=groups, k=args.k, seed=args.seed,
                                   progress=not args.no_progress), profile, f"scoring {n} samples ({args.score})")
    drop = None
    if args.dedup is not None:
        drop = _cached(run, "drop.npy", {"features": feats.key, "eps": args.dedup, "seed": args.seed},
                       lambda: near_duplicates(feats, eps=args.dedup, seed=args.seed, progress=not args.no_progress),
                       profile, f"finding near-duplicates (eps={args.dedup})")
    with PeakRSS() as m:
        sel = select(scores, args.keep, strategy=args.strategy, groups=groups, drop=drop, seed=args.seed)
    profile["select"] = m.row()
    made_by = {"scores": run.manifest["scores.npy"]["key"], "drop": drop is not None and run.manifest["drop.npy"]["key"],
               "keep": args.keep, "strategy": args.strategy, "seed": args.seed}
    key = digest(made_by)
    _save(run.path / "weights.npy", sel["weights"])
    run.record("weights.npy", key, made_by)
    save_keep(run.path / "keep.txt", feats.ids[sel["indices"]])
    run.record("keep.txt", key, made_by)
    summary = {"samples": n, "kept": len(sel["indices"]), "near_duplicates": int(drop.sum()) if drop is not None else 0,
               "score": args.score, "strategy": args.strategy, "keep": args.keep, "seed": args.seed,
               "stages": profile}
    (run.path / "summary.json").write_text(json.dumps(summary, indent=1))
    run.record("summary.json", key, made_by)
    _log(f"kept {summary['kept']} of {n} ({summary['near_duplicates']} near-duplicates dropped) -> {run.path / 'keep.txt'}")


def _cached(run: RunDir, name: str, made_by: dict, compute, profile: dict, message: str | None = None) -> np.ndarray:
    """The array in `name` when it was made by `made_by`; else computed (logging `message`), saved, recorded."""
    key = digest(made_by)
    stage = name.removesuffix(".npy")
    if run.check(name, key, made_by):
        if message:
            _log(f"{message}: reusing {name} (same inputs)")
        profile[stage] = {"cached": True}
        return np.load(run.path / name)
    if message:
        _log(message)
    with PeakRSS() as m:
        array = compute()
    profile[stage] = m.row()
    _save(run.path / name, array)
    run.record(name, key, made_by)
    return array


def _features(args, run: RunDir) -> tuple[Features, np.ndarray | None, dict]:
    """(features, the image folder's classes or None, what the classes came from)."""
    if args.source.endswith(".npy"):
        array = np.load(args.source, mmap_mode="r")
        if Path(args.source).resolve() != (run.path / FEATURES).resolve():  # unless they are the source
            run.remove_except((), ENCODE_OUTPUTS)  # features of an earlier encode here are not these
        return Features(array, np.arange(len(array)), digest(listing([args.source]))), None, {}
    if args.random_init:
        _log(f"encoder {args.encoder} with random weights (--random-init): the pipeline runs, its choices mean nothing")
    encoder = (args.encoder, args.checkpoint)
    kw = dict(batch_size=args.batch_size, out=run.path, progress=not args.no_progress, device=args.device,
              recompute=run.recompute)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "encoder .*: no checkpoint, using random weights")  # said above
        if os.path.isdir(args.source):
            from torchvision.datasets import ImageFolder

            dataset = ImageFolder(args.source)
            _log(f"encoding {len(dataset)} images of {len(dataset.classes)} classes from {args.source}")
            feats = encode(dataset, encoder, num_workers=args.num_workers, **kw)
            return feats, np.array(dataset.targets), {"groups": f"classes of {args.source}"}
        _log(f"encoding shards {args.source}")
        return encode(args.source, encoder, **kw), None, {}


@contextmanager
def _ranks(args):
    """Under torchrun (WORLD_SIZE > 1): a process group for encoding, each rank on its own GPU if cuda."""
    if int(os.environ.get("WORLD_SIZE", 1)) == 1:
        yield
        return
    import torch.distributed as dist

    cuda = (args.device or "").startswith("cuda")
    if cuda:
        args.device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def _check(args) -> None:
    """Argument errors, before anything is written."""
    if args.source.endswith(".npy"):
        _file(args.source, "SOURCE")
        if args.encoder or args.checkpoint or args.random_init:
            raise ValueError("--encoder, --checkpoint, --random-init: SOURCE is a features .npy, nothing to encode")
        return
    if not args.encoder or bool(args.checkpoint) == args.random_init:
        raise ValueError("--encoder and one of --checkpoint or --random-init: needed to encode SOURCE "
                         "(or give a features .npy)")
    if args.checkpoint:
        _file(args.checkpoint, "--checkpoint")


def _file(path: str, name: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}: no file at {path}")
    return path


def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def _log(message: str) -> None:
    print(f"prune: {message}", file=sys.stderr, flush=True)
