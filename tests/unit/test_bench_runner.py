"""make bench runs bench/run_all.py: every benchmark script must be known to it, so none can be forgotten."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _runner():
    spec = importlib.util.spec_from_file_location("kanibook_bench_run_all", BENCH / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_script_is_in_the_report():
    runner = _runner()
    names = {p.name for p in BENCH.glob("bench_*.py")}
    assert names and names == set(runner.QUICK_ARGS), "add the new bench/bench_*.py to QUICK_ARGS in bench/run_all.py"
    assert {p.name for p in runner.scripts()} == names


def test_the_makefile_bench_target_runs_the_report():
    makefile = (BENCH.parent / "Makefile").read_text()
    assert "bench/run_all.py $(if $(QUICK),--quick)" in makefile
    assert (BENCH / "run_all.py").exists()


@pytest.mark.slow
def test_the_quick_report_runs_every_benchmark_and_reports_its_figures(tmp_path):
    """`make bench QUICK=1`, once per test run: every script exits 0 and reports figures into the one table."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--quick"], capture_output=True, text=True,
                            timeout=900, cwd=BENCH.parent)  # fmt: skip
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    report = json.loads(sorted((BENCH / "results").glob("report-*.json"))[-1].read_text())
    assert report["quick"] and {r["script"] for r in report["benchmarks"]} == set(_runner().QUICK_ARGS)
    assert all(r["exit"] == 0 and r["figures"] > 0 for r in report["benchmarks"]), report["benchmarks"]
    assert "| figure | value | baseline | ratio | target | met |" in result.stdout
    print(f"\nquick bench: {elapsed:.0f} s")
