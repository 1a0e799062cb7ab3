"""kanibook's progress bar: live while the work runs, and never a half-finished bar in a saved notebook.

tqdm's notebook bar is a widget; the text saved beside it is the widget's text at the moment it was *shown*
(``0%|          | 0/21``), so a saved notebook reads "0%" forever, whatever the live widget said. This bar is an
ordinary display instead (HTML ``<progress>`` plus a text line) with a display id, and every update, the last one
included, replaces both forms: what is saved is the final state ("21/21 steps, done in 12 s"). Updates are sent at
most every 0.2 s. Outside a Jupyter kernel it is a plain tqdm bar on stderr (or nothing when tqdm is missing).

transformers' own bars (``Loading weights``) have the same problem. :func:`route_transformers_bars` (called by
``%load_ext kanibook``) routes them through this bar inside a kernel, with transformers' public
``logging.set_tqdm_hook``; it is installed when transformers is imported, so ``%load_ext`` still imports nothing
heavy. Bars transformers was told to hide stay hidden, and a hook someone else set is left alone.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import sys
import time

__all__ = ["ProgressBar", "progress_bar", "route_transformers_bars"]

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

    def __init__(self, total: int, desc: str, *, unit: str = "", enabled: bool = True):
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
        seconds = time.perf_counter() - self._started
        elapsed = f"{seconds:.1f}" if seconds < 10 else f"{seconds:.0f}"
        done = f"{self.n}/{self.total}" + (f" {_plural(self.unit)}" if self.unit else "")
        if not final:
            doing = f"{self.desc}, " if self.desc != self.title else ""
            return f"{self.title}: {doing}{done} ({elapsed} s)"
        if self.n >= self.total:
            return f"{self.title}: {done}, done in {elapsed} s"
        return f"{self.title}: stopped after {done} ({elapsed} s)"

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


def _plural(unit: str) -> str:
    """``"layer"`` -> ``"layers"``, ``"pass"`` -> ``"passes"``."""
    return unit + ("es" if unit.endswith(("s", "sh", "ch", "x")) else "s")


@contextlib.contextmanager
def progress_bar(total: int, desc: str, *, unit: str = "", enabled: bool = True):
    """A :class:`ProgressBar`, closed (and its saved form finished) however the work ends."""
    bar = ProgressBar(total, desc, unit=unit, enabled=enabled)
    try:
        yield bar
    finally:
        bar.close()


class _TqdmLike:
    """What transformers' code calls on a tqdm bar (iterate, ``update``, ``close``, ``set_description``, ``with``),
    drawn by a :class:`ProgressBar`."""

    def __init__(self, iterable=None, desc=None, total=None, disable=False, unit="", **_ignored):
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except TypeError:
                total = 0
        self.iterable, self.total = iterable, total or 0
        self._bar = ProgressBar(self.total, desc or "working", unit="" if unit == "it" else unit, enabled=not disable)

    @property
    def n(self) -> int:
        return self._bar.n

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self._bar.update(1)
        finally:
            self._bar.close()

    def __len__(self) -> int:
        return self.total

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._bar.close()

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self._bar.set_description(desc or "")

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        self._bar.close()


def _hook(factory, args, kwargs):
    """transformers' tqdm hook: inside a kernel, an enabled bar becomes kanibook's; anything else is unchanged."""
    if getattr(factory, "__name__", "") == "EmptyTqdm" or kwargs.get("disable") or not _in_kernel():
        return factory(*args, **kwargs)
    return _TqdmLike(*args, **kwargs)


def _install(logging_module) -> None:
    if getattr(logging_module, "_tqdm_hook", None) is None and hasattr(logging_module, "set_tqdm_hook"):
        logging_module.set_tqdm_hook(_hook)


class _WhenImported(importlib.abc.MetaPathFinder):
    """Runs :func:`_install` right after ``transformers.utils.logging`` is imported (once)."""

    name = "transformers.utils.logging"

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_install(module):
            exec_module(module)
            _install(module)

        loader.exec_module = exec_then_install
        return spec


def route_transformers_bars() -> None:
    """Route transformers' progress bars through :class:`ProgressBar` inside a kernel (now if transformers is
    imported, else as soon as it is)."""
    module = sys.modules.get(_WhenImported.name)
    if module is not None:
        _install(module)
    elif not any(isinstance(f, _WhenImported) for f in sys.meta_path):
        sys.meta_path.insert(0, _WhenImported())
