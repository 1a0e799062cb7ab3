"""How a model is named on screen."""

from __future__ import annotations

import re

__all__ = ["model_display_name"]


def model_display_name(model_id: object) -> str:
    """A local folder's own name (never a machine-specific path such as the cache's), a Hub id as it is."""
    name = str(model_id)
    if name.startswith(("/", "~", ".")) or re.match(r"[A-Za-z]:[\\/]", name):
        return re.split(r"[\\/]", name.rstrip("\\/"))[-1] or name
    return name
