"""Launch settings: the launchers run what their launch tables hold, every GPU launch computes the right
result (run here under the interpreter), the per-bucket autotuner keeps the fastest launch, and the package
works without triton installed."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import curatedloader
from curatedloader.kernels import (
    cross_entropy_kernel,
    diffusion_kernel,
    launch,
    linear_cross_entropy_kernel,
    sigmoid_pair_sums_kernel,
)
from curatedloader.kernels.functional import (
    diffusion_learnability,
    linear_cross_entropy,
    per_sample_cross_entropy,
    sigmoid_pair_sums,
)
from curatedloader.kernels.launch import Launch, run_fastest

# tests/test_kernels_gpu.py reruns this file on a GPU with the real compiler (CURATEDLOADER_TEST_DEVICE=cuda).
DEVICE = os.environ.get("CURATEDLOADER_TEST_DEVICE", "cpu")
DTYPES = [torch.float32, torch.bfloat16]
OPS = {  # op: its kernel module and its launch table's chooser (interpret, 16-bit) at the shapes of `case`
    "cross_entropy": (cross_entropy_kernel, lambda i, _: cross_entropy_kernel.cross_entropy_launches(37, 3001, i)),
    "diffusion": (diffusion_kernel, lambda i, _: diffusion_kernel.diffusion_launches(5, 3 * 7 * 9, i)),
    "linear_cross_entropy": (linear_cross_entropy_kernel, lambda i, sixteen_bit:
                             linear_cross_entropy_kernel.linear_cross_entropy_launches(sixteen_bit, i)),
    "sigmoid_pair_sums": (sigmoid_pair_sums_kernel, lambda i, sixteen_bit:
                          sigmoid_pair_sums_kernel.sigmoid_pair_sums_launches(sixteen_bit, i)),
}


def case(op, dtype):
    """The op on small odd inputs of ``dtype`` (one strided) on DEVICE, as a function of impl."""
    g = torch.Generator().manual_seed(0)

    def to(*xs):
        return [x.to(DEVICE, dtype) for x in xs]

    if op == "cross_entropy":
        logits, = to(3 * torch.randn(3001, 37, generator=g))
        target = torch.randint(0, 3001, (37,), generator=g).to(DEVICE)
        return lambda impl: per_sample_cross_entropy(logits.T, target, impl=impl)
    if op == "diffusion":
        x = to(*torch.randn(3, 5, 3, 7, 9, generator=g))
        return lambda impl: diffusion_learnability(*x, impl=impl)
    if op == "linear_cross_entropy":
        hidden, weight = to(torch.randn(130, 100, generator=g), torch.randn(257, 100, generator=g) / 5)
        target = torch.randint(0, 257, (130,), generator=g).to(DEVICE)
        return lambda impl: linear_cross_entropy(hidden, weight.T.contiguous().T, target, impl=impl)
    emb = to(*F.normalize(torch.randn(4, 150, 24, generator=g), dim=-1))
    chosen = torch.randperm(150, generator=g)[:70].to(DEVICE)
    params = dict(learner_scale=10.0, learner_bias=-4.0, reference_scale=7.0, reference_bias=-2.5)
    return lambda impl: sigmoid_pair_sums(*emb, chosen, impl=impl, **params)


def assert_matches(got, want, what):
    for g, w in zip(got if isinstance(got, tuple) else [got], want if isinstance(want, tuple) else [want]):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4, msg=lambda m: f"{what}: {m}")


def spy(monkeypatch, module, launches=None):
    """Record the launches the module's launcher offers; run the first (or the first of ``launches``)."""
    offered = []

    def fake_run_fastest(op, bucket, table_launches, run):
        offered.append(table_launches)
        return run((launches or table_launches)[0])

    monkeypatch.setattr(module, "run_fastest", fake_run_fastest)
    return offered


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_launcher_offers_the_launches_of_its_table(op, dtype, monkeypatch):
    """The launcher takes its launches from the table; under the interpreter that is one pinned launch."""
    module, launches = OPS[op]
    offered = spy(monkeypatch, module)
    case(op, dtype)("triton")
    table = list(launches(launch.interpreting(), dtype != torch.float32))
    assert offered and all(list(o) == table for o in offered)
    assert len(table) == 1 or not launch.interpreting()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_every_gpu_launch_matches_the_reference(op, dtype, monkeypatch):
    """The GPU tables' launches are compiled offline (sm90 test); here each one runs (under the interpreter
    on CPU, compiled on a GPU) at odd shapes with a strided input."""
    module, launches = OPS[op]
    run = case(op, dtype)
    want = run("torch")
    gpu = list(launches(False, dtype != torch.float32))
    assert len(gpu) > 1  # several launches for the autotuner to choose from
    for one in gpu:
        spy(monkeypatch, module, [one])
        assert_matches(run("triton"), want, one)


@pytest.mark.skipif(DEVICE != "cuda", reason="autotuning times launches on a GPU")
@pytest.mark.parametrize("op", OPS)
def test_autotuned_launch_matches_the_reference(op, monkeypatch):
    monkeypatch.setattr(launch, "_FASTEST", {})
    run = case(op, torch.bfloat16)
    want = run("torch")
    assert_matches(run("triton"), want, "autotuned")  # times the launches, keeps the fastest
    assert_matches(run("triton"), want, "kept")
    assert any(key[0] == op for key in launch._FASTEST)


def test_run_fastest_times_each_launch_once_per_bucket(monkeypatch):
    import triton.testing

    times = {1: 3.0, 2: 1.0, 3: 2.0}  # by num_warps
    ran = []

    def run(one):
        ran.append(one.num_warps)
        return one.num_warps

    monkeypatch.setattr(triton.testing, "do_bench", lambda fn, **kwargs: times[fn()])
    monkeypatch.setattr(launch, "_FASTEST", {})
    launches = [Launch({"BLOCK": 16}, num_warps=w) for w in (1, 2, 3)]
    assert run_fastest("op", ("bucket", 1), launches, run) == 2
    assert ran == [1, 2, 3, 2]  # each timed once, then the fastest
    assert run_fastest("op", ("bucket", 1), launches, run) == 2 and ran[4:] == [2]  # kept, not timed again
    times[1] = 0.5
    assert run_fastest("op", ("bucket", 2), launches, run) == 1  # a new bucket is timed afresh
    assert run_fastest("op", ("bucket", 1), launches, run) == 2
    ran.clear()
    assert run_fastest("op", ("bucket", 3), launches[2:], run) == 3 and ran == [3]  # a single launch runs untimed


NO_TRITON = textwrap.dedent("""
    import sys
    sys.modules["triton"] = None  # `import triton` now fails, as where triton is not installed
    import torch
    import curatedloader
    from curatedloader.kernels import (
        diffusion_learnability, linear_cross_entropy, per_sample_cross_entropy, sigmoid_pair_sums)
    from curatedloader.scoring import CrossEntropyScorer, DiffusionScorer, PairScores, SigLIPScorer

    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    scores = CrossEntropyScorer(torch.nn.Linear(4, 3), reference=torch.nn.Linear(4, 3)).score((x, y))
    assert scores.learner.shape == scores.reference.shape == (6,)
    assert per_sample_cross_entropy(torch.randn(6, 3), y).shape == (6,)
    assert linear_cross_entropy(x, torch.randn(3, 4), y).shape == (6,)
    assert diffusion_learnability(x, x + 1, x - 2)[0].shape == (6,)
    emb = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    rows, cols = sigmoid_pair_sums(emb, emb, emb, emb, torch.tensor([1, 4]), learner_scale=1.0, learner_bias=0.0,
                                   reference_scale=2.0, reference_bias=0.0)
    assert rows.shape == cols.shape == (6,)
    try:
        per_sample_cross_entropy(torch.randn(6, 3), y, impl="triton")
    except ImportError as e:
        assert "triton" in str(e)
    else:
        raise AssertionError("impl='triton' ran without triton")
    print("ok")
""")


def test_package_and_scorers_work_without_triton():
    root = str(Path(curatedloader.__file__).parents[1])  # this checkout, not an installed copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", NO_TRITON], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
