"""JEST's incremental pair sums for the sigmoid-contrastive (SigLIP) loss: kernel, launcher and launch table.

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

from .launch import Launch, interpreting, num_splits, run_fastest
from .triton_helpers import softplus, tiled_dot

# H100: two fp32 tiles of S live at once, so 128 x 128 spills registers and 128 x 64 does not (sm_90
# compile, ptxas); fp32 embeddings take half the depth. fp32 dots keep fp32 accuracy through 3 tf32 passes.
# The interpreter's small tiles make the tests' small odd shapes cover several tiles.
SIGMOID_PAIR_SUMS_LAUNCHES = {
    "interpreter": (Launch(dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16), num_warps=4),),
    "16-bit": (
        Launch(dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=64), num_warps=8, num_stages=3),
        Launch(dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64), num_warps=4, num_stages=4),
    ),
    "fp32": (
        Launch(dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32), num_warps=8, num_stages=3),
        Launch(dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32), num_warps=8, num_stages=3),
    ),
}
PRECISION = {True: "ieee", False: "tf32x3"}  # the interpreter's numpy dot is exact fp32


def sigmoid_pair_sums_launches(sixteen_bit: bool, interpret: bool) -> tuple[Launch, ...]:
    """The launches ``sigmoid_pair_sums_triton`` picks from: all embeddings 16-bit, or some fp32 (one under
    the interpreter)."""
    return SIGMOID_PAIR_SUMS_LAUNCHES["interpreter" if interpret else "16-bit" if sixteen_bit else "fp32"]


@triton.jit
def _sigmoid_pair_sums_kernel(
    out_ptr, chosen_ptr, n_chosen, B, tiles_per_split,
    al_ptr, sal0, sal1, bl_ptr, sbl0, sbl1, d_l, scale_l, bias_l,
    ar_ptr, sar0, sar1, br_ptr, sbr0, sbr1, d_r, scale_r, bias_r,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, FP32_PRECISION: tl.constexpr,
):
    """out[split, k] = Σ_{j in this split's share of chosen} S(a_k, b_j) for the candidates k of this tile.

    out_ptr:       [n_splits, B] fp32, contiguous; the grid's second axis is the split, each covering
                   tiles_per_split tiles of BLOCK_N chosen indices.
    chosen_ptr:    [n_chosen] contiguous int64 indices into the B rows of b.
    al_ptr, bl_ptr: learner embeddings a [B, d_l] (candidates) and b [B, d_l] (chosen side), strides
                   (sal0, sal1) and (sbl0, sbl1); scale_l, bias_l: the learner's logit scale and bias.
    ar_ptr, br_ptr, ...: the same for the reference model (its own d_r).
    BLOCK_M:       candidates per program; BLOCK_N: chosen per step; BLOCK_K: embedding depth per dot step.
    UPCAST:        fp32 operands for tl.dot (the interpreter); FP32_PRECISION: input_precision of fp32 dots.
    """
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
        zero = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        z_l = tiled_dot(zero, al_ptr + cand * sal0, cand_ok, sal1, bl_ptr + j * sbl0, ok, sbl1, d_l,
                        BLOCK_K, UPCAST, FP32_PRECISION) * scale_l + bias_l
        z_r = tiled_dot(zero, ar_ptr + cand * sar0, cand_ok, sar1, br_ptr + j * sbr0, ok, sbr1, d_r,
                        BLOCK_K, UPCAST, FP32_PRECISION) * scale_r + bias_r
        pos = cand[:, None] == j[None, :]  # y = +1: the candidate's own pair
        s = softplus(tl.where(pos, -z_l, z_l)) - softplus(tl.where(pos, -z_r, z_r))
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
    sixteen_bit = a_l.dtype != torch.float32 and a_r.dtype != torch.float32

    def run(launch: Launch) -> Tensor:
        block_m, block_n = launch.tiles["BLOCK_M"], launch.tiles["BLOCK_N"]
        m_tiles = triton.cdiv(B, block_m)
        n_splits, tiles_per_split = num_splits(a_l.device, m_tiles, triton.cdiv(n, block_n), splits)
        partial = torch.empty((n_splits, B), dtype=torch.float32, device=a_l.device)
        _sigmoid_pair_sums_kernel[(m_tiles, n_splits)](
            out_ptr=partial, chosen_ptr=chosen, n_chosen=n, B=B, tiles_per_split=tiles_per_split,
            al_ptr=a_l, sal0=a_l.stride(0), sal1=a_l.stride(1), bl_ptr=b_l, sbl0=b_l.stride(0), sbl1=b_l.stride(1),
            d_l=a_l.shape[1], scale_l=scale_l, bias_l=bias_l,
            ar_ptr=a_r, sar0=a_r.stride(0), sar1=a_r.stride(1), br_ptr=b_r, sbr0=b_r.stride(0), sbr1=b_r.stride(1),
            d_r=a_r.shape[1], scale_r=scale_r, bias_r=bias_r,
            UPCAST=interpret, FP32_PRECISION=PRECISION[interpret],
            **launch.tiles, num_warps=launch.num_warps, num_stages=launch.num_stages,
        )
        return partial.sum(0)  # the second stage: a fixed-order reduction over the splits

    launches = sigmoid_pair_sums_launches(sixteen_bit, interpret)
    return run_fastest("sigmoid_pair_sums", (a_l.dtype, a_r.dtype), launches, run)


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
