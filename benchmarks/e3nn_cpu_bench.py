"""e3nn's tensor product with every path to l = 2 on the CPU: diagc's module against e3nn 0.6's
``o3.TensorProduct``, the same instructions and weights.

    python benchmarks/e3nn_cpu_bench.py                          # K = 16, 32; 10^3 and 10^4 rows; 1, 2 threads
    python benchmarks/e3nn_cpu_bench.py --out benchmarks/results/e3nn_cpu.md

The product (examples/e3nn_paths.py): features ``Kx0e + Kx1o + Kx2e`` times spherical harmonics
``0e + 1o + 2e`` along all 11 paths into ``Kx0e + Kx1o + Kx2e``, e3nn mode "uvw" (each path a
K x 1 x K weight, a fully connected product) and "uvu" (NequIP's convolution: K x 1 weights, the
channel kept), weights shared by the rows. Float32 torch tensors, flat e3nn layout in and out.
Contenders: e3nn's module (its fx-generated code) and the diagc module (planned code; ``fused=True``
too, which runs host loops where the diagram has a kernel and planned code elsewhere). Passes:
forward, and forward + backward (the gradients with respect to x, y and every weight, as training
takes them). Values are checked first in float64 (1e-10 relative, forward and every gradient), then
in float32 (1e-4). Contenders alternate inside every repeat (harness.timeit), best of the repeats.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))

import harness  # noqa: E402
import e3nn_paths  # noqa: E402

import compiler  # noqa: E402


def rel_err(a, b) -> float:
    return float((a - b).abs().max() / max(float(b.abs().max()), 1e-30))


def contenders(K: int, mode: str, rows: int, dtype, seed: int = 0):
    """{name: (forward, forward + backward)} for one size, after the values are checked."""
    module = compiler.load_source(e3nn_paths.source(K, mode), f"e3nn_paths_{mode}_{K}")
    tp = e3nn_paths.e3nn_tensor_product(K, mode)
    g = torch.Generator().manual_seed(seed)
    x64 = torch.randn(rows, tp.irreps_in1.dim, generator=g, dtype=torch.float64)
    y64 = torch.randn(rows, tp.irreps_in2.dim, generator=g, dtype=torch.float64)
    w64 = torch.randn(tp.weight_numel, generator=g, dtype=torch.float64)
    cot64 = torch.randn(rows, tp.irreps_out.dim, generator=g, dtype=torch.float64)

    def make(x, y, w, cot, t):
        """{name: (forward under no_grad, forward + the gradients w.r.t. x, y, w)}, each a tuple."""
        def passes(fn):
            def forward():
                with torch.no_grad():
                    return (fn(x, y, w),)

            def step():
                xs, ys, ws = (a.detach().requires_grad_(True) for a in (x, y, w))
                out = fn(xs, ys, ws)
                return (out,) + torch.autograd.grad(out, (xs, ys, ws), cot)
            return forward, step

        return {"e3nn": passes(lambda a, b, c: t(a, b, c)),
                "diagc planned": passes(lambda a, b, c: module.tp(a, b, *e3nn_paths.diagram_weights(tp, c))),
                "diagc fused": passes(lambda a, b, c: module.tp(a, b, *e3nn_paths.diagram_weights(tp, c),
                                                                 fused=True))}

    # float64: every contender's forward and gradients against e3nn's
    ref = make(x64, y64, w64, cot64, tp)
    want_f, want_b = ref["e3nn"][0](), ref["e3nn"][1]()
    for name, (f, b) in ref.items():
        for got, want in zip(f() + b()[1:], want_f + want_b[1:]):
            err = rel_err(got, want)
            if not err < 1e-10:
                raise SystemExit(f"{name} disagrees with e3nn in float64 (K={K}, {mode}): {err:.2e}")
    t32 = tp.to(dtype)
    calls = make(x64.to(dtype), y64.to(dtype), w64.to(dtype), cot64.to(dtype), t32)
    for name, (f, b) in calls.items():
        for got, want in zip(f() + b()[1:], want_f + want_b[1:]):
            err = rel_err(got.double(), want)
            if not err < 1e-4:
                raise SystemExit(f"{name} disagrees with e3nn in float32 (K={K}, {mode}): {err:.2e}")
    return calls


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--channels", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--rows", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--modes", nargs="+", default=["uvw", "uvu"], choices=("uvw", "uvu"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    args = ap.parse_args(argv)

    threads = harness.Threads()
    lines = ["# e3nn's tensor product, every path to l = 2, on the CPU: diagc against e3nn", ""]
    lines += harness.machine_line(threads, harness.bandwidth())
    import e3nn

    lines += ["", f"e3nn {e3nn.__version__}; float32; times in ms, best of {args.repeats} alternating repeats; "
              "ratio = diagc / e3nn (below 1: diagc faster). Forward under no_grad; forward + backward: "
              "the gradients with respect to x, y and every weight.", "",
              "| mode | K | rows | threads | pass | e3nn | diagc planned | ratio | diagc fused | ratio |",
              "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for mode in args.modes:
        for K in args.channels:
            for rows in args.rows:
                calls = contenders(K, mode, rows, torch.float32)
                for nt in args.threads:
                    threads.set(nt)
                    for k, label in enumerate(("forward", "forward + backward")):
                        pass_calls = {name: pair[k] for name, pair in calls.items()}
                        warm = {name: harness.seconds(fn) for name, fn in pass_calls.items()}
                        best, _ = harness.timeit(pass_calls, warm, args.repeats, target=0.2, earlier=None)
                        e, p, f = (1e3 * best[n] for n in ("e3nn", "diagc planned", "diagc fused"))
                        lines.append(f"| {mode} | {K} | {rows} | {nt} | {label} | {e:.2f} | {p:.2f} | {p / e:.2f} "
                                     f"| {f:.2f} | {f / e:.2f} |")
                        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
