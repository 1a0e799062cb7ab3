"""Every file kanibook writes goes through :func:`write_text_atomic`: a temporary file beside the target, then a
rename, so a failure (a disk error, text that cannot be encoded) leaves the old file exactly as it was."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_text_atomic", "find_lone_surrogate"]


def write_text_atomic(path: str | os.PathLike, text: str, *, errors: str = "strict") -> Path:
    """Write ``text`` as UTF-8 to ``path`` through a temporary file and an atomic rename.

    :param path: The file to write (replaced only once the new content is complete on disk).
    :param text: The content; it is encoded before anything is written.
    :param errors: How ``str.encode`` handles characters UTF-8 cannot hold (``"strict"`` raises, nothing written).
    """
    path = Path(path)
    data = text.encode("utf-8", errors=errors)  # fails here, before the old file is touched
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))  # mkstemp makes 0600; keep the old file's mode, or what open() would give
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def find_lone_surrogate(text: str) -> int | None:
    """The index of the first lone surrogate (a half of a broken emoji, not encodable as UTF-8), or None."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as e:
        return e.start
