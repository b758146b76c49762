"""write_shards / `curatedloader shards write`: seeded global shuffle, and a warning for label-sorted writes."""
import warnings

import numpy as np
import pytest
import torch
import webdataset as wds

from curatedloader.shard_writer import main, write_shards


def read(paths):
    """(key, cls) of every sample, in written order."""
    return [(s["__key__"], int(s["cls"])) for s in wds.WebDataset(paths, shardshuffle=False).decode()]


def sorted_set(n=200, classes=10):
    return [(torch.tensor([float(i)]), torch.tensor(i * classes // n)) for i in range(n)]  # class-sorted


def test_shuffle_is_global_seeded_and_keeps_keys(tmp_path):
    data = sorted_set()
    runs = [read(write_shards(data, str(tmp_path / f"{name}-%03d.tar"), fields=("npy", "cls"), maxcount=50,
                              shuffle=True, seed=seed)) for name, seed in (("a", 3), ("b", 3), ("c", 4))]
    assert runs[0] == runs[1] != runs[2]
    keys = [k for k, _ in runs[0]]
    assert sorted(keys) == [f"{i:09d}" for i in range(200)]  # every sample once, keyed by its index
    assert all(c == int(k) * 10 // 200 for k, c in runs[0])  # each label still with its sample
    first_shard = [c for _, c in runs[0][:50]]
    assert len(set(first_shard)) >= 8  # mixed across the whole set, not within a shard only


def test_label_sorted_write_warns_and_shuffled_does_not(tmp_path):
    with pytest.warns(UserWarning, match=r"label-sorted order \(10 runs of one label over 200 samples"):
        write_shards(sorted_set(), str(tmp_path / "s-%03d.tar"), fields=("npy", "cls"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_shards(sorted_set(), str(tmp_path / "t-%03d.tar"), fields=("npy", "cls"), shuffle=True)
        write_shards(sorted_set(10, 2), str(tmp_path / "u-%03d.tar"), fields=("npy", "cls"))  # too few to tell


def test_command_shuffles_a_class_folder(tmp_path, capsys):
    src = tmp_path / "images"
    for cls in range(4):
        (src / f"c{cls}").mkdir(parents=True)
        for i in range(30):
            (src / f"c{cls}" / f"{i}.txt").write_text(f"{cls} {i}")
    with pytest.warns(UserWarning, match="label-sorted"):
        assert main(["write", str(src), str(tmp_path / "plain-%03d.tar")]) == 0
    assert main(["write", str(src), str(tmp_path / "mixed-%03d.tar"), "--shuffle", "--seed", "1"]) == 0
    keys = [s["__key__"] for s in wds.WebDataset(str(tmp_path / "mixed-000.tar"), shardshuffle=False)]
    folders = [k.split("/")[0] for k in keys]
    assert sorted(keys) == sorted(f"c{c}/{i}" for c in range(4) for i in range(30))
    assert sum(a != b for a, b in zip(folders, folders[1:])) > 40  # ~90 changes in a random order, 3 sorted


def test_shuffle_bad_input(tmp_path):
    with pytest.raises(TypeError, match=r"dataset: shuffle=True needs len\(\) and \[i\]"):
        write_shards(iter(sorted_set()), str(tmp_path / "x-%03d.tar"), fields=("npy", "cls"), shuffle=True)
    with pytest.raises(TypeError, match="shuffle: expected a bool"):
        write_shards(sorted_set(), str(tmp_path / "x-%03d.tar"), fields=("npy", "cls"), shuffle=1)
    with pytest.raises(TypeError, match="seed: expected an int"):
        write_shards(sorted_set(), str(tmp_path / "x-%03d.tar"), fields=("npy", "cls"), shuffle=True, seed=np.pi)
