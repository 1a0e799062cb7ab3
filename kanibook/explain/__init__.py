"""What the answer rests on: which part of the prompt a reply needed, and what a wrong template would have done.

- :func:`explain_reply` (:mod:`.occlude`): the drop of a reply's log-probability without each message, and without
  the template's scaffolding; by token inside one message on request. Its view: :mod:`.view`.
- :func:`template_what_if` (:mod:`.what_if`): the same reply under no template, a doubled BOS, no generation prompt
  and other templates. Its view: :mod:`.view_what_if`.
- The reply and its prompt, and the checks (:mod:`.conversation`); the progress bar (:mod:`.progress`).

Everything is teacher-forced through :mod:`kanibook.scoring` on the model thread. Importing this package imports no
torch or transformers.
"""

from __future__ import annotations

from .occlude import Explanation, Part, TokenDetail, explain_reply
from .what_if import Variant, WhatIf, template_what_if

__all__ = ["explain_reply", "template_what_if", "Explanation", "Part", "TokenDetail", "WhatIf", "Variant"]
