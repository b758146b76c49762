"""JEST's incremental pair sums for the sigmoid-contrastive (SigLIP) loss: Triton kernel and launcher.

S_ij = learner pair loss − reference pair loss, pair loss softplus(−y_ij·(scale·⟨img_i, txt_j⟩ + bias)),
y = +1 on the diagonal and −1 off it. For every candidate k the op returns the sums of S over a chosen
set: rows[k] = Σ_{j∈chosen} S_kj, cols[k] = Σ_{i∈chosen} S_ik. The kernel computes S tile by tile from
the embeddings (never the B×B matrix): each program owns a tile of candidates and a slice of the chosen
set, writes its partial sums, and the slices are added in a fixed order, so results are bitwise
reproducible (no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import interpreting, num_splits, use_triton
from .reference import sigmoid_pair_sums_reference
from .validation import check_same_device

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _softplus(x):
    # max(x, 0) + log(1 + e^-|x|): never overflows; libdevice's log1p is missing under the interpreter
    return tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _scaled_dots(a_ptr, sa0, sa1, b_ptr, sb0, sb1, rows_a, rows_b, ok_a, ok_b, d, scale, bias,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 UPCAST: tl.constexpr, FP32_PRECISION: tl.constexpr):
    """scale·⟨a[rows_a], b[rows_b]⟩ + bias as a [BLOCK_M, BLOCK_N] fp32 tile."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, d, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < d
        ks = ks.to(tl.int64)  # a transposed input's stride times d can pass 2^31
        a = tl.load(a_ptr + rows_a[:, None] * sa0 + ks[None, :] * sa1, mask=ok_a[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptr + rows_b[:, None] * sb0 + ks[None, :] * sb1, mask=ok_b[:, None] & k_ok[None, :], other=0.0)
        if UPCAST:  # the interpreter's tl.dot is wrong on 16-bit inputs
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if a.dtype == tl.float32:  # decided at compile time
            acc = tl.dot(a, tl.trans(b), acc, input_precision=FP32_PRECISION)
        else:  # bf16/fp16 tensor cores, fp32 accumulation
            acc = tl.dot(a, tl.trans(b), acc)
    return acc * scale + bias


@triton.jit
def _sigmoid_pair_sums_kernel(
    out_ptr, chosen_ptr, n_chosen, B, tiles_per_split,
    al_ptr, sal0, sal1, bl_ptr, sbl0, sbl1, d_l, scale_l, bias_l,
    ar_ptr, sar0, sar1, br_ptr, sbr0, sbr1, d_r, scale_r, bias_r,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, FP32_PRECISION: tl.constexpr,
):
    """out[split, k] = Σ_{j in this split's chosen} S(a_k, b_j) for the candidates k of this tile."""
    pid_m = tl.program_id(0)
    split = tl.program_id(1)
    cand = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cand_ok = cand < B
    total = tl.zeros((BLOCK_M,), dtype=tl.float32)
    first = split * tiles_per_split
    last = tl.minimum(first + tiles_per_split, tl.cdiv(n_chosen, BLOCK_N))
    for t in range(first, last):
        offs = t * BLOCK_N + tl.arange(0, BLOCK_N)
        ok = offs < n_chosen
        j = tl.load(chosen_ptr + offs, mask=ok, other=0).to(tl.int64)
        z_l = _scaled_dots(al_ptr, sal0, sal1, bl_ptr, sbl0, sbl1, cand, j, cand_ok, ok, d_l, scale_l, bias_l,
                           BLOCK_M, BLOCK_N, BLOCK_K, UPCAST, FP32_PRECISION)
        z_r = _scaled_dots(ar_ptr, sar0, sar1, br_ptr, sbr0, sbr1, cand, j, cand_ok, ok, d_r, scale_r, bias_r,
                           BLOCK_M, BLOCK_N, BLOCK_K, UPCAST, FP32_PRECISION)
        pos = cand[:, None] == j[None, :]  # y = +1: the candidate's own pair
        s = _softplus(tl.where(pos, -z_l, z_l)) - _softplus(tl.where(pos, -z_r, z_r))
        total += tl.sum(tl.where(cand_ok[:, None] & ok[None, :], s, 0.0), axis=1)
    tl.store(out_ptr + split.to(tl.int64) * B + cand, total, mask=cand_ok)


def _launch(a_l: Tensor, b_l: Tensor, a_r: Tensor, b_r: Tensor, chosen: Tensor,
            scale_l: float, bias_l: float, scale_r: float, bias_r: float, splits: int | None) -> Tensor:
    """Σ_{j∈chosen} S(a_k, b_j) for every row k of a_l / a_r (candidates on side a, chosen on side b)."""
    B, n = a_l.shape[0], chosen.numel()
    chosen = chosen.contiguous()  # the kernel reads chosen[i] at chosen_ptr + i
    if n == 0:
        return torch.zeros(B, dtype=torch.float32, device=a_l.device)
    interpret = interpreting()
    if interpret:  # small tiles, so that tests on small odd shapes cover several tiles
        block_m, block_n, block_k, precision = 32, 16, 16, "ieee"
    else:  # untuned (no GPU was lent); fp32 inputs keep fp32 accuracy through 3 tf32 passes
        sixteen_bit = a_l.dtype != torch.float32 and a_r.dtype != torch.float32
        # 128 x 128 spills registers (two fp32 tiles of S live at once; sm_90 compile, ptxas); 128 x 64 does not.
        block_m, block_n, block_k = (128, 64, 64) if sixteen_bit else (128, 64, 32)
        precision = "tf32x3"
    m_tiles = triton.cdiv(B, block_m)
    n_splits, tiles_per_split = num_splits(a_l.device, m_tiles, triton.cdiv(n, block_n), splits)
    partial = torch.empty((n_splits, B), dtype=torch.float32, device=a_l.device)
    _sigmoid_pair_sums_kernel[(m_tiles, n_splits)](
        partial, chosen, n, B, tiles_per_split,
        a_l, a_l.stride(0), a_l.stride(1), b_l, b_l.stride(0), b_l.stride(1), a_l.shape[1], scale_l, bias_l,
        a_r, a_r.stride(0), a_r.stride(1), b_r, b_r.stride(0), b_r.stride(1), a_r.shape[1], scale_r, bias_r,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, UPCAST=interpret, FP32_PRECISION=precision,
        num_warps=8, num_stages=3,
    )
    return partial.sum(0)  # the second stage: a fixed-order reduction over the splits


def sigmoid_pair_sums_triton(learner_img: Tensor, learner_txt: Tensor, reference_img: Tensor, reference_txt: Tensor,
                             chosen: Tensor, *, learner_scale: float, learner_bias: float,
                             reference_scale: float, reference_bias: float,
                             splits: int | None = None) -> tuple[Tensor, Tensor]:
    """Triton version of `sigmoid_pair_sums` (inputs already checked); `splits` of the chosen set per
    candidate tile, default: enough to fill the GPU."""
    params = (learner_scale, learner_bias, reference_scale, reference_bias, splits)
    rows = _launch(learner_img, learner_txt, reference_img, reference_txt, chosen, *params)
    cols = _launch(learner_txt, learner_img, reference_txt, reference_img, chosen, *params)  # ⟨img_i, txt_k⟩, i chosen
    return rows, cols


def sigmoid_pair_sums(
    learner_img: Tensor,
    learner_txt: Tensor,
    reference_img: Tensor,
    reference_txt: Tensor,
    chosen: Tensor,
    *,
    learner_scale: float,
    learner_bias: float,
    reference_scale: float,
    reference_bias: float,
    impl: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Row and column sums of S = learner − reference sigmoid pair losses over the `chosen` indices.

    Embeddings are `[B, d]` (fp32, bf16 or fp16; the learner's d may differ from the reference's), `chosen`
    holds distinct indices into range(B). Returns fp32 `(rows, cols)` of shape `[B]` with
    rows[k] = Σ_{j∈chosen} S_kj and cols[k] = Σ_{i∈chosen} S_ik. `impl="auto"` runs Triton on CUDA tensors
    and the PyTorch reference otherwise.

    >>> img, txt = torch.nn.functional.normalize(torch.randn(2, 5, 8), dim=-1)
    >>> rows, cols = sigmoid_pair_sums(img, txt, img, txt, torch.tensor([1, 3]), learner_scale=10.0,
    ...                                learner_bias=-10.0, reference_scale=5.0, reference_bias=-5.0)
    >>> rows.shape, cols.dtype
    (torch.Size([5]), torch.float32)
    """
    _check(learner_img, learner_txt, reference_img, reference_txt, chosen)
    params = dict(learner_scale=float(learner_scale), learner_bias=float(learner_bias),
                  reference_scale=float(reference_scale), reference_bias=float(reference_bias))
    if not use_triton(impl, learner_img.device):
        return sigmoid_pair_sums_reference(learner_img, learner_txt, reference_img, reference_txt, chosen, **params)
    return sigmoid_pair_sums_triton(learner_img, learner_txt, reference_img, reference_txt, chosen, **params)


def _check(learner_img: Tensor, learner_txt: Tensor, reference_img: Tensor, reference_txt: Tensor, chosen: Tensor) -> None:
    named = dict(learner_img=learner_img, learner_txt=learner_txt, reference_img=reference_img, reference_txt=reference_txt)
    for name, t in named.items():
        if not isinstance(t, Tensor) or t.dim() != 2 or t.dtype not in DTYPES:
            raise ValueError(f"{name} must be a [B, d] tensor of dtype {DTYPES}, got {_describe(t)}")
    if not isinstance(chosen, Tensor) or chosen.dim() != 1 or chosen.dtype != torch.int64:
        raise ValueError(f"chosen must be a 1-D int64 tensor of indices, got {_describe(chosen)}")
    check_same_device(**named, chosen=chosen)
    for img, txt in (("learner_img", "learner_txt"), ("reference_img", "reference_txt")):
        if named[img].shape != named[txt].shape or named[img].dtype != named[txt].dtype:
            raise ValueError(f"{txt} must match {img}'s shape and dtype, got {_describe(named[txt])} "
                             f"and {_describe(named[img])}")
    B = learner_img.shape[0]
    if reference_img.shape[0] != B:
        raise ValueError(f"reference_img has {reference_img.shape[0]} rows; expected B={B} like learner_img")
    if chosen.numel():
        s = chosen.sort().values
        lo, hi, repeats = torch.stack([s[0], s[-1], (s[1:] == s[:-1]).sum()]).tolist()  # one sync
        if lo < 0 or hi >= B:
            raise ValueError(f"chosen must hold indices in [0, {B}), got values from {lo} to {hi}")
        if repeats:
            raise ValueError(f"chosen must hold distinct indices, got {repeats} repeated")


def _describe(t) -> str:
    if isinstance(t, Tensor):
        return f"shape {tuple(t.shape)} dtype {t.dtype} on {t.device}"
    return type(t).__name__
