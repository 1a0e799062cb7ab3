"""Inside the reply: what the model considered at every token (recording, views, "what if" branches).

The modules are imported on use (``kanibook.show_reply``, ``kanibook.score_text``): :mod:`.record` is what the
engine loads while generating, :mod:`.view` the views, :mod:`.branch` the "what if" continuations.
"""

from __future__ import annotations

__all__: list[str] = []
