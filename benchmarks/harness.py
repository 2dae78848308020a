"""The benchmark harness: thread control, the copy bandwidth (the memory bound), the timing loop,
torch.compile's untimed compiles, the machine description. Nothing here knows the contenders."""

from __future__ import annotations

import ctypes
import gc
import math
import os
import platform
import time

import numpy as np

try:
    import torch
except ImportError:  # pragma: no cover - torch is part of the test extras
    torch = None

SLOW = 0.15  # seconds per call beyond which a contender gets 2 timed calls instead of the repeats
VERY_SLOW = 1.0  # ... beyond which it gets 1, at the first thread count only


# ---------------------------------------------------------------------------------------------
# threads


class Threads:
    """Sets torch's intra-op threads and numpy's BLAS threads; ``how`` says what numpy got."""

    def __init__(self):
        self.how = "not controllable in-process (no threadpoolctl, no OpenBLAS symbol found)"
        self._setters = []
        try:
            import threadpoolctl  # noqa: F401

            self._tpc = threadpoolctl
            self.how = "threadpoolctl"
            return
        except ImportError:
            self._tpc = None
        names = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                 "openblas_set_num_threads64_", "openblas_set_num_threads")
        try:
            with open("/proc/self/maps") as fh:
                libs = sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and ".so" in line})
        except OSError:
            libs = []
        for lib in libs:
            try:
                dll = ctypes.CDLL(lib)
            except OSError:
                continue
            for name in names:
                fn = getattr(dll, name, None)
                if fn is not None:
                    self._setters.append(fn)
                    break
        if self._setters:
            self.how = f"OpenBLAS *_set_num_threads via ctypes ({len(self._setters)} librar{'y' if len(self._setters) == 1 else 'ies'}; threadpoolctl not installed)"
        self._limit = None

    def set(self, n: int) -> None:
        if torch is not None:
            torch.set_num_threads(n)
        if self._tpc is not None:
            self._limit = self._tpc.threadpool_limits(limits=n)
        for fn in self._setters:
            fn(ctypes.c_int(n))


# ---------------------------------------------------------------------------------------------
# the memory bound


def bandwidth(nbytes: int = 256 * 2**20, repeats: int = 5) -> tuple[float, float]:
    """(in-place copy GB/s, out-of-place copy GB/s), counting bytes read + bytes written."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best_in = best_out = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        best_in = min(best_in, time.perf_counter() - t)
        t = time.perf_counter()
        fresh = src.copy()
        best_out = min(best_out, time.perf_counter() - t)
        del fresh
    return 2 * nbytes / best_in / 1e9, 2 * nbytes / best_out / 1e9


# ---------------------------------------------------------------------------------------------
# timing


def timeit(calls: dict, warm: dict, repeats: int, target: float, earlier: dict | None) -> tuple[dict, dict]:
    """Best per-call seconds of every callable, the callables alternating inside each repeat (the
    order rotates from repeat to repeat). ``warm`` holds the seconds of each one's warm-up call
    (not counted: a first call into fresh memory can be several times slower), which set the loop
    lengths. A slow callable gets fewer repeats: more than SLOW seconds, 2 single calls; more than
    VERY_SLOW seconds, 1 call, and none at all when ``earlier`` (the times at the first thread
    count) has it. The second dict gives the number of timed calls of each such callable."""
    inner = {name: max(1, int(target / max(warm[name], 1e-7))) for name in calls}
    limit = {name: (1 if warm[name] > VERY_SLOW else 2 if warm[name] > SLOW else repeats) for name in calls}
    best = {name: math.inf for name in calls}
    for name in calls:
        if limit[name] == 1 and earlier and name in earlier:
            best[name], limit[name] = earlier[name], 0
    names = list(calls)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            for name in names[r % len(names):] + names[: r % len(names)]:
                if r >= limit[name]:
                    continue
                f, n = calls[name], inner[name]
                t = time.perf_counter()
                for _ in range(n):
                    f()
                best[name] = min(best[name], (time.perf_counter() - t) / n)
    finally:
        if gc_was:
            gc.enable()
    return best, {name: limit[name] for name in calls if limit[name] < repeats}


def seconds(f) -> float:
    """Seconds of one call of ``f``."""
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def compile_or_raise() -> None:
    """Make torch.compile raise where dynamo gives up on a function (past its recompile limit,
    ``torch._dynamo.config.recompile_limit`` compiles per code object) instead of running it
    eagerly from then on: a ``torch fused`` time must be a compiled one."""
    import torch._dynamo

    torch._dynamo.config.fail_on_recompile_limit_hit = True


def recompile(calls: dict, compiled: tuple, where: str, note) -> list[float]:
    """One untimed call of every contender of ``compiled`` in ``calls`` at the current thread count:
    torch.compile guards on the thread count and compiles again when it changes. A contender that
    raises is dropped with a note. Returns the seconds of the calls."""
    spent = []
    for name in [k for k in compiled if k in calls]:
        try:
            spent.append(seconds(calls[name]))
        except Exception as exc:
            note(f"{where}: {name} raised {type(exc).__name__}: {exc}; not timed at this thread count")
            del calls[name]
    return spent


def machine_line(threads: Threads, bw) -> list[str]:
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), "")
    except OSError:
        pass
    proc = platform.processor() or platform.machine()
    return [
        f"Machine: platform.processor() = '{platform.processor()}' ({proc}{', ' + model if model else ''}), "
        f"os.cpu_count() = {os.cpu_count()}; Python {platform.python_version()}, numpy {np.__version__}, "
        f"torch {torch.__version__ if torch else 'absent'}.",
        f"Copy bandwidth in this run (bytes read + written): np.copyto into an existing 256 MB buffer "
        f"{bw[0]:.1f} GB/s; src.copy() into fresh memory {bw[1]:.1f} GB/s.",
        f"Threads: torch.set_num_threads; numpy BLAS: {threads.how}.",
    ]
