"""Base models (no chat template), as people bring them: on both roads they load and say so, refuse a chat in one
line, take ``chat_template=``, run in the quantization lab (answering as plain text to continue) and show a plain
text's tokens. The base models are the embedded model without its template: its Hugging Face folder with the template
removed, and its GGUF file rewritten with the ``gguf`` package's own metadata tool (as a user would)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from kani import ChatMessage, Kani

import kanibook
from kanibook.conversation.session import current_session
from kanibook.engine._template import ChatTemplateError, NoChatTemplateError

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QUESTION = [ChatMessage.user("What is the capital of France?")]


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory, demo_model_dir):
    """The demo model's folder without a chat template (weights linked, not copied)."""
    folder = tmp_path_factory.mktemp("base") / "SmolLM2-base"
    folder.mkdir()
    for f in demo_model_dir.iterdir():
        if f.name in ("chat_template.jinja", "kanibook-manifest.json"):
            continue
        if f.name == "model.safetensors":
            (folder / f.name).symlink_to(f)
        else:
            shutil.copy(f, folder / f.name)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def base_engine(base_folder):
    return kanibook.load(base_folder)


@pytest.fixture(scope="module")
def template_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tpl") / "chatml.jinja"
    path.write_text(CHATML)
    return path


@pytest.fixture(scope="module")
def base_gguf(tmp_path_factory, demo_model_dir):
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (pip install 'kanibook[llamacpp]')")
    from kanibook.demo_model import demo_gguf_path

    out = tmp_path_factory.mktemp("base-gguf") / "SmolLM2-base.Q4_1.gguf"
    subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--remove-metadata",
                    "tokenizer.chat_template", "--force", str(demo_gguf_path()), str(out)],
                   check=True, capture_output=True)  # fmt: skip
    return out


def test_a_base_model_loads_and_the_load_line_says_so(base_engine, current, ip):
    assert not base_engine.has_chat_template
    assert "no chat template: a base model? chat needs one, pass chat_template=" in base_engine.load_line
    assert "score_text, the prompt view of plain text and the lab work without it" in base_engine.load_line
    current(base_engine)
    session = current_session()
    session.use(base_engine)
    assert "no chat template" in kanibook.magics.commands._engine_label(base_engine)


def test_chat_is_refused_in_one_line_without_warnings(base_engine, current, ip, caplog, run_async):
    caplog.set_level(logging.WARNING)
    session = current(base_engine)
    with capture_output() as captured, pytest.raises(UsageError) as err:
        ip.run_cell_magic("chat", "--max-new-tokens 4", "Hello there")
    line = str(err.value)
    assert "\n" not in line and "no chat template" in line and "chat_template=" in line
    assert session.history == []  # nothing sent
    printed = captured.stdout + captured.stderr + "\n".join(r.getMessage() for r in caplog.records)
    assert "Exception while getting prompt size" not in printed and "ValueError" not in printed
    with pytest.raises(NoChatTemplateError):  # the Python stream: kanibook's line, not transformers' ValueError
        run_async(Kani(base_engine).chat_round_str("Hello", max_new_tokens=4))
    assert "Exception while getting prompt size" not in "\n".join(r.getMessage() for r in caplog.records)


def test_the_prompt_view_shows_the_plain_texts_tokens_with_a_note(base_engine, current, ip):
    view = kanibook.show_prompt(base_engine, QUESTION)
    assert "no chat template" in view.note
    assert view.token_ids == base_engine.tokenizer(QUESTION[0].text)["input_ids"]
    assert "".join(t.text for t in view.tokens).endswith(QUESTION[0].text)
    plain = kanibook.show_prompt(base_engine, "Once upon a time")
    assert plain.token_ids == base_engine.tokenizer("Once upon a time")["input_ids"] and "plain text" in plain.note
    session = current(base_engine)
    session.kani.chat_history = list(QUESTION)
    shown = ip.run_line_magic("kani", "prompt")  # not "the chat template refuses message #1"
    assert "no chat template" in shown._repr_mimebundle_()["text/plain"]
    score = kanibook.score_text(base_engine, QUESTION)
    assert len(score.tokens) == len(view.tokens) - 1


def test_chat_template_makes_it_chat(base_folder, template_file, run_async):
    for given in (template_file, CHATML):
        engine = kanibook.load(base_folder, chat_template=given)
        assert engine.has_chat_template and "no chat template" not in engine.load_line
        reply = run_async(Kani(engine).chat_round_str("What is the capital of France?", max_new_tokens=8))
        assert reply.strip()
        view = kanibook.show_prompt(engine, QUESTION)  # the template is used in the prompt view too
        assert "<|im_start|>" in view.text and not view.note


def test_the_magic_takes_a_chat_template_file(base_folder, template_file, ip, current):
    current(kanibook.load())  # the session is replaced by the load below, its engine owned and closed by it
    with capture_output() as captured:
        ip.run_line_magic("kani", f"load {base_folder} --chat-template {template_file}")
    assert "Loaded SmolLM2-base" in captured.stdout and "no chat template" not in captured.stdout
    assert current_session().engine.has_chat_template


def test_the_lab_compares_a_base_model_answering_as_plain_text(base_folder):
    report = kanibook.compare_quantization(base_folder, "fp32,bf16", prompts=["The capital of France is"],
                                           max_new_tokens=4, progress=False)  # fmt: skip
    assert [r["label"] for r in report.rows] == ["fp32", "bf16"]
    assert all(r["available"] for r in report.rows), [r.get("reason") for r in report.rows]
    assert any("plain text to continue" in n for n in report.notes)
    assert "plain text to continue" in str(report) and "plain text to continue" in report._repr_mimebundle_()["text/html"]
    assert report.answers[0]["answers"]["fp32"]["text"]


def test_bad_chat_templates_are_one_line_and_nothing_loads(base_folder, tmp_path, monkeypatch):
    from kanibook.engine import _huggingface

    def never(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(_huggingface, "KanibookEngine", never)
    bad_syntax = tmp_path / "bad.jinja"
    bad_syntax.write_text("{% for m in messages %}{{ m.content }")
    raises = tmp_path / "raises.jinja"
    raises.write_text("{{ raise_exception('Only system and user roles are supported') }}")
    cases = {
        tmp_path / "missing.jinja": "No chat template file at",
        bad_syntax: "does not parse",
        raises: "fails for a single user message (TemplateError: Only system and user roles are supported)",
    }
    for path, said in cases.items():
        with pytest.raises(ChatTemplateError) as err:
            kanibook.load(base_folder, chat_template=path)
        assert said in str(err.value) and "\n" not in str(err.value) and "nothing was loaded" in str(err.value)
    with pytest.raises(ChatTemplateError, match="does not parse"):
        kanibook.load(base_folder, chat_template="{% if %}")


def test_a_template_that_refuses_the_message_is_one_line(base_folder, current, ip):
    no_system = ("{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}"
                 "{% endif %}{{ m.content }}{% endfor %}")  # fmt: skip
    engine = kanibook.load(base_folder, chat_template=no_system)
    session = current(engine)
    session.system_prompt = "Be brief."
    with pytest.raises(UsageError) as err:
        ip.run_cell_magic("chat", "--max-new-tokens 2", "Hi")
    assert "\n" not in str(err.value) and "System role not supported" in str(err.value)
    assert session.history == []


# ---- the llama.cpp road ----


def test_a_base_gguf_on_llama_cpp_loads_refuses_chat_and_shows_plain_text(base_gguf, current, ip, template_file,
                                                                          run_async):  # fmt: skip
    engine = kanibook.load(base_gguf, backend="llama.cpp")
    try:
        assert not engine.has_chat_template and "no chat template" in engine.load_line
        session = current(engine)
        with pytest.raises(UsageError, match="no chat template"):
            ip.run_cell_magic("chat", "--max-new-tokens 2", "Hi")
        assert session.history == []
        view = kanibook.show_prompt(engine, QUESTION)
        assert "no chat template" in view.note
        assert view.token_ids == engine.model.tokenize(QUESTION[0].text.encode(), add_bos=True, special=False)
        pieces = []

        async def go():
            async for item in engine.stream_from_ids(view.token_ids, max_new_tokens=4, min_new_tokens=4, do_sample=False):
                if isinstance(item, str):
                    pieces.append(item)

        run_async(go())
        assert "".join(pieces).strip()
    finally:
        run_async(engine.close())
    engine = kanibook.load(base_gguf, backend="llama.cpp", chat_template=template_file)
    try:
        assert engine.has_chat_template
        assert run_async(Kani(engine).chat_round_str("What is the capital of France?", max_new_tokens=6)).strip()
    finally:
        run_async(engine.close())


def test_the_panel_refuses_chat_in_its_status_line(base_engine, run_async):
    """The panel's Send with a base model: the one line in the status, nothing added to the conversation."""
    import kanibook

    panel = kanibook.chat(base_engine)

    async def scenario():
        panel.input.value = "Hello there"
        panel._on_send_click()
        return list(panel.kani.chat_history), panel._status, panel.input.value

    try:
        history, status, kept = run_async(scenario())
    finally:
        panel.close()
    assert history == [] and "no chat template" in status and "\n" not in status
    assert kept == "Hello there"  # the text stays in the box


def test_explaining_a_reply_of_a_base_model_says_why_in_one_line(base_engine):
    from kani import ChatMessage

    from kanibook.exceptions import KanibookError

    conversation = [ChatMessage.user("My cat is Zorblax."), ChatMessage.assistant("Zorblax, noted.")]
    for explain in (kanibook.explain_reply, kanibook.template_what_if):
        with pytest.raises(KanibookError, match="no chat template") as e:
            explain(base_engine, messages=conversation, progress=False)
        assert "chat_template=" in str(e.value) and "\n" not in str(e.value)
