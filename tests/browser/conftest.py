"""Real-browser fixtures: JupyterLab 4 and Notebook 7 driven by headless Debian Chromium through Playwright.

One Jupyter server per app for the whole session (about 3 s to start), each with its own config, runtime, data,
settings and workspace folders and a temporary root folder, so nothing from the user's Jupyter setup leaks in.
The kernel is the venv's ``python3`` (the server runs on ``sys.executable``). Playwright itself lives for one test
module at a time: its sync API keeps an event loop marked as running, which would break ``asyncio.run`` in the
unit tests that come after.

Screenshots (and a screenshot of every failing page) go to ``test-artifacts/`` at the repository root.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from _notebooks import write_notebook

try:
    from playwright.sync_api import Error as PlaywrightError  # TimeoutError is one too
except ImportError:  # the fixtures below skip the browser tests then
    PlaywrightError = Exception

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
]
# app -> (python module that starts it, URL of a notebook; {ws} is a fresh JupyterLab workspace per page)
APPS = {
    "lab": ("jupyterlab", "lab/workspaces/{ws}/tree/{path}"),
    "notebook": ("notebook", "notebooks/{path}"),
}
# JupyterLab user settings shared by both apps: no news pop-up, no update check, every cell kept in the DOM
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}

# the toolbar of the notebook on screen: kernel idle AND a kernel actually attached
_KERNEL_READY_JS = """() => {
  const bar = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-NotebookPanel-toolbar');
  if (!bar) return false;
  const ind = bar.querySelector('.jp-Notebook-ExecutionIndicator');
  const name = bar.querySelector('.jp-Toolbar-kernelName');
  return !!ind && !!name && ind.dataset.status === 'idle' && name.textContent.trim() !== ''
    && !/no kernel/i.test(name.textContent);
}"""
# Run All has ended: the kernel is idle, no cell is queued or running ("[*]:") and at least one has a count; after
# an error Run All stops and the cells below it show "[ ]:" again
_RUN_ALL_ENDED_JS = """() => {
  const ind = document.querySelector('.jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator');
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')].map(p => p.textContent);
  return !!ind && ind.dataset.status === 'idle' && !prompts.some(p => p.includes('*'))
    && prompts.some(p => /\\[\\d+\\]/.test(p));
}"""

# Run All has started: some code cell is queued, running or done
_RUN_ALL_STARTED_JS = """() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
  .some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """One headless Jupyter server (``lab`` or ``notebook``) on a free loopback port.

    :param app: ``"lab"`` (JupyterLab 4) or ``"notebook"`` (Notebook 7).
    :param base: An empty folder for the server's own config, runtime, data, settings, workspaces and root.
    """

    def __init__(self, app: str, base: Path):
        self.app = app
        self.base = base
        self.root_dir = base / "root"
        self.token = secrets.token_hex(16)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        self.proc: subprocess.Popen | None = None
        self.start_s = float("nan")

    def _environment(self) -> dict[str, str]:
        dirs = {}
        for name in ("config", "runtime", "data", "settings", "workspaces", "ipython", "root"):
            (self.base / name).mkdir(parents=True, exist_ok=True)
            dirs[name] = str(self.base / name)
        for plugin, values in LAB_SETTINGS.items():
            path = self.base / "settings" / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=dirs["config"],
            JUPYTER_RUNTIME_DIR=dirs["runtime"],
            JUPYTER_DATA_DIR=dirs["data"],  # the user's own kernelspecs cannot shadow the venv's python3
            JUPYTERLAB_SETTINGS_DIR=dirs["settings"],
            JUPYTERLAB_WORKSPACES_DIR=dirs["workspaces"],
            IPYTHONDIR=dirs["ipython"],
            HF_HUB_OFFLINE="1",
            PYTHONUNBUFFERED="1",
            TOKENIZERS_PARALLELISM="false",
            # the kernelspec says "python": make sure that is the venv's, whatever PATH the tests ran with
            PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        )
        env.pop("JUPYTER_PATH", None)
        env.pop("JUPYTER_PREFER_ENV_PATH", None)
        return env  # KANIBOOK_CACHE is inherited from the test process

    def start(self, timeout: float = 90) -> JupyterServer:
        """Start the server and wait until ``/api/status`` answers 200."""
        module = APPS[self.app][0]
        cmd = [
            sys.executable, "-m", module, "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root_dir}",
        ]  # fmt: skip
        env = self._environment()
        t0 = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root_dir)
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter {self.app} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.api("GET", "/api/status", timeout=2)[0] == 200:
                    self.start_s = time.perf_counter() - t0
                    return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"jupyter {self.app} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def api(self, method: str, path: str, timeout: float = 10) -> tuple[int, object]:
        """Call the server's REST API with the token; returns (status, decoded JSON or None)."""
        request = urllib.request.Request(
            self.url + path,
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method == "POST" else None,
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read()
                return response.status, json.loads(body) if body else None
        except urllib.error.HTTPError as error:
            return error.code, None

    def shutdown_kernels(self) -> None:
        """Stop every kernel of this server (each test's kernel holds a model: free it before the next test)."""
        status, sessions = self.api("GET", "/api/sessions")
        for session in sessions if status == 200 and sessions else []:
            self.api("DELETE", f"/api/sessions/{session['id']}", timeout=30)

    def notebook_url(self, name: str) -> str:
        """The URL that opens notebook ``name`` (in a fresh JupyterLab workspace, so no earlier tab comes back)."""
        path = APPS[self.app][1].format(ws=f"kbt-{secrets.token_hex(4)}", path=name)
        return f"{self.url}/{path}?token={self.token}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """``POST /api/shutdown``, then kill the process if it is still there."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.api("POST", "/api/shutdown", timeout=10)
            self.proc.wait(timeout=20)
        except (OSError, urllib.error.URLError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=10)


class NotebookPage:
    """A notebook open in a browser page, used like a person would (plus a few JS probes).

    :param page: The Playwright page.
    :param server: The server it talks to.
    :param name: A short name for screenshots.
    """

    def __init__(self, page, server: JupyterServer, name: str):
        self.page = page
        self.server = server
        self.name = name
        self.dialogs: list[str] = []
        self.page_errors: list[str] = []
        page.on("dialog", self._on_dialog)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def _on_dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def goto(self, url: str) -> NotebookPage:
        self.page.goto(url, wait_until="domcontentloaded", timeout=60_000)
        self.page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        return self

    def wait_for_kernel(self, timeout: float = 90) -> None:
        """Wait until the kernel exists and is idle (idle alone is also shown before any kernel exists)."""
        self.page.wait_for_function(_KERNEL_READY_JS, timeout=timeout * 1000)

    def run_all(self, timeout: float = 180) -> None:
        """Run > Run All Cells from the menu bar, then wait until every code cell has an execution count.

        Fails at once, with the traceback, if a cell raises.
        """
        for attempt in range(3):  # a menu click can be lost while the page is still settling: check it took
            self.page.locator(".lm-MenuBar-item").filter(has_text=re.compile(r"^\s*Run\s*$")).first.click()
            self.page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
            try:
                self.page.wait_for_function(_RUN_ALL_STARTED_JS, timeout=15_000, polling=100)
                break
            except PlaywrightError:
                if attempt == 2:
                    raise AssertionError(f"Run All never started a cell (3 tries)\n{self.describe()}") from None
        try:
            self.page.wait_for_function(_RUN_ALL_ENDED_JS, timeout=timeout * 1000, polling=250)
        except PlaywrightError as error:
            raise AssertionError(f"the notebook did not finish running: {error}\n{self.describe()}") from None
        prompts = self.page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt").all_text_contents()
        if self.errors() or not all(re.search(r"\[\d+\]", p) for p in prompts):
            raise AssertionError(f"a cell failed, Run All stopped ({' '.join(prompts)}):\n{self.describe()}")

    def wait_for(self, selector: str, timeout: float = 60, state: str = "visible"):
        """Wait for ``selector``; on timeout, fail with the notebook's outputs (tracebacks included)."""
        try:
            self.page.wait_for_selector(selector, timeout=timeout * 1000, state=state)
        except PlaywrightError as error:
            raise AssertionError(f"{selector!r} never became {state}: {error}\n{self.describe()}") from None
        return self.page.locator(selector)

    def send_chat(self, text: str, *, via: str = "enter", timeout: float = 30) -> None:
        """Type ``text`` into the chat panel's input box and send it with Enter or the Send button.

        Waits until the panel shows one more user message; if it does not, fails saying what the page shows.

        :param text: The message.
        :param via: ``"enter"`` or ``"button"``.
        :param timeout: Seconds to wait for the message to appear.
        """
        panel = self.page.locator(".kb-chat-panel").first
        before = panel.locator(".kb-msg-user").count()
        box = panel.locator(".kb-input input")
        box.fill(text)
        if via == "enter":
            box.press("Enter")
        else:
            panel.locator(".kb-send").click()
        try:
            self.page.wait_for_function(
                "(n) => document.querySelectorAll('.kb-chat-panel .kb-msg-user').length > n",
                arg=before,
                timeout=timeout * 1000,
            )
        except PlaywrightError:
            raise AssertionError(
                f"the panel did not take the message sent with {via} within {timeout:.0f} s: the input box holds "
                f"{box.input_value()!r}, the status says {panel.locator('.kb-status').inner_text()!r}\n{self.describe()}"
            ) from None

    def outputs(self) -> list[str]:
        """The text of every output of every cell, in order."""
        return self.page.locator(".jp-Notebook .jp-OutputArea-output").all_inner_texts()

    def cell_outputs(self, index: int):
        """The outputs of the ``index``-th cell, without JupyterLab's own prompt and icons."""
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-OutputArea-output")

    def errors(self) -> list[str]:
        """Tracebacks and usage errors shown in the notebook (JupyterLab renders them as stderr, like warnings)."""
        stderr = self.page.locator(
            ".jp-Notebook .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
        ).all_inner_texts()
        return [t for t in stderr if "Traceback (most recent call last)" in t or t.lstrip().startswith("UsageError")]

    def describe(self) -> str:
        """What the notebook shows: its outputs, and the server log's tail (for failure messages)."""
        try:
            outs = "\n---\n".join(o[-1500:] for o in self.outputs())
        except PlaywrightError as error:  # the page itself may be gone
            outs = f"(outputs unreadable: {error})"
        return f"notebook outputs:\n{outs}\npage errors: {self.page_errors}\nserver log tail:\n{self.server.log_tail(1500)}"

    def screenshot(self, filename: str, selector: str | None = None) -> Path:
        """Save a screenshot of the page (or of one element) under test-artifacts/."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / filename
        if selector is None:
            self.page.screenshot(path=str(path))
        else:
            self.page.locator(selector).first.screenshot(path=str(path))
        return path


def _start_server(app: str, tmp_path_factory):
    """Start one server for the session; skip cleanly where Chromium or Playwright is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Debian's Chromium at {CHROMIUM} (make chromium)")
    pytest.importorskip("playwright.sync_api")
    server = JupyterServer(app, tmp_path_factory.mktemp(f"jupyter-{app}"))
    server.start()
    return server


@pytest.fixture(scope="session")
def jupyter_lab(tmp_path_factory):
    """A JupyterLab 4 server for the whole session."""
    server = _start_server("lab", tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def jupyter_notebook(tmp_path_factory):
    """A Notebook 7 server for the whole session."""
    server = _start_server("notebook", tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(params=["lab", "notebook"])
def jupyter_app(request) -> JupyterServer:
    """Each app in turn (parametrize over JupyterLab and Notebook 7); servers start on first use."""
    return request.getfixturevalue(f"jupyter_{request.param}")


@pytest.fixture(scope="module")
def chromium():
    """Headless Debian Chromium, one per test module (Playwright must be stopped before any asyncio.run)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Debian's Chromium at {CHROMIUM} (make chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"kb_report_{report.when}", report)


@pytest.fixture
def open_notebook(request, chromium):
    """``open_notebook(server, cells)`` writes a notebook into the server's root, opens it, waits for its kernel.

    Each call gets its own browser context. After the test every page is closed (a failing one is first saved
    as ``test-artifacts/failed-<test>.png``) and the server's kernels are shut down.
    """
    opened: list[tuple[object, NotebookPage]] = []
    test_name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")

    def opener(server: JupyterServer, cells: list[str], *, wait_kernel: bool = True) -> NotebookPage:
        filename = f"{test_name}-{len(opened)}.ipynb"
        write_notebook(server.root_dir / filename, cells)
        context = chromium.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(30_000)
        notebook = NotebookPage(context.new_page(), server, f"{test_name}-{len(opened)}")
        opened.append((context, notebook))
        notebook.goto(server.notebook_url(filename))
        if wait_kernel:
            notebook.wait_for_kernel()
        return notebook

    yield opener
    report = getattr(request.node, "kb_report_call", None)
    for context, notebook in opened:
        if report is not None and report.failed:
            with contextlib.suppress(PlaywrightError):  # the page may be gone; the failure itself is what matters
                notebook.screenshot(f"failed-{notebook.name}.png")
        context.close()
        notebook.server.shutdown_kernels()
