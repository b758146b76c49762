"""The benchmark harness: timing, rows, output guard, tables generated into Markdown."""
import doctest
import json
import time
from pathlib import Path

import numpy as np
import pytest

from curatedloader import bench

ROOT = Path(__file__).parents[1]


def test_docstring_examples():
    result = doctest.testmod(bench)
    assert result.attempted > 0 and result.failed == 0


def test_measure_excludes_warmup_and_times_each_repeat():
    calls = []
    t = bench.measure(lambda: calls.append(1), warmup=3, repeats=4)
    assert len(calls) == 7 and len(t.ms) == 4 and all(ms >= 0 for ms in t.ms)


@pytest.mark.parametrize("kw", [dict(repeats=0), dict(warmup=-1), dict(repeats=1.5)])
def test_measure_rejects_bad_counts(kw):
    with pytest.raises(ValueError, match="repeats|warmup"):
        bench.measure(lambda: None, **kw)


def test_timing_spread_matches_numpy():
    ms = [5.0, 1.0, 9.0, 2.0, 7.0, 3.0]
    t = bench.Timing(ms)
    assert (t.median, t.q1, t.q3, t.min, t.max) == pytest.approx(
        (np.median(ms), np.quantile(ms, 0.25), np.quantile(ms, 0.75), 1.0, 9.0))
    assert set(t.row("score")) == {"score_ms", "score_q1_ms", "score_q3_ms", "score_min_ms", "score_max_ms"}


def test_outputs_never_overwrite_tracked_files(tmp_path):
    tracked = ROOT / "benchmarks" / "toy2d_curves.png"
    before = tracked.read_bytes()
    with pytest.raises(ValueError, match="tracked by git"):
        bench.write_rows(tracked, [{"x": 1}])
    with pytest.raises(ValueError, match="tracked by git"):
        with bench.figure(tracked):
            pass
    assert tracked.read_bytes() == before
    assert bench.guard_output(tmp_path / "new" / "rows.jsonl").parent.is_dir()


def test_rows_carry_context_and_append(tmp_path):
    path = tmp_path / "rows.jsonl"
    bench.write_rows(path, [{**bench.context("demo"), "ms": 1.5}])
    bench.write_rows(path, [{**bench.context("demo"), "ms": 2.5}])
    rows = bench.read_rows(path)
    assert [r["ms"] for r in rows] == [1.5, 2.5]
    for r in rows:
        assert set(bench.CONTEXT_KEYS) <= set(r) and r["commit"] and "torch" in r["versions"]
        assert len(r["date"]) == 10


def test_update_document_regenerates_marked_tables(tmp_path):
    rows = [{**bench.context("demo"), "n": 1000, "ms": 2.0, "extra": "x"}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = tmp_path / "RESULTS.md"
    doc.write_text("intro\n<!-- rows: rows.jsonl columns: n, ms -->\nstale table\n<!-- end rows -->\noutro\n")
    assert bench.update_document(doc)
    text = doc.read_text()
    assert "stale" not in text and "| n | ms |\n|---|---|\n| 1,000 | 2 |\n\n<!-- end rows -->" in text
    assert text.startswith("intro\n") and text.endswith("<!-- end rows -->\noutro\n") and "extra" not in text
    assert not bench.update_document(doc)  # idempotent


def test_results_md_tables_match_their_rows(tmp_path):
    """RESULTS.md's generated tables are what its rows give (regenerate with `... bench update`)."""
    results = ROOT / "benchmarks" / "RESULTS.md"
    copy = tmp_path / "benchmarks" / "RESULTS.md"
    copy.parent.mkdir()
    copy.write_text(results.read_text())
    for rows in (ROOT / "benchmarks" / "results").glob("*.jsonl"):
        (copy.parent / "results").mkdir(exist_ok=True)
        (copy.parent / "results" / rows.name).write_text(rows.read_text())
    assert "<!-- rows: " in copy.read_text()
    assert not bench.update_document(copy), "RESULTS.md is stale: run python -m curatedloader.bench update benchmarks/RESULTS.md"


def test_peak_memory_sees_a_block_allocation():
    with bench.peak_memory() as mem:
        block = bytearray(200 << 20)
        block[:: 4096] = b"\1" * len(block[:: 4096])  # touch every page: resident, not just reserved
        time.sleep(0.1)  # several sampling intervals
        del block
    assert mem["host_extra_mib"] >= 150  # freed before the block ended: only a sampled peak sees it
    assert mem["host_peak_mib"] >= mem["host_extra_mib"]
