"""Shared fixtures. The real demo model is used wherever a model is needed (it loads in about 5 s)."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    """GPU-marked tests skip cleanly where there is no CUDA device."""
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def demo_model_dir():
    """The demo model's Hugging Face folder (built once into kanibook's cache).

    ``$KANIBOOK_TEST_MODEL`` names another folder of the same architecture instead: bench/gpu_check.sh points it at
    random weights built on a GPU machine that cannot fetch the demo model.
    """
    if os.environ.get("KANIBOOK_TEST_MODEL"):
        from pathlib import Path

        return Path(os.environ["KANIBOOK_TEST_MODEL"])
    from kanibook.demo_model import demo_model_path

    return demo_model_path(progress=False)


@pytest.fixture(scope="session")
def demo_engine(demo_model_dir):
    """One shared kanibook engine on the demo model, in fp32 (the figures the tests compare with are fp32's: exact
    footprints, the lab's fp32 reference; the bf16 default where the CPU has it is tested in test_default_dtype.py
    and test_base_models.py). Tests must leave it idle (no generation running)."""
    import kanibook

    engine = kanibook.load(demo_model_dir, quant="fp32")
    yield engine
    assert not engine.is_generating


@pytest.fixture
def run_async():
    """Run a coroutine to completion on a fresh event loop."""

    def runner(coro, timeout: float = 120):
        return asyncio.run(asyncio.wait_for(coro, timeout))

    return runner


@pytest.fixture
def ticking():
    """``ticks, result = await ticking(coro)``: runs ``coro`` while a 5 ms ticker on the same loop counts its ticks
    (a loop blocked between tokens hardly ticks)."""

    async def run(coro):
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.get_running_loop().create_task(ticker())
        try:
            result = await coro
        finally:
            task.cancel()
        return ticks, result

    return run


@pytest.fixture
def no_leaked_threads():
    """Fails the test if it leaves a job running on the model thread, or any other kanibook thread alive."""
    from kanibook.engine._model_thread import model_thread

    yield
    alive = [t.name for t in threading.enumerate() if t.name.startswith("kanibook-") and t.name != "kanibook-model"]
    assert not model_thread().busy, "a job is still running on the model thread"
    assert not alive, f"threads left running: {alive}"


#: Strings that try to break out of HTML: used wherever text is rendered.
HOSTILE_STRINGS = [
    "<script>alert(1)</script>",
    '</script><script>alert("x")</script>',
    "{\"a\": \"</script><img src=x onerror=alert(1)>\"}",
    "\"'><img src=x onerror=alert(1)>",
    "<img src=x onerror=\"window.__kb_pwned=1\">",
    "[click me](javascript:alert(1))",
    "<a href=\"javascript:alert(1)\">link</a>",
    "<iframe src=\"https://example.com\"></iframe>",
    "<style>body{display:none}</style>",
    "<svg onload=alert(1)>",
    "abc\u202edcba \u2066isolate\u2069",
    "nul\x00 bell\x07 escape\x1b[31m del\x7f",
    "<!-- comment --> &amp; &lt;",
]


@pytest.fixture(params=HOSTILE_STRINGS, ids=lambda s: repr(s)[:24])
def hostile(request):
    """Each hostile string in turn."""
    return request.param
