"""Repository-level pytest hook: whenever nbval runs (``pytest --nbval notebooks/`` included, which does not load
tests/conftest.py), teach it ``update_display_data`` so streamed outputs are compared as a notebook saves them.
See tests/_nbval_live_displays.py."""

from __future__ import annotations

import sys
from pathlib import Path


def pytest_configure(config):
    if config.pluginmanager.hasplugin("nbval"):
        tests_dir = str(Path(__file__).resolve().parent / "tests")
        if tests_dir not in sys.path:
            sys.path.insert(0, tests_dir)
        import _nbval_live_displays

        _nbval_live_displays.install()
