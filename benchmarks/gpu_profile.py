"""Where the GPU time goes: torch.profiler over gpu_models.py's contenders.

    python benchmarks/gpu_profile.py --out DIR [--parts tensornet spherical] [--device cpu --small]

Runs gpu_models.py's parts (the same models, sizes, weights and value checks) with a Part whose
``timed`` profiles each contender instead of timing it: for each row, DIR/profile.md gets the host
time of one call (no synchronisation: what Python and the launches cost), the wall time with
synchronisation, and the profiler's top operators by device time (by CPU time on a CPU run). This
is a diagnostic for the next optimisation, not a benchmark: the figures in the README come from
gpu_models.py and gpu_bench.py.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gpu_models
from gpu_models import Part

TOP = 18


class ProfilingPart(Part):
    def __init__(self, name, out: Path, deadline: float, report: list):
        super().__init__(name, out, deadline)
        self.report = report

    def timed(self, timer, calls: dict, ref, tol, label: dict, want: float):
        import torch
        from torch.profiler import ProfilerActivity, profile

        cuda = timer.cuda
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        title = ", ".join(f"{k} {v}" for k, v in label.items())
        self.report.append(f"\n## {self.name}: {title}\n")
        for k, f in calls.items():
            if self.left() < want:
                self.report.append(f"- {k}: skipped, budget spent\n")
                continue
            try:
                for _ in range(3):
                    f()
                sync()
                syncs = sync_check(torch, f) if cuda else "not checked (CPU)"
                host, wall = [], []
                for _ in range(5):
                    t0 = time.perf_counter()
                    f()
                    t1 = time.perf_counter()
                    sync()
                    t2 = time.perf_counter()
                    host.append((t1 - t0) * 1e3)
                    wall.append((t2 - t0) * 1e3)
                acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
                with profile(activities=acts) as prof:
                    for _ in range(3):
                        f()
                    sync()
                key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
                table = prof.key_averages().table(sort_by=key, row_limit=TOP, max_name_column_width=60)
                self.report.append(f"### {k}\nhost time of a call (no sync) {min(host):.3f} ms; wall with "
                                   f"sync {min(wall):.3f} ms (best of 5); device synchronisation in a steady-state "
                                   f"call: {syncs}; profile of 3 calls:\n```\n{table}\n```\n")
            except Exception as exc:  # noqa: BLE001 - reported, the others go on
                self.report.append(f"- {k}: failed: {type(exc).__name__}: {exc}\n")
            print(f"[{self.name}] profiled {title}: {k}", flush=True)


def sync_check(torch, f) -> str:
    """One call of ``f`` under torch.cuda.set_sync_debug_mode("error"): 'none', or the first torch
    operation that synchronised the host with the device (the call is cut there)."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        f()
        return "none"
    except RuntimeError as exc:
        import traceback

        frames = [fr for fr in traceback.extract_tb(exc.__traceback__) if "site-packages" not in fr.filename]
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} ({frames[-1].line})" if frames else ""
        return f"yes: {str(exc).splitlines()[0][:120]}{where}"
    finally:
        torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true")
    p.add_argument("--parts", nargs="+", default=["tensornet", "spherical"], choices=gpu_models.PARTS)
    p.add_argument("--budget", type=float, default=120.0)
    args = p.parse_args(argv)
    import torch

    small = args.small
    args.tn_atoms = [120] if small else [10000]
    args.tn_check_atoms = 40 if small else 100
    args.tn_channels = 16 if small else 128
    args.graph_atoms = [100] if small else [20000]
    args.graph_channels = 8 if small else 64
    args.neighbours = 34
    # 2^17 rows first: gpu_models' tp_2e took 0.228 ms there on an H200 (session 12) against a
    # bandwidth bound near 0.06 ms; at 2^15 it took 0.103 ms, mostly host time
    args.sph_rows, args.sph_channels = ([256], 8) if small else ([2**17, 2**15], 32)
    args.repeats = 3
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = gpu_models._device(torch, args.device)
    report = [f"# Profiles ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
              f"torch {torch.__version__})\n"]
    start = time.time()
    status = 0
    for name in args.parts:
        deadline = start + args.budget * (args.parts.index(name) + 1) / len(args.parts)
        part = ProfilingPart(name, out, deadline, report)
        fn = {"tensornet": gpu_models.part_tensornet, "graph": gpu_models.part_graph,
              "spherical": gpu_models.part_spherical}[name]
        try:
            fn(part, torch, device, args)
        except Exception as exc:  # noqa: BLE001
            report.append(f"\n{name} failed: {type(exc).__name__}: {exc}\n")
            status = 1
        (out / "profile.md").write_text("".join(report))
    print(f"wrote {out / 'profile.md'} in {time.time() - start:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
