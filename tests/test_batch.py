"""Row operations on collated batches."""
import numpy as np
import torch

from curatedloader.batch import attach, batch_len, cat_batches, index_batch


def nested(n: int, start: int = 0):
    r = torch.arange(start, start + n)
    return {"x": r.float(), "pair": (r, [f"s{i}" for i in r.tolist()]), "arr": np.arange(start, start + n)}


def test_index_then_cat_round_trips():
    batch = nested(6)
    idx = torch.tensor([4, 0, 2])
    sub = index_batch(batch, idx)
    assert batch_len(sub) == 3 and sub["pair"][1] == ["s4", "s0", "s2"] and sub["arr"].tolist() == [4, 0, 2]
    joined = cat_batches([index_batch(batch, torch.arange(3)), index_batch(batch, torch.arange(3, 6))])
    assert joined["x"].tolist() == batch["x"].tolist() and joined["pair"][1] == batch["pair"][1]
    assert joined["arr"].tolist() == list(range(6))


def test_attach_adds_a_field():
    assert attach({"x": 1}, "w", 2) == {"x": 1, "w": 2}
    assert len(attach((torch.zeros(2), torch.ones(2)), "w", torch.ones(2))) == 3
    assert attach(("a", "b"), "w", torch.ones(2))[0] == ("a", "b")  # a tuple of strings is one field
    assert isinstance(attach(torch.zeros(2), "w", 3), tuple)


def test_a_bare_tensor_batch_is_its_own_first_field():
    import pytest

    from curatedloader.batch import get_field

    x = torch.arange(6).reshape(3, 2)
    assert get_field(x, 0) is x and get_field({"x": x}, "x") is x
    with pytest.raises(ValueError, match="no field 1"):
        get_field(x, 1)
