"""The kernel and JEST benchmarks' CPU smoke runs, end to end as RESULTS.md says to fill its GPU tables:
each script writes rows into an output folder, and `python -m curatedloader.bench update` makes the tables."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from curatedloader import bench

ROOT = Path(__file__).parents[1]
SCRIPTS = ("kernels", "jest_selection")
pytestmark = pytest.mark.slow  # two interpreter runs of the Triton kernels in subprocesses, about a minute on 2 shared cores


def script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "results"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    runs = {name: subprocess.Popen([sys.executable, f"benchmarks/{name}.py", "--cpu-smoke", "--out", str(out)],
                                   cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in SCRIPTS}  # side by side: each waits on its own start-up and the interpreter
    for name, run in runs.items():
        stdout, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr[-3000:]
        assert stdout.startswith("device: ") and f"rows: {out / name}.jsonl" in stdout
    return out


def check_context(rows: list[dict], name: str) -> None:
    for r in rows:
        assert r["bench"] == f"{name}/cpu-smoke" and r["device"] == bench.device_name("cpu")
        assert len(r["date"]) == 10 and r["commit"] and "torch" in r["versions"]


def test_kernel_rows(results):
    rows = bench.read_rows(results / "kernels.jsonl")
    check_context(rows, "kernels")
    cases = script("kernels").SMOKE_CASES
    assert [(r["op"], tuple(r["shape"]), r["dtype"]) for r in rows if r["impl"] == "ours"] == cases
    for r in rows:
        assert r["impl"] in ("ours", "eager", "F.linear_cross_entropy") and "error" not in r
        assert r["fwd_q1_ms"] <= r["fwd_ms"] <= r["fwd_q3_ms"] and r["fwd_ms"] > 0 and r["peak_extra_mib"] >= 0
        assert r["copy_gb_s"] > 0 and r["copy_share"] == pytest.approx(r["gb_s"] / r["copy_gb_s"])
        assert (r["tflop_s"] is not None) == (r["op"] == "linear_cross_entropy")
    for r in rows:
        if r["impl"] == "ours":
            assert r["max_abs_err"] < 1e-4
            assert isinstance(r["aim_met"], bool) == (r["op"] != "diffusion")
    lce = {r["impl"]: r for r in rows if r["op"] == "linear_cross_entropy"}
    n, h, v = lce["ours"]["shape"]
    assert lce["ours"]["tflop_s"] == pytest.approx(2 * n * h * v / lce["ours"]["fwd_ms"] / 1e9)
    best = min((r for name, r in lce.items() if name != "ours"), key=lambda r: r["fwd_ms"])
    assert lce["ours"]["aim"].startswith(f">= best peer ({best['impl']}, ")
    assert lce["ours"]["aim_met"] == (lce["ours"]["fwd_ms"] <= best["fwd_ms"] and lce["ours"]["peak_extra_mib"] < 102.4)
    assert (results / "kernels.png").stat().st_size > 0


def test_jest_rows(results):
    rows = bench.read_rows(results / "jest_selection.jsonl")
    check_context(rows, "jest_selection")
    ways = list(script("jest_selection").WAYS.values())
    assert [(r["B"], r["way"]) for r in rows] == [(B, w) for B in (32, 64) for w in ways]
    for r in rows:
        assert r["select_q1_ms"] <= r["select_ms"] <= r["select_q3_ms"] and r["select_ms"] > 0
        assert r["peak_extra_mib"] >= 0 and r["k"] == round(r["B"] * (1 - r["filter"]))
    for r in rows[::len(ways)]:  # ours: checked against PyTorch, deterministic, no aim at these sizes
        assert r["max_abs_diff"] < 1e-4 and r["same_picks"] is True and r["aim"] is None
    assert (results / "jest_selection.png").stat().st_size > 0


def test_jest_aims():
    aim = script("jest_selection").aim
    assert aim(163840, 79.0, 900.0) == {"aim": "<= 80 ms, < 1 GiB extra", "aim_met": True}
    assert not aim(163840, 79.0, 1100.0)["aim_met"] and not aim(32768, 5.5, 0.0)["aim_met"]
    assert aim(4096, 1.0, 0.0) == {"aim": None, "aim_met": None}


def test_results_tables_generated_from_the_rows(results):
    """The marker blocks that RESULTS.md says to add once GPU rows exist (its columns are the scripts') are
    filled by `python -m curatedloader.bench update`."""
    stated = dict(re.findall(r"rows: results/(\w+)\.jsonl columns: ([^`]+)",
                             " ".join((ROOT / "benchmarks" / "RESULTS.md").read_text().split())))
    assert {name: stated.get(name) for name in SCRIPTS} == {name: ", ".join(script(name).COLUMNS) for name in SCRIPTS}
    doc = results.parent / "RESULTS.md"
    blocks = [f"<!-- rows: results/{name}.jsonl columns: {stated[name]} -->\nopen\n<!-- end rows -->" for name in SCRIPTS]
    doc.write_text("\n\n".join(blocks) + "\n")
    run = subprocess.run([sys.executable, "-m", "curatedloader.bench", "update", str(doc)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "updated" in run.stdout, run.stderr[-3000:]
    text = doc.read_text()
    assert "open" not in text
    for name in SCRIPTS:
        columns = script(name).COLUMNS
        assert "| " + " | ".join(columns) + " |" in text
        n_rows = len(bench.read_rows(results / f"{name}.jsonl"))
        table = text.split(f"`{name}/cpu-smoke`")[1].split("<!-- end rows -->")[0]
        assert table.count("\n| ") == 1 + n_rows  # header + one line per row
