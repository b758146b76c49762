"""Every python block of README.md runs as written: each in a fresh interpreter, in an empty folder."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def heading(block: str) -> str:
    """The README section a block stands in, for the test id."""
    text = README.read_text(encoding="utf-8")
    before = re.sub(r"^```.*?^```", "", text[: text.index(block)], flags=re.S | re.M)  # comments in code aren't headings
    titles = re.findall(r"^#+ (.+)$", before, re.M)
    return re.sub(r"\W+", "-", titles[-1] if titles else "top").strip("-").lower()


# sections whose blocks need files made for them run in their own test, on those files
ELSEWHERE = {"offline-coreset-pruning-curatedloader-pruning": "tests/test_pruning_readme.py (a tiny image folder)"}
HERE = [(i, b) for i, b in enumerate(BLOCKS) if heading(b) not in ELSEWHERE]


def test_readme_has_python_blocks():
    assert len(HERE) >= 5 and all(any(heading(b) == h for b in BLOCKS) for h in ELSEWHERE)


@pytest.mark.slow
@pytest.mark.parametrize("block", [b for _, b in HERE], ids=[f"{i}-{heading(b)}" for i, b in HERE])
def test_readme_block_runs_as_written(block, tmp_path):
    env = {**os.environ, "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"README block failed:\n{block}\n--- stderr ---\n{done.stderr[-3000:]}"
