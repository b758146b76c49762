"""README's pruning and shard-writing snippets run as written, on a tiny image folder made here."""
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curatedloader import cli
from curatedloader.keeplist import load_keep

README = Path(__file__).resolve().parents[1] / "README.md"


def section(title: str) -> str:
    """The text of README's section (## or ###) starting with `title`, up to the next heading of its level."""
    lines = README.read_text().split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    level, fenced = len(title.split(" ")[0]), False
    for end in range(start + 1, len(lines)):
        fenced ^= lines[end].startswith("```")
        if not fenced and re.match(rf"#{{1,{level}}} ", lines[end]):
            break
    else:
        end = len(lines)
    return "\n".join(lines[start:end])


def snippets(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def commands(bash: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments dropped."""
    return [shlex.split(line, comments=True) for line in bash.replace("\\\n", " ").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A cwd holding data/train: two classes of six random 48x40 images (one an exact copy)."""
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "data" / "train" / cls).mkdir(parents=True)
        for i in range(6):
            image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / "data" / "train" / cls / f"{i}.png")
    (tmp_path / "data" / "train" / "cat" / "5.png").write_bytes((tmp_path / "data" / "train" / "cat" / "0.png").read_bytes())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_pruning_snippets_run(workdir):
    text = section("## Offline coreset pruning")
    runnable = [c for b in snippets(text, "bash") for c in commands(b) if not any("ckpt/" in a for a in c)]
    assert [c[:2] for c in runnable] == [["curatedloader", "prune"]]  # the offline trial
    for argv in runnable:
        assert cli.main(argv[1:] + ["--no-progress"]) == 0
    assert len(load_keep(workdir / "runs" / "try" / "keep.txt")) == 6
    blocks = snippets(text, "python")
    assert len(blocks) == 2
    scope: dict = {}
    for block in blocks:  # the GroupDRO block continues from the first one
        exec(compile(block, "README.md", "exec"), scope)
    keep = load_keep(workdir / "runs" / "prune" / "keep.txt")
    assert len(keep) >= 1 and set(keep.tolist()) <= set(range(12))
    assert scope["dro"].steps == 1 and abs(float(scope["dro"].weights.sum()) - 1) < 1e-6


def test_readme_shard_writing_snippets_run(workdir):
    (workdir / "images").symlink_to(workdir / "data" / "train")
    text = section("### Writing shards")
    for block in snippets(text, "python"):
        exec(compile(block, "README.md", "exec"), {})
    for argv in (c for b in snippets(text, "bash") for c in commands(b)):
        assert argv[:2] == ["curatedloader", "shards"] and cli.main(argv[1:]) == 0
    assert sorted(p.name for p in (workdir / "shards").iterdir()) == ["train-000000.tar"]
    assert (workdir / "data" / "train-000000.tar").is_file()
