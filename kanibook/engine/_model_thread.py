"""One long-lived thread for all of kanibook's model work, and the CPU thread-pool hygiene that keeps it fast.

Why (measured on a 2-core CPU with torch's OpenMP runtime, GNU libgomp): libgomp keeps one pool of worker threads
*per thread that runs a parallel region*. Once a notebook's main thread has run any torch operation (one 512x512
matmul in a cell is enough) its pool stays alive, and a second thread that runs torch (a generation) gets a pool of
its own. With more OpenMP threads alive than CPUs, libgomp stops spinning at its barriers ("throttled" spinning,
about 100 spins) and every parallel region pays a futex sleep and wake: small operations ran 3-4x slower, decoding
the demo model 2x slower on a Xeon and about 8% slower on an EPYC, in every thread including the main one, for the
rest of the session. ``OMP_WAIT_POLICY``/``GOMP_SPINCOUNT`` cannot lift the throttled spin count above 1000.

The fix keeps at most one pool alive at a time:

- all of kanibook's torch work (generation, scoring passes, the quantization lab) runs as jobs on one long-lived
  thread, :func:`model_thread`, and that thread releases its pool when each job ends, so the notebook's own code
  is never slowed by kanibook;
- before a job is handed over, :func:`release_cpu_threads` releases the *calling* thread's pool (OpenMP 5's
  ``omp_pause_resource_all``, which libgomp applies to the calling thread only); the IPython extension also calls it
  after every cell, since a pool can only be released by the thread that owns it.

A released pool is recreated on the next parallel region at the cost of one thread start (tens of microseconds).
Elsewhere (LLVM's libomp, Intel's libiomp5, no torch loaded) :func:`release_cpu_threads` does nothing.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import ctypes
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["ModelThread", "model_thread", "release_cpu_threads"]

T = TypeVar("T")

_OMP_PAUSE_SOFT = 1
_gomp: Any = None  # None: not looked up yet; False: not available
_gomp_lock = threading.Lock()


def _find_gomp():
    """The libgomp that torch loaded (a ctypes handle with ``omp_pause_resource_all``), or False."""
    global _gomp
    if "torch" not in sys.modules:
        return False  # nothing loaded libgomp yet: look again once torch is imported
    if _gomp is None:
        with _gomp_lock:
            if _gomp is None:
                _gomp = _load_gomp()
    return _gomp


def _load_gomp():
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            # torch's own copy (torch/lib/libgomp.so.1), or the system's when something loaded that one first: the
            # dynamic loader then gives torch the same library (one soname, one copy per process)
            paths = {line.split()[-1] for line in maps if "libgomp" in line and ".so" in line.rsplit("/", 1)[-1]}
    except OSError:  # not Linux: torch there uses another OpenMP runtime, whose pause semantics differ
        return False
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
            fn = lib.omp_pause_resource_all
        except (OSError, AttributeError):  # a libgomp older than GCC 9 has no pause
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return False


def release_cpu_threads() -> bool:
    """Release the calling thread's OpenMP worker pool, if torch's libgomp has one; True if released.

    Cheap when there is nothing to release (no torch imported, or no pool: a null check inside libgomp). Safe while
    other threads compute: libgomp touches only the calling thread's pool.
    """
    pause = _find_gomp()  # no torch, no OpenMP pool
    if not pause:
        return False
    return pause(_OMP_PAUSE_SOFT) == 0


class ModelThread:
    """A daemon thread that runs model jobs one at a time, in the order they were submitted.

    Jobs are plain callables. :meth:`submit` returns a ``concurrent.futures.Future``; :meth:`run` waits for the
    result in the calling thread, :meth:`run_async` awaits it without blocking the event loop. A job submitted from
    inside a job runs at once, in place (no deadlock).
    """

    def __init__(self, name: str = "kanibook-model"):
        self._name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._busy = threading.Event()

    @property
    def busy(self) -> bool:
        """True while a job runs (or is queued)."""
        return self._busy.is_set() or not self._jobs.empty()

    def in_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        if self.in_thread():
            _settle(future, _call(fn, args, kwargs))
            return future
        release_cpu_threads()  # the caller's pool would slow the job (and every other thread) while it runs
        self._ensure_started()
        self._jobs.put((future, fn, args, kwargs))
        return future

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the model thread and return its result (exceptions are re-raised here)."""
        return self.submit(fn, *args, **kwargs).result()

    async def run_async(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Await ``fn`` run on the model thread; the event loop stays free meanwhile."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """End the thread after the jobs already queued (at interpreter exit: no torch call is cut off by it)."""
        thread = self._thread
        if thread is not None and thread.is_alive() and not self.in_thread():
            self._jobs.put(None)
            thread.join(timeout)

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            self._busy.set()
            outcome = _call(fn, args, kwargs)
            release_cpu_threads()  # leave no pool behind: the notebook's own torch code keeps full speed
            self._busy.clear()  # before the waiter wakes: whoever sees the result sees the thread idle
            _settle(future, outcome)
            # drop the finished job before waiting for the next: its arguments (a model, a generation holding one)
            # would otherwise stay alive in this frame, and a model deleted by its owner would never be freed
            del job, future, fn, args, kwargs, outcome


def _call(fn, args, kwargs) -> tuple[bool, Any]:
    try:
        return True, fn(*args, **kwargs)
    except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future
        return False, e


def _settle(future: concurrent.futures.Future, outcome: tuple[bool, Any]) -> None:
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


_MODEL_THREAD = ModelThread()
atexit.register(_MODEL_THREAD.close)  # before finalization: a daemon thread inside torch there can abort the process


def model_thread() -> ModelThread:
    """The process's one model thread (started on first use)."""
    return _MODEL_THREAD
