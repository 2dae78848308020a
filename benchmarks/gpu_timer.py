"""The GPU benchmarks' one timer (gpu_bench.py, cuda_variants.py, gpu_models.py, mace_gpu_bench.py).

On a CUDA device a call is timed by a pair of CUDA events around it; elsewhere by the wall clock
(the CPU smoke runs). Two options say what a CUDA timing holds:

* ``sleep_cycles``: before each call the device spins that many cycles (``torch.cuda._sleep``) while
  the host enqueues the call, so the events measure the device's work and hide the host's launch
  time; 0 times the call from an idle device, the host's time included where the device waits on it.
* ``queued``: :meth:`GpuTimer.median` records every repeat's events first and synchronises once at
  the end (no synchronisation between the calls); otherwise each call is synchronised on its own.

Importing this module imports nothing beyond the standard library: torch comes in as an argument.
"""

from __future__ import annotations

import statistics
import time


class GpuTimer:
    """Seconds per call on ``device`` (a ``torch.device``): ``warmup`` untimed calls, then the
    median of ``repeats`` timed ones."""

    def __init__(self, torch, device, *, warmup: int, repeats: int, sleep_cycles: int = 0, queued: bool = False):
        if repeats < 1 or warmup < 0 or sleep_cycles < 0:
            raise ValueError(f"GpuTimer: repeats {repeats} must be >= 1, warmup {warmup} and "
                             f"sleep_cycles {sleep_cycles} >= 0")
        self.torch, self.device = torch, device
        self.warmup, self.repeats = warmup, repeats
        self.sleep_cycles, self.queued = sleep_cycles, queued
        self.cuda = device.type == "cuda"

    def once(self, f) -> float:
        """Seconds of one call of ``f``, synchronised before and after."""
        if not self.cuda:
            t = time.perf_counter()
            f()
            return time.perf_counter() - t
        cuda = self.torch.cuda
        cuda.synchronize()
        start, end = self._events()
        f()
        end.record()
        cuda.synchronize()
        return start.elapsed_time(end) / 1e3

    def median(self, f) -> float:
        """Median seconds of ``repeats`` calls of ``f`` after ``warmup`` calls."""
        for _ in range(self.warmup):
            f()
        if not (self.cuda and self.queued):
            return statistics.median(self.once(f) for _ in range(self.repeats))
        cuda = self.torch.cuda
        cuda.synchronize()
        events = []
        for _ in range(self.repeats):
            start, end = self._events()
            f()
            end.record()
            events.append((start, end))
        cuda.synchronize()
        return statistics.median(s.elapsed_time(e) / 1e3 for s, e in events)

    def alternating(self, calls: dict) -> dict:
        """Median seconds per contender (``calls``: name -> callable): each warmed up, then
        ``repeats`` rounds that call every contender once, the order rotating by one each round."""
        for f in calls.values():
            for _ in range(self.warmup):
                f()
        names = list(calls)
        times = {k: [] for k in names}
        for r in range(self.repeats if names else 0):
            for k in names[r % len(names):] + names[:r % len(names)]:
                times[k].append(self.once(calls[k]))
        return {k: statistics.median(v) for k, v in times.items()}

    def _events(self):
        """A started pair of timing events (the device sleeping first when asked)."""
        cuda = self.torch.cuda
        if self.sleep_cycles:
            cuda._sleep(self.sleep_cycles)  # the device waits while the host enqueues the call
        start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
        start.record()
        return start, end
