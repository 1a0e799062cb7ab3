"""Run every benchmark in bench/ one after another and print one summary; ``--quick`` runs each at its smallest size.

    python bench/run_all.py [--quick]      (what ``make bench`` / ``make bench QUICK=1`` run)

Each ``bench/bench_*.py`` runs in its own fresh process (never two at once: on a 2-core machine they would slow each
other and the ratios would mean nothing). Its own output is printed as it comes; every figure it reports through
``bench/_common.figure`` (value, the baseline measured in the same run, ratio, target) lands in one table at the end,
after a table of every script with its exit status and duration. The whole report, with the
machine, is written as JSON and Markdown under ``bench/results/`` (ignored by git), each through a temporary file.
A script missing from ``QUICK_ARGS`` fails the run, so a new benchmark cannot be forgotten.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kanibook._files import write_text_atomic

HERE = Path(__file__).resolve().parent

#: The smallest meaningful size of each benchmark (``--quick``); every bench/bench_*.py must be listed.
QUICK_ARGS: dict[str, list[str]] = {
    "bench_explain.py": ["--quick"],
    "bench_dtype.py": ["--tokens", "8", "--trials", "1"],
    "bench_engine.py": ["--tokens", "8", "--repeats", "1", "--load-repeats", "1", "--no-cold"],
    "bench_layers.py": ["--quick"],
    "bench_llamacpp.py": ["--tokens", "16", "--trials", "1"],
    "bench_load_ext.py": ["--repeats", "2"],
    "bench_panel.py": ["--tokens", "8", "--trials", "1", "--stop-trials", "1"],
    "bench_probs.py": ["--quick"],
    "bench_quant.py": ["--quick"],
    "bench_render.py": ["--tokens", "500", "--repeats", "2"],
    "bench_threads.py": ["--tokens", "8", "--alternations", "1", "--repeats", "1", "--copy-mb", "64"],
}


def scripts() -> list[Path]:
    return sorted(HERE.glob("bench_*.py"))


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count()}
    try:
        cpu = [l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")]
        info["cpu"] = cpu[0].split(":", 1)[1].strip() if cpu else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    from importlib import metadata

    for package in ("torch", "transformers", "bitsandbytes", "kani"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    try:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - the report still says what it can
        info["gpu"] = None
    return info


def figure_table(figures: list[dict]) -> list[str]:
    """One Markdown table of every figure: value, same-run baseline, ratio, target and whether it is met."""
    lines = ["| figure | value | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
    for f in figures:
        base = f"{f['baseline']:.4g} ({f['baseline_name']})" if f.get("baseline") is not None else ""
        ratio = f"{f['ratio']:.3f}" if f.get("ratio") is not None else ""
        target = "" if f.get("target") is None else ("≥ " if f.get("higher_is_better", True) else "≤ ") + f"{f['target']:g}"
        met = {True: "yes", False: "**no**", None: ""}[f.get("met")]
        lines.append(f"| {f['name']} | {f['value']:.4g} {f.get('unit', '')} | {base} | {ratio} | {target} | {met} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark at its smallest size")
    args = parser.parse_args(argv)
    missing = [p.name for p in scripts() if p.name not in QUICK_ARGS]
    if missing:
        print(f"bench/run_all.py does not know {', '.join(missing)}: add it to QUICK_ARGS.", file=sys.stderr)
        return 2
    rows, figures = [], []
    for script in scripts():
        command = [sys.executable, str(script), *(QUICK_ARGS[script.name] if args.quick else [])]
        print(f"\n=== {script.name} {' '.join(command[2:])}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            sink = Path(tmp) / "figures.jsonl"
            start = time.perf_counter()
            proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env={**os.environ, "KANIBOOK_BENCH_FIGURES": str(sink)})  # fmt: skip
            elapsed = time.perf_counter() - start
            found = [json.loads(line) for line in sink.read_text().splitlines()] if sink.exists() else []
        figures += [{"script": script.name, **f} for f in found]
        print(proc.stdout, end="", flush=True)
        rows.append({"script": script.name, "exit": proc.returncode, "seconds": round(elapsed, 1),
                     "figures": len(found), "output": proc.stdout})
    info = machine()
    lines = ["| benchmark | exit | seconds | figures |", "|---|---|---|---|"]
    lines += [f"| {r['script']} | {r['exit']} | {r['seconds']} | {r['figures']} |" for r in rows]
    lines += ["", *figure_table(figures)]
    header = f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, GPU: {info['gpu'] or 'none'}"
    print("\n" + header + ("  (quick mode)" if args.quick else ""))
    print("\n".join(lines))
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report = {"quick": args.quick, "machine": info, "benchmarks": rows, "figures": figures}
    write_text_atomic(results / f"report-{stamp}.json", json.dumps(report, indent=2))
    outputs = "\n".join(f"## {r['script']}\n\n```\n{r['output']}```\n" for r in rows)
    write_text_atomic(results / f"report-{stamp}.md", f"# Benchmarks {stamp}\n\n{header}\n\n" + "\n".join(lines) + "\n\n" + outputs)
    print(f"written: bench/results/report-{stamp}.json and .md")
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
