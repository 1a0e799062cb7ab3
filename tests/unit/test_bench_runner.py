"""make bench runs bench/run_all.py: every benchmark script must be known to it, so none can be forgotten."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
