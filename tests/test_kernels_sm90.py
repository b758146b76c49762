"""Every launch the Triton launchers may pick compiles for an H100 (sm_90) with the real compiler, offline,
without heavy register spills.

This catches what the interpreter cannot (tl.dot shape and dtype rules, spills); it does not replace
running the tests on a GPU. The cases come from the launchers' launch tables (tests/sm90_compile.py).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import curatedloader

pytest.importorskip("triton.backends.nvidia", reason="this triton build has no NVIDIA backend")

from sm90_compile import cases  # noqa: E402  (beside this file; needs triton's NVIDIA backend)


def test_kernels_compile_for_sm90_without_heavy_spills():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the real compiler, not numpy
    root = str(Path(curatedloader.__file__).parents[1])  # this checkout, not an installed copy
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, str(Path(__file__).with_name("sm90_compile.py"))], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    compiled = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(compiled) == len(list(cases()))
    for case in compiled:
        assert case["stack"] <= 32, case  # at most a few spilled words
        assert case["shared"] <= 227 * 1024, case
    assert all(c["wgmma"] for c in compiled if c["case"].startswith(("linear_cross_entropy bf16", "sigmoid_pair_sums")))
