"""Bad input as a careless user gives it: nothing lost, one line, no third-party traceback.

Each case failed before the fix: a lone surrogate truncated the saved file and printed a serialization error, or
100 lines of tracebacks; kani's warnings printed their tracebacks; a Stop in the same tick as Send lost the message.
"""

from __future__ import annotations

import json
import logging
import re

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from kani import ChatMessage, Kani

import kanibook
from kanibook.exceptions import BadTextError, UnsavableTextError

BROKEN = "a broken emoji \ud83d here"  # the first half of a surrogate pair, alone


@pytest.fixture
def kani_logs(caplog):
    """Every record kani logs, as the handler would print it (traceback included, if any)."""
    caplog.set_level(logging.WARNING)
    return caplog


def _printed(caplog) -> str:
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    return "\n".join(formatter.format(r) for r in caplog.records)


def test_saving_a_history_with_a_lone_surrogate_keeps_the_old_file(ip, session, tmp_path):
    path = tmp_path / "chat.json"
    path.write_text('{"good": "old"}')
    session.kani.chat_history = [ChatMessage.user(BROKEN), ChatMessage.assistant("ok")]
    with pytest.raises(UnsavableTextError, match=r"Message #1 \(user\) holds a lone surrogate U\+D83D at character 15"):
        session.save_history(path)
    with pytest.raises(UsageError, match="lone surrogate") as err:
        ip.run_line_magic("kani", f"save {path}")
    assert "\n" not in str(err.value)
    assert path.read_text() == '{"good": "old"}'
    assert [p.name for p in tmp_path.iterdir()] == ["chat.json"]  # no temporary file left behind
    session.kani.chat_history[0] = ChatMessage.user("fine now")
    session.save_history(path)
    assert json.loads(path.read_text())["chat_history"][0]["content"] == "fine now"


def test_panel_export_with_a_lone_surrogate_says_so_and_keeps_the_file(demo_engine, tmp_path):
    panel = kanibook.chat(Kani(demo_engine, chat_history=[ChatMessage.user(BROKEN)]), export_dir=tmp_path)
    try:
        target = tmp_path / "old.json"
        target.write_text("old")
        with pytest.raises(UnsavableTextError):
            panel.export_json(target)
        assert target.read_text() == "old"
        panel.export_json_button.click()  # the button: one line in the status, no traceback, nothing written
        assert "lone surrogate" in panel.status and sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]
        md = panel.export_markdown(tmp_path / "chat.md")  # Markdown keeps it visibly, as its escape
        assert "a broken emoji \\ud83d here" in md.read_text(encoding="utf-8")
    finally:
        panel.close()


def test_a_lone_surrogate_is_refused_where_it_enters(ip, session, demo_engine, run_async):
    with pytest.raises(UsageError, match=r"lone surrogate U\+D83D at character 15.*nothing was sent") as err:
        ip.run_cell_magic("chat", "--max-new-tokens 2", BROKEN)
    assert "\n" not in str(err.value) and session.history == []
    with pytest.raises(BadTextError):
        session.send(BROKEN)

    async def in_panel():
        panel = kanibook.chat(demo_engine)
        panel.input.value = BROKEN
        panel._on_send_click()  # what Enter / Send does
        state = (panel.status, panel.input.value, list(panel.kani.chat_history), panel.busy)
        panel.close()
        return state

    status, box, history, busy = run_async(in_panel())
    assert "lone surrogate" in status and box == BROKEN and history == [] and not busy


def test_an_over_long_message_is_one_line_without_kanis_traceback(ip, session, kani_logs):
    with capture_output() as captured, pytest.raises(UsageError) as err:
        ip.run_cell_magic("chat", "--max-new-tokens 2", "word " * 10_000)
    line = str(err.value)
    assert "\n" not in line
    printed = _printed(kani_logs) + captured.stdout + captured.stderr
    assert "Traceback" not in printed and 'File "' not in printed
    assert "Exception while getting prompt size" not in printed  # kani's internal probe is not shown
    room = session.kani.desired_response_tokens
    numbers = re.search(r"too long: ([\d,]+) tokens .* context is ([\d,]+) tokens and ([\d,]+) are kept for the reply, "
                        r"so at most ([\d,]+) fit", line)  # fmt: skip
    assert numbers, line
    n, context, kept, fit = (int(x.replace(",", "")) for x in numbers.groups())
    assert n > 10_000 and context == 8192 and kept == room and fit == context - room
    assert "Shorten" in line and session.history == []  # nothing was sent


def test_a_broken_config_is_one_line_without_kanis_traceback(ip, tmp_path, demo_model_dir, kani_logs):
    import shutil

    folder = tmp_path / "broken"
    shutil.copytree(demo_model_dir, folder)
    (folder / "config.json").write_text("{ this is not json")
    with capture_output() as captured, pytest.raises(UsageError) as err:
        ip.run_line_magic("kani", f"load {folder}")
    line = str(err.value)
    assert "\n" not in line
    assert f"{folder / 'config.json'} is not valid JSON" in line and "line 1, column 3" in line
    assert "pass a local folder or a Hugging Face id" not in line  # it is a local folder: that advice does not fit
    printed = _printed(kani_logs) + captured.stdout + captured.stderr
    assert "Traceback" not in printed and 'File "' not in printed
    assert "Could not load the AutoProcessor" not in printed  # nothing was loaded half-way


def test_atomic_writes_keep_the_files_mode(tmp_path):
    from kanibook._files import write_text_atomic

    old = tmp_path / "shared.md"
    old.write_text("old")
    old.chmod(0o644)
    write_text_atomic(old, "new")
    assert old.read_text() == "new" and old.stat().st_mode & 0o777 == 0o644
    fresh = write_text_atomic(tmp_path / "fresh.md", "x")
    assert fresh.stat().st_mode & 0o777 != 0o600  # what open() gives under the umask, not mkstemp's private mode
