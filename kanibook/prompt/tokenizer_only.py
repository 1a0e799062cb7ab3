"""A model's prompt from its tokenizer and chat template alone: no weights loaded or downloaded.

:func:`tokenizer_engine` loads what ``HuggingEngine`` loads before the weights (``AutoProcessor``, falling back to
``AutoTokenizer``; the prompt pipeline kani picks for the model) plus ``config.json`` for the context size, and
returns an object with the parts of a HuggingEngine the prompt view uses. Its ``build_prompt`` is kani's own
``HuggingEngine.build_prompt``, so the ids are exactly what the loaded model would receive.
"""

from __future__ import annotations

import os
import warnings

from ..exceptions import KanibookError

__all__ = ["TokenizerEngine", "tokenizer_engine", "is_model_reference"]


def is_model_reference(target) -> bool:
    """Whether ``target`` names a model (a Hub id or a local folder) rather than being an engine or a Kani."""
    return isinstance(target, (str, os.PathLike))


class TokenizerEngine:
    """The parts of a HuggingEngine the prompt view uses, without a model: tokenizer, pipeline, context size."""

    def __init__(self, model_id: str, processor_or_tokenizer, pipeline, max_context_size: int | None, eos_ids):
        self.model_id = model_id
        self._processor_or_tokenizer = processor_or_tokenizer
        self.pipeline = pipeline
        self.max_context_size = max_context_size
        self.hyperparams: dict = {}
        self.model = None
        self._eos_ids = list(eos_ids)
        self.mm_video_fps = None

    @property
    def tokenizer(self):
        from transformers import ProcessorMixin

        p = self._processor_or_tokenizer
        return p.tokenizer if isinstance(p, ProcessorMixin) else p

    def build_prompt(self, messages, functions=None):
        """Exactly ``HuggingEngine.build_prompt`` (kani's code, run on this object)."""
        from kani.engines.huggingface import HuggingEngine

        return HuggingEngine.build_prompt(self, messages, functions)

    def _collect_multimodal(self, messages):
        from kani.engines.huggingface import HuggingEngine

        return HuggingEngine._collect_multimodal(self, messages)

    def _get_eos_tokens(self, *, return_ids=False, **hyperparams):
        return list(self._eos_ids) if return_ids else [self.tokenizer.decode([i]) for i in self._eos_ids]

    def __repr__(self) -> str:
        return f"<TokenizerEngine {self.model_id!r} (tokenizer and chat template only)>"


def tokenizer_engine(model_id: str | os.PathLike) -> TokenizerEngine:
    """Load ``model_id``'s tokenizer (or processor), its prompt pipeline and its context size; never its weights.

    :param model_id: A Hugging Face model id (``org/name``, from the cache when offline) or a local folder.
    """
    return _load(os.fspath(model_id))


def _load(model_id: str) -> TokenizerEngine:
    import logging

    from transformers import AutoConfig, AutoProcessor, AutoTokenizer

    from ..engine._hub import check_model_available, hub_offline

    offline = check_model_available(model_id)
    with hub_offline(offline), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet = logging.getLogger("transformers")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            try:
                loaded = AutoProcessor.from_pretrained(model_id)
            except Exception:
                loaded = None
            if loaded is None or not hasattr(loaded, "__call__"):
                loaded = AutoTokenizer.from_pretrained(model_id)
            try:
                config = AutoConfig.from_pretrained(model_id)
            except Exception:
                config = None
            from kani import model_specific

            pipeline = model_specific.prompt_pipeline_for_hf_model(model_id, loaded)
        except KanibookError:
            raise
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise KanibookError(f"Cannot load the tokenizer of {model_id!r}: {first}") from None
        finally:
            quiet.setLevel(level)
    return TokenizerEngine(model_id, loaded, pipeline, _context_size(config), _eos(config, loaded))


def _context_size(config) -> int | None:
    if config is None:
        return None
    for cfg in (config, getattr(config, "text_config", None)):
        if cfg is None:
            continue
        value = getattr(cfg, "model_max_len", None) or getattr(cfg, "max_position_embeddings", None)
        if isinstance(value, int) and 0 < value < 1e12:
            return value
    return None


def _eos(config, loaded) -> list[int]:
    tok = getattr(loaded, "tokenizer", loaded)
    out = []
    for cfg in (config, getattr(config, "text_config", None)):
        value = getattr(cfg, "eos_token_id", None) if cfg is not None else None
        out += value if isinstance(value, list) else ([value] if isinstance(value, int) else [])
    if tok.eos_token_id is not None:
        out.append(tok.eos_token_id)
    return sorted(set(out))
