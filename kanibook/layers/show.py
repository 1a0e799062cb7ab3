""":func:`show_layers`: the logit lens for one model: what it would predict at every layer, for every position.

One forward pass captures the residual stream (:mod:`.lens`); each layer's stream is read through the model's final
norm and output head. Kept per layer and position: the top 5 tokens and their probabilities. Derived: for each
position, the layer from which its top token stays the final one ("settles"). The view (:class:`LayersView`, HTML by
:mod:`kanibook.render.layers`) shows the layers x tokens grid, one position's table layer by layer, and the settling
layers. All torch work runs on kanibook's model thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..exceptions import KanibookError

__all__ = ["show_layers", "LayersView", "lens_table"]

_TOP = 5
MAX_POSITIONS = 160  # the grid shows at most this many positions (the last ones); the table takes any position


@dataclass
class LayersView:
    """The logit lens of one text under one model. Displays itself; ``str()`` gives a text table.

    :param tokens: The input tokens as text.
    :param layer_names: ``"embed"``, then ``"1"`` ... ``"L"`` (after each block).
    :param top_ids: ``[layer][position][k]`` the top token ids the lens gives at each layer and position (the
        prediction of the *next* token).
    :param top_probs: Their probabilities.
    :param top_texts: Their texts.
    :param settles: Per position, the first layer index from which the top token stays the final one.
    :param position: The position of the layer-by-layer table.
    :param segments: ``(role, start, end)`` of the messages, when the text was a conversation.
    :param model: The model's name.
    :param element_id: The HTML element id.
    :param token_ids: The input token ids.
    """

    tokens: list[str]
    layer_names: list[str]
    top_ids: list[list[list[int]]]
    top_probs: list[list[list[float]]]
    top_texts: list[list[list[str]]]
    settles: list[int]
    position: int
    segments: list[tuple[str, int, int]] = field(default_factory=list)
    model: str = ""
    element_id: str | None = None
    token_ids: list[int] = field(default_factory=list)

    def at(self, position: int | None = None) -> list[dict]:
        """One position's top tokens layer by layer: ``[{"layer", "tokens": [(text, probability), ...]}]``."""
        p = self.position if position is None else _index(position, len(self.tokens))
        return [{"layer": name, "tokens": list(zip(self.top_texts[l][p], self.top_probs[l][p]))}
                for l, name in enumerate(self.layer_names)]  # fmt: skip

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        from ..render.layers import lens_html, lens_text

        return {"text/plain": lens_text(self), "text/html": lens_html(self)}

    def __str__(self) -> str:
        from ..render.layers import lens_text

        return lens_text(self)

    def __repr__(self) -> str:
        return f"<LayersView {len(self.layer_names)} layers x {len(self.tokens)} tokens of {self.model!r}>"


def show_layers(target, text_or_messages=None, *, position: int | None = None, element_id: str | None = None,
                progress: bool = True):
    """The logit lens: at every layer, the model's final norm and output head applied to the residual stream give
    that layer's prediction of the next token, for every position.

    :param target: What :func:`kanibook.show_prompt` takes that holds a loaded model: an engine
        (``kanibook.load()``), a ``Kani``, or the notebook's ``ChatSession``.
    :param text_or_messages: A text (tokenized as it is) or a conversation (``ChatMessage`` list: the templated
        prompt, with its messages marked); None with a Kani or session: its conversation.
    :param position: The position whose predictions are tabled layer by layer (negative counts from the end);
        default: the last.
    :param element_id: The HTML element id (for deterministic output).
    :param progress: A progress bar across the layers.
    :returns: A :class:`LayersView`.
    """
    from .._names import model_display_name
    from ..engine._model_thread import model_thread

    engine, messages = _engine_and_messages(target)
    if text_or_messages is None:
        text_or_messages = messages
    if text_or_messages is None:
        raise KanibookError("show_layers(engine, text) needs a text or a conversation (a list of ChatMessage).")
    ids, segments = _ids(engine, text_or_messages)
    if len(ids) < 1:
        raise KanibookError("The text has no tokens: give show_layers at least one.")
    p = _index(-1 if position is None else position, len(ids))
    from .._progress import progress_bar
    from .lens import decoder_layers

    found = decoder_layers(engine.model)
    with progress_bar(len(found[1]) + 1 if found else 0, "logit lens", unit="layer", enabled=progress) as bar:
        table = model_thread().run(lens_table, engine.model, ids, bar)
    texts = _texts(engine.tokenizer, table["top_ids"])
    return LayersView(
        tokens=[engine.tokenizer.decode([i]) for i in ids],
        layer_names=table["layer_names"],
        top_ids=table["top_ids"],
        top_probs=table["top_probs"],
        top_texts=texts,
        settles=table["settles"],
        position=p,
        segments=segments,
        model=model_display_name(getattr(engine, "model_id", "") or ""),
        element_id=element_id,
        token_ids=list(ids),
    )


def lens_table(model, ids, bar=None) -> dict:
    """On the model thread: the lens's top tokens at every layer and position, and where each position settles."""
    import torch

    from .lens import capture, find_parts, lens_logprobs

    parts = find_parts(model)
    stream, _ = capture(model, parts, ids)
    if bar is not None:
        bar.total = len(stream)
    top_ids, top_probs = [], []
    for hidden in stream:
        if bar is not None:
            bar.update(1)
        top = lens_logprobs(parts, hidden).topk(_TOP, dim=-1)
        top_ids.append(top.indices.tolist())
        top_probs.append(torch.exp(top.values).tolist())
    return {"layer_names": layer_names(len(stream)), "top_ids": top_ids, "top_probs": top_probs,
            "settles": settle_layers([[t[0] for t in layer] for layer in top_ids])}  # fmt: skip


def layer_names(count: int) -> list[str]:
    """``"embed"`` then the block numbers, for ``count`` residual-stream readings."""
    return ["embed", *(str(i) for i in range(1, count))]


def settle_layers(top1: list[list[int]]) -> list[int]:
    """Per position, the first layer from which the top token equals the last layer's at every later layer."""
    final = top1[-1]
    out = []
    for p in range(len(final)):
        layer = len(top1) - 1
        while layer > 0 and top1[layer - 1][p] == final[p]:
            layer -= 1
        out.append(layer)
    return out


def _engine_and_messages(target) -> tuple[Any, list | None]:
    kani = getattr(target, "kani", None) if not hasattr(target, "chat_history") else target
    if kani is not None and hasattr(kani, "chat_history"):
        engine = kani.engine
        messages = [*kani.always_included_messages, *kani.chat_history] or None
    else:
        engine, messages = getattr(target, "engine", None) or target, None
    if getattr(engine, "model", None) is None or getattr(engine, "tokenizer", None) is None:
        raise KanibookError(f"show_layers needs a loaded local model (kanibook.load(), a Kani on one, or the "
                            f"notebook's session), not {type(target).__name__}.")  # fmt: skip
    if not hasattr(engine.model, "named_modules"):  # kanibook's llama.cpp engine
        raise KanibookError("llama.cpp runs this GGUF natively and exposes no hidden states: for the logit lens, load "
                            "the file on the transformers road (kanibook.load(path) without backend=, which "
                            "dequantizes it) and pass that engine.")  # fmt: skip
    return engine, messages


def _ids(engine, text_or_messages) -> tuple[list[int], list[tuple[str, int, int]]]:
    if isinstance(text_or_messages, str):
        return list(engine.tokenizer(text_or_messages)["input_ids"]), []
    from ..prompt import show_prompt

    view = show_prompt(engine, list(text_or_messages))
    return [t.id for t in view.tokens], [(s.role, s.start, s.end) for s in view.segments if s.end > s.start]


def _texts(tokenizer, top_ids) -> list[list[list[str]]]:
    cache: dict[int, str] = {}

    def text(i: int) -> str:
        if i not in cache:
            cache[i] = tokenizer.decode([i])
        return cache[i]

    return [[[text(i) for i in cell] for cell in layer] for layer in top_ids]


def _index(position: int, length: int) -> int:
    if not -length <= position < length:
        raise KanibookError(f"position={position} is outside the text's {length} tokens: pass 0..{length - 1} "
                            "(or a negative one, counted from the end).")  # fmt: skip
    return position % length
