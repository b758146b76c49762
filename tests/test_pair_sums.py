"""sigmoid_pair_sums: Triton (under the interpreter) and PyTorch against the materialised S."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from curatedloader.kernels import sigmoid_pair_sums
from curatedloader.kernels.sigmoid_pair_sums_kernel import sigmoid_pair_sums_triton

PARAMS = dict(learner_scale=10.0, learner_bias=-4.0, reference_scale=7.0, reference_bias=-2.5)


def embeddings(B, d_l=40, d_r=24, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    li, lt = F.normalize(torch.randn(2, B, d_l, generator=g), dim=-1)
    ri, rt = F.normalize(torch.randn(2, B, d_r, generator=g), dim=-1)
    return [x.to(dtype) for x in (li, lt, ri, rt)]


def materialised(li, lt, ri, rt, learner_scale, learner_bias, reference_scale, reference_bias):
    """The whole B×B matrix S in float64, from the (possibly rounded) inputs."""
    y = 2 * torch.eye(li.shape[0], dtype=torch.float64) - 1

    def loss(img, txt, scale, bias):
        return F.softplus(-y * (scale * img.double() @ txt.double().T + bias))

    return loss(li, lt, learner_scale, learner_bias) - loss(ri, rt, reference_scale, reference_bias)


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_matches_materialised(impl, dtype):
    emb = embeddings(37, dtype=dtype)
    emb[1] = emb[1].T.contiguous().T  # column-major: explicit strides
    chosen = torch.randperm(37, generator=torch.Generator().manual_seed(1))[:21]
    rows, cols = sigmoid_pair_sums(*emb, chosen, impl=impl, **PARAMS)
    S = materialised(*emb, **PARAMS)
    assert rows.dtype == cols.dtype == torch.float32
    torch.testing.assert_close(rows.double(), S[:, chosen].sum(1), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(cols.double(), S[chosen].sum(0), rtol=1e-5, atol=1e-4)


def test_strided_chosen():
    """A non-contiguous index tensor gives the same sums as its contiguous copy."""
    emb = embeddings(23)
    chosen = torch.randperm(23, generator=torch.Generator().manual_seed(2))[:16].repeat_interleave(2)[::2]
    assert not chosen.is_contiguous()
    got = sigmoid_pair_sums_triton(*emb, chosen, **PARAMS)
    want = sigmoid_pair_sums_triton(*emb, chosen.contiguous(), **PARAMS)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


@settings(max_examples=12, deadline=None)
@given(B=st.integers(1, 45), d=st.integers(1, 33), n=st.integers(0, 45), splits=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_triton_any_shape_and_split(B, d, n, splits, seed):
    emb = embeddings(B, d, d + 3, seed=seed)
    chosen = torch.randperm(B, generator=torch.Generator().manual_seed(seed))[: min(n, B)]
    rows, cols = sigmoid_pair_sums_triton(*emb, chosen, splits=splits, **PARAMS)
    S = materialised(*emb, **PARAMS)
    torch.testing.assert_close(rows.double(), S[:, chosen].sum(1), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(cols.double(), S[chosen].sum(0), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_sums_are_the_increments_of_the_batch_score(impl):
    emb = embeddings(29)
    S = materialised(*emb, **PARAMS)
    score = lambda A: S[A][:, A].sum()  # noqa: E731  s(A) = Σ_{i,j∈A} S_ij
    A = torch.tensor([3, 17, 8, 25, 0])
    rows, cols = sigmoid_pair_sums(*emb, A, impl=impl, **PARAMS)
    for k in set(range(29)) - set(A.tolist()):
        gain = score(torch.cat([A, torch.tensor([k])])) - score(A)
        torch.testing.assert_close(S[k, k] + rows[k].double() + cols[k].double(), gain, rtol=1e-5, atol=1e-4)


def test_deterministic_and_empty_chosen():
    emb = embeddings(40)
    chosen = torch.arange(0, 40, 3)
    first = sigmoid_pair_sums_triton(*emb, chosen, splits=2, **PARAMS)
    again = sigmoid_pair_sums_triton(*emb, chosen, splits=2, **PARAMS)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    for impl in ("triton", "torch"):
        rows, cols = sigmoid_pair_sums(*emb, torch.zeros(0, dtype=torch.long), impl=impl, **PARAMS)
        assert rows.shape == cols.shape == (40,) and not rows.any() and not cols.any()


@pytest.mark.parametrize("change, error, match", [
    (lambda e, c: (e[0][:, :5], *e[1:], c), ValueError, "learner_txt must match learner_img"),
    (lambda e, c: (*e[:2], e[2][:9], e[3][:9], c), ValueError, "reference_img has 9 rows"),
    (lambda e, c: (e[0][None], *e[1:], c), ValueError, "learner_img must be a"),
    (lambda e, c: (*e, torch.tensor([0, 12])), ValueError, r"chosen must hold indices in \[0, 12\)"),
    (lambda e, c: (*e, torch.tensor([-1, 2])), ValueError, r"chosen must hold indices in \[0, 12\)"),
    (lambda e, c: (*e, torch.tensor([4, 2, 4, 4])), ValueError, "distinct indices, got 2 repeated"),
    (lambda e, c: (*e, c[None]), ValueError, "chosen must be a 1-D int64"),
    (lambda e, c: (e[0].double(), *e[1:], c), TypeError, "learner_img must be a"),
    (lambda e, c: (*e[:3], e[3].tolist(), c), TypeError, "reference_txt must be a"),
    (lambda e, c: (*e[:3], e[3].half(), c), TypeError, "reference_txt must match reference_img's dtype"),
    (lambda e, c: (*e, c.int()), TypeError, "chosen must be a 1-D int64"),
    (lambda e, c: (*e, [1, 5]), TypeError, "chosen must be a 1-D int64"),
])
def test_bad_input(change, error, match):
    args = change(embeddings(12), torch.tensor([1, 5]))
    with pytest.raises(error, match=match):
        sigmoid_pair_sums(*args, **PARAMS)


def test_bad_impl():
    with pytest.raises(ValueError, match="impl must be one of"):
        sigmoid_pair_sums(*embeddings(4), torch.tensor([1]), impl="cuda", **PARAMS)
