"""Hugging Face `datasets`: map-style with the torch format, iterable datasets resumed through their own
`state_dict()` (no re-reading), stable row ids for scorers from a field (`id_key=`), split by rank as
`split_dataset_by_node` splits."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

datasets = pytest.importorskip("datasets")

import curatedloader.loader as loader_module  # noqa: E402
from curatedloader import CuratedLoader, Scorer, TopK  # noqa: E402
from curatedloader.scoring.cross_entropy import CrossEntropyScorer  # noqa: E402

N = 40
READS: list = []


def table() -> "datasets.Dataset":
    g = torch.Generator().manual_seed(0)
    return datasets.Dataset.from_dict({"x": torch.randn(N, 2, generator=g).tolist(),
                                       "y": torch.randint(0, 3, (N,), generator=g).tolist(),
                                       "id": [1000 + 7 * i for i in range(N)]}).with_format("torch")


def counted(row):
    READS.append(int(row["id"]))
    return row


def stream(shards: int = 4) -> "datasets.IterableDataset":
    return table().to_iterable_dataset(num_shards=shards).map(counted)


class Recording(Scorer):
    """A scorer (higher first feature first) that records the ids it is given and the batch's "id" field."""

    def __init__(self):
        self.calls = []

    def score(self, batch, ids=None):
        self.calls.append((ids, batch["id"]))
        return batch["x"][:, 0]


def selecting(scorer, **kw) -> dict:
    return dict(batch_size=4, super_batch_size=8, scorer=scorer, selector=TopK(), **kw)


def test_map_style_torch_format_without_selection_gives_dataloaders_batches():
    ds = table()
    ours = CuratedLoader(ds, batch_size=6, shuffle=True, generator=torch.Generator().manual_seed(1))
    theirs = DataLoader(ds, batch_size=6, shuffle=True, generator=torch.Generator().manual_seed(1))
    for a, b in zip(ours, theirs, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("make", [table, stream])
def test_scorers_get_ids_from_the_id_field_with_id_key(make):
    scorer = Recording()
    loader = CuratedLoader(make(), id_key="id", **selecting(scorer, seed=3))
    trained = [i for batch in loader for i in batch["id"].tolist()]
    assert all(torch.equal(torch.as_tensor(ids), field) for ids, field in scorer.calls)
    assert sorted(trained) == sorted(set(trained)) and set(trained) <= {1000 + 7 * i for i in range(N)}
    positions = Recording()
    list(CuratedLoader(make(), **selecting(positions, seed=3)))  # without id_key: indices or stream positions
    assert all(int(ids.max()) < N for ids, _ in positions.calls)


def test_reference_losses_keyed_by_row_id_line_up_with_the_rows():
    torch.manual_seed(0)
    model = nn.Linear(2, 3)
    ds = table()
    # a reference loss per row id that makes exactly the rows with an even position the ones to learn
    reference = {int(ds[i]["id"]): (-100.0 if i % 2 == 0 else 100.0) for i in range(N)}
    scorer = CrossEntropyScorer(model, reference_losses=reference, input_key="x", target_key="y")
    loader = CuratedLoader(stream(), id_key="id", **selecting(scorer, seed=0))
    trained = [i for batch in loader for i in batch["id"].tolist()]
    assert trained and all((i - 1000) // 7 % 2 == 0 for i in trained)


@pytest.mark.parametrize("kw", [{}, selecting(lambda batch: batch["x"][:, 0])])
def test_an_iterable_dataset_resumes_through_its_own_state_without_rereading(kw):
    kw = {"batch_size": 4, **kw}
    full = [b["id"].tolist() for b in CuratedLoader(stream(), **kw)]
    run = CuratedLoader(stream(), **kw)
    it = iter(run)
    head = [next(it)["id"].tolist() for _ in range(3)]
    state = run.state_dict()
    READS.clear()
    resumed = CuratedLoader(stream(), **kw)
    resumed.load_state_dict(state)
    rest = [b["id"].tolist() for b in resumed]
    assert head + rest == full
    consumed = 3 * kw.get("super_batch_size", 4)
    assert len(READS) <= N - consumed + kw.get("super_batch_size", 4)  # the rest, and at most one piece again
    assert not set(READS) & {i for b in head for i in b}


def test_an_unsplit_iterable_dataset_is_split_by_rank_as_split_dataset_by_node(monkeypatch):
    from datasets.distributed import split_dataset_by_node

    per_rank = []
    for rank in range(2):
        monkeypatch.setattr(loader_module, "rank_world", lambda rank=rank: (rank, 2))
        ours = [b["id"].tolist() for b in CuratedLoader(stream(), batch_size=4)]
        theirs = [b["id"].tolist() for b in DataLoader(split_dataset_by_node(stream(), rank, 2), batch_size=4)]
        assert ours == theirs
        per_rank.append({i for b in ours for i in b})
    assert not per_rank[0] & per_rank[1] and len(per_rank[0] | per_rank[1]) == N
