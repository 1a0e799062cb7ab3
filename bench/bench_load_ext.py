"""``%load_ext kanibook`` vs ``import ipywidgets``: time each in fresh interpreters, in the same run.

    python bench/bench_load_ext.py [--repeats 7]

Each sample is one fresh ``python`` process that first starts IPython's test shell (not timed), then times only the
statement under test with ``time.perf_counter``. Prints the medians and the ratio (load_ext / ipywidgets).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys

from _common import figure

_SNIPPET = """
import json, sys, time
from IPython.testing.globalipapp import get_ipython
ip = get_ipython()
t0 = time.perf_counter()
{statement}
elapsed = time.perf_counter() - t0
heavy = sorted(m for m in ("torch", "transformers", "bitsandbytes") if m in sys.modules)
print(json.dumps({{"s": elapsed, "heavy": heavy}}))
"""

CASES = {
    "%load_ext kanibook": 'ip.run_line_magic("load_ext", "kanibook")',
    "import ipywidgets": "import ipywidgets",
}


def sample(statement: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _SNIPPET.format(statement=statement)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="fresh processes per case (default 7)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    heavy: set[str] = set()
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        for name, statement in CASES.items():
            result = sample(statement)
            times[name].append(result["s"])
            if name.startswith("%load_ext"):
                heavy.update(result["heavy"])
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    for name, values in times.items():
        print(
            f"{name:>20}: median {statistics.median(values) * 1e3:8.1f} ms  "
            f"(min {min(values) * 1e3:.1f}, max {max(values) * 1e3:.1f}, n={len(values)})"
        )
    figure("%load_ext kanibook, fresh process (median)", statistics.median(times["%load_ext kanibook"]) * 1e3,
           statistics.median(times["import ipywidgets"]) * 1e3, unit="ms", baseline_name="import ipywidgets",
           target=1.0, higher_is_better=False)
    print(f"heavy modules imported by %load_ext: {sorted(heavy) or 'none'}")


if __name__ == "__main__":
    main()
