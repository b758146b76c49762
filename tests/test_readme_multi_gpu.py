"""README's "Multiple GPUs" examples run under `torchrun --nproc_per_node 2` on CPU (gloo): every rank
trains its share and rank 0 reports the sums over both ranks. (tests/test_readme.py runs every README
block as one plain process.)"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
SECTION = README[README.index("## Multiple GPUs"):]
SECTION = SECTION[: SECTION.index("\n## ", 1)]
BLOCKS = dict(zip(("torchrun", "lightning", "accelerate"), re.findall(r"^```python\n(.*?)^```", SECTION, re.S | re.M)))
# What rank 0 prints: every rank's share summed (1024 rows, half of each rank's 512 trained each epoch)
EXPECTED = {"torchrun": "2 rank(s), 1024 samples trained of 2048 loaded",
            "lightning": "8 batches an epoch, 1024 samples trained",
            "accelerate": "1024 samples trained on 2 process(es)"}


def test_the_section_has_the_three_examples():
    assert len(BLOCKS) == 3 and all(BLOCKS.values())


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_under_torchrun_with_two_processes(name, tmp_path):
    pytest.importorskip({"torchrun": "torch", "lightning": "lightning", "accelerate": "accelerate"}[name])
    (tmp_path / "train.py").write_text(BLOCKS[name])
    env = {**os.environ, "ACCELERATE_USE_CPU": "true"}  # Accelerate joins CPU processes when told (launch --cpu)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "train.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(EXPECTED[name]) == 1, done.stdout
