"""linear_cross_entropy: PyTorch path and Triton path (interpreter) against float64 truth."""
import pytest
import torch
import torch.nn.functional as F

from curatedloader.kernels import linear_cross_entropy
from curatedloader.kernels.linear_cross_entropy_kernel import linear_cross_entropy_rows

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
IGNORE = -100


def per_sample(hidden, weight, bias, target, dtype):
    """Materialised logits and cross-entropy, all in ``dtype``."""
    logits = F.linear(hidden.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))
    flat = logits.reshape(-1, weight.shape[0])
    loss = F.cross_entropy(flat, target.reshape(-1), ignore_index=IGNORE, reduction="none").double()
    loss = loss.view(target.shape)
    return loss if target.dim() == 1 else loss.sum(1) / (target != IGNORE).sum(1).clamp(min=1)


def assert_as_accurate_as_torch(ours, hidden, weight, bias, target, tol=2e-5):
    """|ours - fp64| <= |PyTorch in the input dtype - fp64| + tol (relative to the loss)."""
    truth = per_sample(hidden, weight, bias, target, torch.float64)
    peer = per_sample(hidden, weight, bias, target, hidden.dtype)
    assert ours.dtype == torch.float32 and ours.shape == truth.shape
    assert ((ours.double() - truth).abs() <= (peer - truth).abs() + tol * (1 + truth.abs())).all()


def make(shape, hidden_size, n_classes, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*shape, hidden_size, generator=g).to(dtype)
    weight = (torch.randn(n_classes, hidden_size, generator=g) / hidden_size**0.25).to(dtype)
    bias = torch.randn(n_classes, generator=g).to(dtype)
    return hidden, weight, bias, torch.randint(0, n_classes, shape, generator=g)


def cases(dtype):
    # H = 100 is two hidden tiles, V = 257 (prime) three vocabulary tiles, N = 130 two row blocks.
    hidden, weight, bias, target = make((130,), 100, 257, dtype)
    yield hidden, weight, bias, target
    yield hidden.repeat_interleave(2, 1)[:, ::2], weight.t().contiguous().t(), None, target  # strided hidden, column-major weight
    hidden, weight, bias, target = make((3, 5), 100, 257, dtype, seed=1)
    target[0, 1:] = IGNORE
    target[1] = IGNORE
    yield hidden, weight, bias, target


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_as_accurate_as_torch_in_input_dtype(impl, dtype):
    for hidden, weight, bias, target in cases(dtype):
        before = hidden.clone(), weight.clone()
        ours = linear_cross_entropy(hidden, weight, target, bias=bias, impl=impl)
        assert_as_accurate_as_torch(ours, hidden, weight, bias, target)
        assert torch.equal(hidden, before[0]) and torch.equal(weight, before[1])
        if target.dim() == 2:
            assert ours[1] == 0


@pytest.mark.parametrize("splits", [2, 3])
def test_vocabulary_splits_give_the_same_loss(splits):
    hidden, weight, bias, target = make((9,), 20, 300, torch.float32)
    torch.testing.assert_close(
        linear_cross_entropy_rows(hidden, weight, target, bias, IGNORE, splits),
        linear_cross_entropy_rows(hidden, weight, target, bias, IGNORE),
    )


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_bias_masking_a_whole_vocabulary_tile(impl):
    """A -inf bias over a whole 128-column tile must not turn the loss into NaN."""
    hidden, weight, bias, target = make((5,), 16, 300, torch.float32)
    bias[:128] = float("-inf")
    target = target % 172 + 128
    ours = linear_cross_entropy(hidden, weight, target, bias=bias, impl=impl)
    assert_as_accurate_as_torch(ours, hidden, weight, bias, target)


def test_mixed_dtypes_and_empty_input():
    hidden, weight, bias, target = make((7,), 24, 31, torch.float32)
    ours = linear_cross_entropy(hidden.bfloat16(), weight, target, bias=bias.half(), impl="triton")
    assert_as_accurate_as_torch(ours, hidden.bfloat16().float(), weight, bias.half().float(), target)
    assert linear_cross_entropy(hidden[:0], weight, target[:0], impl="triton").shape == (0,)


def test_bad_input_names_the_argument():
    hidden, weight, bias, target = make((4,), 8, 7, torch.float32)
    with pytest.raises(TypeError, match="hidden"):
        linear_cross_entropy(hidden.int(), weight, target)
    with pytest.raises(ValueError, match=r"weight must have shape \[V, 8\]"):
        linear_cross_entropy(hidden, weight[:, :5], target)
    with pytest.raises(ValueError, match=r"bias must have shape \[7\]"):
        linear_cross_entropy(hidden, weight, target, bias=bias[:6])
    with pytest.raises(ValueError, match=r"target must be in \[0, 7\)"):
        linear_cross_entropy(hidden, weight, target + 7)
    with pytest.raises(ValueError, match="weight must be on the same device as hidden"):
        linear_cross_entropy(hidden, weight.to("meta"), target)
