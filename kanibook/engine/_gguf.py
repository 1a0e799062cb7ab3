"""GGUF files as Hugging Face folders: converted once into kanibook's cache, verified on every later load.

transformers reads GGUF files (``gguf_file=``) by dequantizing them, which takes seconds to minutes each time, and a
model loaded that way refuses ``save_pretrained``. kanibook converts a GGUF file once into an ordinary Hugging Face
folder (weights in fp32, the tokenizer and the chat template the file carries), writes a manifest last (size and
sha256 of every file) and loads that folder from then on. A folder that is half-written or corrupt is rebuilt,
never loaded. The embedded demo model is built the same way (:mod:`kanibook.demo_model`).

The cache is ``$KANIBOOK_CACHE`` if set, else ``$XDG_CACHE_HOME/kanibook`` (``~/.cache/kanibook``); a GGUF file's
folder is ``gguf-models/<name>-<12 hex digits>``, keyed on the file's path, size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..exceptions import KanibookError

__all__ = [
    "MANIFEST",
    "cache_root",
    "convert_gguf",
    "gguf_model_path",
    "gguf_tokenizer",
    "is_gguf",
    "is_valid_model_dir",
    "sha256",
]

MANIFEST = "kanibook-manifest.json"
FORMAT_VERSION = 3  # 3: no leftover GGUF quantization_config in config.json
_MAGIC = b"GGUF"


def cache_root() -> Path:
    """The folder kanibook caches models in (``$KANIBOOK_CACHE`` overrides it)."""
    if os.environ.get("KANIBOOK_CACHE"):
        return Path(os.environ["KANIBOOK_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "kanibook"


def is_gguf(path: str | os.PathLike) -> bool:
    """True if ``path`` is a file that starts with the GGUF magic bytes."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == _MAGIC
    except OSError:
        return False


def gguf_model_path(model_id: str | os.PathLike, gguf_file: str | None = None, *, progress: bool = True) -> Path:
    """The Hugging Face folder of a GGUF model, converting it once into kanibook's cache if needed.

    :param model_id: A ``.gguf`` file, or a folder (local, or a Hub id already in the local Hugging Face cache) that
        holds ``gguf_file``.
    :param gguf_file: The GGUF file's name inside ``model_id`` (for a folder or id holding several).
    :param progress: Show a progress bar while converting (first use only).
    """
    gguf = _locate(str(model_id), gguf_file)
    target = cache_root() / "gguf-models" / _folder_name(gguf)
    if is_valid_model_dir(target):
        return target
    with _Steps(f"GGUF {gguf.name}", enabled=progress) as steps:
        steps.advance("checking the file's sha256")
        digest = sha256(gguf)
        steps.advance("converting GGUF to Hugging Face format (once)")
        convert_gguf(gguf, target, source=str(gguf), digest=digest)
    return target


def gguf_tokenizer(model_id: str | os.PathLike, gguf_file: str | None = None):
    """The Hugging Face tokenizer (with the chat template) a GGUF file carries, read once and kept in the cache.

    Reading it from the GGUF takes seconds (the whole vocabulary is converted); later calls load the saved copy.
    """
    from transformers import AutoTokenizer

    gguf = _locate(str(model_id), gguf_file)
    target = cache_root() / "gguf-tokenizers" / _folder_name(gguf)
    if (target / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(target))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # whole or not at all
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another process saved it first, or the disk is full: still usable
    return tokenizer


def _folder_name(gguf: Path) -> str:
    """The cache folder of a GGUF file: keyed on its path, size and mtime, so a changed file converts anew."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return f"{gguf.stem}-{key}"


def _locate(model_id: str, gguf_file: str | None) -> Path:
    path = Path(model_id).expanduser()
    if gguf_file is None and path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise KanibookError(f"{model_id} holds {len(found)} GGUF files ({names}): pass gguf_file='<name>.gguf'.")
        path = found[0]
    elif gguf_file is not None:
        folder = path if path.is_dir() else _hub_snapshot(model_id, gguf_file)
        path = folder / gguf_file
    if not path.is_file():
        raise KanibookError(f"No GGUF file at {path}: check the path (and gguf_file=), or download it first.")
    if not is_gguf(path):
        raise KanibookError(f"{path} is not a GGUF file (it does not start with 'GGUF'): pass a .gguf model file.")
    return path.resolve()


def _hub_snapshot(model_id: str, gguf_file: str) -> Path:
    """The local folder of a Hub id's GGUF file, from the Hugging Face cache only (never the network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model_id, gguf_file)
    if not isinstance(found, str):
        raise KanibookError(
            f"{gguf_file} of {model_id} is not in the local Hugging Face cache: download it first "
            f"(huggingface-cli download {model_id} {gguf_file}) or pass the file's path."
        )
    return Path(found).parent


def is_valid_model_dir(path: Path) -> bool:
    """True if ``path`` is a complete model folder written by kanibook: every file matches its manifest."""
    manifest_path = Path(path) / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT_VERSION or not manifest.get("files"):
            return False
        for name, meta in manifest["files"].items():
            file = Path(path) / name
            if not file.is_file() or file.stat().st_size != meta["size"] or sha256(file) != meta["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(gguf: Path, target: Path, *, source: str, digest: str) -> None:
    """Dequantize ``gguf`` into a Hugging Face folder at ``target``, which appears (atomically) only when complete.

    :param source: Where the file came from, for the manifest.
    :param digest: The file's sha256, for the manifest.
    """
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
            p.name: {"size": p.stat().st_size, "sha256": sha256(p)} for p in sorted(staging.iterdir()) if p.is_file()
        }
        manifest = {"format": FORMAT_VERSION, "source": source, "gguf_sha256": digest, "files": files}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))  # last: it vouches for every file
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
        if isinstance(e, KanibookError):
            raise
        raise KanibookError(
            f"Converting {gguf.name} failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            f"transformers reads GGUF files of the architectures it lists under 'GGUF' in its documentation."
        ) from e


def _drop_gguf_quantization_config(config_json: Path) -> None:
    """The weights are saved dequantized; a leftover ``quant_method: gguf`` would make transformers refuse
    a bitsandbytes config when the folder is loaded with ``quant=``."""
    config = json.loads(config_json.read_text())
    if config.pop("quantization_config", None) is not None:
        config_json.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


class _Steps:
    """A step-by-step progress bar (tqdm.auto: a widget in notebooks, text in terminals)."""

    TOTAL = 4

    def __init__(self, desc: str, enabled: bool):
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.TOTAL, desc=desc, unit="step", leave=True)

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
