"""Images and sounds in a conversation: kani-multimodal-core parts from what a notebook holds, checked before sending.

- :mod:`.parts`: :func:`as_part`, :func:`user_parts`, :func:`user_message` (PIL images, numpy arrays, ``(samples,
  rate)``, image and WAV files).
- :mod:`.check`: :func:`check_media` refuses media the loaded model cannot take, before anything is generated.
"""

from __future__ import annotations

from .check import check_media, media_in
from .parts import as_part, describe_part, is_media_part, user_message, user_parts

__all__ = ["as_part", "user_parts", "user_message", "describe_part", "is_media_part", "check_media", "media_in"]
