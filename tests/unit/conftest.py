"""Tiny models built offline in seconds, for tests that need a model other than the demo model.

Each fixture is session-scoped and returns the folder of a Hugging Face model that ``kanibook.load(folder, ...)``
loads (random weights: their answers mean nothing; use them for templates, tokens, processors and shapes).

- ``tiny_llama2_dir``: a text-only Llama with a Llama-2 style ``[INST]`` chat template (``<s>``/``</s>``; the system
  prompt goes inside the first user turn; roles must alternate, as in the real template). Load with
  ``kanibook.load(tiny_llama2_dir)``.
- ``tiny_llava_dir``: a LLaVA (CLIP vision tower on 28x28 images, patch 7, so one image is 16 ``<image>`` tokens, and
  a tiny Llama) with a ChatML template that renders image parts as ``<image>``. Load with
  ``kanibook.load(tiny_llava_dir, model_cls=transformers.AutoModelForImageTextToText)`` and send
  ``ChatMessage.user(["text", ImagePart(image=pil_image)])`` (``kani.ext.multimodal_core.ImagePart``). One image
  becomes 16 ``<image>`` tokens ((28 / 7) ** 2 patches; the CLS position is dropped by "default" feature selection).
- ``tiny_gemma3_dir``: a two-layer Gemma 3 (SigLIP vision tower on 28x28 images, patch 7, pooled to 4 image
  tokens, projector weights randomized so images differ) with a Gemma-style template; one image becomes
  ``<start_of_image>``, 4 ``<image_soft_token>`` and ``<end_of_image>``. Loads with
  ``kanibook.load(tiny_gemma3_dir)``; its processor returns ``token_type_ids`` (1 on image tokens).
- ``tiny_qwen2_audio_dir``: a Qwen2-Audio (Whisper-style encoder on 16 mel bins, ``chunk_length=1``: at most one
  second of 16 kHz audio, 25 ``<|AUDIO|>`` tokens) with a ChatML template. Load with
  ``kanibook.load(tiny_qwen2_audio_dir, model_cls=transformers.AutoModelForMultimodalLM, audio_sr=16000)``.

The builders are plain functions (``build_tiny_tokenizer``, ``build_tiny_llama2``, ``build_tiny_llava``,
``build_tiny_gemma3``, ``build_tiny_qwen2_audio``) for tests that need a variant (another template, other special
tokens).
"""

from __future__ import annotations

from pathlib import Path

import pytest

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the weather in Paris today? It is sunny and warm.",
    "Describe this image, please. Hello world! How are you?",
    "You are a helpful assistant. Thanks, that is all for now.",
] * 4

LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

CHATML_IMAGE_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}"
    "{% if p.type == 'image' %}<image>{% else %}{{ p.text }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}"
    "{% if p.type == 'image' %}<start_of_image>{% else %}{{ p.text }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

CHATML_AUDIO_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}"
    "{% if p.type == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>{% else %}{{ p.text }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_tokenizer(
    special_tokens: list[str], chat_template: str, bos: str, eos: str, vocab_size: int = 400, **named_tokens: str
):
    """A byte-level BPE trained on a few sentences, as a ``PreTrainedTokenizerFast`` with a chat template.

    :param special_tokens: Added as special tokens, in this order (ids 0, 1, ...).
    :param chat_template: A Jinja chat template.
    :param bos: The beginning-of-sequence token (one of ``special_tokens``).
    :param eos: The end-of-sequence (end-of-turn) token (one of ``special_tokens``).
    :param vocab_size: The BPE vocabulary size.
    :param named_tokens: Model-specific named special tokens (e.g. ``boi_token="<start_of_image>"``), readable as
        ``tokenizer.boi_token`` / ``tokenizer.boi_token_id`` as processors expect.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=eos, extra_special_tokens=named_tokens or None
    )
    fast.chat_template = chat_template
    return fast


def _tiny_llama_config(tokenizer, **overrides):
    from transformers import LlamaConfig

    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    return LlamaConfig(**(kwargs | overrides))


def build_tiny_llama2(folder: Path, chat_template: str = LLAMA2_TEMPLATE) -> Path:
    """A text-only tiny Llama with a Llama-2 style template, saved in ``folder``."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(["<unk>", "<s>", "</s>"], chat_template, bos="<s>", eos="</s>")
    torch.manual_seed(0)
    LlamaForCausalLM(_tiny_llama_config(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def build_tiny_chat_model(folder: Path, special_tokens: list[str], chat_template: str, bos: str, eos: str,
                          **config) -> Path:  # fmt: skip
    """A text-only tiny random-weight Llama with its own special tokens and chat template, saved in ``folder``.

    :param config: LlamaConfig overrides (e.g. a larger ``hidden_size`` for heavier weights).
    """
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(special_tokens, chat_template, bos=bos, eos=eos)
    torch.manual_seed(0)
    LlamaForCausalLM(_tiny_llama_config(tokenizer, **config)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def build_tiny_llava(folder: Path) -> Path:
    """A tiny LLaVA (CLIP vision tower on 28x28 images + tiny Llama) with its processor, saved in ``folder``."""
    import torch
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]
    tokenizer = build_tiny_tokenizer(specials, CHATML_IMAGE_TEMPLATE, bos="<|im_start|>", eos="<|im_end|>")
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28,
        patch_size=7, projection_dim=16,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision,
        text_config=_tiny_llama_config(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}),
        tokenizer=tokenizer,
        patch_size=7,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHATML_IMAGE_TEMPLATE,
    )
    processor.save_pretrained(folder)
    return Path(folder)


def build_tiny_gemma3(folder: Path) -> Path:
    """A tiny Gemma 3 (SigLIP on 28x28 images, 4 tokens per image) with its processor, saved in ``folder``."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, Gemma3TextConfig
    from transformers import SiglipVisionConfig
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    specials = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                "<image_soft_token>"]  # fmt: skip
    named = dict(boi_token="<start_of_image>", eoi_token="<end_of_image>", image_token="<image_soft_token>")
    tokenizer = build_tiny_tokenizer(specials, GEMMA3_TEMPLATE, bos="<bos>", eos="<end_of_turn>", **named)
    # two text layers: with one, the last position reads only the image tokens' inputs, and Gemma 3's bidirectional
    # attention among image tokens (what token_type_ids switch on) could not show in the next-token logits
    ids = tokenizer.convert_tokens_to_ids
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, max_position_embeddings=512, sliding_window=64,
        bos_token_id=ids("<bos>"), eos_token_id=ids("<end_of_turn>"), pad_token_id=ids("<pad>"),
    )  # fmt: skip
    vision = SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=7
    )
    config = Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=4, boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"), image_token_index=ids("<image_soft_token>"),
    )  # fmt: skip
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():  # the projector initialises to zeros: every image would look the same
        for name, weight in model.named_parameters():
            if "multi_modal_projector" in name:
                weight.normal_(0.0, 1.0)
    model.save_pretrained(folder)
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": 28, "width": 28}),
        tokenizer=tokenizer,
        image_seq_length=4,
        chat_template=GEMMA3_TEMPLATE,
    )
    processor.save_pretrained(folder)
    return Path(folder)


def build_tiny_qwen2_audio(folder: Path) -> Path:
    """A tiny Qwen2-Audio (16 mel bins, at most one second of 16 kHz audio) with its processor, saved in ``folder``."""
    import torch
    from transformers import Qwen2AudioConfig, Qwen2AudioEncoderConfig, Qwen2AudioForConditionalGeneration
    from transformers import Qwen2AudioProcessor, Qwen2Config, WhisperFeatureExtractor

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]
    tokenizer = build_tiny_tokenizer(specials, CHATML_AUDIO_TEMPLATE, bos="<|im_start|>", eos="<|im_end|>")
    text = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    audio = Qwen2AudioEncoderConfig(
        num_mel_bins=16, d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
        max_source_positions=50,
    )  # fmt: skip
    config = Qwen2AudioConfig(
        audio_config=audio, text_config=text, audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    )
    torch.manual_seed(0)
    Qwen2AudioForConditionalGeneration(config).save_pretrained(folder)
    processor = Qwen2AudioProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=16, chunk_length=1, sampling_rate=16000),
        tokenizer=tokenizer,
        chat_template=CHATML_AUDIO_TEMPLATE,
    )
    processor.save_pretrained(folder)
    return Path(folder)


@pytest.fixture(scope="session")
def tiny_llama2_dir(tmp_path_factory) -> Path:
    """A tiny text-only Llama with a Llama-2 style ``[INST]`` chat template (see the module docstring)."""
    return build_tiny_llama2(tmp_path_factory.mktemp("tiny-llama2"))


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory) -> Path:
    """A tiny LLaVA whose processor expands each ``<image>`` into 16 tokens (see the module docstring)."""
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="session")
def tiny_gemma3_dir(tmp_path_factory) -> Path:
    """A tiny Gemma 3 whose processor gives 4 image tokens per image and ``token_type_ids`` (see the docstring)."""
    return build_tiny_gemma3(tmp_path_factory.mktemp("tiny-gemma3"))


@pytest.fixture(scope="session")
def tiny_qwen2_audio_dir(tmp_path_factory) -> Path:
    """A tiny Qwen2-Audio taking at most one second of 16 kHz audio (see the module docstring)."""
    return build_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny-qwen2-audio"))


@pytest.fixture(scope="module")
def llava_engine(tiny_llava_dir):
    """The tiny LLaVA loaded by kanibook (once per test module)."""
    from transformers import AutoModelForImageTextToText

    import kanibook

    return kanibook.load(tiny_llava_dir, model_cls=AutoModelForImageTextToText)


@pytest.fixture
def html_audit():
    """A checker for HTML that shows untrusted text: returns the problems found (an empty list when safe).

    Call it as ``html_audit(html, tags={...}, css=...)``: every element must be one of ``tags``; attributes only
    ``class``, ``id``, ``title``, ``open`` and ``style`` (only properties an untrusted notebook keeps,
    :data:`kanibook.render.safe.UNTRUSTED_CSS`, with plain values: no ``url()``, ``expression``); no event handler, URL
    attribute, ``<script>``, ``<img>`` or ``<iframe>``; ``<style>`` elements only with exactly ``css``; no raw control
    characters or Unicode direction overrides anywhere in the markup.
    """
    import re
    from html.parser import HTMLParser

    from kanibook.render.safe import UNTRUSTED_CSS

    def _plain_style(style: str) -> bool:
        for decl in filter(None, style.split(";")):
            name, _, value = decl.partition(":")
            if name.strip() not in UNTRUSTED_CSS or not re.fullmatch(r"[#%.,()\w\s/'-]+", value.strip()):
                return False
            if re.search(r"url\(|expression|javascript", value, re.I):
                return False
        return True

    def audit(html: str, *, tags: set[str], css: str | None = None) -> list[str]:
        problems: list[str] = []
        stack: list[str] = []

        class Collector(HTMLParser):
            def handle_starttag(self, tag, attrs):
                stack.append(tag)
                if tag not in tags:
                    problems.append(f"element <{tag}>")
                for name, value in attrs:
                    if name not in {"class", "id", "title", "open", "style"}:
                        problems.append(f"attribute {name}={value!r} on <{tag}>")
                    elif name == "style" and not _plain_style(value or ""):
                        problems.append(f"style {value!r}")

            def handle_endtag(self, tag):
                if stack and stack[-1] == tag:
                    stack.pop()

            def handle_data(self, data):
                if stack and stack[-1] == "style" and data != css:
                    problems.append(f"style content {data[:40]!r}")

        Collector(convert_charrefs=True).feed(html)
        lowered = html.lower()
        for needle in ("<script", "<img", "<iframe", "<svg", "<a ", 'onerror="'):
            if needle in lowered:
                problems.append(f"raw {needle!r}")
        bad = re.findall("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", html)
        if bad:
            problems.append(f"raw control characters {sorted(set(bad))!r}")
        return problems

    return audit


@pytest.fixture(scope="module")
def ip():
    """IPython's own test shell with ``%load_ext kanibook``."""
    from IPython.testing.globalipapp import get_ipython

    shell = get_ipython()
    shell.run_line_magic("load_ext", "kanibook")
    return shell


@pytest.fixture
def current():
    """Makes a session over any engine the notebook's current one (``current(engine)``); all are closed after."""
    from kanibook.conversation.session import ChatSession, set_current_session

    sessions = []

    def make(engine):
        s = ChatSession(engine)
        sessions.append((s, set_current_session(s)))
        return s

    yield make
    for s, previous in reversed(sessions):
        s.close()
        set_current_session(previous)


@pytest.fixture
def session(demo_engine):
    """A fresh current session over the shared demo engine (not owned: closing it leaves the engine alone)."""
    from kanibook.conversation.session import ChatSession, set_current_session

    s = ChatSession(demo_engine)
    previous = set_current_session(s)
    yield s
    s.close()
    set_current_session(previous)
    assert not demo_engine.is_generating


@pytest.fixture(scope="session")
def chat_model_builder():
    """:func:`build_tiny_chat_model`, for tests that build tiny models with their own templates."""
    return build_tiny_chat_model
