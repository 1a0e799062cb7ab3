"""kanibook: run, watch and understand local language models in Jupyter, on kani's ``HuggingEngine``.

``%load_ext kanibook`` registers the magics; ``import kanibook`` is instant: torch, transformers and
bitsandbytes are imported on first real use, not here.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from ._lazy import lazy_names
from ._quiet_logs import quiet_notices
from .exceptions import KanibookError

__version__ = "0.1.0"

# kani's optional audio support imports pydub, which warns at import time when ffmpeg is absent; kanibook never
# asks pydub for ffmpeg, so the warning is only noise in a notebook's first output.
warnings.filterwarnings("ignore", message="Couldn't find ffmpeg or avconv", category=RuntimeWarning)
quiet_notices()  # libraries' one-line notices about kanibook's own offline set-up go to DEBUG (see _quiet_logs)

# public name -> the module that defines it (imported on first access)
_LAZY = {
    "load": "kanibook.engine",
    "KanibookEngine": "kanibook.engine",
    "TurnStats": "kanibook.engine",
    "release_cpu_threads": "kanibook.engine._model_thread",
    "demo_model_path": "kanibook.demo_model",
    # the chat panel and the magics' session
    "chat": "kanibook.widgets.chat_panel",
    "ChatSession": "kanibook.conversation.session",
    # inside the prompt: tokens as the model receives them
    "show_prompt": "kanibook.prompt",
    "compare_prompts": "kanibook.prompt",
    # images and sounds in messages
    "user_message": "kanibook.media",
    "user_parts": "kanibook.media",
    "as_part": "kanibook.media",
    # inside the reply: what the model considered at every token
    "show_reply": "kanibook.probs.view",
    "score_text": "kanibook.probs.view",
    # what the answer rests on: attribution by message, template counterfactuals
    "explain_reply": "kanibook.explain",
    "template_what_if": "kanibook.explain",
    # memory: readings, estimates before loading
    "memory": "kanibook.memory_view",
    "memory_timeline": "kanibook.memory_view",
    "estimate_memory": "kanibook.memory_view",
    # the quantization lab: cost and quality of each setting, measured side by side
    "compare_quantization": "kanibook.quant.lab",
    "QuantReport": "kanibook.quant.report",
    "recommend_quant": "kanibook.quant.recommend",
    # inside the layers: the logit lens, and quantization layer by layer (the lab's layers=)
    "show_layers": "kanibook.layers.show",
}

__all__ = ["KanibookError", "load_ipython_extension", "__version__", *_LAZY]

if TYPE_CHECKING:  # for type checkers and IDEs only
    from .engine import TurnStats
    from .engine._model_thread import release_cpu_threads
    from .demo_model import demo_model_path
    from .engine import KanibookEngine, load
    from .explain import explain_reply, template_what_if
    from .media import as_part, user_message, user_parts
    from .memory_view import estimate_memory, memory, memory_timeline
    from .probs.view import score_text, show_reply
    from .prompt import compare_prompts, show_prompt
    from .layers.show import show_layers
    from .quant.lab import compare_quantization
    from .quant.recommend import recommend_quant
    from .quant.report import QuantReport
    from .conversation.session import ChatSession
    from .widgets.chat_panel import chat


__getattr__ = lazy_names(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load_ipython_extension(ipython) -> None:
    """``%load_ext kanibook``: register the magics, and route transformers' progress bars through kanibook's (whose
    saved text is the bar's final state, not "0%"); nothing heavy is imported."""
    from .magics import register
    from ._progress import route_transformers_bars

    register(ipython)
    route_transformers_bars()
