"""`curatedloader bench`: a tiny synthetic run, a user factory, bad input, and the README's run."""
import json
import re
import shlex
import textwrap
from pathlib import Path

import pytest

from curatedloader import bench_overhead, cli

ROOT = Path(__file__).parents[1]
TINY = ["--rows", "48", "--dim", "4", "--classes", "3", "--batch-size", "4", "--filter-ratio", "0.5",
        "--warmup", "1", "--repeats", "2"]
STAGE_FIELDS = {f"{s}{q}_ms" for s in bench_overhead.STAGES for q in ("", "_q1", "_q3", "_min", "_max")}


def test_tiny_synthetic_run_writes_every_field(tmp_path, capsys):
    rows_path, png = tmp_path / "rows.jsonl", tmp_path / "plot.png"
    assert cli.main(["bench", *TINY, "--selector", "jest", "topk", "--json", str(rows_path), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    assert [r["selector"] for r in rows] == ["jest", "topk"]
    for r in rows:
        assert STAGE_FIELDS | {"bench", "device", "date", "commit", "versions", "b", "B", "workers", "rows",
                               "step_ms", "plain_step_ms", "overhead_ms", "overhead_share", "break_even",
                               "score_host_peak_mib", "train_host_peak_mib", "setup"} <= set(r)
        assert (r["b"], r["B"], r["rows"]) == (4, 8, 48)
        assert r["step_ms"] == pytest.approx(sum(r[f"{s}_ms"] for s in ("load_B", "score", "draw", "gather", "train")))
        assert r["plain_step_ms"] == pytest.approx(r["load_b_ms"] + r["train_ms"])
        assert r["break_even"] == pytest.approx(r["step_ms"] / r["plain_step_ms"])
        assert r["overhead_share"] == pytest.approx(1 - 1 / r["break_even"])
        assert all(r[f"{s}_q1_ms"] <= r[f"{s}_ms"] <= r[f"{s}_q3_ms"] for s in bench_overhead.STAGES)
    for label in ("load B=8 rows", "score B=8", "draw b=4 (jest)", "gather b=4 rows", "train step on b=4",
                  "load b=4 rows (plain)", "break-even"):
        assert label in out
    assert png.stat().st_size > 0


def test_factory_without_train_step(tmp_path, monkeypatch, capsys):
    (tmp_path / "user_setup.py").write_text(textwrap.dedent("""
        import torch
        from torch.utils.data import TensorDataset

        def make():
            data = TensorDataset(torch.randn(40, 3), torch.arange(40))
            return data, lambda batch: batch[0].sum(1)  # a plain scoring function, no train step
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    rows_path = tmp_path / "rows.jsonl"
    argv = ["--factory", "user_setup:make", "--super-batch-size", "10", "--batch-size", "5", "--repeats", "2",
            "--selector", "uniform", "--json", str(rows_path)]
    assert bench_overhead.main(argv) == 0
    row = json.loads(rows_path.read_text())
    assert row["B"] == 10 and "train_ms" not in row and row["break_even"] is None and row["overhead_share"] is None
    assert row["overhead_ms"] == pytest.approx(row["step_ms"] - row["plain_step_ms"])
    assert "no train step given" in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["--factory", "no_colon"], "module:function"),
    (["--rows", "6", "--batch-size", "4", "--filter-ratio", "0.5"], "fewer than the super-batch"),
    (["--rows", "64", "--filter-ratio", "1.0"], "filter-ratio"),
    (["--rows", "64", "--batch-size", "8", "--super-batch-size", "4"], "super-batch-size"),
    (["--rows", "64", "--threads", "0"], "threads"),
])
def test_bad_input_names_the_argument(argv, match):
    with pytest.raises(ValueError, match=match):
        bench_overhead.main(argv + ["--repeats", "1", "--warmup", "0"])


def test_listed_by_the_command(capsys):
    assert cli.main(["--help"]) == 0
    assert "bench" in capsys.readouterr().out


def _masked(text: str) -> list[str]:
    """Lines with numbers masked and spaces collapsed, the device banner (machine-specific) dropped."""
    lines = [line for line in text.strip().splitlines() if not line.startswith("device: ")]
    return [" ".join(re.sub(r"\d+(\.\d+)?", "#", line).split()) for line in lines]


def test_readme_run_prints_what_readme_shows(capsys):
    """The README's `curatedloader bench` block runs as written and prints the same lines (figures aside)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Measure selection overhead"):]
    command = re.search(r"```bash\n(curatedloader bench .*?)\n```", section).group(1)
    shown = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    argv = shlex.split(command)[1:]
    assert cli.main(argv) == 0
    assert _masked(capsys.readouterr().out) == _masked(shown)
