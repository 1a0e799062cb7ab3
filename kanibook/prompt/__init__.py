"""The prompt view: the exact tokens a model receives, which message each came from, and what the template did.

``kanibook.show_prompt`` / ``kanibook.compare_prompts`` (:mod:`.show`); the view objects (:mod:`.view`); tokens and
their text (:mod:`.tokens`); segmentation by message (:mod:`.segment`); the "what the template did" list
(:mod:`.template_report`); a model's tokenizer without its weights (:mod:`.tokenizer_only`); templates that refuse a
conversation (:mod:`.refusal`). Importing this package imports no torch or transformers.
"""

from __future__ import annotations

from .show import compare_prompts, show_prompt
from .view import PlaceholderRun, PromptComparison, PromptView, Segment, TemplateNote, Token

__all__ = ["show_prompt", "compare_prompts", "PromptView", "PromptComparison", "Token", "Segment", "TemplateNote",
           "PlaceholderRun"]  # fmt: skip
