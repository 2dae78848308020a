"""benchmarks/gpu_timer.py, the GPU benchmarks' one timer, without a GPU: a stand-in for
``torch.cuda`` whose device clock advances by a known time per call records what the timer asks of
the device (sleeps, events, synchronisations), so each option's measured quantity is pinned."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_timer import GpuTimer  # noqa: E402


class FakeCuda:
    """One stream: ``log`` lists what was asked, ``clock`` (ms) advances when a call runs."""

    def __init__(self):
        self.clock, self.log = 0.0, []
        fake = self

        class Event:
            def __init__(self, enable_timing=False):
                assert enable_timing
                self.at = None

            def record(self):
                fake.log.append("record")
                self.at = fake.clock

            def elapsed_time(self, end):
                assert self.at is not None and end.at is not None
                return end.at - self.at

        self.Event = Event

    def synchronize(self):
        self.log.append("sync")

    def _sleep(self, cycles):
        self.log.append(f"sleep {cycles}")
        self.clock += 1000.0  # the sleep lies before the start event: never timed

    def call(self, ms):
        def f():
            self.log.append("call")
            self.clock += ms
        return f


def _timer(cuda, **options):
    return GpuTimer(types.SimpleNamespace(cuda=cuda), types.SimpleNamespace(type="cuda"), **options)


def test_queued_records_every_call_then_synchronises_once():
    cuda = FakeCuda()
    durations = iter([5.0, 5.0, 3.0, 1.0, 2.0, 7.0])  # 2 warm-up calls, then 4 timed: median 1.5 of 3, 1, 2, 7 -> 2.5
    def f():
        cuda.log.append("call")
        cuda.clock += next(durations)
    seconds = _timer(cuda, warmup=2, repeats=4, sleep_cycles=2_000_000, queued=True).median(f)
    assert seconds == pytest.approx(2.5e-3)
    timed = ["sleep 2000000", "record", "call", "record"]
    assert cuda.log == ["call", "call", "sync"] + timed * 4 + ["sync"]


def test_synchronised_calls_from_an_idle_device():
    cuda = FakeCuda()
    seconds = _timer(cuda, warmup=1, repeats=3).median(cuda.call(4.0))
    assert seconds == pytest.approx(4e-3)
    assert cuda.log == ["call"] + ["sync", "record", "call", "record", "sync"] * 3


def test_alternating_rotates_the_contenders_and_times_each():
    cuda = FakeCuda()
    calls = {"a": cuda.call(1.0), "b": cuda.call(2.0), "c": cuda.call(3.0)}
    order = []
    for k, f in list(calls.items()):
        calls[k] = (lambda k, f: lambda: (order.append(k), f()))(k, f)
    medians = _timer(cuda, warmup=1, repeats=3, sleep_cycles=10).alternating(calls)
    assert medians == pytest.approx({"a": 1e-3, "b": 2e-3, "c": 3e-3})
    assert order == ["a", "b", "c"] + ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert cuda.log.count("sleep 10") == 9 and cuda.log.count("sync") == 18


def test_wall_clock_off_the_gpu():
    calls = []
    timer = GpuTimer(None, types.SimpleNamespace(type="cpu"), warmup=2, repeats=5, queued=True)
    assert timer.median(lambda: calls.append(1)) >= 0.0
    assert len(calls) == 7
    assert timer.alternating({}) == {}


@pytest.mark.parametrize("options", [dict(warmup=0, repeats=0), dict(warmup=-1, repeats=1),
                                     dict(warmup=0, repeats=1, sleep_cycles=-5)])
def test_bad_options(options):
    with pytest.raises(ValueError, match="GpuTimer"):
        GpuTimer(None, types.SimpleNamespace(type="cpu"), **options)


def test_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; sys.path.insert(0, 'benchmarks'); import gpu_timer"  # import torch fails
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
