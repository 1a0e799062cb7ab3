"""Peak memory of one generation: CUDA's allocator peak on a GPU, the process's resident memory on a CPU."""

from __future__ import annotations

import os

__all__ = ["PeakMemoryTracker", "process_rss_bytes"]


def process_rss_bytes() -> int:
    """Resident memory of this process, in bytes."""
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss


class PeakMemoryTracker:
    """Tracks the peak memory across one generation.

    On CUDA it resets and reads the allocator's peak (exact, no sampling); elsewhere it samples the process's
    resident memory whenever :meth:`sample` is called (once per token by the generation worker).
    """

    def __init__(self, device: str | None):
        self.kind = "cuda" if device and str(device).startswith("cuda") else "process"
        self._device = device
        self._peak = 0
        if self.kind == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(device)
        else:
            import psutil

            self._process = psutil.Process(os.getpid())
            self.sample()

    def sample(self) -> None:
        if self.kind == "process":
            self._peak = max(self._peak, self._process.memory_info().rss)

    @property
    def peak_bytes(self) -> int:
        if self.kind == "cuda":
            import torch

            return int(torch.cuda.max_memory_allocated(self._device))
        return self._peak
