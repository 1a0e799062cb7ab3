"""The chat panel's probabilities: the "probabilities" box, and "what if" branches from a reply's tokens.

A mixin of :class:`~kanibook.widgets.chat_panel.ChatPanel` (it uses the panel's rounds, status line and views).
"""

from __future__ import annotations

import asyncio

from ..exceptions import KanibookError
from ._message_view import MessageView

__all__ = ["PanelProbs"]


class PanelProbs:
    """Probabilities and branches for the chat panel (see :class:`~kanibook.widgets.chat_panel.ChatPanel`)."""

    @property
    def probabilities(self) -> bool:
        """Whether the next replies record what the model considered at every token (the "probabilities" box)."""
        return bool(self.probs_toggle.value)

    @probabilities.setter
    def probabilities(self, on: bool) -> None:
        self.probs_toggle.value = bool(on)

    def branch(self, message_index: int, token_index: int, alternative=1) -> asyncio.Task:
        """"What if": regenerate a reply from one of its tokens on, as if the model had picked an alternative there.

        Greedy from the alternative on. The conversation keeps the new reply (messages after it are dropped: they
        answered the old one); the old reply stays in the new message's ``extra`` and in exports.

        :param message_index: The reply's index in ``panel.kani.chat_history`` (negative counts from the end).
        :param token_index: The token to replace (0 = the reply's first).
        :param alternative: Its number among the token's alternatives (0 = most probable; default 1), or its text.
        :returns: The asyncio task (``await panel.wait()``).
        """
        from ..probs.branch import check_branch, check_reply_index
        from ..probs.view import find_probs

        self._refuse_if_busy()
        history = self.kani.chat_history
        i = check_reply_index(history, message_index)
        probs = find_probs(history[i])
        check_branch(self.engine, probs, token_index, alternative)
        return self._start(self._branch_round(i, probs, token_index, alternative))

    def _on_branch_click(self, view: MessageView, token_index: int, alternative: int) -> None:
        history = self.kani.chat_history
        index = next((i for i, m in enumerate(history) if m is view.message), None)
        if index is None:
            self._set_status("That reply is no longer in the conversation.")
            return
        self._guarded(self.branch, index, token_index, alternative)

    def _probability_params(self) -> tuple[dict, str | None]:
        """The generation argument that turns recording on, or the note that this engine cannot record."""
        if not self.probabilities:
            return {}, None
        if getattr(self.engine, "supports_probabilities", False):
            return {"probabilities": True}, None
        return {}, "probabilities: not available for this engine"

    async def _branch_round(self, index: int, probs, token_index: int, alternative) -> None:
        """Regenerate reply ``index`` from ``token_index`` on with an alternative; replace it and its views."""
        from ..probs.branch import branch_reply, replace_in_history

        outcome = "ready"
        try:
            text, new, alt = await branch_reply(self.engine, probs, token_index, alternative)
            history = self.kani.chat_history
            old = history[index]
            message = replace_in_history(history, index, text, new, token_index, alt)
            first = next((k for k, v in enumerate(self.messages) if v.message is old), len(self.messages))
            self._drop_views(first)
            self._add_view(MessageView.from_message(message))
            outcome = f"branched at token #{token_index} with {alt.text.strip() or repr(alt.text)!s}"
        except KanibookError as e:
            outcome = str(e)
        except Exception as e:  # noqa: BLE001 - shown in the status line; the conversation is unchanged
            outcome = "error: " + (str(e).strip().splitlines() or [type(e).__name__])[0]
        finally:
            self._show_busy(False)
        self._set_status(outcome)
        await self.refresh_context()
