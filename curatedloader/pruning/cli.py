"""`curatedloader prune`: encode, score, deduplicate and select, writing everything to --out."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from .dedup import near_duplicates
from .encoders import load_encoder
from .features import Features, encode
from ..keeplist import save_keep
from .scoring import METHODS, score
from .select import STRATEGIES, select

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
sample, in keep.txt order) and summary.json."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of `curatedloader prune`; `argv` excludes the "prune" word. Returns the exit code.

    >>> main(["data/train", "--encoder", "ViT-B-32", "--checkpoint", "vit.pt", "--out", "runs/prune"])
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
    p.add_argument("--checkpoint", help="local open_clip checkpoint file (needed to encode)")
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    out = Path(args.out)
    feats, groups = _features(args, out)
    if args.groups:
        groups = np.load(_file(args.groups, "--groups"))
    n = len(feats)
    _log(f"scoring {n} samples ({args.score})")
    scores = score(feats, args.score, groups=groups, k=args.k, seed=args.seed)
    _save(out / "scores.npy", scores)
    drop = None
    if args.dedup is not None:
        _log(f"finding near-duplicates (eps={args.dedup})")
        drop = near_duplicates(feats, eps=args.dedup, seed=args.seed)
        _save(out / "drop.npy", drop)
    if groups is not None:
        _save(out / "groups.npy", np.asarray(groups))
    sel = select(scores, args.keep, strategy=args.strategy, groups=groups, drop=drop, seed=args.seed)
    _save(out / "weights.npy", sel["weights"])
    save_keep(out / "keep.txt", feats.ids[sel["indices"]])
    summary = {"samples": n, "kept": len(sel["indices"]), "near_duplicates": int(drop.sum()) if drop is not None else 0,
               "score": args.score, "strategy": args.strategy, "keep": args.keep, "seed": args.seed}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _log(f"kept {summary['kept']} of {n} ({summary['near_duplicates']} near-duplicates dropped) -> {out / 'keep.txt'}")


def _features(args, out: Path) -> tuple[Features, np.ndarray | None]:
    if args.source.endswith(".npy"):
        array = np.load(_file(args.source, "SOURCE"), mmap_mode="r")
        out.mkdir(parents=True, exist_ok=True)
        return Features(array, np.arange(len(array))), None
    if not args.encoder or not args.checkpoint:
        raise ValueError("--encoder and --checkpoint: both are needed to encode SOURCE (or give a features .npy)")
    encoder = load_encoder(args.encoder, args.checkpoint, device=args.device)
    kw = dict(batch_size=args.batch_size, out=out, progress=not args.no_progress)
    if os.path.isdir(args.source):
        from torchvision.datasets import ImageFolder

        dataset = ImageFolder(args.source)
        _log(f"encoding {len(dataset)} images of {len(dataset.classes)} classes from {args.source}")
        return encode(dataset, encoder, num_workers=args.num_workers, **kw), np.array(dataset.targets)
    _log(f"encoding shards {args.source}")
    return encode(args.source, encoder, **kw), None


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
