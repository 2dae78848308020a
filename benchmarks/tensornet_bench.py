"""TensorNet forward + forces on CPU: examples/tensornet.py (diagc's planned code) against
torchmd-net 3.1.0's pure-torch TensorNet (benchmarks/torchmdnet_ref.py), the same weights.

    python benchmarks/tensornet_bench.py                   # 1,000 and 2,000 atoms, 1 and 2 threads
    python benchmarks/tensornet_bench.py --atoms 1000 --repeats 3 --out benchmarks/results/tensornet.md

Molecules: atoms uniform in a cube at 0.089 atoms/A^3 (about 34 neighbours within the 4.5 A cutoff,
self pairs included), z in 1..9; hidden_channels 64, 2 layers, 32 radial functions, O(3), float32.
One call = the forward pass and the forces (autograd of the summed features). torchmd-net runs with
static_shapes=False (no padding of the edge list to max_num_neighbors per atom, which would time
ghost edges) and its warp neighbour kernel replaced by a brute-force torch one; ours builds its
list by brute force too (torch.cdist). The contenders alternate inside every repeat (harness.timeit),
best of the repeats; the first call of each (untimed) is reported apart.

``--fused`` adds a contender, the same model built with ``fused=True``: on the CPU every diagram with
a kernel runs its host loop (the kernel's element function in a C++ loop, the graph functions one
gather - product - sum pass each; built by the C++ compiler at first use), channel mixing the
planned GEMM. Its first call, which builds every loop the forward and the forces run, is reported
as the whole model's compile time, from a cold cache (a fresh DIAGC_CACHE folder unless
``--warm-cache``). ``--torch-compile`` adds the fused model with its host loops off (HOST_KERNELS =
False: torch.compile of each fused function and VJP, what fused=True ran before the host loops),
and its first call's time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))

import harness  # noqa: E402
import torchmdnet_ref  # noqa: E402

DENSITY = 0.089  # atoms per cubic angstrom


def system(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    side = (n / DENSITY) ** (1 / 3)
    pos = torch.rand(n, 3, generator=g) * side
    z = torch.randint(1, 10, (n,), generator=g)
    return z, pos, torch.zeros(n, dtype=torch.long)


#: the benchmarked model's arguments (torchmd-net's and examples/tensornet.py's constructors)
MODEL = dict(hidden_channels=64, num_layers=2, num_rbf=32, cutoff_upper=4.5, max_num_neighbors=64,
             static_shapes=False, dtype=torch.float32)


def models(tensornet):
    """torchmd-net's TensorNet with seeded random weights, and examples/tensornet.py's loaded with them."""
    torch.manual_seed(0)
    ref = torchmdnet_ref.reference_tensornet(**MODEL)
    ours = tensornet.TensorNet(**MODEL)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def forward_and_forces(model, z, pos, batch):
    def call():
        p = pos.detach().requires_grad_(True)
        x = model(z, p, batch)[0]
        (grad,) = torch.autograd.grad(x.sum(), p)
        return x, -grad

    return call


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, nargs="+", default=[1000, 2000])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    ap.add_argument("--fused", action="store_true", help="also time TensorNet(fused=True) (compiles on its first call)")
    ap.add_argument("--torch-compile", action="store_true",
                    help="also time TensorNet(fused=True) with the host loops off (torch.compile)")
    ap.add_argument("--warm-cache", action="store_true",
                    help="build the host loops into DIAGC_CACHE (or ~/.cache/diagc) as a user would; default: "
                         "a fresh folder, so that the first call builds them all")
    args = ap.parse_args(argv)
    if args.fused and not args.warm_cache:
        import os
        import tempfile

        os.environ["DIAGC_CACHE"] = tempfile.mkdtemp(prefix="diagc_bench_")

    t0 = time.perf_counter()
    import tensornet  # compiles the diagrams

    import_seconds = time.perf_counter() - t0
    ref, ours = models(tensornet)
    contenders = {}
    if args.fused:
        contenders["diagc fused"] = tensornet.TensorNet(**MODEL, fused=True)
    if args.torch_compile:
        contenders["diagc torch.compile"] = tensornet.TensorNet(**MODEL, fused=True)
    for model in contenders.values():
        model.load_state_dict(ref.state_dict(), strict=True)
    diagrams = (tensornet.LAYER, tensornet.BASE, tensornet.SO3, tensornet.GRAPH)

    def host_loops(on):
        for module in diagrams:
            module.HOST_KERNELS = on

    threads = harness.Threads()
    lines = ["# TensorNet forward + forces, CPU float32", ""]
    lines += harness.machine_line(threads, harness.bandwidth())
    lines += ["", f"examples/tensornet.py imports in {import_seconds:.1f} s (compiling its .diag files); "
              "no other compile step (planned code).", "",
              "| atoms | edges | threads | torchmd-net (ms) | diagc planned (ms) | ratio |"
              + "".join(f" {name} (ms) | ratio |" for name in contenders) + " first calls (ms) |",
              "|---:|---:|---:|---:|---:|---:|" + "---:|---:|" * len(contenders) + "---|"]
    compile_seconds = {}
    for n in args.atoms:
        z, pos, batch = system(n)
        edges = int(ours.distance(pos, batch)[0].shape[1])
        calls = {"torchmd-net": forward_and_forces(ref, z, pos, batch),
                 "diagc planned": forward_and_forces(ours, z, pos, batch)}
        for name, model in contenders.items():
            run = forward_and_forces(model, z, pos, batch)
            if name == "diagc torch.compile":  # the host loops off for this contender's calls only
                def run(run=run):
                    host_loops(False)
                    try:
                        return run()
                    finally:
                        host_loops(True)
            calls[name] = run
        x_ref, f_ref = calls["torchmd-net"]()
        for name in list(calls)[1:]:
            t = time.perf_counter()
            x, f = calls[name]()
            if name in contenders and name not in compile_seconds:
                compile_seconds[name] = time.perf_counter() - t
            err = max(float((x - x_ref).abs().max()), float((f - f_ref).abs().max() / f_ref.abs().max()))
            if not err < 1e-3:
                raise SystemExit(f"{name} and torchmd-net disagree at {n} atoms: {err:.2e}")
        if "diagc fused" in contenders and not any(m._HOST["functions"] for m in diagrams):
            raise SystemExit("TensorNet(fused=True) ran no host loop (no C++ compiler?): nothing to time")
        for nt in args.threads:
            threads.set(nt)
            warm = {name: harness.seconds(fn) for name, fn in calls.items()}
            best, _ = harness.timeit(calls, warm, args.repeats, target=0.2, earlier=None)
            r, o = best["torchmd-net"], best["diagc planned"]
            first = ", ".join(f"{name} {1e3 * s:.0f}" for name, s in warm.items())
            cells = f"| {n} | {edges} | {nt} | {1e3 * r:.0f} | {1e3 * o:.0f} | {o / r:.2f} |"
            cells += "".join(f" {1e3 * best[name]:.0f} | {best[name] / r:.2f} |" for name in contenders)
            lines.append(f"{cells} {first} |")
            print(lines[-1], flush=True)
    lines += ["", "ratio: diagc time / torchmd-net time (below 1: diagc faster); best of "
              f"{args.repeats} alternating repeats; features agree to 1e-3 (float32) before timing."]
    if "diagc fused" in compile_seconds:
        loops = sum(len(m._HOST["functions"]) for m in diagrams)
        lines += ["", f"TensorNet(fused=True): its first forward + forces ({args.atoms[0]} atoms) took "
                  f"{compile_seconds['diagc fused']:.1f} s in this process, building {loops} host loops "
                  + ("(a warm cache: some may have been built before)" if args.warm_cache else "from a cold cache")
                  + " with " + str(tensornet.LAYER._HOST["compiler"]) + "; later sizes build nothing."]
    if "diagc torch.compile" in compile_seconds:
        lines += ["", f"TensorNet(fused=True) with the host loops off: its first forward + forces (torch.compile "
                  f"of every fused function and VJP it runs, {args.atoms[0]} atoms) took "
                  f"{compile_seconds['diagc torch.compile']:.1f} s; later sizes may compile again (torch's "
                  "automatic dynamic shapes)."]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
