"""A progress bar for work that takes seconds: shown only once it has run for a second (tqdm's ``delay``), a widget in
notebooks and text in terminals; nothing at all when ``enabled`` is False (the chat panel shows its status line)."""

from __future__ import annotations

import contextlib

__all__ = ["steps"]


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def steps(desc: str, total: int, enabled: bool = True):
    """A bar of ``total`` steps (``bar.update(n)``); closed on leaving the block."""
    if not enabled:
        yield _Silent()
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="pass", delay=1.0, leave=False)
    try:
        yield bar
    finally:
        bar.close()
