"""On a CUDA GPU: tests/test_kernels_launch.py again, on CUDA tensors with the real compiler (not the
interpreter), so every launch in the launch tables and the autotuner run as they will in training."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import curatedloader

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_launch_tests_pass_compiled_on_the_gpu():
    root = str(Path(curatedloader.__file__).parents[1])  # this checkout, not an installed copy
    env = {**os.environ, "TRITON_INTERPRET": "0", "CURATEDLOADER_TEST_DEVICE": "cuda",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider",
                          str(Path(__file__).with_name("test_kernels_launch.py"))],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " skipped" not in run.stdout.splitlines()[-1]  # the GPU-only autotuning tests ran too
