"""Cheaper scoring: the scorer sees score_transform's view under score_autocast; the rows come from the batch."""
import pytest
import torch
from torch.utils.data import TensorDataset

from curatedloader import CuratedLoader, TopK


def test_the_scorer_sees_the_transformed_view_and_the_selected_rows_are_whole():
    data = TensorDataset(torch.arange(32).float().repeat(4, 1).T.contiguous(), torch.arange(32))
    seen = []

    def scorer(view):
        seen.append(view[0].shape)
        return -view[0][:, 0]  # lowest first column is best

    loader = CuratedLoader(data, batch_size=2, super_batch_size=8, scorer=scorer, selector=TopK(),
                           score_transform=lambda batch: [batch[0][:, :1], batch[1]])
    x, y = next(iter(loader))
    assert seen == [torch.Size([8, 1])]
    assert x.shape == (2, 4) and y.tolist() == [0, 1]


def test_scores_are_computed_under_autocast():
    layer = torch.nn.Linear(4, 1)
    dtypes = []

    def scorer(batch):
        out = layer(batch[0]).squeeze(1)
        dtypes.append(out.dtype)
        return out.float()

    loader = CuratedLoader(TensorDataset(torch.randn(16, 4)), batch_size=2, super_batch_size=8, scorer=scorer,
                           selector=TopK(), score_autocast=torch.bfloat16)
    assert len(list(loader)) == 2 and dtypes == [torch.bfloat16] * 2
    assert layer(torch.randn(2, 4)).dtype == torch.float32  # autocast ends with the scoring


def test_bad_arguments_are_named():
    data = TensorDataset(torch.randn(8, 2))
    with pytest.raises(TypeError, match="score_transform must be callable"):
        CuratedLoader(data, batch_size=2, score_transform=3)
    with pytest.raises(TypeError, match="score_autocast must be a torch.dtype"):
        CuratedLoader(data, batch_size=2, score_autocast="bf16")
