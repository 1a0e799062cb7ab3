"""kanibook's progress bar: live while the work runs, and never a half-finished bar in a saved notebook.

tqdm's notebook bar is a widget; the text saved beside it is the widget's text at the moment it was *shown*
(``0%|          | 0/21``), so a saved notebook reads "0%" forever, whatever the live widget said. This bar is an
ordinary display instead (HTML ``<progress>`` plus a text line) with a display id, and every update, the last one
included, replaces both forms: what is saved is the final state ("21/21 steps, done in 12 s"). Updates are sent at
most every 0.2 s. Outside a Jupyter kernel it is a plain tqdm bar on stderr (or nothing when tqdm is missing).
"""

from __future__ import annotations

import contextlib
import time

__all__ = ["ProgressBar", "progress_bar"]

_EVERY_S = 0.2


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class ProgressBar:
    """A bar over ``total`` steps with a description (tqdm's ``update``, ``set_description`` and ``close``).

    :param total: The number of steps.
    :param desc: What is being done (the description changes as the work goes: ``set_description``).
    :param unit: The name of one step, shown in the text.
    :param enabled: False for no bar at all.
    """

    def __init__(self, total: int, desc: str, *, unit: str = "step", enabled: bool = True):
        self.total, self.desc, self.unit, self.n = max(0, int(total)), desc, unit, 0
        self.title = desc
        self._started = time.perf_counter()
        self._sent = 0.0
        self._handle = self._tqdm = None
        self._closed = not enabled
        if not enabled:
            return
        if _in_kernel():
            from IPython.display import display

            self._handle = display(self._bundle(), raw=True, display_id=True)
        else:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._tqdm = tqdm(total=self.total, desc=desc, unit=unit)

    def update(self, n: int = 1) -> None:
        self.n = min(self.total, self.n + n)
        if self._tqdm is not None:
            self._tqdm.update(n)
        self._refresh()

    def set_description(self, desc: str) -> None:
        self.desc = desc
        if self._tqdm is not None:
            self._tqdm.set_description(desc)
        self._refresh()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._tqdm is not None:
            self._tqdm.close()
        if self._handle is not None:
            self._handle.update(self._bundle(final=True), raw=True)

    def text(self, final: bool = False) -> str:
        """The text form: while running, where the work is; once closed, how it ended (no percentage left behind)."""
        elapsed = time.perf_counter() - self._started
        done = f"{self.n}/{self.total} {self.unit}s"
        if not final:
            return f"{self.title}: {self.desc} ({done}, {elapsed:.0f} s)"
        if self.n >= self.total:
            return f"{self.title}: {done}, done in {elapsed:.0f} s"
        return f"{self.title}: stopped after {done} ({elapsed:.0f} s)"

    def _refresh(self) -> None:
        if self._handle is None or self._closed:
            return
        now = time.perf_counter()
        if now - self._sent >= _EVERY_S:
            self._sent = now
            self._handle.update(self._bundle(), raw=True)

    def _bundle(self, final: bool = False) -> dict[str, str]:
        from .render import safe

        text = self.text(final)
        bar = f'<progress value="{self.n}" max="{max(self.total, 1)}" style="width:12em;vertical-align:middle">' \
              "</progress>"  # fmt: skip
        return {"text/plain": text, "text/html": f'<div class="kb-progress">{bar} {safe.text(text)}</div>'}


@contextlib.contextmanager
def progress_bar(total: int, desc: str, *, unit: str = "step", enabled: bool = True):
    """A :class:`ProgressBar`, closed (and its saved form finished) however the work ends."""
    bar = ProgressBar(total, desc, unit=unit, enabled=enabled)
    try:
        yield bar
    finally:
        bar.close()
