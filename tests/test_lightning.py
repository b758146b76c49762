"""Lightning trains on exactly the loader's own stream: every epoch, after a checkpoint resume (at an
epoch's end or in the middle of one), with the LightningModule scoring its own super-batches, and split
across two DDP ranks."""
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

L = pytest.importorskip("lightning")

from curatedloader import CuratedLoader, TopK  # noqa: E402

N, B, SUPER = 60, 4, 8


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(N, 2, generator=g), torch.randint(0, 3, (N,), generator=g), torch.arange(N))


def by_first_feature(batch):
    return batch[0][:, 0]


def make_loader(scorer=by_first_feature, **kw) -> CuratedLoader:
    return CuratedLoader(dataset(), batch_size=B, super_batch_size=SUPER, shuffle=True, seed=3,
                         scorer=scorer, selector=TopK(), **kw)


class Recorder(L.LightningModule):
    """Records the sample ids of every batch it trains on, per epoch."""

    def __init__(self, loader=None):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(2, 3)
        self.loader, self.trained = loader, []

    def forward(self, x):
        return self.net(x)

    def train_dataloader(self):
        return self.loader

    def training_step(self, batch, batch_idx):
        x, y, ids = batch
        self.trained.append((self.current_epoch, ids.tolist()))
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer(max_epochs: int, **kw) -> "L.Trainer":
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0)
    return L.Trainer(max_epochs=max_epochs, **{**defaults, **kw})


def own_stream(epochs: int) -> list:
    """The loader's own batches, epoch by epoch, with no framework around it."""
    loader = make_loader()
    return [(e, batch[2].tolist()) for e in range(epochs) for batch in loader]


@pytest.mark.parametrize("how", ["fit", "train_dataloader"])
def test_fit_trains_the_loaders_own_stream_every_epoch(how):
    loader = make_loader()
    model = Recorder(loader if how == "train_dataloader" else None)
    if how == "fit":
        trainer(3).fit(model, train_dataloaders=loader)
    else:
        trainer(3).fit(model)
    expected = own_stream(3)
    assert model.trained == expected
    for e in range(3):  # each epoch: distinct samples, a new order
        ids = [i for epoch, batch in expected if epoch == e for i in batch]
        assert len(ids) == len(set(ids)) == (N // SUPER) * B + B // 2  # 7 full super-batches, then 4 rows -> 2
    assert [b for e, b in expected if e == 0] != [b for e, b in expected if e == 1]


class Totals(L.Callback):
    def __init__(self):
        self.seen = []

    def on_train_epoch_start(self, trainer, module):
        self.seen.append((trainer.num_training_batches, trainer.progress_bar_callback.total_train_batches))


def test_progress_bar_total_is_the_loaders_length():
    loader, totals = make_loader(), Totals()
    model = Recorder()
    trainer(2, enable_progress_bar=True, callbacks=[totals]).fit(model, train_dataloaders=loader)
    per_epoch = [sum(1 for e, _ in model.trained if e == k) for k in range(2)]
    assert totals.seen == [(len(loader), len(loader))] * 2 and per_epoch == [len(loader)] * 2


class SaveAt(L.Callback):
    """Saves a checkpoint after global step `step` (mid-epoch unless it ends one)."""

    def __init__(self, step: int, path):
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


@pytest.mark.parametrize("step", [8, 11, 19])  # len(loader) is 8: an epoch's end, then in epochs 1 and 2
def test_checkpoint_resume_continues_the_uninterrupted_run_exactly(tmp_path, step):
    path = tmp_path / "step.ckpt"
    full = Recorder()
    trainer(3, callbacks=[SaveAt(step, path)]).fit(full, train_dataloaders=make_loader())
    resumed = Recorder()
    trainer(3).fit(resumed, train_dataloaders=make_loader(), ckpt_path=path)
    assert resumed.trained == full.trained[step:]
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))


class LearnerScorer:
    """Scores a super-batch with the LightningModule being trained; remembers what it scored."""

    def __init__(self, module):
        self.module, self.scored = module, []

    def __call__(self, batch):
        x, y, ids = batch
        losses = nn.functional.cross_entropy(self.module(x), y, reduction="none")
        self.scored.append((ids, losses))
        return losses


def test_a_scorer_using_the_lightning_module_trains_its_hardest_samples():
    model = Recorder()
    scorer = LearnerScorer(model)
    trainer(2).fit(model, train_dataloaders=make_loader(scorer=scorer))
    assert len(scorer.scored) == len(model.trained) == 16
    for (ids, losses), (_, trained) in zip(scorer.scored, model.trained):
        k = B if len(ids) == SUPER else len(trained)
        assert sorted(trained) == sorted(ids[losses.topk(k).indices].tolist())
    first, last = scorer.scored[0][1], scorer.scored[-1][1]
    assert not first.requires_grad and last.isfinite().all()


DDP_SCRIPT = textwrap.dedent("""
    import json, sys
    import lightning as L
    sys.path[:0] = [sys.argv[1]]
    from test_lightning import Recorder, SaveAt, make_loader
    out = sys.argv[2]
    kw = dict(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False)
    loader = make_loader(gather_state=True)  # built before the Trainer, so before the process group exists
    full = Recorder()
    trainer = L.Trainer(callbacks=[SaveAt(5, f"{out}/mid.ckpt")], **kw)
    trainer.fit(full, train_dataloaders=loader)
    resumed = Recorder()
    L.Trainer(**kw).fit(resumed, train_dataloaders=make_loader(gather_state=True), ckpt_path=f"{out}/mid.ckpt")
    with open(f"{out}/rank{trainer.global_rank}.json", "w") as f:
        json.dump({"full": full.trained, "resumed": resumed.trained, "len": len(loader)}, f)
""")


@pytest.mark.distributed
def test_ddp_ranks_train_disjoint_shares_and_each_resumes_its_own_stream(tmp_path):
    import json
    import pathlib

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    tests = str(pathlib.Path(__file__).parent)
    done = subprocess.run([sys.executable, str(script), tests, str(tmp_path)], timeout=300, cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["len"] == ranks[1]["len"] == 4  # 30 rows per rank: 3 super-batches of 8, then 6 rows -> 3
    for epoch in range(2):
        a = [i for e, batch in ranks[0]["full"] if e == epoch for i in batch]
        b = [i for e, batch in ranks[1]["full"] if e == epoch for i in batch]
        assert len(a) == len(b) == 3 * B + 3 and not set(a) & set(b)
    for rank in ranks:  # the one checkpoint rank 0 wrote resumes each rank mid-epoch 1 on its own stream
        assert rank["resumed"] == rank["full"][5:]
