"""Samples/s of CuratedLoader.from_shards (selection off) vs a raw wds.WebLoader, side by side.

Both read the same shards with the same shuffle buffer, decode, to_tuple, collate, batch size and
workers; runs alternate so that both see the same machine load. Prints a markdown table; rows go to
OUT/shards_throughput.jsonl.

    python benchmarks/shards_throughput.py --workers 2 --batch-size 64 --shards 8 --per-shard 2000
"""
from __future__ import annotations

import argparse
import statistics
import tempfile

import numpy as np
import webdataset as wds
from torch.utils.data._utils.collate import default_collate

from curatedloader import CuratedLoader
from curatedloader.bench import banner, context, interleaved, output_args, throughput, write_rows
from curatedloader.shards import write_shards


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--per-shard", type=int, default=2000)
    p.add_argument("--shape", type=int, nargs="+", default=[3, 32, 32], help="uint8 array per sample (.npy)")
    p.add_argument("--shuffle-buffer", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    output_args(p, "shards_throughput")
    args = p.parse_args()
    print(banner())
    with tempfile.TemporaryDirectory() as root:
        rng = np.random.default_rng(0)
        n = args.shards * args.per_shard
        data = ((rng.integers(0, 256, args.shape, dtype=np.uint8), i % 1000) for i in range(n))
        urls = write_shards(data, f"{root}/bench-%04d.tar", fields=("npy", "cls"), maxcount=args.per_shard)
        b, w, buf = args.batch_size, args.workers, args.shuffle_buffer
        raw = wds.WebLoader(
            wds.WebDataset(urls, shardshuffle=len(urls), seed=0, empty_check=False)
            .shuffle(buf, initial=buf).decode("torch").to_tuple("npy", "cls").batched(b, collation_fn=default_collate),
            batch_size=None, num_workers=w,
        )
        ours = CuratedLoader.from_shards(urls, b, decode="torch", to_tuple=("npy", "cls"), num_workers=w,
                                         shuffle_buffer=buf)
        rows = lambda batch: len(batch[0])  # noqa: E731
        results = interleaved({"raw wds.WebLoader": lambda: throughput(raw, rows),
                               "CuratedLoader.from_shards": lambda: throughput(ours, rows)}, args.repeats)
    base = statistics.median(results["raw wds.WebLoader"])
    print(f"{n} samples of uint8 {tuple(args.shape)} + cls in {args.shards} shards, batch {b}, {w} workers, "
          f"shuffle buffer {buf}, median of {args.repeats} epochs\n")
    print("| loader | samples/s (median) | runs | vs raw |\n|---|---|---|---|")
    for name, runs in results.items():
        med = statistics.median(runs)
        print(f"| {name} | {med:,.0f} | {', '.join(f'{r:,.0f}' for r in runs)} | {med / base:.2f}x |")
    row = {"samples": n, "shards": args.shards, "batch_size": b, "workers": w, "shuffle_buffer": buf,
           "repeats": args.repeats, "raw_samples_s": base,
           "from_shards_samples_s": statistics.median(results["CuratedLoader.from_shards"]),
           "raw_runs": results["raw wds.WebLoader"], "from_shards_runs": results["CuratedLoader.from_shards"]}
    row["ratio"] = row["from_shards_samples_s"] / base
    print("rows:", write_rows(args.out / "shards_throughput.jsonl", [{**context("shards_throughput"), **row}]))


if __name__ == "__main__":
    main()
