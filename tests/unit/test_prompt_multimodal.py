"""The prompt view of a multimodal prompt: image placeholders shown as what the processor expands them to."""

from __future__ import annotations

import pytest
from kani import ChatMessage

import kanibook
from kanibook.render.tokens import CSS

pytest.importorskip(
    "kani.ext.multimodal_core", reason="needs kani-multimodal-core (pip install 'kanibook[multimodal]')"
)


def image(colour: str):
    from kani.ext.multimodal_core import ImagePart
    from PIL import Image

    return ImagePart(image=Image.new("RGB", (28, 28), colour))


def conversation():
    return [
        ChatMessage.user(["Describe this image", image("red")]),
        ChatMessage.assistant("It is red."),
        ChatMessage.user(["And this one?", image("blue"), "Thanks"]),
    ]


def test_ids_are_the_processor_output(llava_engine):
    messages = conversation()
    built = llava_engine.build_prompt(messages)
    assert "pixel_values" in built  # the processor ran: the image placeholders are expanded in these ids
    view = kanibook.show_prompt(llava_engine, messages)
    assert view.token_ids == built["input_ids"][0].tolist()
    assert sum(s.count for s in view.segments) == view.total


def test_placeholder_expansion_count_equals_the_processor(llava_engine):
    messages = conversation()
    processor = llava_engine._processor_or_tokenizer
    ids = llava_engine.build_prompt(messages)["input_ids"][0].tolist()
    per_image = processor._get_num_multimodal_tokens(image_sizes=[[28, 28]]).num_image_tokens[0]
    assert ids.count(processor.image_token_id) == 2 * per_image  # what the processor produced

    view = kanibook.show_prompt(llava_engine, messages, element_id="mm")
    runs = [r for r in view.placeholder_runs if r.multimodal]
    assert [(r.id, r.count, r.text) for r in runs] == [(processor.image_token_id, per_image, "<image>")] * 2
    assert all(view.token_ids[r.start : r.start + r.count] == [r.id] * r.count for r in runs)
    # each run sits inside its own user message, counted as the message's content
    users = [s for s in view.segments if s.role == "user"]
    for run, seg in zip(runs, users):
        assert seg.start <= run.start and run.start + run.count <= seg.end
        assert not any(t.is_template for t in view.tokens[run.start : run.start + run.count])
    pixels = llava_engine.build_prompt(messages)["pixel_values"].shape
    shape = "\u00d7".join(str(d) for d in pixels[1:])
    assert [r.media for r in runs] == [f"pixel_values {shape}"] * 2  # what the processor made of each image
    html = view._repr_mimebundle_()["text/html"]
    assert html.count(f"&lt;image&gt; \u00d7{per_image}</b></kbd>") == 2  # one collapsed box per image
    assert html.count('<details class="kb-run" style="display:inline"><summary') == 2  # ... that opens on a click
    assert html.count("&lt;image&gt;</b></kbd>") == 2 * per_image  # every placeholder token, inside the boxes
    parts = html.split('<details class="kb-run"')[1:]
    assert all(part.count("&lt;image&gt;</b></kbd>") == per_image for part in parts)
    assert f"\u00d7 {per_image} \u00b7 pixel_values {shape}\"" in html  # the shape on hover
    assert f"\u27e6<image>\u27e7\u00d7{per_image}(pixel_values:{shape})" in view._repr_mimebundle_()["text/plain"]
    assert f"&lt;image&gt; \u00d7{per_image}" in html.split("</div>", 1)[0]  # named in the summary line too


@pytest.fixture(scope="module")
def gemma3_engine(tiny_gemma3_dir):
    return kanibook.load(tiny_gemma3_dir)


@pytest.mark.parametrize("name", ["llava_engine", "gemma3_engine"])
def test_every_tokens_shown_text_comes_from_its_own_id(name, request):
    """Gemma 3's processor replaces the template's ``<start_of_image>`` with ``\\n\\n<start_of_image>`` + 4 image
    tokens + ``<end_of_image>\\n\\n``; the view once showed a newline as ``<start_of_image>`` and the image run as
    ``<end_of_turn>`` (texts shifted around the run). Every token must show its own id's text (these byte-level
    tokenizers decode each id exactly), and each image run must sit in its message."""
    engine = request.getfixturevalue(name)
    messages = conversation()
    view = kanibook.show_prompt(engine, messages)
    tok = engine.tokenizer
    assert view.token_ids == engine.build_prompt(messages)["input_ids"][0].tolist()
    shown = [(i, t.id, t.text) for i, t in enumerate(view.tokens)]
    wrong = [(i, tid, text, tok.decode([tid])) for i, tid, text in shown if text != tok.decode([tid])]
    assert wrong == []
    config = engine.model.config  # Gemma 3's processor calls <start_of_image> its image token; the model knows better
    image_id = next(v for v in (getattr(config, "image_token_id", None), getattr(config, "image_token_index", None))
                    if isinstance(v, int))  # fmt: skip
    runs = [r for r in view.placeholder_runs if r.multimodal and r.id == image_id]
    assert len(runs) == 2 and all(r.text == tok.convert_ids_to_tokens(image_id) for r in runs)
    users = [s for s in view.segments if s.role == "user"]
    for run, seg in zip(runs, users):
        assert seg.start <= run.start and run.start + run.count <= seg.end
    plain = view._repr_mimebundle_()["text/plain"]
    assert f"\u27e6{tok.convert_ids_to_tokens(image_id)}\u27e7\u00d7{runs[0].count}" in plain


def test_message_text_and_segments(llava_engine):
    view = kanibook.show_prompt(llava_engine, conversation())
    text_of = {s.message_index: "".join(t.text for t in view.tokens[s.start : s.end] if not t.is_template)
               for s in view.segments if s.message_index is not None}  # fmt: skip
    assert text_of[0].startswith("Describe this image") and "<image>" in text_of[0]
    assert text_of[1] == "It is red."
    assert text_of[2].startswith("And this one?") and text_of[2].endswith("Thanks")
    assert view.segments[-1].label == "generation prompt"


def test_hostile_text_next_to_images(llava_engine, hostile, html_audit):
    messages = [ChatMessage.user([hostile, image("green"), hostile])]
    view = kanibook.show_prompt(llava_engine, messages)
    assert view.token_ids == llava_engine.build_prompt(messages)["input_ids"][0].tolist()
    tags = {"div", "span", "kbd", "del", "ins", "style", "details", "summary", "table", "tr", "td", "th", "b", "ol",
            "ul", "li"}  # fmt: skip
    assert html_audit(view._repr_mimebundle_()["text/html"], tags=tags, css=CSS) == []
