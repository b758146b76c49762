"""A plain TensorDataset is gathered a chunk at a time, and its batches are still DataLoader's."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from curatedloader import CuratedLoader


@pytest.mark.parametrize("workers", [0, 2])
def test_gathered_tensor_batches_equal_dataloaders(workers):
    data = TensorDataset(torch.randn(37, 3, 2).transpose(1, 2), torch.arange(37) % 5, torch.rand(37) > 0.5)
    kw = dict(batch_size=8, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(3))
    ours = list(CuratedLoader(data, **kw))
    kw["generator"] = torch.Generator().manual_seed(3)
    theirs = list(DataLoader(data, **kw))
    assert len(ours) == len(theirs) == 5
    for a, b in zip(ours, theirs):
        assert type(a) is type(b) is list
        for x, y in zip(a, b):
            assert x.dtype == y.dtype and x.shape == y.shape and x.is_contiguous() == y.is_contiguous()
            assert torch.equal(x, y)


def test_a_tensordataset_subclass_keeps_its_own_getitem():
    class Doubled(TensorDataset):
        def __getitem__(self, i):
            return tuple(2 * t[i] for t in self.tensors)

    batch = next(iter(CuratedLoader(Doubled(torch.arange(6)), batch_size=3)))
    assert batch[0].tolist() == [0, 2, 4]
