"""The one model thread: jobs in order, errors surfaced, and full speed after torch work on the notebook's thread."""

from __future__ import annotations

import threading
import time

import pytest
import torch  # noqa: F401 - loads torch's OpenMP runtime, which the skip condition looks for

from kanibook.engine._model_thread import ModelThread, _find_gomp, model_thread, release_cpu_threads

needs_gomp = pytest.mark.skipif(not _find_gomp(), reason="torch here does not use GNU libgomp")


def test_jobs_run_in_order_on_one_long_lived_thread():
    worker = ModelThread(name="test-model-thread")  # a second one lives on (daemon), unlike kanibook's own
    seen = []
    futures = [worker.submit(lambda i=i: seen.append((i, threading.current_thread().name)) or i) for i in range(5)]
    assert [f.result(10) for f in futures] == list(range(5))
    assert seen == [(i, "test-model-thread") for i in range(5)]
    assert not worker.busy


def test_a_job_error_reaches_the_caller_and_the_thread_goes_on():
    def fail():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        model_thread().run(fail)
    assert model_thread().run(lambda: 42) == 42


def test_a_job_submitted_from_a_job_runs_in_place():
    outer = model_thread().run(lambda: model_thread().run(lambda: threading.current_thread().name))
    assert outer == "kanibook-model"


def test_run_async_leaves_the_loop_free(run_async, ticking):
    ticks, _ = run_async(ticking(model_thread().run_async(time.sleep, 0.3)))
    assert ticks >= 10


@needs_gomp
def test_release_frees_the_calling_threads_pool():
    import torch

    result = {}

    def work():
        x = torch.randn(200_000)
        (x + x).sum()  # a parallel region: this thread now owns an OpenMP pool
        result["first"] = release_cpu_threads()
        result["second"] = release_cpu_threads()  # nothing left to release

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert result == {"first": True, "second": True}


def _small_ops_us(n: int = 1500) -> float:
    import torch

    x, y = torch.randn(200_000), torch.randn(200_000)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            torch.add(x, y)
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


@needs_gomp
def test_small_ops_on_the_model_thread_keep_full_speed_after_main_thread_torch():
    """With two libgomp pools alive (the notebook's and the model thread's) each parallel region pays a futex wake:
    these ops measured 3-4x slower. kanibook keeps one pool alive, so they run as fast as on the main thread."""
    import torch

    on_main = _small_ops_us()  # the notebook's own torch work: the main thread now has a pool
    (torch.randn(512, 512) @ torch.randn(512, 512)).sum()
    on_model_thread = model_thread().run(_small_ops_us)
    on_main_after = _small_ops_us()  # kanibook's pool is gone again: the notebook's code is not slowed either
    assert on_model_thread < 1.6 * on_main, (on_model_thread, on_main)
    assert on_main_after < 1.6 * on_main, (on_main_after, on_main)


def test_streaming_keeps_full_speed_after_main_thread_torch(demo_engine, run_async):
    """A gross slowdown of the stream path (a per-token cost, or the two-pool stall, 2x on a Xeon) fails here.

    Not a benchmark: bench/bench_threads.py holds the real target (0.95) on a quiet machine. A CI machine shared with
    other jobs measured 0.75 with no regression (best of two), and the pool stall costs only 8-18% on an EPYC, so the
    bound is 0.6 of the best of three interleaved rounds. The test that separates the fix is the one above,
    test_small_ops_on_the_model_thread_keep_full_speed_after_main_thread_torch."""
    import torch
    from kani import ChatMessage

    n, messages = 24, [ChatMessage.user("Write a long story about a lighthouse keeper.")]
    inputs, _, hp = demo_engine._get_generate_args(
        demo_engine.build_prompt(messages), max_new_tokens=n, min_new_tokens=n, do_sample=False
    )

    def bare() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            demo_engine.model.generate(**inputs, **hp)
        return n / (time.perf_counter() - start)

    async def streamed() -> float:
        start = time.perf_counter()
        async for _ in demo_engine.stream(messages, max_new_tokens=n, min_new_tokens=n, do_sample=False):
            pass
        return n / (time.perf_counter() - start)

    (torch.randn(512, 512) @ torch.randn(512, 512)).sum()  # a notebook cell's own torch work
    bare_rates, stream_rates = [], []
    for _ in range(3):
        bare_rates.append(bare())
        stream_rates.append(run_async(streamed()))
    assert max(stream_rates) >= 0.6 * max(bare_rates), (stream_rates, bare_rates)
