"""The binder/ setup installs what the notebooks need: its files checked, and (slow) an environment built from
them alone, as repo2docker would, running the quickstart notebook (mybinder.org itself is not reachable here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

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


# repo2docker's Python images come with Jupyter (notebook, JupyterLab, nbconvert, ipykernel) before the repository's
# own files are applied; everything else must come from binder/requirements.txt and binder/postBuild.
REPO2DOCKER_BASE = ["notebook", "jupyterlab", "nbconvert", "ipykernel"]


@pytest.mark.slow
def test_binder_files_alone_build_an_environment_that_runs_the_quickstart(tmp_path):
    """As repo2docker would: a fresh clone, a fresh virtual environment, requirements.txt, then postBuild from the
    repository's root; then notebook 01 runs top to bottom in that environment. Nothing from the Makefile."""
    clone = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True, timeout=120)
    for path in subprocess.run(["git", "ls-files", "-m", "-o", "--exclude-standard"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.split():  # fmt: skip
        if (ROOT / path).is_file():  # uncommitted work too, so the test checks this tree, not the last commit
            (clone / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, clone / path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv),
           "KANIBOOK_CACHE": str(tmp_path / "cache"), "PIP_RETRIES": "0"}  # fmt: skip
    env.pop("PYTHONPATH", None)

    def sh(*command, timeout=900):
        result = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result

    sh("pip", "install", "-q", *REPO2DOCKER_BASE)
    sh("pip", "install", "-q", "-r", "binder/requirements.txt")
    sh("bash", "binder/postBuild")
    sh("python", "-c", "import kanibook, torch; assert not torch.cuda.is_available(); print(kanibook.__file__)")
    out = tmp_path / "ran.ipynb"
    sh("jupyter", "nbconvert", "--to", "notebook", "--execute", "--ExecutePreprocessor.timeout=300",
       "--output", str(out), "notebooks/01-quickstart.ipynb")  # fmt: skip
    cells = [c for c in json.loads(out.read_text())["cells"] if c["cell_type"] == "code" and c["source"]]
    assert cells and all(c["execution_count"] for c in cells)
    assert not [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]


def test_repo2docker_accepts_the_binder_folder():
    """repo2docker's --no-build mode needs no Docker: it prints the Dockerfile it would build from binder/."""
    r2d = shutil.which("repo2docker", path=str(Path(sys.executable).parent)) or shutil.which("repo2docker")
    if r2d is None:
        pytest.skip("jupyter-repo2docker is not installed (pip install jupyter-repo2docker)")
    result = subprocess.run([r2d, "--no-build", "--no-run", "--debug", str(ROOT)], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    dockerfile = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"environment\S*py-(2d)?3-(2e)?11", dockerfile)  # runtime.txt's Python (names escaped)
    assert re.search(r'pip install --no-cache-dir -r "binder/requirements.txt"', dockerfile)
    assert "./binder/postBuild" in dockerfile
