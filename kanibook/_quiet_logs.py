"""No third-party traceback in a notebook cell: kani's warnings that carry ``exc_info`` become one line.

kani logs some recoverable problems at warning level with the whole traceback (e.g. "Exception while getting prompt
size:" when a message is longer than the context, "Could not load the AutoProcessor ..." for a folder with a broken
``config.json``). kanibook reports the real problem itself in one line that says what to do; the library's record is
kept, folded: its message, then the exception's type and first line, without the traceback.
"""

from __future__ import annotations

import logging

__all__ = ["fold_tracebacks"]


class _FoldTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
        if exc is not None:
            first = (str(exc).strip().splitlines() or [""])[0]
            record.msg = f"{record.getMessage().rstrip(': ')} ({type(exc).__name__}: {first[:200]})"
            record.args = ()
            record.exc_info = record.exc_text = None
        return True


_FILTER = _FoldTraceback()


def fold_tracebacks(*prefixes: str) -> None:
    """Fold the tracebacks of every logger named ``prefix`` or ``prefix.*`` that exists now (idempotent)."""
    names = [n for n in logging.root.manager.loggerDict if any(n == p or n.startswith(p + ".") for p in prefixes)]
    for name in {*prefixes, *names}:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
