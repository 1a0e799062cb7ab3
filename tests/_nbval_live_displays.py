"""Teach nbval 0.11 about ``update_display_data``, so streamed outputs are compared as a notebook saves them.

nbval keeps the first ``display_data`` of an output that is later updated in place (``DisplayHandle.update``,
which is how ``%%chat`` streams a reply) and ignores the updates, while a notebook saves the final content. This
applies each update to the earlier output it targets (same ``display_id``), exactly as Jupyter front ends do, and
hands nbval nothing else for it. Installed by the repository root's conftest.py whenever nbval is active.
"""

from __future__ import annotations

import functools


def install() -> None:
    from nbformat import from_dict
    from nbval.plugin import IPyNbFile

    if getattr(IPyNbFile.get_kernel_message, "_kanibook_live_displays", False):
        return
    original = IPyNbFile.get_kernel_message
    shown: dict[str, dict] = {}  # display_id -> the content dict nbval stored for it

    @functools.wraps(original)
    def get_kernel_message(self, timeout=None, stream="iopub"):
        msg = original(self, timeout=timeout, stream=stream)
        content = msg.get("content", {})
        display_id = (content.get("transient") or {}).get("display_id")
        if msg.get("msg_type") in ("display_data", "execute_result") and display_id:
            # nbval stores these in a NotebookNode, which copies a plain dict on assignment but keeps a NotebookNode
            # as is: hand it NotebookNodes, so the updates below reach what nbval compares.
            content["data"] = from_dict(content.get("data") or {})
            content["metadata"] = from_dict(content.get("metadata") or {})
            shown[display_id] = content
        elif msg.get("msg_type") == "update_display_data":
            target = shown.get(display_id)
            if target is not None:
                target["data"].clear()
                target["data"].update(content.get("data", {}))
                target["metadata"].clear()
                target["metadata"].update(content.get("metadata", {}))
            msg = {**msg, "msg_type": "comm_msg"}  # nbval skips comm_* messages
        return msg

    get_kernel_message._kanibook_live_displays = True
    IPyNbFile.get_kernel_message = get_kernel_message
