"""Builds of TensorNet's diagrams, one process: the whole model's forward + forces on CPU, float32,
each build and torchmd-net's pure-torch TensorNet alternating (the order rotating from round to
round), best of R rounds. A build is a folder holding the modules that ``python -m compiler compile``
wrote at some commit from diagrams/tensornet_layer.diag, diagrams/tensornet.diag,
diagrams/tensornet_so3.diag and examples/tensornet_graph.diag (``tensornet_layer.py``,
``tensornet.py``, ``tensornet_so3.py``, ``tensornet_graph.py``); examples/tensornet.py runs with its
four diagram modules swapped for each build's (emitted modules import nothing from diagc, so several
commits' modules load side by side). Every build's features and forces are checked against
torchmd-net's first.

    python benchmarks/tensornet_build_ab.py DIR [DIR ...] [--atoms 1000 2000] [--threads 1 2] [--rounds 7]

(tensornet_bench.py times the current build against torchmd-net; this compares commits.)
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "examples")]
import harness  # noqa: E402
from module_ab import load_module  # noqa: E402
from tensornet_bench import forward_and_forces, models, system  # noqa: E402

#: examples/tensornet.py's global -> the module file of a build
MODULES = {"LAYER": "tensornet_layer.py", "BASE": "tensornet.py", "SO3": "tensornet_so3.py",
           "GRAPH": "tensornet_graph.py"}


def build_call(tensornet, modules, model, z, pos, batch):
    """forward + forces of ``model`` with examples/tensornet.py's diagram modules set to ``modules``."""
    inner = forward_and_forces(model, z, pos, batch)

    def call():
        for name, module in modules.items():
            setattr(tensornet, name, module)
        return inner()

    return call


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("builds", nargs="+", type=Path)
    ap.add_argument("--atoms", type=int, nargs="+", default=[1000, 2000])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    import tensornet

    own = {name: getattr(tensornet, name) for name in MODULES}
    try:
        return _run(args, tensornet)
    finally:  # examples/tensornet.py gets its own modules back
        for name, module in own.items():
            setattr(tensornet, name, module)


def _run(args, tensornet) -> int:
    builds = {}
    for k, folder in enumerate(args.builds):
        tag = f"{folder.name or folder}"
        builds[tag] = {name: load_module(folder / file, f"b{k}_{Path(file).stem}") for name, file in MODULES.items()}
    ref, ours = models(tensornet)
    threads = harness.Threads()
    print(f"# TensorNet forward + forces, builds against torchmd-net, CPU float32, best of {args.rounds} rounds")
    print()
    print("\n".join(harness.machine_line(threads, harness.bandwidth())))
    print()
    print("| atoms | threads | torchmd-net (ms) | " + " | ".join(f"{t} (ms) | ratio" for t in builds)
          + " | page faults per call (thousands): torchmd-net, " + ", ".join(builds) + " |")
    print("|---:|---:|---:|" + "---:|---:|" * len(builds) + "---|")
    for n in args.atoms:
        z, pos, batch = system(n)
        calls = {"torchmd-net": forward_and_forces(ref, z, pos, batch)}
        calls.update({t: build_call(tensornet, m, ours, z, pos, batch) for t, m in builds.items()})
        x_ref, f_ref = calls["torchmd-net"]()
        for tag in builds:
            x, f = calls[tag]()
            err = max(float((x - x_ref).abs().max()), float((f - f_ref).abs().max() / f_ref.abs().max()))
            if not err < 1e-3:
                raise SystemExit(f"build {tag} and torchmd-net disagree at {n} atoms: {err:.2e}")
        for nt in args.threads:
            threads.set(nt)
            best = {name: float("inf") for name in calls}
            faults = {name: float("inf") for name in calls}
            names = list(calls)
            for r in range(args.rounds):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                    t = time.perf_counter()
                    calls[name]()
                    best[name] = min(best[name], time.perf_counter() - t)
                    faults[name] = min(faults[name], resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
            row = f"| {n} | {nt} | {best['torchmd-net'] * 1e3:.0f} | "
            row += " | ".join(f"{best[t] * 1e3:.0f} | {best[t] / best['torchmd-net']:.2f}" for t in builds)
            row += " | " + ", ".join(f"{faults[t] / 1e3:.0f}" for t in names)
            print(row + " |", flush=True)
    print()
    print("ratio: build time / torchmd-net time in the same rounds (below 1: faster); page faults: the fewest "
          "minor page faults (getrusage) of one call, each a first touch of a fresh page.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
