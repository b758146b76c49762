"""Does pairwise JEST skip mismatched pairs and train a better CLIP-style learner? A small CPU experiment.

Synthetic image/text pairs share a latent concept; a fraction of the training pairs is mismatched (the
text belongs to another sample). A reference model is trained on a small clean set; the learner trains
on b-sample sub-batches that `CuratedLoader` picks from super-batches of B with JEST, TopK or Uniform,
all at equal trained samples. Reported: the mismatched fraction in the super-batches and in the selected
sub-batches, and the learner's image→text top-1 retrieval on clean held-out pairs. Rows (one per
selector, and the reference) go to OUT/clip_quality.jsonl.

    python benchmarks/clip_quality.py            # about a minute on 2 CPU cores
    python benchmarks/clip_quality.py --seeds 1 --steps 100   # quicker
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from curatedloader import JEST, CuratedLoader, TopK, Uniform
from curatedloader.bench import banner, context, output_args, write_rows
from curatedloader.scoring import SigLIPScorer

LATENT, IMG_DIM, TXT_DIM = 16, 32, 24


class PairData:
    """Image/text features from a shared latent; `mismatch` of the pairs get another sample's text."""

    def __init__(self, n: int, mismatch: float, seed: int, noise: float = 2.5):
        g = torch.Generator().manual_seed(seed)
        mix = torch.Generator().manual_seed(1234)  # the same "world" (projections) for every split
        to_img, to_txt = torch.randn(LATENT, IMG_DIM, generator=mix), torch.randn(LATENT, TXT_DIM, generator=mix)
        z = torch.randn(n, LATENT, generator=g)
        self.image = z @ to_img + noise * torch.randn(n, IMG_DIM, generator=g)
        self.mismatched = torch.rand(n, generator=g) < mismatch
        z_txt = torch.where(self.mismatched[:, None], z[torch.randperm(n, generator=g)], z)
        self.text = z_txt @ to_txt + noise * torch.randn(n, TXT_DIM, generator=g)

    def __len__(self) -> int:
        return len(self.image)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.image[i], "text": self.text[i], "mismatched": self.mismatched[i]}


class DualEncoder(nn.Module):
    """SigLIP-style: model(images, texts) -> (img_emb, txt_emb), learnable logit_scale and logit_bias."""

    def __init__(self, width: int = 64, dim: int = 32):
        super().__init__()
        self.img = nn.Sequential(nn.Linear(IMG_DIM, width), nn.ReLU(), nn.Linear(width, dim))
        self.txt = nn.Sequential(nn.Linear(TXT_DIM, width), nn.ReLU(), nn.Linear(width, dim))
        self.logit_scale = nn.Parameter(torch.tensor(10.0).log())
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))

    def forward(self, images, texts):
        return F.normalize(self.img(images), dim=-1), F.normalize(self.txt(texts), dim=-1)


def siglip_loss(model: DualEncoder, images, texts):
    img, txt = model(images, texts)
    logits = model.logit_scale.exp() * img @ txt.T + model.logit_bias
    y = 2 * torch.eye(len(img)) - 1
    return -F.logsigmoid(y * logits).sum() / len(img)


@torch.no_grad()
def retrieval_top1(model: DualEncoder, data: PairData) -> float:
    model.eval()
    img, txt = model(data.image, data.text)
    model.train()
    return float(((img @ txt.T).argmax(1) == torch.arange(len(img))).float().mean())


def train_reference(clean: PairData, seed: int, epochs: int = 40) -> DualEncoder:
    torch.manual_seed(seed)
    model = DualEncoder()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(clean)).split(256):
            opt.zero_grad()
            siglip_loss(model, clean.image[idx], clean.text[idx]).backward()
            opt.step()
    return model.eval()


def train_learner(selector, reference, train: PairData, test: PairData, seed: int, steps: int, b: int, B: int):
    torch.manual_seed(seed)
    learner = DualEncoder()
    opt = torch.optim.Adam(learner.parameters(), lr=3e-3)
    loader = CuratedLoader(train, batch_size=b, super_batch_size=B, scorer=SigLIPScorer(learner, reference),
                           selector=selector, shuffle=True, seed=seed)
    picked_bad = 0
    for step, batch in zip(range(steps), loader):
        opt.zero_grad()
        siglip_loss(learner, batch["image"], batch["text"]).backward()
        opt.step()
        picked_bad += int(batch["mismatched"].sum())
    return picked_bad / (steps * b), retrieval_top1(learner, test), loader.stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mismatch", type=float, default=0.5, help="fraction of mismatched training pairs")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64, help="b, the sub-batch trained on")
    p.add_argument("--filter", type=float, default=0.8, help="filter ratio: B = b / (1 - filter)")
    p.add_argument("--seeds", type=int, default=3)
    output_args(p, "clip_quality")
    args = p.parse_args()
    print(banner())
    torch.set_num_threads(1)
    b = args.batch
    B = round(b / (1 - args.filter))
    selectors = {"Uniform": Uniform(), "JEST (16 chunks)": JEST(n_chunks=16), "TopK (greedy, 16 chunks)": TopK()}
    results = {name: [] for name in selectors}
    super_bad, reference_top1 = [], []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        train = PairData(args.steps * B, args.mismatch, seed=100 + seed)
        test, clean = PairData(1000, 0.0, seed=200 + seed), PairData(2000, 0.0, seed=300 + seed)
        reference = train_reference(clean, seed)
        super_bad.append(train.mismatched.float().mean())  # each run reads every training pair once
        reference_top1.append(retrieval_top1(reference, test))
        print(f"seed {seed}: reference top-1 {reference_top1[-1]:.3f}")
        for name, selector in selectors.items():
            bad, top1, stats = train_learner(selector, reference, train, test, seed, args.steps, b, B)
            results[name].append((bad, top1, stats.select_ms / stats.steps))
            print(f"  {name:26s} mismatched in sub-batch {bad:.3f}  top-1 {top1:.3f}")
    print(f"\nb={b}, B={B}, {args.steps} steps ({args.steps * b} trained samples), {args.mismatch:.0%} mismatched, "
          f"{args.seeds} seeds, {time.perf_counter() - t0:.0f} s\n")
    super_bad = torch.stack(super_bad)
    spread = lambda t: f"{t.mean():.3f} ± {t.std():.3f}" if len(t) > 1 else f"{t.mean():.3f}"  # noqa: E731
    print("| selector | mismatched: super-batch | mismatched: selected | retrieval top-1 (i→t, 1000) | select ms/step |")
    print("|---|---|---|---|---|")
    setup = {"b": b, "B": B, "steps": args.steps, "mismatch": args.mismatch, "seeds": args.seeds}
    out = []
    for name, rows in results.items():
        bad, top1, ms = (torch.tensor(col) for col in zip(*rows))
        print(f"| {name} | {float(super_bad.mean()):.3f} | {spread(bad)} | {spread(top1)} | {ms.mean():.1f} |")
        out.append({"selector": name, **setup, "mismatched_super": float(super_bad.mean()),
                    "mismatched_selected": bad.tolist(), "top1": top1.tolist(), "select_ms": float(ms.mean())})
    print(f"| reference (trained on {len(clean)} clean pairs) | | | {spread(torch.tensor(reference_top1))} | |")
    out.append({"selector": f"reference ({len(clean)} clean pairs)", **setup, "top1": reference_top1})
    print("rows:", write_rows(args.out / "clip_quality.jsonl", [{**context("clip_quality"), **r} for r in out]))


if __name__ == "__main__":
    main()
