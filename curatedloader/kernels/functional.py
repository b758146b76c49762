"""The kernel ops: argument checks, then the Triton kernel (imported only when it runs) or the PyTorch reference."""
from __future__ import annotations

import torch
from torch import Tensor

from .launch import use_triton
from .reference import (
    cross_entropy_reference,
    diffusion_learnability_reference,
    linear_cross_entropy_reference,
    sequence_mean,
    sigmoid_pair_sums_reference,
    weighted_learnability,
)
from .validation import check_float, check_same_device, check_target

PAIR_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def per_sample_cross_entropy(
    logits: Tensor, target: Tensor, *, ignore_index: int = -100, impl: str = "auto"
) -> Tensor:
    """Cross-entropy per sample, in fp32; the inputs are never modified.

    ``logits [N, V]`` with ``target [N]`` gives ``[N]``. ``logits [B, T, V]`` with ``target [B, T]`` gives
    ``[B]``: each sequence's mean over its tokens whose target is not ``ignore_index``; a sequence with no
    such token gets 0. Inputs may be float32, bfloat16 or float16, with any strides.
    ``impl="auto"`` runs the Triton kernel on CUDA tensors and the PyTorch reference otherwise.

    >>> logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> per_sample_cross_entropy(logits, torch.tensor([0, 2]))
    tensor([0.2395, 1.0986])
    """
    check_float("logits", logits)
    if logits.dim() not in (2, 3) or logits.shape[-1] == 0:
        raise ValueError(f"logits must have shape [N, V] or [B, T, V] with V >= 1, got {tuple(logits.shape)}")
    check_same_device(logits=logits, target=target)
    check_target(target, logits.shape[:-1], logits.shape[-1], ignore_index)
    if not use_triton(impl, logits.device):
        return cross_entropy_reference(logits, target, ignore_index)
    from .cross_entropy_kernel import cross_entropy_rows

    return sequence_mean(cross_entropy_rows(logits, target, ignore_index), target, ignore_index)


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    ignore_index: int = -100,
    impl: str = "auto",
) -> Tensor:
    """``per_sample_cross_entropy(hidden @ weight.T + bias, target)`` without allocating the N x V logits.

    ``hidden [N, H]`` with ``target [N]`` gives ``[N]``; ``hidden [B, T, H]`` with ``target [B, T]`` gives
    ``[B]``, each sequence's mean over non-ignored tokens (0 if it has none). ``weight [V, H]``,
    ``bias [V]``. fp32 results, fp32 accumulation; inputs float32, bfloat16 or float16, any strides.
    ``impl="auto"`` runs the Triton kernel on CUDA tensors and the PyTorch reference otherwise.

    >>> hidden, weight = torch.ones(2, 4), torch.zeros(3, 4)
    >>> linear_cross_entropy(hidden, weight, torch.tensor([0, 2]), bias=torch.tensor([2.0, 0.0, 0.0]))
    tensor([0.2395, 2.2395])
    """
    check_float("hidden", hidden)
    check_float("weight", weight)
    if hidden.dim() not in (2, 3):
        raise ValueError(f"hidden must have shape [N, H] or [B, T, H], got {tuple(hidden.shape)}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1] or weight.shape[0] == 0:
        raise ValueError(f"weight must have shape [V, {hidden.shape[-1]}] with V >= 1, got {tuple(weight.shape)}")
    if bias is not None:
        check_float("bias", bias)
        if bias.shape != weight.shape[:1]:
            raise ValueError(f"bias must have shape [{weight.shape[0]}], got {tuple(bias.shape)}")
    check_same_device(hidden=hidden, weight=weight, target=target, bias=bias)
    check_target(target, hidden.shape[:-1], weight.shape[0], ignore_index)
    if not use_triton(impl, hidden.device):
        return linear_cross_entropy_reference(hidden, weight, target, bias, ignore_index)
    from .linear_cross_entropy_kernel import linear_cross_entropy_rows

    return sequence_mean(linear_cross_entropy_rows(hidden, weight, target, bias, ignore_index), target, ignore_index)


def diffusion_learnability(
    target: Tensor,
    pred_learner: Tensor,
    pred_reference: Tensor,
    weight: Tensor | None = None,
    *,
    impl: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample ``(learnability, learner_loss, reference_loss)``, each ``[B]`` fp32, learnability = L - R.

    A model's loss for sample i is ``weight[i] * mean((pred[i] - target[i]) ** 2)`` over all non-batch
    dims (``weight=None`` means 1). Inputs ``[B, ...]`` of one shape, float32, bfloat16 or float16, any
    strides; ``weight`` has B elements (``[B]`` or ``[B, 1, ...]``).
    ``impl="auto"`` runs the Triton kernel on CUDA tensors and the PyTorch reference otherwise.

    >>> target = torch.zeros(2, 3)
    >>> diffusion_learnability(target, torch.ones(2, 3), torch.full((2, 3), 0.5), torch.tensor([1.0, 2.0]))
    (tensor([0.7500, 1.5000]), tensor([1., 2.]), tensor([0.2500, 0.5000]))
    """
    for name, x in (("target", target), ("pred_learner", pred_learner), ("pred_reference", pred_reference)):
        check_float(name, x)
    if target.dim() == 0 or target.numel() == 0:
        raise ValueError(f"target must have shape [B, ...] with at least one element, got {tuple(target.shape)}")
    for name, x in (("pred_learner", pred_learner), ("pred_reference", pred_reference)):
        if x.shape != target.shape:
            raise ValueError(f"{name} must have target's shape {tuple(target.shape)}, got {tuple(x.shape)}")
    n = target.shape[0]
    if weight is not None:
        check_float("weight", weight)
        if weight.dim() == 0 or weight.shape[0] != n or weight.numel() != n:
            raise ValueError(f"weight must have shape [{n}] (or [{n}, 1, ...]), got {tuple(weight.shape)}")
    check_same_device(target=target, pred_learner=pred_learner, pred_reference=pred_reference, weight=weight)
    if not use_triton(impl, target.device):
        return diffusion_learnability_reference(target, pred_learner, pred_reference, weight)
    from .diffusion_kernel import squared_error_sums

    learner, reference = squared_error_sums(target, pred_learner, pred_reference) / target[0].numel()
    return weighted_learnability(learner, reference, weight)


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

    S_ij = softplus(−y_ij·(scale·⟨img_i, txt_j⟩ + bias)) of the learner minus the reference's, y = +1 on the
    diagonal and −1 off it. Embeddings are `[B, d]` (fp32, bf16 or fp16; the learner's d may differ from the
    reference's), `chosen` holds distinct indices into range(B). Returns fp32 `(rows, cols)` of shape `[B]`
    with rows[k] = Σ_{j∈chosen} S_kj and cols[k] = Σ_{i∈chosen} S_ik (JEST's incremental batch score).
    `impl="auto"` runs Triton on CUDA tensors and the PyTorch reference otherwise.

    >>> img, txt = torch.nn.functional.normalize(torch.randn(2, 5, 8), dim=-1)
    >>> rows, cols = sigmoid_pair_sums(img, txt, img, txt, torch.tensor([1, 3]), learner_scale=10.0,
    ...                                learner_bias=-10.0, reference_scale=5.0, reference_bias=-5.0)
    >>> rows.shape, cols.dtype
    (torch.Size([5]), torch.float32)
    """
    _check_pairs(learner_img, learner_txt, reference_img, reference_txt, chosen)
    params = dict(learner_scale=float(learner_scale), learner_bias=float(learner_bias),
                  reference_scale=float(reference_scale), reference_bias=float(reference_bias))
    if not use_triton(impl, learner_img.device):
        return sigmoid_pair_sums_reference(learner_img, learner_txt, reference_img, reference_txt, chosen, **params)
    from .sigmoid_pair_sums_kernel import sigmoid_pair_sums_triton

    return sigmoid_pair_sums_triton(learner_img, learner_txt, reference_img, reference_txt, chosen, **params)


def _check_pairs(learner_img: Tensor, learner_txt: Tensor, reference_img: Tensor, reference_txt: Tensor,
                 chosen: Tensor) -> None:
    named = dict(learner_img=learner_img, learner_txt=learner_txt, reference_img=reference_img, reference_txt=reference_txt)
    for name, t in named.items():
        if not isinstance(t, Tensor) or t.dtype not in PAIR_DTYPES:
            raise TypeError(f"{name} must be a [B, d] tensor of dtype {PAIR_DTYPES}, got {_describe(t)}")
        if t.dim() != 2:
            raise ValueError(f"{name} must be a [B, d] tensor, got {_describe(t)}")
    chosen_expected = f"chosen must be a 1-D int64 tensor of indices, got {_describe(chosen)}"
    if not isinstance(chosen, Tensor) or chosen.dtype != torch.int64:
        raise TypeError(chosen_expected)
    if chosen.dim() != 1:
        raise ValueError(chosen_expected)
    check_same_device(**named, chosen=chosen)
    for img, txt in (("learner_img", "learner_txt"), ("reference_img", "reference_txt")):
        if named[img].dtype != named[txt].dtype:
            raise TypeError(f"{txt} must match {img}'s dtype, got {_describe(named[txt])} and {_describe(named[img])}")
        if named[img].shape != named[txt].shape:
            raise ValueError(f"{txt} must match {img}'s shape, got {_describe(named[txt])} and {_describe(named[img])}")
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


def _describe(t: object) -> str:
    if isinstance(t, Tensor):
        return f"shape {tuple(t.shape)} dtype {t.dtype} on {t.device}"
    return type(t).__name__
