"""A progress bar for work that takes seconds (kanibook's own bar: live in a notebook, its saved text the final state),
shown only when the work is expected to take more than about a second on a CPU.

The expectation is judged from the size of the work (token positions to run through the model), not from a clock, so
the same call always shows a bar or never does: a notebook saved with its outputs compares equal when it runs again.
"""

from __future__ import annotations

import contextlib

__all__ = ["steps", "SECOND_OF_WORK"]

#: Token positions a small model runs through in about a second on a laptop CPU (the embedded model: a few hundred).
SECOND_OF_WORK = 300


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def steps(desc: str, total: int, enabled: bool = True, work: int | None = None):
    """A bar of ``total`` steps (``bar.update(n)``), closed on leaving the block; a silent one when ``enabled`` is
    False or ``work`` (token positions) is under :data:`SECOND_OF_WORK`."""
    if not enabled or (work is not None and work < SECOND_OF_WORK):
        yield _Silent()
        return
    from .._progress import progress_bar

    with progress_bar(total, desc, unit="pass") as bar:
        yield bar
