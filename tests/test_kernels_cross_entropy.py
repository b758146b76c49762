"""per_sample_cross_entropy: PyTorch path and Triton path (interpreter) against float64 truth."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from curatedloader.kernels import per_sample_cross_entropy

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
IGNORE = -100


def per_token(logits, target, dtype):
    """Per-token loss computed in ``dtype``; ignored tokens give 0."""
    flat = logits.reshape(-1, logits.shape[-1]).to(dtype)
    return F.cross_entropy(flat, target.reshape(-1), ignore_index=IGNORE, reduction="none").double()


def per_sample(logits, target, dtype):
    loss = per_token(logits, target, dtype).view(target.shape)
    if target.dim() == 1:
        return loss
    return loss.sum(1) / (target != IGNORE).sum(1).clamp(min=1)


def assert_as_accurate_as_torch(ours, logits, target, tol=2e-5):
    """|ours - fp64| <= |PyTorch in the input dtype - fp64| + tol (relative to the loss)."""
    truth = per_sample(logits, target, torch.float64)
    peer = per_sample(logits, target, logits.dtype)
    assert ours.dtype == torch.float32 and ours.shape == truth.shape
    assert ((ours.double() - truth).abs() <= (peer - truth).abs() + tol * (1 + truth.abs())).all()


def make(shape, n_classes, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(*shape, n_classes, generator=g)).to(dtype)
    target = torch.randint(0, n_classes, shape, generator=g)
    return logits, target


def sequences(dtype):
    """[B, T, V] with ignored tokens and one all-ignored sequence."""
    logits, target = make((4, 6), 257, dtype)
    target[0, :4] = IGNORE
    target[2] = IGNORE
    return logits, target


def cases(dtype):
    logits, target = make((37,), 8209, dtype)  # V prime and above the 8192 tile: two vocabulary blocks
    yield logits, target
    yield sequences(dtype)
    wide, target = make((300,), 34, dtype)
    yield wide[:, ::2], target % 17  # strided vocabulary, several rows per program
    logits, target = sequences(dtype)
    yield logits.transpose(0, 1).contiguous().transpose(0, 1), target.t().contiguous().t()  # strided rows


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_as_accurate_as_torch_in_input_dtype(impl, dtype):
    for logits, target in cases(dtype):
        before = logits.clone()
        assert_as_accurate_as_torch(per_sample_cross_entropy(logits, target, impl=impl), logits, target)
        assert torch.equal(logits, before)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_sequence_without_valid_tokens_gives_zero(impl):
    logits, target = sequences(torch.float32)
    loss = per_sample_cross_entropy(logits, target, impl=impl)
    assert loss[2] == 0 and (loss[[0, 1, 3]] > 0).all()


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_ignore_index_inside_vocabulary_and_empty_input(impl):
    logits, target = make((9,), 5, torch.float32)
    target[:3] = 0
    assert (per_sample_cross_entropy(logits, target, ignore_index=0, impl=impl)[:3] == 0).all()
    assert per_sample_cross_entropy(logits[:0], target[:0], impl=impl).shape == (0,)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_masked_tokens_filling_a_whole_tile(impl):
    """-inf logits (masked tokens) across a whole vocabulary tile must not turn the loss into NaN."""
    logits, target = make((3,), 8209, torch.float32)
    logits[0, :8192] = float("-inf")
    target[0] = 8200
    assert_as_accurate_as_torch(per_sample_cross_entropy(logits, target, impl=impl), logits, target)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 6), t=st.integers(1, 5), v=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_torch_path_matches_float64_on_random_shapes(n, t, v, seed):
    logits, target = make((n, t), v, torch.float32, seed)
    target[torch.rand(n, t, generator=torch.Generator().manual_seed(seed)) < 0.3] = IGNORE
    assert_as_accurate_as_torch(per_sample_cross_entropy(logits, target), logits, target)


def test_bad_input_names_the_argument(monkeypatch):
    logits, target = make((4,), 7, torch.float32)
    with pytest.raises(TypeError, match="logits"):
        per_sample_cross_entropy(logits.long(), target)
    with pytest.raises(TypeError, match="target"):
        per_sample_cross_entropy(logits, target.float())
    with pytest.raises(ValueError, match="target must have shape"):
        per_sample_cross_entropy(logits, target[:3])
    with pytest.raises(ValueError, match="logits must have shape"):
        per_sample_cross_entropy(logits[0], target[0])
    with pytest.raises(ValueError, match=r"target must be in \[0, 7\)"):
        per_sample_cross_entropy(logits, torch.tensor([0, 1, 7, 2]))
    with pytest.raises(ValueError, match="target must be on the same device as logits"):
        per_sample_cross_entropy(logits, target.to("meta"))
    with pytest.raises(ValueError, match="impl"):
        per_sample_cross_entropy(logits, target, impl="cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        per_sample_cross_entropy(logits, target, impl="triton")
