"""The chat panel's generation settings: max new tokens, temperature, top-p, sampling on/off.

The values become the generation hyperparameters of the next kani round. Their names depend on the engine family:
Hugging Face ``generate`` (kanibook / kani ``HuggingEngine``, the default) takes ``max_new_tokens``, ``do_sample``,
``temperature``, ``top_p``; OpenAI-style API engines take ``max_tokens`` and express greedy decoding as
``temperature=0``. Only the engine's class names are looked at: no engine internals.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

__all__ = ["GenerationSettings", "hyperparams_for"]

# engine class name (anywhere in its MRO) -> the keyword for the reply's token limit
_API_ENGINES = {"OpenAIEngine": "max_tokens", "AnthropicEngine": "max_tokens", "GoogleAIEngine": "max_output_tokens"}


def hyperparams_for(engine: Any, max_new_tokens: int, do_sample: bool, temperature: float, top_p: float) -> dict:
    """Generation settings -> the keyword arguments ``engine`` expects in a kani round.

    :param engine: Any kani engine.
    :param max_new_tokens: The reply's token limit.
    :param do_sample: Sample (True) or decode greedily (False).
    :param temperature: Sampling temperature (used only when sampling).
    :param top_p: Nucleus sampling mass (used only when sampling).
    """
    names = [cls.__name__ for cls in type(engine).__mro__]
    api_limit = next((_API_ENGINES[n] for n in names if n in _API_ENGINES), None)
    if api_limit is not None:
        sampled = {"temperature": temperature, "top_p": top_p} if do_sample else {"temperature": 0.0}
        return {api_limit: int(max_new_tokens), **sampled}
    params: dict[str, Any] = {"max_new_tokens": int(max_new_tokens), "do_sample": bool(do_sample)}
    if do_sample:
        params.update(temperature=float(temperature), top_p=float(top_p))
    return params


class GenerationSettings:
    """The settings widgets (``.widget``) and the hyperparameters they stand for.

    :param max_new_tokens: Initial token limit of a reply.
    :param temperature: Initial sampling temperature.
    :param top_p: Initial nucleus sampling mass.
    :param do_sample: Whether sampling starts on (off: greedy, reproducible).
    """

    def __init__(
        self, *, max_new_tokens: int = 256, temperature: float = 0.7, top_p: float = 0.95, do_sample: bool = False
    ):
        style = {"description_width": "110px"}
        self.max_new_tokens = widgets.BoundedIntText(
            value=max_new_tokens, min=1, max=1_000_000, description="max new tokens", style=style
        )
        self.do_sample = widgets.Checkbox(value=do_sample, description="sampling", indent=False)
        self.temperature = widgets.FloatSlider(
            value=temperature, min=0.05, max=2.0, step=0.05, description="temperature", style=style
        )
        self.top_p = widgets.FloatSlider(value=top_p, min=0.05, max=1.0, step=0.01, description="top-p", style=style)
        self.do_sample.observe(self._sync_enabled, "value")
        self._sync_enabled()
        self.widget = widgets.VBox([self.max_new_tokens, self.do_sample, self.temperature, self.top_p])
        self.widget.add_class("kb-settings")

    def _sync_enabled(self, change=None) -> None:
        self.temperature.disabled = self.top_p.disabled = not self.do_sample.value

    def values(self) -> dict[str, Any]:
        """The settings as plain values (engine-independent names)."""
        return {
            "max_new_tokens": int(self.max_new_tokens.value),
            "do_sample": bool(self.do_sample.value),
            "temperature": float(self.temperature.value),
            "top_p": float(self.top_p.value),
        }

    def hyperparams(self, engine: Any) -> dict[str, Any]:
        """The settings as the generation keyword arguments of ``engine``."""
        return hyperparams_for(engine, **self.values())
