"""Pruning end to end: encode with a tiny random open_clip model (no download), resume, shards, the CLI."""
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from curatedloader.pruning import Features, encode, load_encoder, load_keep, save_keep
from curatedloader.pruning.cli import main

TINY = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config path, checkpoint path) of a tiny random open_clip model saved locally."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "tiny_clip.json").write_text(json.dumps(TINY))
    with pytest.warns(UserWarning, match="random weights"):
        model = load_encoder(str(root / "tiny_clip.json"))
    torch.save(model.state_dict(), root / "tiny_clip.pt")
    return str(root / "tiny_clip.json"), str(root / "tiny_clip.pt")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Two classes of 8 (+1 exact copy) and 4 random 40x40 images."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for cls, n in (("cat", 8), ("dog", 4)):
        (root / cls).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    (root / "cat" / "copy.png").write_bytes((root / "cat" / "0.png").read_bytes())
    return root


class Pixels(torch.utils.data.Dataset):
    """Tensor images with labels; the encoder below is a plain callable."""

    def __init__(self, n=10):
        self.x = torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], i % 2


class Flaky:
    """Flattens a batch; raises on call number `fail_at` to simulate an interrupted encode."""

    def __init__(self, fail_at=None):
        self.calls, self.rows, self.fail_at = 0, 0, fail_at

    def __call__(self, batch):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        self.rows += len(batch)
        return batch.flatten(1)


def test_encode_with_tiny_open_clip(tiny, image_folder, tmp_path):
    from torchvision.datasets import ImageFolder

    model = load_encoder(*tiny)
    model.train()
    feats = encode(ImageFolder(image_folder), model, batch_size=5, out=tmp_path, progress=False)
    assert model.training  # mode restored
    assert feats.array.shape == (13, 16) and feats.array.dtype == np.float32
    assert isinstance(feats.array, np.memmap) and feats.ids.tolist() == list(range(13))
    np.testing.assert_allclose(Features.load(tmp_path).array, feats.array)
    in_memory = encode(ImageFolder(image_folder), tiny, batch_size=13, progress=False)
    np.testing.assert_allclose(in_memory.array, feats.array, rtol=1e-4, atol=1e-5)


def test_interrupted_encode_resumes(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        encode(Pixels(), Flaky(fail_at=3), batch_size=4, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unfinished encode"):
        Features.load(tmp_path)
    resumed = Flaky()
    feats = encode(Pixels(), resumed, batch_size=4, out=tmp_path, progress=False)
    assert resumed.rows == 2  # only the rows after the 8 already written
    np.testing.assert_array_equal(feats.array, Pixels().x.flatten(1).numpy())
    again = Flaky()
    encode(Pixels(), again, out=tmp_path, progress=False)  # finished: loaded, not recomputed
    assert again.calls == 0


def test_another_source_or_encoder_recomputes_or_is_refused(tmp_path, capsys):
    encode(Pixels(), Flaky(), out=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"features.npy is stale \(source.samples: 10 -> 4\).*recompute is off"):
        encode(Pixels(4), Flaky(), out=tmp_path, progress=False, recompute=False)
    assert len(Features.load(tmp_path)) == 10  # refused: left as it was
    other = Flaky()
    assert len(encode(Pixels(4), other, out=tmp_path, progress=False)) == 4 and other.rows == 4
    assert "features.npy is stale (source.samples: 10 -> 4): recomputing" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):  # an unfinished encode is not resumed by another encoder
        encode(Pixels(), Flaky(fail_at=2), batch_size=4, out=tmp_path, progress=False)
    feats = encode(Pixels(), lambda b: b.flatten(1)[:, :5], batch_size=4, out=tmp_path, progress=False)
    assert feats.array.shape == (10, 5)
    np.testing.assert_array_equal(feats.array, Pixels().x.flatten(1)[:, :5].numpy())
    assert "encode.partial.json is stale (code:" in capsys.readouterr().err


def test_encode_shards(tmp_path):
    import webdataset as wds

    rng = np.random.default_rng(0)
    with wds.ShardWriter(str(tmp_path / "s-%03d.tar"), maxcount=3) as sink:
        for i in range(5):
            sink.write({"__key__": f"k{i}", "png": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)})
    urls = [str(tmp_path / f"s-{i:03d}.tar") for i in range(2)]
    for out in (None, tmp_path / "out"):
        feats = encode(urls, Flaky(), batch_size=2, progress=False, out=out)
        assert feats.ids.tolist() == [f"s-{i // 3:03d}.tar/k{i}" for i in range(5)] and feats.array.shape == (5, 48)
        save_keep(tmp_path / "keep.txt", feats.ids[np.array([4, 0])])  # as README: ids[sel["indices"]]
        assert load_keep(tmp_path / "keep.txt") == ["s-001.tar/k4", "s-000.tar/k0"]
    with pytest.raises(ValueError, match="num_workers: shards are read in order"):
        encode(urls, Flaky(), batch_size=2, progress=False, num_workers=2)


def test_encode_rejects_non_finite_features(tmp_path):
    with pytest.raises(ValueError, match="encoder: non-finite features in rows 0..3"):
        encode(Pixels(), lambda b: b.flatten(1) / 0, batch_size=4, out=tmp_path, progress=False)


def test_cli_end_to_end(tiny, image_folder, tmp_path, capsys):
    argv = [str(image_folder), "--encoder", tiny[0], "--checkpoint", tiny[1], "--keep", "0.5",
            "--strategy", "ccs", "--dedup", "1e-6", "--out", str(tmp_path), "--batch-size", "5", "--no-progress"]
    assert main(argv) == 0
    # a random model maps all images close together (cosine > 0.95): only the exact copy is a duplicate here
    assert "kept 6 of 13 (1 near-duplicates dropped)" in capsys.readouterr().err
    keep = load_keep(tmp_path / "keep.txt")
    labels = np.load(tmp_path / "groups.npy")
    assert np.bincount(labels[keep]).tolist() == [4, 2]  # exact per-class quotas of the 8 + 4 candidates
    assert np.load(tmp_path / "drop.npy").sum() == 1 and np.load(tmp_path / "weights.npy").shape == (6,)
    assert np.load(tmp_path / "features.npy").shape == (13, 16) and np.load(tmp_path / "scores.npy").shape == (13,)
    features_only = tmp_path / "again"
    assert main([str(tmp_path / "features.npy"), "--keep", "3", "--score", "knn", "--k", "2",
                 "--strategy", "easy", "--out", str(features_only)]) == 0
    assert len(load_keep(features_only / "keep.txt")) == 3
    assert main([str(tmp_path / "features.npy"), "--keep", "3", "--out", str(tmp_path)]) == 0  # its own features
    assert np.load(tmp_path / "features.npy").shape == (13, 16) and len(load_keep(tmp_path / "keep.txt")) == 3


def test_rerun_with_another_encoder_recomputes_and_leaves_nothing_stale(tiny, image_folder, tmp_path, capsys):
    """The stale-results bug: a second prune into the same --out with another encoder config kept the
    first run's features, and drop.npy of a --dedup run stayed beside the keep.txt of a run without it."""
    other = tmp_path / "other_clip.json"
    other.write_text(json.dumps({**TINY, "embed_dim": 8}))
    out = tmp_path / "out"
    base = [str(image_folder), "--out", str(out), "--batch-size", "13", "--no-progress"]
    assert main(base + ["--encoder", tiny[0], "--checkpoint", tiny[1], "--dedup", "1e-6"]) == 0
    assert np.load(out / "features.npy").shape == (13, 16) and (out / "drop.npy").exists()
    capsys.readouterr()
    assert main(base + ["--encoder", str(other), "--random-init"]) == 0
    err = capsys.readouterr().err
    assert "encoding 13 images" in err and "features.npy is stale (config: sha256:" in err
    assert "removed drop.npy of an earlier run (made by eps=1e-06" in err
    assert np.load(out / "features.npy").shape == (13, 8) and not (out / "drop.npy").exists()
    made = json.loads((out / "manifest.json").read_text())
    assert set(made) == {"features.npy", "ids.txt", "scores.npy", "groups.npy", "keep.txt", "weights.npy",
                         "summary.json"}
    assert made["scores.npy"]["made_by"]["features"] == made["features.npy"]["key"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["near_duplicates"] == 0 and summary["stages"]["scores"]["seconds"] > 0
    assert summary["stages"]["encode"]["peak_rss_gib"] > 0
    assert main(base + ["--encoder", str(other), "--random-init", "--keep", "3"]) == 0  # same inputs: reused
    err = capsys.readouterr().err
    assert "encoding 13" in err and "stale" not in err and "reusing scores.npy" in err
    assert len(load_keep(out / "keep.txt")) == 3
    assert json.loads((out / "summary.json").read_text())["stages"]["scores"] == {"cached": True}
    assert main(base + ["--encoder", str(other), "--random-init", "--score", "knn", "--k", "2",
                        "--no-recompute"]) == 2
    assert "scores.npy is stale (k: null -> 2; score: prototype -> knn)" in capsys.readouterr().err


def test_random_init_is_seeded_and_needs_no_checkpoint(tiny, image_folder, tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        assert main([str(image_folder), "--encoder", tiny[0], "--random-init", "--out", str(out), "--no-progress"]) == 0
    np.testing.assert_array_equal(np.load(runs[0] / "features.npy"), np.load(runs[1] / "features.npy"))
    assert load_keep(runs[0] / "keep.txt").tolist() == load_keep(runs[1] / "keep.txt").tolist()


def test_every_long_stage_shows_progress(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32))
    assert main([str(tmp_path / "x.npy"), "--score", "knn", "--dedup", "0.05", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    for bar in ("kNN index", "kNN search", "k-means", "assign", "dedup"):
        assert re.search(rf"{bar}:\s+\d+%\|[^\r]*\| \d+/\d+ \[\d\d:\d\d<", err), bar  # a bar: n/total [elapsed<ETA
    assert main([str(tmp_path / "x.npy"), "--score", "prototype", "--out", str(tmp_path / "p"), "--no-progress"]) == 0
    assert "k-means" not in capsys.readouterr().err


def test_cli_errors(tiny, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(image_folder), "--encoder", tiny[0], "--checkpoint", str(tmp_path / "no.pt"),
                 "--out", str(out)]) == 2
    assert "checkpoint: no file at" in capsys.readouterr().err and not out.exists()
    assert main([str(image_folder), "--out", str(out)]) == 2
    assert "--encoder and one of --checkpoint or --random-init" in capsys.readouterr().err
    assert main([str(image_folder), "--encoder", tiny[0], "--checkpoint", tiny[1], "--random-init",
                 "--out", str(out)]) == 2
    assert "--encoder and one of --checkpoint or --random-init" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(image_folder), "--keep", "1.5", "--out", str(out)])
    np.save(tmp_path / "ints.npy", np.ones((4, 3), np.int64))
    assert main([str(tmp_path / "ints.npy"), "--out", str(out)]) == 2
    assert "features: expected a floating-point array" in capsys.readouterr().err
