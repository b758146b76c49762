"""diffusion_learnability: PyTorch path and Triton path (interpreter) against float64 truth."""
import pytest
import torch

from curatedloader.kernels import diffusion_learnability
from curatedloader.kernels.diffusion_kernel import squared_error_sums

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def losses(target, learner, reference, weight, dtype):
    """(L - R, L, R) computed in ``dtype``."""
    n = target.shape[0]
    w = 1 if weight is None else weight.reshape(n).to(dtype)
    per = [w * (p.to(dtype) - target.to(dtype)).square().reshape(n, -1).mean(1) for p in (learner, reference)]
    return [x.double() for x in (per[0] - per[1], *per)]


def assert_as_accurate_as_torch(ours, inputs, tol=2e-5):
    """|ours - fp64| <= |PyTorch in the input dtype - fp64| + tol (relative), for each of the three outputs."""
    truth = losses(*inputs, torch.float64)
    peer = losses(*inputs, inputs[0].dtype)
    for o, t, p in zip(ours, truth, peer):
        assert o.dtype == torch.float32 and o.shape == t.shape
        assert ((o.double() - t).abs() <= (p - t).abs() + tol * (1 + t.abs())).all()


def make(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    target, learner, reference = (torch.randn(shape, generator=g).to(dtype) for _ in range(3))
    return target, learner, reference, (torch.rand(shape[0], generator=g) + 0.5).to(dtype)


def cases(dtype):
    target, learner, reference, weight = make((5, 3, 7, 9), dtype)
    yield target, learner, reference, weight
    cl = [x.contiguous(memory_format=torch.channels_last) for x in (target, learner, reference)]
    yield cl[0], cl[1], reference, None  # channels-last views next to a contiguous tensor
    target, learner, reference, weight = make((601, 2), dtype)
    yield target[::2], learner[::2], reference[::2], weight[::2, None]  # strided samples, several per program
    yield make((4,), dtype)  # one element per sample


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_as_accurate_as_torch_in_input_dtype(impl, dtype):
    for inputs in cases(dtype):
        before = [x.clone() for x in inputs if x is not None]
        assert_as_accurate_as_torch(diffusion_learnability(*inputs, impl=impl), inputs)
        assert all(torch.equal(x, y) for x, y in zip([x for x in inputs if x is not None], before))


@pytest.mark.parametrize("splits", [2, 3])
def test_sample_splits_give_the_same_sums(splits):
    target, learner, reference, _ = make((3, 9001), torch.float32)  # three 4096-element tiles per sample
    torch.testing.assert_close(
        squared_error_sums(target, learner, reference, splits), squared_error_sums(target, learner, reference)
    )


def test_bad_input_names_the_argument():
    target, learner, reference, weight = make((4, 3), torch.float32)
    with pytest.raises(TypeError, match="pred_learner"):
        diffusion_learnability(target, learner.long(), reference)
    with pytest.raises(ValueError, match="pred_reference must have target's shape"):
        diffusion_learnability(target, learner, reference[:, :2])
    with pytest.raises(ValueError, match=r"weight must have shape \[4\]"):
        diffusion_learnability(target, learner, reference, weight[:3])
    with pytest.raises(ValueError, match="target must have shape"):
        diffusion_learnability(target[:0], learner[:0], reference[:0])
    with pytest.raises(ValueError, match="weight must be on the same device as target"):
        diffusion_learnability(target, learner, reference, weight.to("meta"))
