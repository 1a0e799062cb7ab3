"""bench/gpu_check.sh runs to its end on a machine without a GPU, and its measuring code runs (on a CPU) end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_without_a_gpu_the_check_prepares_everything_and_exits_0(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "bench", repo / "bench", ignore=shutil.ignore_patterns("results", "__pycache__"))
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("OUT", None)
    result = subprocess.run(["bash", str(repo / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no CUDA GPU here" in result.stdout
    for model in ("smollm2-135m-arch", "llama-1b"):
        assert json.loads((repo / ".gpu-check" / "assets" / model / "config.json").read_text())["vocab_size"] == 49152
        assert (repo / ".gpu-check" / "assets" / model / "tokenizer.json").is_file()
    wheels = {p.name.split("-")[0].lower() for p in (repo / ".whl").glob("*.whl")}
    assert {"kani", "bitsandbytes", "pydantic", "pydantic_core", "nh3"} <= wheels
    size = sum(p.stat().st_size for p in [*(repo / ".whl").iterdir(), *(repo / ".gpu-check").rglob("*")])
    assert size < 60 * 2**20  # what travels to the GPU machine stays under its 64 MiB limit, the repository included


@pytest.mark.slow
def test_the_measuring_code_runs_end_to_end_on_a_cpu(tmp_path):
    script = [sys.executable, str(ROOT / "bench" / "gpu_check.py")]
    for step in (["prepare", str(tmp_path / "assets"), "--smoke"], ["build", str(tmp_path / "assets"), str(tmp_path / "m")],
                 ["measure", str(tmp_path / "m"), str(tmp_path / "r.json"), "--device", "cpu", "--tokens", "4",
                  "--settings", "bf16,nf4,nonsense"]):  # fmt: skip
        subprocess.run(script + step, check=True, capture_output=True, timeout=600)
    report = json.loads((tmp_path / "r.json").read_text())
    rows = {r["setting"]: r for r in report["rows"]}
    assert report["machine"]["device"] == "cpu" and report["machine"]["torch"]
    for setting in ("bf16", "nf4"):
        assert rows[setting]["tokens"] == 4 and rows[setting]["tokens_per_s"] > 0
        assert rows[setting]["footprint_bytes"] > 0 and rows[setting]["estimate_bytes"] > 0
    assert rows["nf4"]["footprint_bytes"] < rows["bf16"]["footprint_bytes"]
    assert "error" in rows["nonsense"]  # a setting that cannot run is a row with the reason
