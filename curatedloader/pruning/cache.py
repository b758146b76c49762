"""A run directory as a content-addressed cache: each output file is recorded in `manifest.json` with the
key of what made it (a digest of its inputs and parameters) and a readable account of them. An output
whose key no longer matches is recomputed, saying why, or refused (`recompute=False`); outputs of an
earlier run that this run does not make are removed, so no stale file sits beside new ones.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

MANIFEST = "manifest.json"


def digest(*parts) -> str:
    """A stable hex key of JSON-able `parts` (dict order does not matter).

    >>> digest({"eps": 0.05}, "abc") == digest({"eps": 0.05}, "abc")
    True
    """
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (read in 16 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return h.hexdigest()


def listing(paths) -> list[list]:
    """[path, size, mtime] of each local file (a remote url stands for itself): what a source was made of."""
    out = []
    for p in paths:
        p = os.fspath(p)
        st = os.stat(p) if os.path.isfile(p) else None
        out.append([p, st.st_size, st.st_mtime_ns] if st else [p])
    return out


def stable_repr(obj) -> str:
    """repr without memory addresses, so a transform's description is the same in every run."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


def log(message: str) -> None:
    print(f"prune: {message}", file=sys.stderr, flush=True)


class RunDir:
    """The output directory of a pruning run; see the module docstring.

    >>> run = RunDir("runs/prune")
    >>> key = digest(features_key, "prototype")
    >>> if not run.check("scores.npy", key, {"score": "prototype"}):
    ...     np.save(run.path / "scores.npy", score(feats)); run.record("scores.npy", key, {"score": "prototype"})
    """

    def __init__(self, path: str | os.PathLike, *, recompute: bool = True):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.recompute = recompute

    @property
    def manifest(self) -> dict[str, dict]:
        """{file name: {"key", "made_by"}}, read afresh: encode() and the CLI record into the same file."""
        m = self.path / MANIFEST
        return json.loads(m.read_text()) if m.is_file() else {}

    def check(self, name: str, key: str, made_by: dict) -> bool:
        """True when `name` exists and was made by `key`. A file made by something else is removed, saying
        what changed; with recompute=False that raises a ValueError instead."""
        entry, file = self.manifest.get(name), self.path / name
        if not file.exists():
            self._forget(name)
            return False
        if entry is not None and entry["key"] == key:
            return True
        why = _changes(entry["made_by"], made_by) if entry else "no record of what made it"
        if not self.recompute:
            raise ValueError(f"out: {file} is stale ({why}); it would be recomputed, but recompute is off "
                             "(--no-recompute): choose another out or allow recomputing")
        log(f"{name} is stale ({why}): recomputing")
        self.discard(name)
        return False

    def record(self, name: str, key: str, made_by: dict) -> None:
        """Record that `name` (already written) was made by `key`."""
        self._write({**self.manifest, name: {"key": key, "made_by": made_by}})

    def remove_except(self, names, known) -> None:
        """Remove each of the `known` output names present in the directory but not among `names`
        (outputs of an earlier run that this run does not make), saying so."""
        for name in known:
            file = self.path / name
            if name not in names and file.exists():
                entry = self.manifest.get(name)
                made = f" (made by {_brief(entry['made_by'])})" if entry else ""
                log(f"removed {name} of an earlier run{made}: this run does not make it")
                self.discard(name)

    def discard(self, name: str) -> None:
        """Remove `name` and its record, if present."""
        (self.path / name).unlink(missing_ok=True)
        self._forget(name)

    def _forget(self, name: str) -> None:
        manifest = self.manifest
        if manifest.pop(name, None) is not None:
            self._write(manifest)

    def _write(self, manifest: dict) -> None:
        tmp = self.path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str))
        os.replace(tmp, self.path / MANIFEST)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _changes(old: dict, new: dict) -> str:
    old, new = _flat(old), _flat(new)
    keys = sorted(set(old) | set(new))
    diff = [f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(diff) or "made by other inputs"


def _brief(made_by: dict) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in sorted(_flat(made_by).items()))


def _short(value) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."
