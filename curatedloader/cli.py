"""The `curatedloader` command: demo, shards, prune, bench."""
from __future__ import annotations

import importlib
import sys

COMMANDS = {  # name -> (module, help); each module's main(argv) parses its own arguments
    "demo": ("curatedloader.demo", "train on noisy digits with Uniform, TopK and JEST selection"),
    "shards": ("curatedloader.shards", "write WebDataset shards from a dataset or a folder"),
    "prune": ("curatedloader.pruning.cli", "offline coreset pruning: encode, score, dedup, keep-list"),
    "bench": ("curatedloader.bench_overhead", "time each stage of selection on your setup: load, score, draw, gather, train"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        asked = bool(argv) and argv[0] in ("-h", "--help")
        out = sys.stdout if asked else sys.stderr  # usage on error goes to stderr, as argparse does
        if argv and not asked:
            print(f"curatedloader: unknown command {argv[0]!r}", file=out)
        print("usage: curatedloader {" + ",".join(COMMANDS) + "} ...\n", file=out)
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:8} {text}", file=out)
        return 0 if asked else 2
    module, _ = COMMANDS[argv[0]]
    return importlib.import_module(module).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
