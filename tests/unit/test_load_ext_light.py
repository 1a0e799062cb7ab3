"""``import kanibook`` and ``%load_ext kanibook`` import no torch, transformers or bitsandbytes (checked in a fresh
interpreter, since this test process has them loaded already)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("torch", "transformers", "bitsandbytes", "kani", "openai")

_PROBE = textwrap.dedent(
    """
    import json, sys
    heavy = {heavy!r}
    import kanibook
    after_import = sorted(m for m in heavy if m in sys.modules)
    from IPython.testing.globalipapp import get_ipython
    ip = get_ipython()
    ip.run_line_magic("load_ext", "kanibook")
    after_load_ext = sorted(m for m in heavy if m in sys.modules)
    magics = ip.magics_manager.magics
    print(json.dumps({{
        "after_import": after_import,
        "after_load_ext": after_load_ext,
        "line": "kani" in magics["line"],
        "cell": "chat" in magics["cell"],
    }}))
    """
)


def _probe() -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY)], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_and_load_ext_stay_light():
    result = _probe()
    assert result["after_import"] == []
    assert result["after_load_ext"] == []  # kani and openai too: they come with the first real use
    assert result["line"] and result["cell"]


def test_the_probe_sees_heavy_imports():
    """The check can fail: the same probe notices torch once something imports it."""
    script = "import sys, torch, json; print(json.dumps('torch' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) is True
