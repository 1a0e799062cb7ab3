"""No third-party traceback in a notebook cell: kani's warnings that carry ``exc_info`` become one line.

kani logs some recoverable problems at warning level with the whole traceback (e.g. "Exception while getting prompt
size:" when a message is longer than the context, "Could not load the AutoProcessor ..." for a folder with a broken
``config.json``). kanibook reports the real problem itself in one line that says what to do; the library's record is
kept, folded: its message, then the exception's type and first line, without the traceback.

Some libraries also warn, in red on stderr, about what kanibook set up on purpose: the ``kernels`` package (loaded by
transformers for bitsandbytes) says "Skipping publisher trust check ... because Hugging Face Hub is in offline mode"
on every quantized load. :func:`quiet_notices` lowers such records to DEBUG (still there for whoever turns DEBUG on).
"""

from __future__ import annotations

import logging

__all__ = ["fold_tracebacks", "quiet_notices", "NOTICES"]


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


#: logger name -> message beginnings lowered to DEBUG (a logger's filters do not apply to its children: exact names)
NOTICES: dict[str, tuple[str, ...]] = {
    "kernels._internals.hf_hub": ("Skipping publisher trust check",),
}


class _LowerNotice(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and str(record.msg).startswith(self.prefixes):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def quiet_notices() -> None:
    """Lower the notices of :data:`NOTICES` to DEBUG (idempotent; imports nothing, creates the loggers early)."""
    for name, prefixes in NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _LowerNotice) for f in logger.filters):
            logger.addFilter(_LowerNotice(prefixes))
