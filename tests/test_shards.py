"""CuratedLoader.from_shards: exactly-once, determinism, resume, corrupt input, keep-lists, writing shards."""
import io
import os
import signal
import tarfile
import warnings

import numpy as np
import pytest
import torch
import webdataset as wds
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from curatedloader import CuratedLoader
from curatedloader.shards import ShardStream, count_samples, expand_urls, main, sample_id, write_shards

EXAMPLES = int(os.environ.get("SHARDS_EXAMPLES", 12))  # more for a soak run: SHARDS_EXAMPLES=200 pytest ...
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
sizes_st = st.lists(st.integers(0, 7), min_size=1, max_size=6)


def make_shards(root, sizes):
    """Shards root/s{i}.tar with sizes[i] samples each: npy = [k, k], cls = k, keys unique across shards."""
    os.makedirs(root, exist_ok=True)
    urls, k = [], 0
    for i, n in enumerate(sizes):
        url = os.path.join(root, f"s{i:03d}.tar")
        with wds.TarWriter(url) as w:
            for _ in range(n):
                w.write({"__key__": f"k{k:05d}", "npy": np.full(2, k, np.float32), "cls": k})
                k += 1
        urls.append(url)
    return urls, k


@pytest.fixture
def shards(tmp_path_factory):
    """make_shards(sizes) in a fresh directory; hypothesis calls it many times in one test."""
    return lambda sizes: make_shards(str(tmp_path_factory.mktemp("shards")), sizes)


def rows(loader, n_batches=None):
    """Each batch's sample numbers (the cls field), for n_batches or the whole epoch."""
    out = []
    for batch in loader:
        out.append(batch[1].tolist())
        if n_batches is not None and len(out) == n_batches:
            break
    return out


@FAST
@given(sizes=sizes_st, workers=st.integers(0, 3), b=st.integers(1, 4), drop_last=st.booleans(), shuffle=st.booleans())
def test_each_sample_once_per_epoch(shards, sizes, workers, b, drop_last, shuffle):
    assume(len(sizes) >= max(1, workers) and sum(sizes) > 0)
    urls, n = shards(sizes)
    loader = CuratedLoader.from_shards(urls, b, to_tuple=("npy", "cls"), num_workers=workers, drop_last=drop_last,
                                       shuffle=shuffle, shuffle_buffer=3)
    batches = rows(loader)
    flat = [x for batch in batches for x in batch]
    assert len(set(flat)) == len(flat)
    assert len(flat) == (n - n % b if drop_last else n)
    assert all(len(batch) == b for batch in batches[:-1])
    assert len(batches) == len(loader)
    if not drop_last:
        assert sorted(flat) == list(range(n))


def test_order_depends_on_seed_and_epoch_only(shards):
    urls, n = shards([9, 4, 0, 7])
    make = lambda seed, workers: CuratedLoader.from_shards(urls, 4, to_tuple=("npy", "cls"), seed=seed,
                                                           num_workers=workers)
    first = make(0, 2)
    assert rows(first) == rows(make(0, 2))
    assert rows(first) != rows(make(0, 2)), "a second epoch draws a new order"
    assert rows(make(1, 0)) != rows(make(0, 0))
    assert sorted(sum(rows(make(1, 0)), [])) == sorted(sum(rows(make(1, 3)), [])) == list(range(n))


@FAST
@given(sizes=sizes_st, workers=st.integers(0, 3), b=st.integers(1, 4), drop_last=st.booleans(), data=st.data())
def test_resume_yields_the_uninterrupted_batches_without_rereading(shards, sizes, workers, b, drop_last, data):
    assume(len(sizes) >= max(1, workers) and sum(sizes) > b)
    urls, n = shards(sizes)
    make = lambda: CuratedLoader.from_shards(urls, b, to_tuple=("npy", "cls"), num_workers=workers,
                                             drop_last=drop_last, shuffle_buffer=4, seed=3)
    full = rows(make())
    stop = data.draw(st.integers(1, len(full) - 1), label="stop") if len(full) > 1 else 1
    run = make()
    head = rows(run, stop)
    state = run.state_dict()
    seen = {x for batch in head for x in batch}
    for url, size, first in zip(urls, sizes, np.cumsum([0, *sizes[:-1]])):  # consumed shards: make them unreadable
        if size and set(range(first, first + size)) <= seen:
            with open(url, "wb") as f:
                f.write(b"gone")
    resumed = make()
    resumed.load_state_dict(state)
    assert head + rows(resumed) == full
    assert resumed.stats.bad_shards == 0


def test_resume_with_selection(shards):
    urls, _ = shards([10, 3, 8, 5])
    make = lambda: CuratedLoader.from_shards(urls, 3, to_tuple=("npy", "cls"), num_workers=2, filter_ratio=0.5,
                                             scorer=lambda batch: batch[0][:, 0] % 7)
    full = rows(make())
    run = make()
    head = rows(run, 2)
    resumed = make()
    resumed.load_state_dict(run.state_dict())
    assert head + rows(resumed) == full


def test_batches_are_dicts_with_keys_or_tuples(shards):
    urls, n = shards([3, 2])
    batch = next(iter(CuratedLoader.from_shards(urls, 5, shuffle=False)))
    assert batch["__key__"] == [f"k{k:05d}" for k in range(5)]
    assert batch["npy"].shape == (5, 2) and batch["cls"].tolist() == list(range(5))
    assert set(batch) == {"__key__", "npy", "cls"}
    x, y = next(iter(CuratedLoader.from_shards(os.path.dirname(urls[0]), 5, to_tuple="npy cls", shuffle=False)))
    assert x.dtype == torch.float32 and y.tolist() == list(range(5))


def test_keep_list_of_sample_ids(shards):
    urls, n = shards([6, 6])
    keep = {sample_id(urls[k // 6], f"k{k:05d}") for k in range(0, n, 3)}
    loader = CuratedLoader.from_shards(urls, 2, to_tuple=("npy", "cls"), keep=keep, num_workers=2)
    assert sorted(sum(rows(loader), [])) == list(range(0, n, 3)) and len(loader) == 2
    assert sample_id("/a/b/s000.tar", "k00001") == "s000.tar/k00001"


def test_keep_as_a_generator_and_keep_naming_no_sample(shards):
    urls, n = shards([3, 3])
    keep = (sample_id(urls[1], f"k{k:05d}") for k in (3, 5))  # read once: the check must not use it up
    assert sorted(sum(rows(CuratedLoader.from_shards(urls, 2, to_tuple=("npy", "cls"), keep=keep)), [])) == [3, 5]
    loader = CuratedLoader.from_shards(urls, 2, keep={"other.tar/k00001"})
    with pytest.raises(ValueError, match=r"read no samples .* keep \(1 ids\) names none of their samples"):
        list(loader)


def test_keep_list_file_from_the_pruner(shards, tmp_path):
    from curatedloader.keeplist import save_keep

    urls, n = shards([5, 4])
    save_keep(tmp_path / "keep.txt", sorted(sample_id(urls[k // 5], f"k{k:05d}") for k in (0, 4, 7)))
    loader = CuratedLoader.from_shards(urls, 1, to_tuple=("npy", "cls"), keep=tmp_path / "keep.txt")
    assert sorted(sum(rows(loader), [])) == [0, 4, 7]
    save_keep(tmp_path / "ints.txt", [0, 1])
    with pytest.raises(ValueError, match="keep"):
        CuratedLoader.from_shards(urls, 1, keep=tmp_path / "ints.txt")


def _truncate_inside_last_member(url):
    with tarfile.open(url) as tar:
        last = tar.getmembers()[-1]
    with open(url, "r+b") as f:
        f.truncate(last.offset_data + 10)


def test_corrupt_shards_are_skipped_counted_and_warned_once(shards):
    urls, n = shards([4, 4, 4, 3, 3])  # k0..3 good, k4..7 truncated, k8..11 garbage, k12..14 bad npy, k15..17 good
    _truncate_inside_last_member(urls[1])  # k7 torn: k4..6 survive
    with open(urls[2], "wb") as f:
        f.write(os.urandom(2048))
    with wds.TarWriter(urls[3]) as w:
        for k in (12, 13, 14):
            w.write({"__key__": f"k{k:05d}", "npy": np.full(2, k, np.float32) if k != 13 else b"garbage", "cls": k})
    loader = CuratedLoader.from_shards(urls, 4, to_tuple=("npy", "cls"), num_workers=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = sorted(sum(rows(loader), []))
    assert got == [0, 1, 2, 3, 4, 5, 6, 12, 14, 15, 16, 17]
    assert loader.stats.bad_shards == 2 and loader.stats.skipped_samples == 2  # k7 torn, k13 undecodable
    messages = [str(w.message) for w in caught if "one warning per shard" in str(w.message)]
    assert sorted(m.split(":")[0] for m in messages) == sorted(urls[1:4])


def test_all_shards_bad_is_an_error(shards):
    urls, _ = shards([2, 2])
    for url in urls:
        with open(url, "wb") as f:
            f.write(b"not a tar " * 100)
    loader = CuratedLoader.from_shards(urls, 2, num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="read no samples"):
            list(loader)


def test_bad_arguments(shards):
    urls, _ = shards([2, 2])
    with pytest.raises(ValueError, match="too few for 1 rank"):
        CuratedLoader.from_shards(urls, 2, num_workers=3)
    with pytest.raises(ValueError, match="urls names no shards"):
        CuratedLoader.from_shards([], 2)
    with pytest.raises(ValueError, match="shuffle_buffer"):
        CuratedLoader.from_shards(urls, 2, shuffle_buffer=-1)
    with pytest.raises(ValueError, match="in_order"):
        CuratedLoader.from_shards(urls, 2, in_order=False)
    with pytest.raises(ValueError, match="batch_size"):
        CuratedLoader.from_shards(urls, 0)
    assert expand_urls(os.path.dirname(urls[0])) == urls


def test_resampled_epoch_has_the_header_count(shards):
    urls, n = shards([5, 0, 3])
    loader = CuratedLoader.from_shards(urls, 2, to_tuple=("npy", "cls"), resampled=True, num_workers=2)
    assert [count_samples(u) for u in urls] == [5, 0, 3]
    assert sum(map(len, rows(loader))) == n == len(ShardStream(urls, 2))


@pytest.mark.parametrize("workers", [0, 2])
def test_resampled_stream_without_a_readable_sample_raises_instead_of_spinning(shards, workers):
    urls, _ = shards([2, 3])
    loader = CuratedLoader.from_shards(urls, 2, to_tuple=("jpg", "cls"), resampled=True, num_workers=workers)
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the resampled stream spins"))
    signal.alarm(30)
    try:
        with warnings.catch_warnings(), pytest.raises(ValueError, match="read no samples"):
            warnings.simplefilter("ignore")  # every sample lacks the field jpg
            list(loader)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_persistent_workers_follow_the_epochs(shards):
    urls, n = shards([5, 4, 6])
    loader = CuratedLoader.from_shards(urls, 4, to_tuple=("npy", "cls"), num_workers=2, persistent_workers=True)
    fresh = CuratedLoader.from_shards(urls, 4, to_tuple=("npy", "cls"), num_workers=2)
    epochs = [rows(loader), rows(loader)]
    assert epochs == [rows(fresh), rows(fresh)] and epochs[0] != epochs[1]


def test_write_shards_and_command(tmp_path):
    samples = [(torch.full((2,), float(i)), torch.tensor(i)) for i in range(7)]
    paths = write_shards(samples, str(tmp_path / "a" / "%03d.tar"), fields=("npy", "cls"), maxcount=3)
    assert [os.path.basename(p) for p in paths] == ["000.tar", "001.tar", "002.tar"]
    assert sorted(sum(rows(CuratedLoader.from_shards(paths, 3, to_tuple=("npy", "cls"))), [])) == list(range(7))
    src = tmp_path / "files"
    for i in range(5):
        (src / "sub").mkdir(parents=True, exist_ok=True)
        (src / "sub" / f"x{i}.txt").write_text(f"text {i}")
        (src / "sub" / f"x{i}.cls").write_text(str(i))
    assert main(["write", str(src), str(tmp_path / "out" / "train-%02d.tar"), "--maxcount", "2"]) == 0
    loader = CuratedLoader.from_shards(str(tmp_path / "out"), 5, shuffle=False)
    batch = next(iter(loader))
    assert batch["__key__"] == [f"sub/x{i}" for i in range(5)] and batch["txt"] == [f"text {i}" for i in range(5)]
    with pytest.raises(ValueError, match="pattern"):
        write_shards([], str(tmp_path / "no-format.tar"))


@pytest.mark.parametrize("rank", [0, 1])
def test_rank_stream_is_cut_or_padded_to_the_epoch_length_and_resumes(shards, monkeypatch, rank):
    for module in ("shards", "loader"):  # the loader reads the rank when an epoch starts and hands it on
        monkeypatch.setattr(f"curatedloader.{module}.rank_world", lambda: (rank, 2))
    urls, n = shards([1, 9, 2, 8, 0, 3])
    make = lambda: CuratedLoader.from_shards(urls, 2, to_tuple=("npy", "cls"), num_workers=2, seed=rank)
    full = rows(make())
    assert sum(map(len, full)) == -(-n // 2) and len(full) == len(make())
    for stop in (3, len(full) - 2):
        run = make()
        head = rows(run, stop)
        resumed = make()
        resumed.load_state_dict(run.state_dict())
        assert head + rows(resumed) == full


def _cut_facts(url, cut):
    """From an intact shard, before cutting it at byte `cut`: the samples complete before the cut, whether
    one is partly there (its first header read whole, not all its data), and whether the cut is a truncation
    (before the end of the two zero blocks that end the archive)."""
    with tarfile.open(url) as tar:
        members = tar.getmembers()
    by_key = {}
    for m in members:
        by_key.setdefault(m.name.split(".")[0], []).append(m)
    complete = {int(k[1:]) for k, ms in by_key.items() if all(m.offset_data + m.size <= cut for m in ms)}
    partial = any(int(k[1:]) not in complete and ms[0].offset_data <= cut for k, ms in by_key.items())
    end = max((m.offset_data + -(-m.size // 512) * 512 for m in members), default=0)
    return complete, partial, cut < end + 1024


def _read_all(loader):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = sum(rows(loader), [])
    return got, [str(w.message) for w in caught if "one warning per shard" in str(w.message)]


@FAST
@given(data=st.data(), workers=st.sampled_from([0, 1]))
def test_a_shard_cut_at_any_byte_keeps_each_complete_sample_once_and_counts_the_cut(shards, data, workers):
    urls, n = shards([3, 2, 3])
    bad = data.draw(st.integers(0, 2), label="shard")
    cut = data.draw(st.integers(0, os.path.getsize(urls[bad])), label="cut")
    first = [0, 3, 5][bad]
    complete, partial, truncated = _cut_facts(urls[bad], cut)
    with open(urls[bad], "r+b") as f:
        f.truncate(cut)
    loader = CuratedLoader.from_shards(urls, 2, to_tuple=("npy", "cls"), num_workers=workers)
    got, messages = _read_all(loader)
    others = set(range(n)) - set(range(first, first + [3, 2, 3][bad]))
    assert sorted(got) == sorted(others | complete)
    assert len(got) == sum(count_samples(u, fields=("npy", "cls")) for u in urls)  # len() from the headers agrees
    assert loader.stats.bad_shards == truncated
    assert loader.stats.skipped_samples == partial
    assert [m.split(":")[0] for m in messages] == [urls[bad]] * (truncated or partial)


@pytest.mark.parametrize("where", ["header", "name", "boundary", "data", "padding", "end marker"])
def test_a_cut_inside_a_header_is_counted_and_the_sample_before_it_kept(shards, where):
    urls, n = shards([4, 3])
    with tarfile.open(urls[0]) as tar:
        third = [m for m in tar.getmembers() if m.name.startswith("k00002")][0]
        last = tar.getmembers()[-1]
    cut = {"header": third.offset + 300, "name": third.offset + 20, "boundary": third.offset,
           "data": third.offset_data + 1, "padding": third.offset_data + third.size + 1,
           "end marker": last.offset_data + 512 + 700}[where]
    complete, partial, truncated = _cut_facts(urls[0], cut)
    assert truncated and ({0, 1} <= complete)
    with open(urls[0], "r+b") as f:
        f.truncate(cut)
    loader = CuratedLoader.from_shards(urls, 3, to_tuple=("npy", "cls"))
    got, messages = _read_all(loader)
    assert sorted(got) == sorted(complete | {4, 5, 6})
    assert loader.stats.bad_shards == 1 and loader.stats.skipped_samples == partial
    assert len(messages) == 1 and messages[0].startswith(urls[0])


def _write_members(url, members):
    """A tar of (name, bytes) members in this order, as a writer with bugs might leave it."""
    with tarfile.open(url, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _sample(k, fields=("npy", "cls")):
    """Sample k's members, as make_shards writes them."""
    npy = io.BytesIO()
    np.save(npy, np.full(2, k, np.float32))
    data = {"npy": npy.getvalue(), "cls": str(k).encode()}
    return [(f"k{k:05d}.{f}", data[f]) for f in fields]


def test_duplicate_keys_skip_only_the_bad_samples(shards):
    urls, _ = shards([2, 2])
    members = _sample(0) + _sample(1) + _sample(1) + _sample(2)  # k1 written twice in a row
    members += _sample(3)[:1] + _sample(3)[:1] + _sample(3)[1:] + _sample(4) + _sample(0) + _sample(5)
    _write_members(urls[0], members)  # k3 has npy twice; k0 comes again after k4
    loader = CuratedLoader.from_shards(urls, 2, to_tuple=("npy", "cls"))
    got, messages = _read_all(loader)
    assert sorted(got) == [0, 2, 2, 3, 4, 5]  # the other shard holds k2, k3: ids differ by shard name
    assert loader.stats.skipped_samples == 3 and loader.stats.bad_shards == 0
    assert len(messages) == 1 and messages[0].startswith(urls[0]) and "k00001" in messages[0]
    assert count_samples(urls[0]) == 4  # len() leaves them out too


@pytest.mark.parametrize("workers", [0, 2])
def test_a_sample_missing_a_field_in_dict_batches_is_skipped_and_named(shards, workers):
    urls, _ = shards([2, 2])
    members = [m for k in range(6) for m in _sample(k, ("npy",) if k in (0, 3) else ("npy", "cls"))]
    _write_members(urls[0], members)  # k0 (the first sample, whose fields a collate would follow) and k3 lack cls
    loader = CuratedLoader.from_shards(urls, 2, shuffle=False, num_workers=workers)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(loader)
    assert all(set(batch) == {"__key__", "npy", "cls"} for batch in batches)
    assert sorted(sum((batch["cls"].tolist() for batch in batches), [])) == [1, 2, 2, 3, 4, 5]
    assert loader.stats.skipped_samples == 2 and len(loader) == 3
    messages = [str(w.message) for w in caught if "one warning per shard" in str(w.message)]
    assert len(messages) == 1 and all(s in messages[0] for s in (urls[0], "k00000", "'cls'"))


def test_a_directory_takes_gzipped_shards(shards):
    import gzip

    urls, n = shards([3, 2, 4])
    for url, suffix in zip(urls[1:], (".tar.gz", ".tgz")):
        with open(url, "rb") as f, gzip.open(url[: -len(".tar")] + suffix, "wb") as g:
            g.write(f.read())
        os.remove(url)
    root = os.path.dirname(urls[0])
    open(os.path.join(root, "notes.txt"), "w").close()
    assert [os.path.basename(u) for u in expand_urls(root)] == ["s000.tar", "s001.tar.gz", "s002.tgz"]
    loader = CuratedLoader.from_shards(root, 2, to_tuple=("npy", "cls"), num_workers=2)
    assert sorted(sum(rows(loader), [])) == list(range(n)) and len(loader) == -(-n // 2)
    assert loader.stats.bad_shards == 0


def test_a_lost_connection_to_a_dead_worker_names_the_worker():
    import multiprocessing

    from curatedloader.shards import _deaths_named

    worker = multiprocessing.get_context("fork").Process(target=signal.pause)
    worker.start()

    class Iterator:  # a DataLoader iterator whose worker dies while a piece is being taken from it
        _workers = [worker]

        def __next__(self):
            os.kill(worker.pid, signal.SIGKILL)
            raise ConnectionResetError(104, "Connection reset by peer")

    with pytest.raises(RuntimeError, match=rf"worker \(pid\(s\) {worker.pid}\) exited unexpectedly") as caught:
        next(_deaths_named(Iterator()))
    assert isinstance(caught.value.__cause__, ConnectionResetError)


_KILL_SCRIPT = """
import os, signal, sys, time
sys.path.insert(0, {tests!r})
from test_shards import make_shards
from curatedloader import CuratedLoader
urls, _ = make_shards({root!r}, [400, 400])
loader = CuratedLoader.from_shards(urls, 4, to_tuple=("npy", "cls"), num_workers=2)
it = iter(loader)
next(it)
import multiprocessing
pid = multiprocessing.active_children()[0].pid  # a worker of the loader
os.kill(pid, signal.SIGKILL)
try:
    for _ in it:
        pass
except RuntimeError as e:
    print("pid", pid, "error", e)
"""


def test_a_worker_killed_while_reading_shards_raises_naming_it(tmp_path):
    import subprocess
    import sys

    script = _KILL_SCRIPT.format(tests=os.path.dirname(__file__), root=str(tmp_path / "data"))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("pid"), out.stdout + out.stderr
    pid = out.stdout.split()[1]  # DataLoader's SIGCHLD handler or the lost connection, whichever sees it first
    named = (f"worker (pid {pid}) is killed by signal", f"worker (pid(s) {pid}) exited unexpectedly")
    assert any(s in out.stdout for s in named), out.stdout + out.stderr


def test_resume_needs_the_same_number_of_workers(shards):
    urls, _ = shards([5, 4, 6])
    make = lambda workers: CuratedLoader.from_shards(urls, 2, to_tuple=("npy", "cls"), num_workers=workers, seed=1)
    run = make(2)
    rows(run, 2)
    with pytest.raises(ValueError, match=r"num_workers: .* 2 worker\(s\), this loader has num_workers=0; .*num_workers=2"):
        make(0).load_state_dict(run.state_dict())
    full, run = rows(make(1)), make(0)  # one worker and none read the same single stream
    head = rows(run, 3)
    resumed = make(1)
    resumed.load_state_dict(run.state_dict())
    assert head + rows(resumed) == full


@pytest.mark.parametrize("workers", [0, 1])
def test_samples_after_a_garbled_block_are_kept(shards, workers):
    urls, n = shards([5, 2])
    with tarfile.open(urls[0]) as tar:
        first = [m for m in tar.getmembers() if m.name.startswith("k00002")][0]
    with open(urls[0], "r+b") as f:  # the headers (pax and ustar) of k2's first file: k2 loses a field
        f.seek(first.offset)
        f.write(os.urandom(first.offset_data - first.offset))
    loader = CuratedLoader.from_shards(urls, 2, to_tuple=("npy", "cls"), num_workers=workers)
    got, messages = _read_all(loader)
    assert sorted(got) == [0, 1, 3, 4, 5, 6] and len(loader) == 3
    assert loader.stats.bad_shards == 1 and loader.stats.skipped_samples == 1
    assert len(messages) == 1 and messages[0].startswith(urls[0])


@FAST
@given(data=st.data())
def test_a_gzipped_shard_cut_anywhere_keeps_a_prefix_and_counts_the_cut(shards, data):
    import gzip

    urls, n = shards([4, 2])
    with open(urls[0], "rb") as f:
        packed = gzip.compress(f.read())
    os.remove(urls[0])
    cut = data.draw(st.integers(0, 2**16 - 1), label="cut") * len(packed) >> 16  # its length varies with mtimes
    with open(urls[0][: -len(".tar")] + ".tgz", "wb") as f:
        f.write(packed[:cut])
    urls = expand_urls(os.path.dirname(urls[0]))
    loader = CuratedLoader.from_shards(urls, 2, to_tuple=("npy", "cls"), shuffle=False)
    got, messages = _read_all(loader)
    kept = sorted(set(got) - {4, 5})
    assert kept == list(range(len(kept))) and len(got) == len(set(got)) and {4, 5} <= set(got)
    assert len(got) == sum(count_samples(u, fields=("npy", "cls")) for u in urls)
    assert loader.stats.bad_shards == 1 and [m.split(":")[0] for m in messages] == [urls[0]]  # s000.tgz
