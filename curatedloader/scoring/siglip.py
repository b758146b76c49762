"""Pairwise scores of sigmoid-contrastive (SigLIP) models, and JEST's chunked joint selection on them."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..batch import get_field
from ..kernels import sigmoid_pair_sums
from ..scores import Scorer, Scores, model_device
from .cross_entropy import to_device


@dataclass(kw_only=True)
class PairScores(Scores):
    """Normalised embeddings `[B, d]` and scale/bias of a learner and a reference SigLIP model.

    `learner` and `reference` hold each model's loss on the sample's own pair (the diagonal S_kk), so
    `values()` is the per-sample score and `mean_losses()` (for `Early`) the mean positive-pair loss;
    `pair_sums()` makes them pairwise scores (`selection.PairwiseScores`): `JEST` and `TopK` draw chunk by
    chunk on the conditional scores, `Uniform` only needs `len()`. `impl` picks the `sigmoid_pair_sums`
    implementation.

    >>> img, txt = F.normalize(torch.randn(2, 6, 4), dim=-1)
    >>> s = PairScores(learner_img=img, learner_txt=txt, learner_scale=10.0, learner_bias=-10.0,
    ...                reference_img=txt, reference_txt=img, reference_scale=10.0, reference_bias=-10.0)
    >>> JEST(n_chunks=2)(s, 2, torch.Generator().manual_seed(0)).shape
    torch.Size([2])
    """

    learner_img: Tensor
    learner_txt: Tensor
    learner_scale: float
    learner_bias: float
    reference_img: Tensor
    reference_txt: Tensor
    reference_scale: float
    reference_bias: float
    impl: str = "auto"

    def __post_init__(self) -> None:
        if self.learner is None:  # index() passes the diagonal on, sliced
            self.learner = positive_pair_loss(self.learner_img, self.learner_txt, self.learner_scale, self.learner_bias)
            self.reference = positive_pair_loss(self.reference_img, self.reference_txt, self.reference_scale,
                                                self.reference_bias)

    def pair_sums(self, chosen: Tensor, criterion: str = "learnability") -> tuple[Tensor, Tensor]:
        """(Σ_{j∈chosen} S_kj, Σ_{i∈chosen} S_ik) for every k, S the pair score under `criterion`."""
        learner = (self.learner_img, self.learner_txt, self.learner_scale, self.learner_bias)
        reference = (self.reference_img, self.reference_txt, self.reference_scale, self.reference_bias)
        # With scale 0 and bias 0 every pair loss is log 2: standing in for the model that `criterion`
        # ignores, it shifts all candidates' sums by the same amount, which changes no draw.
        if criterion == "hard_learner":
            reference = (self.learner_img, self.learner_txt, 0.0, 0.0)
        elif criterion == "easy_reference":
            learner = (self.reference_img, self.reference_txt, 0.0, 0.0)
        return sigmoid_pair_sums(
            learner[0], learner[1], reference[0], reference[1], chosen,
            learner_scale=learner[2], learner_bias=learner[3], reference_scale=reference[2],
            reference_bias=reference[3], impl=self.impl,
        )


def positive_pair_loss(img: Tensor, txt: Tensor, scale: float, bias: float) -> Tensor:
    """fp32 sigmoid loss of each sample's own pair: softplus(−(scale·⟨img_k, txt_k⟩ + bias))."""
    return F.softplus(-(scale * (img.float() * txt.float()).sum(-1) + bias))


class SigLIPScorer(Scorer):
    """Embeddings of a learner and a reference sigmoid-contrastive model, for pairwise JEST.

    Model protocol (open_clip's SigLIP models follow it): `model(images, texts)` returns the image and
    text embeddings as its first two outputs (or a dict with "image_features" and "text_features"), and
    the model has `logit_scale` (the log of the temperature: scale = exp(logit_scale)) and `logit_bias`.
    Batches are dicts or tuples; `image_key` and `text_key` pick the two fields. Embeddings are
    L2-normalised here and keep the model's dtype (bf16 embeddings make the GPU kernel fastest). `impl`
    picks the `sigmoid_pair_sums` implementation ("auto": Triton on CUDA, PyTorch otherwise).

    >>> loader = CuratedLoader(pairs, batch_size=256, scorer=SigLIPScorer(model, ref_model), selector=JEST())
    """

    def __init__(self, learner: nn.Module, reference: nn.Module, *, image_key: Any = "image", text_key: Any = "text",
                 impl: str = "auto"):
        for name, model in (("learner", learner), ("reference", reference)):
            # None counts as missing: open_clip's softmax CLIP models have logit_bias = None
            missing = any(getattr(model, a, None) is None for a in ("logit_scale", "logit_bias"))
            if not isinstance(model, nn.Module) or missing:
                raise ValueError(
                    f"{name} must be an nn.Module called as model(images, texts) -> (img_emb, txt_emb) with "
                    f"attributes logit_scale and logit_bias (as open_clip's SigLIP models), got {type(model).__name__}"
                )
        self.learner, self.reference = learner, reference
        self.image_key, self.text_key, self.impl = image_key, text_key, impl

    def models(self) -> list[nn.Module]:
        return [self.learner, self.reference]

    def score(self, batch, ids=None, generator=None) -> PairScores:
        images, texts = get_field(batch, self.image_key), get_field(batch, self.text_key)
        device = self.device
        li, lt, ls, lb = _embed(self.learner, images, texts, device)
        ri, rt, rs, rb = _embed(self.reference, images, texts, device)
        return PairScores(learner_img=li, learner_txt=lt, learner_scale=ls, learner_bias=lb,
                          reference_img=ri, reference_txt=rt, reference_scale=rs, reference_bias=rb, impl=self.impl)


def _embed(model: nn.Module, images, texts, device: torch.device) -> tuple[Tensor, Tensor, float, float]:
    """Normalised (img, txt) embeddings on `device`, and the model's scale and bias."""
    own = model_device(model, device)
    out = model(to_device(images, own), to_device(texts, own))
    img, txt = (out["image_features"], out["text_features"]) if isinstance(out, Mapping) else out[:2]
    norm = lambda e: F.normalize(e.float(), dim=-1).to(e.dtype).to(device)  # noqa: E731
    return norm(img), norm(txt), float(torch.as_tensor(model.logit_scale).exp()), float(model.logit_bias)
