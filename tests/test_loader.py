"""CuratedLoader: DataLoader parity, sampler invariants, resume, bad input."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from curatedloader import JEST, CuratedLoader, Early, Scores, Steps, TopK, Uniform
from curatedloader.loader import resolve_super_batch_size

fast = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def dataset(n: int) -> TensorDataset:
    return TensorDataset(torch.arange(n).float(), torch.arange(n))


def ids_of(batches) -> list[list[int]]:
    return [b[1].tolist() for b in batches]


def score_by_value(batch) -> torch.Tensor:
    """A deterministic scorer: the sample's own index, so higher ids are better."""
    return batch[0]


class Stream(IterableDataset):
    def __init__(self, n: int):
        self.n = n

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        for i in range(wid, self.n, nw):
            yield torch.tensor(float(i)), torch.tensor(i)


# ---- selection off: a DataLoader -------------------------------------------------------------

@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_parity_with_dataloader(shuffle, drop_last):
    ds = dataset(37)
    expected = ids_of(DataLoader(ds, batch_size=5, shuffle=shuffle, drop_last=drop_last,
                                 generator=torch.Generator().manual_seed(3)))
    got = ids_of(CuratedLoader(ds, batch_size=5, shuffle=shuffle, drop_last=drop_last,
                               generator=torch.Generator().manual_seed(3)))
    assert got == expected


def test_parity_with_dataloader_sampler_and_workers():
    ds = dataset(29)
    sampler = torch.utils.data.RandomSampler(ds, generator=torch.Generator().manual_seed(7))
    expected = ids_of(DataLoader(ds, batch_size=4, sampler=sampler))
    sampler = torch.utils.data.RandomSampler(ds, generator=torch.Generator().manual_seed(7))
    assert ids_of(CuratedLoader(ds, batch_size=4, sampler=sampler, num_workers=2)) == expected


@fast
@given(n=st.integers(1, 60), b=st.integers(1, 9), workers=st.integers(0, 2), drop_last=st.booleans(),
       shuffle=st.booleans())
def test_exactly_once_when_selection_off(n, b, workers, drop_last, shuffle):
    loader = CuratedLoader(dataset(n), batch_size=b, num_workers=workers, drop_last=drop_last,
                           shuffle=shuffle, seed=n)
    batches = ids_of(loader)
    flat = [i for batch in batches for i in batch]
    assert len(flat) == len(set(flat))
    assert all(len(batch) == b for batch in (batches if drop_last else batches[:-1]))
    assert set(flat) == set(range(n)) if not drop_last else len(flat) == n - n % b
    assert len(loader) == len(batches)
    assert loader.stats.rejected == 0 and loader.stats.trained == len(flat)


def test_iterable_dataset_selection_off_covers_stream():
    batches = ids_of(CuratedLoader(Stream(23), batch_size=4, num_workers=2))
    flat = sorted(i for batch in batches for i in batch)
    assert flat == list(range(23)) and all(len(batch) == 4 for batch in batches[:-1])


def test_a_distributed_sampler_is_not_split_again(monkeypatch):
    monkeypatch.setattr("curatedloader.loader.rank_world", lambda: (1, 2))
    ds = dataset(20)
    sampler = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=1, seed=3)
    loader = CuratedLoader(ds, batch_size=3, sampler=sampler)
    batches = ids_of(loader)
    assert [i for b in batches for i in b] == list(sampler) and len(loader) == len(batches) == 4


class Tagged(TensorDataset):
    tag = -1

    def __getitem__(self, i):
        return (*super().__getitem__(i), self.tag)


def tag_worker(worker_id: int) -> None:
    Tagged.tag = len(torch.utils.data.get_worker_info().dataset)


def test_worker_init_fn_is_passed_through_and_sees_the_dataset():
    ds = Tagged(torch.arange(12).float(), torch.arange(12))
    batches = list(CuratedLoader(ds, batch_size=4, num_workers=2, worker_init_fn=tag_worker))
    assert len(batches) == 3 and all(b[2].tolist() == [12] * 4 for b in batches)


class PerWorker(TensorDataset):
    def __getitem__(self, i):
        return (*super().__getitem__(i), self.handle)


def open_handle(worker_id: int) -> None:  # e.g. an h5py file opened once per worker
    torch.utils.data.get_worker_info().dataset.handle = f"worker{worker_id}"


def test_worker_init_fn_sets_up_the_users_dataset():
    ds = PerWorker(torch.arange(8).float(), torch.arange(8))
    batches = list(CuratedLoader(ds, batch_size=4, num_workers=2, worker_init_fn=open_handle))
    assert [list(b[2]) for b in batches] == [["worker0"] * 4, ["worker1"] * 4]


def test_strings_in_tuple_samples_are_rows():
    class Named(TensorDataset):
        def __getitem__(self, i):
            return (*super().__getitem__(i), f"s{i}")  # default_collate makes a tuple of the names

    loader = CuratedLoader(Named(torch.arange(12).float(), torch.arange(12)), batch_size=2, super_batch_size=6,
                           scorer=lambda b: b[0], selector=TopK())
    batches = list(loader)
    assert [b[2] for b in batches] == [("s4", "s5"), ("s10", "s11")]


def test_inactive_schedule_is_a_dataloader():
    ds = dataset(20)
    plain = ids_of(CuratedLoader(ds, batch_size=4, shuffle=True, seed=2))
    gated = ids_of(CuratedLoader(ds, batch_size=4, shuffle=True, seed=2, scorer=score_by_value,
                                 schedule=Steps(100)))
    assert gated == plain


# ---- selection on: invariants ----------------------------------------------------------------

class RecordingScorer:
    """Plain-function scorer that remembers each super-batch's ids and returns random scores."""

    def __init__(self):
        self.super_batches = []
        self.gen = torch.Generator().manual_seed(0)

    def __call__(self, batch):
        self.super_batches.append(batch[1].tolist())
        return torch.randn(len(batch[1]), generator=self.gen)


@fast
@given(n=st.integers(1, 80), b=st.integers(1, 6), ratio=st.sampled_from([0.0, 0.25, 0.5, 0.8]),
       selector=st.sampled_from([JEST(), TopK(), Uniform()]), drop_last=st.booleans())
def test_sub_batch_within_super_batch(n, b, ratio, selector, drop_last):
    scorer = RecordingScorer()
    loader = CuratedLoader(dataset(n), batch_size=b, filter_ratio=ratio, scorer=scorer, selector=selector,
                           shuffle=True, drop_last=drop_last)
    B = loader.super_batch_size
    batches = ids_of(loader)
    assert len(batches) == len(scorer.super_batches) == len(loader)
    for sub, sup in zip(batches, scorer.super_batches):
        assert set(sub) <= set(sup) and len(sub) == len(set(sub))
        assert len(sup) == B or (not drop_last and sup is scorer.super_batches[-1])
        assert len(sub) == (b if len(sup) == B else max(1, round(len(sup) * b / B)))
    seen = [i for sup in scorer.super_batches for i in sup]
    assert len(seen) == len(set(seen))  # one pass: no sample scored twice in an epoch


def test_topk_picks_the_top_scores():
    loader = CuratedLoader(dataset(40), batch_size=3, super_batch_size=10, scorer=score_by_value,
                           selector=TopK(), shuffle=True)
    scorer_inputs = []
    loader.scorer = lambda batch: scorer_inputs.append(batch[1].tolist()) or batch[0]
    batches = ids_of(loader)
    assert len(batches) == len(scorer_inputs) == 4
    for sub, sup in zip(batches, scorer_inputs):
        assert sorted(sub) == sorted(sup)[-3:]


def test_learnability_prefers_high_learner_low_reference():
    def scorer(batch):
        x = batch[0]
        return Scores(learner=x, reference=2 * x)  # learnability = -x: the smallest ids win
    loader = CuratedLoader(dataset(20), batch_size=2, super_batch_size=20, scorer=scorer, selector=TopK())
    assert ids_of(loader) == [[0, 1]]


def test_jest_matches_sequential_softmax_sampling():
    """Gumbel-top-k equals successive draws without replacement from softmax(s / tau)."""
    from curatedloader.selection import gumbel_topk
    logits = torch.tensor([1.0, 0.0, -0.5, 2.0])
    trials, gen = 20000, torch.Generator().manual_seed(0)
    counts = torch.zeros(4, 4)
    for _ in range(trials):
        first, second = gumbel_topk(logits, 2, gen).tolist()
        counts[first, second] += 1
    p = torch.softmax(logits, 0)
    expected = p[:, None] * p[None, :] / (1 - p[:, None])  # P(first=i) P(second=j | first=i)
    expected.fill_diagonal_(0)
    assert torch.allclose(counts / trials, expected, atol=0.015)


def test_tiny_temperature_tends_to_topk():
    scores = Scores(learner=torch.tensor([5.0, 10.0, -1.0]), reference=torch.zeros(3))
    picks = {JEST(temperature=1e-38)(scores, 1, torch.Generator().manual_seed(s)).item() for s in range(20)}
    assert picks == {1}  # scores / temperature overflow to inf: ties would hide the order
    with pytest.raises(ValueError, match="temperature"):
        JEST(temperature=float("inf"))


def test_gumbel_topk_survives_huge_logits():
    from curatedloader.selection import gumbel_topk
    chosen = gumbel_topk(torch.tensor([1e30, -1e30, 5e4, 0.0]), 2, torch.Generator().manual_seed(0))
    assert set(chosen.tolist()) == {0, 2}


# ---- determinism and resume ------------------------------------------------------------------

def make_loader(workers=0, **kw):
    return CuratedLoader(dataset(53), batch_size=3, filter_ratio=0.6, scorer=score_by_value, selector=JEST(),
                         shuffle=True, seed=11, num_workers=workers, **kw)


def two_epochs(loader):
    return [ids_of(loader), ids_of(loader)]


def test_same_seed_same_batches_new_seed_new_batches():
    assert two_epochs(make_loader()) == two_epochs(make_loader())
    other = CuratedLoader(dataset(53), batch_size=3, filter_ratio=0.6, scorer=score_by_value, shuffle=True, seed=12)
    assert ids_of(other) != ids_of(make_loader())


def test_epochs_differ():
    first, second = two_epochs(make_loader())
    assert first != second


@fast
@given(stop=st.integers(0, 20), workers=st.integers(0, 1), schedule_start=st.integers(0, 6))
def test_resume_at_any_step_gives_same_continuation(stop, workers, schedule_start):
    reference = make_loader(workers, schedule=Steps(schedule_start, schedule_start + 4))
    full = ids_of(reference) + ids_of(reference)
    stop = min(stop, len(full) - 1)
    first = make_loader(workers, schedule=Steps(schedule_start, schedule_start + 4))
    seen, it = [], iter(first)
    for _ in range(stop):
        try:
            seen.append(next(it)[1].tolist())
        except StopIteration:
            it = iter(first)
            seen.append(next(it)[1].tolist())
    state = first.state_dict()
    resumed = make_loader(workers, schedule=Steps(schedule_start, schedule_start + 4))
    resumed.load_state_dict(state)
    rest = ids_of(resumed)
    while len(seen) + len(rest) < len(full):
        rest += ids_of(resumed)
    assert seen + rest == full


class Augmented(TensorDataset):
    """Random augmentation from all three RNGs a transform may use."""

    def __getitem__(self, i):
        import random

        import numpy as np

        x, y = super().__getitem__(i)
        return x + torch.rand(()) + random.random() + float(np.random.rand()), y


def augmented(n: int = 40, **kw) -> CuratedLoader:
    return CuratedLoader(Augmented(torch.arange(n).float(), torch.arange(n)), batch_size=4, shuffle=True,
                         seed=5, **kw)


def test_augmentations_follow_the_seed_whatever_the_workers():
    import random

    import numpy as np

    torch.manual_seed(0)
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    single = [b[0].tolist() for b in augmented(num_workers=0)]
    # the training loop's RNGs are left as they were
    assert torch.equal(torch.get_rng_state(), states[0]) and random.getstate() == states[1]
    assert (np.random.get_state()[1] == states[2]).all()
    assert [b[0].tolist() for b in augmented(num_workers=2)] == single


def test_resume_with_persistent_workers_and_worker_randomness():
    def loader():
        return augmented(num_workers=2, persistent_workers=True)

    first = loader()
    full = [b[0].tolist() for b in first] + [b[0].tolist() for b in first]  # epoch 1 reuses the workers
    run = loader()
    list(run)
    it = iter(run)
    head = [next(it)[0].tolist() for _ in range(3)]
    resumed = loader()
    resumed.load_state_dict(run.state_dict())
    assert head + [b[0].tolist() for b in resumed] == full[10:]


def test_resume_does_not_reread_consumed_data():
    class Counting(TensorDataset):
        reads = 0

        def __getitem__(self, i):
            Counting.reads += 1
            return super().__getitem__(i)

    ds = Counting(torch.arange(50).float(), torch.arange(50))
    loader = CuratedLoader(ds, batch_size=5, shuffle=True)
    it = iter(loader)
    for _ in range(6):
        next(it)
    state = loader.state_dict()
    Counting.reads = 0
    resumed = CuratedLoader(ds, batch_size=5, shuffle=True)
    resumed.load_state_dict(state)
    assert len(ids_of(resumed)) == 4 and Counting.reads == 20


# ---- structure, stats ------------------------------------------------------------------------

def test_sub_batch_keeps_collate_structure():
    class Dicts(torch.utils.data.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, i):
            return {"x": torch.full((2,), float(i)), "name": f"s{i}", "pair": (i, torch.tensor(i))}

    loader = CuratedLoader(Dicts(), batch_size=2, super_batch_size=6, scorer=lambda b: b["x"][:, 0],
                           selector=TopK())
    batch = next(iter(loader))
    assert batch["name"] == ["s4", "s5"] and batch["x"][:, 0].tolist() == [4.0, 5.0]
    assert batch["pair"][0].tolist() == [4, 5] and batch["pair"][1].tolist() == [4, 5]


def test_stats_count_and_time():
    loader = make_loader()
    n = sum(len(b) for b in ids_of(loader))
    s = loader.stats.as_dict()
    assert s["trained"] == n and s["seen"] == 53 and s["rejected"] == 53 - n
    assert s["score_ms"] > 0 and s["select_ms"] > 0 and 0 < s["overhead"] < 1


def test_models_are_scored_in_eval_mode_and_restored():
    from curatedloader.scoring import CrossEntropyScorer

    model = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5))
    model.train()
    before = model[1].running_mean.clone()
    ds = TensorDataset(torch.randn(32, 1), torch.randint(0, 4, (32,)))
    loader = CuratedLoader(ds, batch_size=4, super_batch_size=16, scorer=CrossEntropyScorer(model),
                           selector=JEST(criterion="hard_learner"))
    batches = list(loader)
    assert len(batches) == 2 and model.training and model[2].training
    assert torch.equal(model[1].running_mean, before)


def test_plain_function_scorer_runs_without_autograd():
    modes = []

    def scorer(batch):
        modes.append(torch.is_inference_mode_enabled())
        return batch[0]

    loader = CuratedLoader(dataset(8), batch_size=2, super_batch_size=4, scorer=scorer, selector=TopK())
    assert len(ids_of(loader)) == 2 and modes == [True, True]


def test_reference_losses_table_is_looked_up_by_sample_id():
    from curatedloader.scoring import CrossEntropyScorer

    ds = TensorDataset(torch.randn(20, 3), torch.randint(0, 2, (20,)))
    table = torch.arange(20).float()  # the largest ids have the largest reference loss
    model = torch.nn.Linear(3, 2)
    torch.nn.init.zeros_(model.weight), torch.nn.init.zeros_(model.bias)  # equal learner losses
    loader = CuratedLoader(ds, batch_size=5, super_batch_size=20, selector=TopK(),
                           scorer=CrossEntropyScorer(model, reference_losses=table))
    assert next(iter(loader))[0].tolist() == ds.tensors[0][:5].tolist()


# ---- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, word", [
    (dict(filter_ratio=1.0), "filter_ratio"),
    (dict(filter_ratio=-0.1), "filter_ratio"),
    (dict(filter_ratio="0.5"), "filter_ratio"),
    (dict(super_batch_size=2), "super_batch_size"),
    (dict(filter_ratio=0.5, super_batch_size=8), "super_batch_size"),
    (dict(nan="ignore"), "nan"),
])
def test_bad_arguments_name_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        CuratedLoader(dataset(10), batch_size=4, **kwargs)


@pytest.mark.parametrize("kwargs, word", [
    (dict(scorer=3), "scorer"),
    (dict(schedule="always"), "schedule"),
    (dict(selector=TopK), "selector"),  # the class, not an instance
    (dict(seed=1.5), "seed"),
])
def test_arguments_of_the_wrong_type_name_the_argument(kwargs, word):
    with pytest.raises(TypeError, match=word):
        CuratedLoader(dataset(10), batch_size=4, **kwargs)


def test_numpy_filter_ratio_is_a_number():
    assert resolve_super_batch_size(4, np.float32(0.5), None) == 8


@pytest.mark.parametrize("b", [0, -1, 2.5])
def test_bad_batch_size(b):
    with pytest.raises(ValueError, match="batch_size"):
        resolve_super_batch_size(b, 0.5, None)


@pytest.mark.parametrize("out, word", [
    (lambda n: torch.zeros(n + 1), "shape"),
    (lambda n: torch.zeros(n, 2), "shape"),
    (lambda n: torch.zeros(n, dtype=torch.long), "dtype"),
    (lambda n: [0.0] * n, "Scores or a Tensor"),
    (lambda n: Scores(learner=torch.zeros(n), reference=torch.zeros(n - 1)), "reference"),
])
def test_scorer_returning_wrong_shape_or_dtype(out, word):
    loader = CuratedLoader(dataset(10), batch_size=2, super_batch_size=5, scorer=lambda b: out(len(b[0])))
    with pytest.raises(ValueError, match=word):
        next(iter(loader))


def test_collate_output_without_rows_is_explained_when_selecting():
    # selection slices rows: a list of per-sample scalar tensors has no rows (with selection off it passes through)
    loader = CuratedLoader(dataset(6), batch_size=2, super_batch_size=4, scorer=score_by_value,
                           collate_fn=lambda samples: [s[0] for s in samples])
    with pytest.raises(ValueError, match="collate_fn returned"):
        next(iter(loader))


def nan_scorer(batch):
    s = batch[0].clone()
    s[s == 3] = float("nan")
    return s


def test_nan_scores_raise_by_default():
    loader = CuratedLoader(dataset(10), batch_size=2, super_batch_size=5, scorer=nan_scorer)
    with pytest.raises(ValueError, match="nan='uniform'"):
        list(loader)
    assert loader.stats.nan_scores == 1


def test_nan_scores_fall_back_to_uniform_and_are_counted():
    loader = CuratedLoader(dataset(10), batch_size=2, super_batch_size=5, scorer=nan_scorer, nan="uniform")
    batches = ids_of(loader)
    assert len(batches) == 2 and loader.stats.nan_scores == 1 and loader.stats.nan_batches == 1


def test_missing_reference_for_learnability_is_explained():
    loader = CuratedLoader(dataset(10), batch_size=2, super_batch_size=5,
                           scorer=lambda b: Scores(learner=b[0]))
    with pytest.raises(ValueError, match="reference"):
        next(iter(loader))


# ---- keep-lists and class weights (from the coreset pruner) ---------------------------------

def test_subset_restricts_the_epoch_to_the_keep_list(tmp_path):
    from curatedloader.pruning import load_keep, save_keep

    save_keep(tmp_path / "keep.txt", [3, 7, 11, 12, 19])
    for subset in (load_keep(tmp_path / "keep.txt"), tmp_path / "keep.txt"):
        loader = CuratedLoader(dataset(20), batch_size=2, shuffle=True, subset=subset)
        assert sorted(i for b in ids_of(loader) for i in b) == [3, 7, 11, 12, 19] and len(loader) == 3
    with pytest.raises(ValueError, match="subset"):
        CuratedLoader(dataset(5), batch_size=2, subset=[1, 5])


def test_class_weights_reach_the_batch_and_follow_updates():
    from curatedloader.pruning import GroupDRO, weighted_mean

    ds = TensorDataset(torch.randn(8, 2), torch.tensor([0, 1, 1, 1, 0, 1, 1, 1]))
    dro = GroupDRO(2)
    loader = CuratedLoader(ds, batch_size=4, class_weights=dro.weights)
    x, y, w = next(iter(loader))
    assert torch.equal(w, torch.ones(4))
    dro.update(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]))  # class 0 lags the reference
    x, y, w = next(iter(loader))
    assert w[y == 0].min() > 1 > w[y == 1].max()
    assert weighted_mean(torch.ones(4), w) == 1
    with pytest.raises(ValueError, match="class_weights"):
        CuratedLoader(ds, batch_size=4, class_weights=[0.5, 0.5])


def test_schedule_sees_only_finite_scores_even_on_nan_batches():
    from curatedloader import Always

    class Recording(Always):
        def __init__(self):
            self.sizes = []

        def update(self, step, scores):
            self.sizes.append(len(scores))

    schedule = Recording()
    list(CuratedLoader(dataset(10), batch_size=2, super_batch_size=5, scorer=nan_scorer, nan="uniform",
                       schedule=schedule))
    assert schedule.sizes == [4, 5]  # sample 3 scored NaN in the first super-batch


def test_batched_fetch_of_the_dataset_is_used():
    class Batched(TensorDataset):
        calls = 0

        def __getitems__(self, indices):
            Batched.calls += 1
            return [self[i] for i in indices]

    ds = Batched(torch.arange(12).float(), torch.arange(12))
    assert ids_of(CuratedLoader(ds, batch_size=4)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert Batched.calls == 3


def test_batches_formed_in_the_main_process_are_pinned_again(monkeypatch):
    import curatedloader.loader as loader_module

    pinned = []
    monkeypatch.setattr(loader_module, "_pin", lambda batch: pinned.append(batch[1].tolist()) or batch)

    def run(**kw):
        pinned.clear()
        loader = CuratedLoader(dataset(12), batch_size=2, **kw)
        loader._repin = True  # as with pin_memory=True on a CUDA machine
        return ids_of(loader)

    run()  # untouched pieces keep the workers' pinning
    assert pinned == []
    selected = run(super_batch_size=4, scorer=score_by_value, selector=TopK())
    assert pinned == selected  # gathered rows are pinned again


# ---- hostile input (what user objects return is checked and named) ----------------------------

def selecting(selector, **kw):
    return CuratedLoader(dataset(20), batch_size=2, super_batch_size=5, scorer=score_by_value, selector=selector, **kw)


@pytest.mark.parametrize("selector, error, word", [
    (lambda scores, k, gen: torch.zeros(k, dtype=torch.long), ValueError, "repeated"),
    (lambda scores, k, gen: torch.arange(k + 1), ValueError, "expected 2"),
    (lambda scores, k, gen: torch.tensor([0, 7]), ValueError, "outside"),
    (lambda scores, k, gen: [0, 1], TypeError, "LongTensor"),
    (lambda scores, k, gen: torch.tensor([0.0, 1.0]), TypeError, "dtype"),
])
def test_selector_output_is_checked_and_named(selector, error, word):
    with pytest.raises(error, match=f"selector.*{word}"):
        next(iter(selecting(selector)))


def test_selector_with_a_wrong_signature_is_named():
    with pytest.raises(TypeError, match="selector must be callable as selector\\(scores, k, generator\\)"):
        selecting(lambda scores, k: scores)


@pytest.mark.parametrize("kwargs, word", [(dict(schedule=Early), "schedule"), (dict(selector=JEST), "selector")])
def test_classes_instead_of_instances_are_named(kwargs, word):
    with pytest.raises(TypeError, match=f"{word} must be an instance"):
        CuratedLoader(dataset(10), batch_size=2, scorer=score_by_value, **kwargs)


def test_scores_on_the_meta_device_are_refused():
    loader = CuratedLoader(dataset(10), batch_size=2, super_batch_size=5,
                           scorer=lambda b: torch.zeros(len(b[0]), device="meta"))
    with pytest.raises(ValueError, match="meta"):
        next(iter(loader))


@pytest.mark.parametrize("subset", [
    torch.tensor([True, False] * 5), np.array([True, False] * 5), [0.0, 1.0], np.array([1.5, 2.5]),
])
def test_subset_must_hold_integer_indices(subset):
    with pytest.raises(TypeError, match="subset"):
        CuratedLoader(dataset(10), batch_size=2, subset=subset)


def test_a_keep_list_of_shard_ids_or_a_bad_line_is_named(tmp_path):
    from curatedloader.pruning import save_keep

    save_keep(tmp_path / "shards.txt", ["a.tar/0", "a.tar/1"])
    with pytest.raises(TypeError, match="subset"):
        CuratedLoader(dataset(10), batch_size=2, subset=tmp_path / "shards.txt")
    (tmp_path / "bad.txt").write_text("#curatedloader-ids v1 int\n3\nfour\n")
    with pytest.raises(ValueError, match="bad.txt line 3 is 'four'"):
        CuratedLoader(dataset(10), batch_size=2, subset=tmp_path / "bad.txt")


def test_class_weights_shorter_than_the_classes_is_named():
    ds = TensorDataset(torch.randn(8, 2), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]))
    loader = CuratedLoader(ds, batch_size=4, class_weights=torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="class_weights has 2 classes"):
        next(iter(loader))


def test_a_list_of_samples_is_rows_not_fields():
    # an identity collate over samples whose tensors happen to have B entries: rows are samples
    class Wide(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return (torch.full((4,), float(i)),)

    loader = CuratedLoader(Wide(), batch_size=2, super_batch_size=4, collate_fn=lambda samples: samples,
                           scorer=lambda batch: torch.stack([s[0][0] for s in batch]), selector=TopK())
    first = next(iter(loader))
    assert [s[0].tolist() for s in first] == [[2.0] * 4, [3.0] * 4]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_with_a_user_generator_is_exact_after_the_first_epoch(workers):
    def make():
        return CuratedLoader(dataset(30), batch_size=4, shuffle=True, num_workers=workers,
                             generator=torch.Generator().manual_seed(5), super_batch_size=8, scorer=score_by_value)

    full = make()
    epochs = [ids_of(full), ids_of(full)]
    run = make()
    ids_of(run)
    it = iter(run)
    head = [next(it)[1].tolist() for _ in range(2)]
    resumed = make()
    resumed.load_state_dict(run.state_dict())
    assert head + ids_of(resumed) == epochs[1]


def test_a_dropped_loader_with_persistent_workers_frees_them_at_once():
    import subprocess
    import sys

    code = """
import gc, time, torch, multiprocessing as mp
from torch.utils.data import TensorDataset
from curatedloader import CuratedLoader
gc.disable()  # no cycle collector: workers must go when the last reference does
ds = TensorDataset(torch.arange(40).float(), torch.arange(40))
for _ in range(4):
    loader = CuratedLoader(ds, batch_size=4, num_workers=2, persistent_workers=True, super_batch_size=8,
                           scorer=lambda b: b[0])
    it = iter(loader)
    next(it)
    del loader, it
time.sleep(1.0)
print(len(mp.active_children()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_state_after_a_break_is_where_the_loop_stopped():
    loader = make_loader()
    for i, batch in enumerate(loader):
        if i == 2:
            break
    resumed = make_loader()
    resumed.load_state_dict(loader.state_dict())
    assert len(ids_of(resumed)) == len(make_loader()) - 3
