"""The binder/ setup installs what the notebooks need (checked statically: mybinder is not reachable here)."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BINDER = ROOT / "binder"


def test_binder_installs_a_cpu_torch_and_the_package_with_the_demo_model():
    requirements = (BINDER / "requirements.txt").read_text()
    assert re.search(r"^torch==\d", requirements, re.M)
    assert "download.pytorch.org/whl/cpu" in requirements
    post_build = (BINDER / "postBuild").read_text()
    assert os.access(BINDER / "postBuild", os.X_OK)
    assert "pip install" in post_build and '-e ".[quant]"' in post_build
    assert "python -m kanibook.demo_model" in post_build


def test_binder_python_satisfies_the_package():
    runtime = (BINDER / "runtime.txt").read_text().strip()
    version = tuple(int(x) for x in runtime.removeprefix("python-").split("."))
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(x) for x in requires.removeprefix(">=").split("."))
    assert version >= minimum


def test_the_torch_pin_is_the_same_everywhere():
    pin = re.search(r"^torch==([\d.]+)", (BINDER / "requirements.txt").read_text(), re.M).group(1)
    assert f"torch=={pin}" in (ROOT / "Makefile").read_text()
