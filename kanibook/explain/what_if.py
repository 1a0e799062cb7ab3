"""What a wrong template would have done: the same reply scored under the real prompt and under variants of it.

Variants (:func:`template_what_if`): no chat template (the messages as plain text), a doubled BOS (what a tokenizer
that adds its BOS on top of the template's sends), no generation prompt (the reply follows the last turn with no
assistant header), and any other template the caller passes (a model id or folder: its chat template and prompt
pipeline, rendered to text and tokenized by this model's tokenizer; or a Jinja string). Each variant's prompt ends
with the reply's own ids, so the reply's log-probability and perplexity compare directly; all rows are scored in
batched forward passes through :func:`kanibook.scoring.score_tails` (identical prompts once), and each variant's
prompt is also continued greedily for a few tokens (what the model would have said). Forward passes and generation
run on the model thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..exceptions import KanibookError
from .conversation import Reply, plain_text_ids, resolve, text_ids
from .progress import steps

__all__ = ["Variant", "WhatIf", "template_what_if"]


@dataclass
class Variant:
    """The reply under one prompt.

    :param name: ``"real prompt"``, ``"no chat template"``, ``"doubled BOS"``, ``"no generation prompt"``, or the
        other template's name.
    :param prefix: The prompt's ids before the reply's own text.
    :param logprobs: The reply's tokens' log-probabilities under it (empty, with ``note``, where it could not be built).
    :param greedy: The start of the greedy reply to this prompt (decoded).
    """

    name: str
    prefix: list[int]
    logprobs: list[float]
    greedy: str = ""
    note: str = ""

    @property
    def logprob(self) -> float:
        return sum(self.logprobs) if self.logprobs else math.nan

    @property
    def perplexity(self) -> float:
        return math.exp(-self.logprob / len(self.logprobs)) if self.logprobs else math.nan


class WhatIf:
    """The same reply under the real prompt (``variants[0]``) and its variants; displays itself as a table with each
    variant's prompt difference one click away. :meth:`comparison` gives the prompt view's full diff."""

    def __init__(self, reply: Reply, variants: list[Variant]):
        self.reply, self.variants = reply, variants

    @property
    def real(self) -> Variant:
        return self.variants[0]

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KanibookError(f"No variant {name!r}: the variants are " + ", ".join(repr(v.name) for v in self.variants))

    def ids(self, name: str) -> list[int]:
        """A variant's whole sequence: its prompt, then the reply's own ids."""
        return self.variant(name).prefix + self.reply.reply_ids

    def comparison(self, name: str):
        """The prompt view's diff (:class:`kanibook.prompt.PromptComparison`) of the real prompt and a variant."""
        from ..prompt.view import PromptComparison

        a = ids_view(self.reply.engine, self.ids(self.real.name), "real prompt")
        b = ids_view(self.reply.engine, self.ids(name), name)
        return PromptComparison(a, b, ("real prompt", name))

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        from . import view_what_if

        return {"text/plain": view_what_if.what_if_text(self), "text/html": view_what_if.what_if_html(self)}

    def __repr__(self) -> str:
        return f"<WhatIf {len(self.variants)} prompts, {len(self.reply.reply_ids)} reply tokens>"


def template_what_if(target, index: int = -1, *, templates=(), greedy_tokens: int = 12, messages=None,
                     progress: bool = True) -> WhatIf:  # fmt: skip
    """The same reply scored under the real prompt and under template mistakes: no chat template, a doubled BOS, no
    generation prompt, and any other template passed; with the first tokens each prompt makes the model say.

    :param target: A ``kani.Kani``, the notebook's ``ChatSession``, a chat panel, or an engine with ``messages``.
    :param index: Which reply (among the conversation's replies; -1: the last).
    :param templates: Other templates to try: model ids or folders (their chat template), or Jinja strings; a dict
        names them.
    :param greedy_tokens: How many tokens of greedy reply to generate per prompt (0: none).
    :param messages: The conversation, for an engine (or in place of a Kani's).
    :param progress: Show a progress bar when it takes more than a second.
    """
    from ..scoring import engine_score_tails

    reply = resolve(target, index, messages)
    if isinstance(templates, str):
        templates = [templates]
    named = dict(templates) if isinstance(templates, dict) else {_name_of(t): t for t in templates}
    variants = [Variant("real prompt", reply.prefix, []), Variant("no chat template", plain_text_ids(reply.engine,
                reply.context), []), _doubled_bos(reply), _no_generation_prompt(reply)]  # fmt: skip
    for name, template in named.items():
        variants.append(_other_template(reply, str(name), template))
    usable = [v for v in variants if not v.note]
    distinct = list(dict.fromkeys(tuple(v.prefix) for v in usable))
    reply_ids = reply.reply_ids
    greedy_steps = len(distinct) if greedy_tokens > 0 else 0
    work = sum(len(p) + len(reply_ids) for p in distinct) + greedy_steps * greedy_tokens * 20  # a token ~ 20 positions
    with steps("template_what_if", len(distinct) + greedy_steps, progress, work) as bar:
        scored = engine_score_tails(reply.engine, [list(p) + reply_ids for p in distinct], len(reply_ids),
                             pad_id=_pad(reply.engine), on_batch=bar.update)  # fmt: skip
        by_prefix = dict(zip(distinct, scored))
        said: dict[tuple, str] = {}
        for prefix in distinct if greedy_tokens > 0 else ():
            said[prefix] = _greedy(reply.engine, list(prefix), greedy_tokens)
            bar.update()
    for v in usable:
        v.logprobs = list(by_prefix[tuple(v.prefix)])
        v.greedy = said.get(tuple(v.prefix), "")
    return WhatIf(reply, variants)


def _name_of(template) -> str:
    from .._names import model_display_name

    text = str(template)
    return "template string" if _is_jinja(text) else model_display_name(text)


def _is_jinja(text: str) -> bool:
    return "{%" in text or "{{" in text


def _doubled_bos(reply: Reply) -> Variant:
    bos = reply.engine.tokenizer.bos_token_id
    if bos is None:
        return Variant("doubled BOS", [], [], note="this tokenizer has no BOS token")
    prefix = reply.prefix
    extra = [bos] if prefix[:1] == [bos] else [bos, bos]
    return Variant("doubled BOS", extra + prefix, [])


def _no_generation_prompt(reply: Reply) -> Variant:
    segments = reply.view.segments_of(len(reply.context))
    header = segments[0].start if segments else reply.start
    if header >= reply.start:
        return Variant("no generation prompt", [], [], note="this template puts no header before a reply")
    return Variant("no generation prompt", reply.prefix[:header], [])


def _other_template(reply: Reply, name: str, template) -> Variant:
    from kani.engines.huggingface.chat_template_pipeline import ChatTemplatePromptPipeline

    text = str(template)
    try:
        if _is_jinja(text):
            pipeline = ChatTemplatePromptPipeline(reply.engine.tokenizer, chat_template=text)
        else:
            from ..prompt.tokenizer_only import tokenizer_engine

            pipeline = tokenizer_engine(template).pipeline
        rendered = pipeline(reply.context, reply.functions)
    except KanibookError as e:
        return Variant(name, [], [], note=str(e))
    except Exception as e:  # noqa: BLE001 - a template that refuses this conversation: one line
        return Variant(name, [], [], note=f"the template refuses this conversation: {_first_line(e)}")
    if not isinstance(rendered, str):
        return Variant(name, [], [], note="that prompt pipeline returns token ids of another tokenizer, not text")
    return Variant(name, text_ids(reply.engine, rendered), [])


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _pad(engine) -> int:
    from .occlude import _pad_id

    return _pad_id(engine)


def _greedy(engine, prefix: list[int], n: int) -> str:
    from ..engine._model_thread import model_thread

    own = getattr(engine, "greedy_text", None)  # llama.cpp: its own decoding
    if callable(own):
        return own(prefix, n)
    return model_thread().run(_generate, engine.model, engine.tokenizer, prefix, n)


def _generate(model, tokenizer, prefix: list[int], n: int) -> str:
    import torch

    device = getattr(model, "device", None) or next(model.parameters()).device
    ids = torch.tensor([prefix], device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             pad_token_id=pad, top_p=None, top_k=None, temperature=None)  # fmt: skip
    return tokenizer.decode(out[0, len(prefix) :].tolist(), skip_special_tokens=False)


def ids_view(engine, ids: list[int], title: str):
    """A prompt view of bare ids (one segment), for :class:`~kanibook.prompt.PromptComparison`."""
    from ..prompt.tokens import SPECIAL
    from ..prompt.view import PromptView, Segment

    tok = engine.tokenizer
    special = set(tok.all_special_ids)
    texts = [tok.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False) for i in ids]
    return PromptView(token_ids=list(ids), texts=texts, flags=[SPECIAL if i in special else 0 for i in ids],
                      token_segments=[0] * len(ids), segments=[Segment("template", title, 0, len(ids))], messages=[],
                      context_size=engine.max_context_size, reply_tokens=0, title=title)  # fmt: skip
