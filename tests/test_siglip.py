"""SigLIPScorer, PairScores and JEST's chunked selection on pairwise scores."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from curatedloader import JEST, CuratedLoader, TopK, Uniform
from curatedloader.scoring import PairScores, SigLIPScorer
from curatedloader.selection import chunked_selection
from test_pair_sums import PARAMS, embeddings, materialised


def pair_scores(B, impl="torch", seed=0):
    li, lt, ri, rt = embeddings(B, seed=seed)
    return PairScores(learner_img=li, learner_txt=lt, reference_img=ri, reference_txt=rt, impl=impl, **PARAMS)


def test_values_and_protocol():
    s = pair_scores(23)
    S = materialised(s.learner_img, s.learner_txt, s.reference_img, s.reference_txt, **PARAMS)
    torch.testing.assert_close(s.values("learnability").double(), S.diagonal(), rtol=1e-5, atol=1e-5)
    assert len(s) == 23 and s.check(23) is s and s.finite().all()
    sub = s.index(torch.tensor([4, 0, 9]))
    assert len(sub) == 3 and torch.equal(sub.learner_txt, s.learner_txt[[4, 0, 9]])
    torch.testing.assert_close(sub.values(), s.values()[[4, 0, 9]])
    learner, reference = s.mean_losses()
    assert learner == pytest.approx(float(s.learner.mean())) and reference == pytest.approx(float(s.reference.mean()))


@pytest.mark.parametrize("criterion", ["learnability", "hard_learner", "easy_reference"])
def test_each_chunk_draws_on_the_gain_of_the_batch_score(criterion):
    """Every chunk's logits are s(A ∪ {k}) − s(A) for the chosen set A (up to a constant per chunk)."""
    s = pair_scores(31)
    S = materialised(s.learner_img, s.learner_txt, s.reference_img, s.reference_txt, **PARAMS)
    if criterion != "learnability":  # the criterion's own pair score: ℓ_learner, or −ℓ_reference
        zero = dict(learner_scale=0.0, learner_bias=0.0) if criterion == "easy_reference" else \
            dict(reference_scale=0.0, reference_bias=0.0)
        S = materialised(s.learner_img, s.learner_txt, s.reference_img, s.reference_txt, **{**PARAMS, **zero})
    seen = []

    def draw(logits, m):
        seen.append(logits.clone())
        return torch.topk(logits, m).indices

    picked = chunked_selection(s.values(criterion), lambda new: s.pair_sums(new, criterion), 11, 4, draw)
    assert [len(x) for x in seen] == [31] * 4 and len(set(picked.tolist())) == 11
    starts = [0, 3, 6, 9]  # 11 in 4 chunks: 3, 3, 3, 2
    for logits, start in zip(seen, starts):
        A = picked[:start]
        rest = torch.tensor(sorted(set(range(31)) - set(A.tolist())))
        gain = torch.stack([S[torch.cat([A, k[None]])][:, torch.cat([A, k[None]])].sum() - S[A][:, A].sum() for k in rest])
        offset = logits[rest].double() - gain
        torch.testing.assert_close(offset, offset[:1].expand_as(offset), rtol=0, atol=1e-4)
        assert torch.isneginf(logits[A]).all()


def test_jest_reproducible_by_seed_and_impl():
    gen = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    jest = JEST(n_chunks=4)
    first = jest(pair_scores(40, "torch"), 10, gen(0))
    assert torch.equal(first, jest(pair_scores(40, "torch"), 10, gen(0)))
    assert torch.equal(first, jest(pair_scores(40, "triton"), 10, gen(0)))
    assert not torch.equal(first, jest(pair_scores(40, "torch"), 10, gen(1)))


def test_chunk_sizes_and_limits():
    s, g = pair_scores(20), torch.Generator().manual_seed(0)
    for k, n_chunks in [(0, 4), (3, 16), (7, 3), (20, 16)]:
        picked = JEST(n_chunks=n_chunks)(s, k, g)
        assert picked.shape == (k,) and len(set(picked.tolist())) == k
    with pytest.raises(ValueError, match=r"k must be in \[0, 20\]"):
        JEST()(s, 21, g)


def test_topk_is_the_cold_limit_of_jest():
    s = pair_scores(40)
    greedy = TopK()(s, 12, torch.Generator())
    assert torch.equal(greedy[:1], torch.topk(s.values(), 1).indices)
    assert torch.equal(greedy, JEST(temperature=1e-9)(s, 12, torch.Generator().manual_seed(3)))
    assert len(set(Uniform()(s, 12, torch.Generator().manual_seed(0)).tolist())) == 12


class TinySigLIP(nn.Module):
    """model(images, texts) -> (img_emb, txt_emb), with open_clip's logit_scale / logit_bias."""

    def __init__(self, seed=0, scale=10.0, bias=-5.0, as_dict=False):
        super().__init__()
        torch.manual_seed(seed)
        self.img, self.txt = nn.Linear(6, 4), nn.Sequential(nn.Linear(5, 4), nn.Dropout(0.5))
        self.logit_scale = nn.Parameter(torch.tensor(scale).log())
        self.logit_bias = nn.Parameter(torch.tensor([bias]))
        self.as_dict = as_dict

    def forward(self, images, texts):
        img, txt = self.img(images), self.txt(texts)
        return {"image_features": img, "text_features": txt} if self.as_dict else (img, txt, self.logit_scale.exp())


def test_scorer_normalises_and_carries_scale_and_bias():
    learner, reference = TinySigLIP(0), TinySigLIP(1, scale=5.0, bias=-2.0, as_dict=True)
    batch = {"image": torch.randn(9, 6), "text": torch.randn(9, 5)}
    s = SigLIPScorer(learner, reference)(batch)
    assert learner.training and reference.training  # restored after eval-mode scoring
    assert isinstance(s, PairScores) and len(s) == 9
    torch.testing.assert_close(s.learner_img.norm(dim=-1), torch.ones(9))
    torch.testing.assert_close(s.reference_txt, F.normalize(reference.eval().txt(batch["text"]), dim=-1).detach())
    assert s.learner_scale == pytest.approx(10.0) and s.reference_bias == pytest.approx(-2.0)


def test_scorer_rejects_models_without_scale_and_bias():
    with pytest.raises(ValueError, match="reference must be an nn.Module .* logit_scale and logit_bias"):
        SigLIPScorer(TinySigLIP(), nn.Linear(3, 3))
    clip = TinySigLIP()
    clip.logit_bias = None  # as open_clip's softmax CLIP models
    with pytest.raises(ValueError, match="learner must be an nn.Module .* logit_scale and logit_bias"):
        SigLIPScorer(clip, TinySigLIP())


def test_loader_with_siglip_scorer_is_reproducible():
    data = [{"image": torch.randn(6), "text": torch.randn(5), "i": i} for i in range(200)]

    def run():
        loader = CuratedLoader(data, batch_size=8, filter_ratio=0.8, scorer=SigLIPScorer(TinySigLIP(0), TinySigLIP(1)),
                               selector=JEST(n_chunks=4), shuffle=True, seed=5)
        return [batch["i"].tolist() for batch in loader]

    batches = run()
    assert len(batches) == 5 and all(len(b) == 8 and len(set(b)) == 8 for b in batches)
    assert batches == run()
