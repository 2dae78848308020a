"""MACE's symmetric contraction on CPU: diagc's compiled diagram (examples/mace_symmetric_contraction.py)
against mace-torch's SymmetricContraction, the same map (weights converted by the change of basis,
values checked before timing). Contenders alternate inside each repeat, best of 5 (harness.timeit).

    python benchmarks/mace_bench.py [--nodes 1000] [--channels 32 128] [--threads 1] [--dtype float64 float32]

Prints a markdown table; writes benchmarks/results/mace.md with --write.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import compiler  # noqa: E402
import harness  # noqa: E402
import mace_symmetric_contraction as example  # noqa: E402

Z = 3  # chemical elements


def contenders(K: int, N: int, dtype: str, rng):
    import torch

    source, bases = example.build_source(K)
    module = compiler.load_source(source, f"mace_sc_{K}")
    sc = example.mace_module(K, Z)
    weights, residual = example.diagc_weights(sc, bases, rng.normal(size=(256, 9)))
    A = rng.normal(size=(N, 9 * K))
    y = np.eye(Z)[rng.integers(0, Z, N)]
    tdtype = getattr(torch, dtype)
    sc = sc.to(tdtype)
    At, yt = torch.as_tensor(A, dtype=tdtype), torch.as_tensor(y, dtype=tdtype)
    Wt = [torch.as_tensor(w, dtype=tdtype) for w in weights]
    An, yn, Wn = A.astype(dtype), y.astype(dtype), [w.astype(dtype) for w in weights]
    x = example.mace_x(At, K)  # MACE's own input layout, prepared outside its timing
    with torch.no_grad():
        ref = sc(x, yt).numpy()
        for name, got in (("torch", module.mace_sc(At, yt, *Wt).numpy()), ("numpy", module.mace_sc(An, yn, *Wn))):
            err = np.abs(got - ref).max() / max(1.0, np.abs(ref).max())
            tol = 1e-10 if dtype == "float64" else 1e-4
            assert err < tol, f"diagc {name} differs from mace-torch by {err:.1e}"
    calls = {
        "mace-torch": lambda: sc(example.mace_x(At, K), yt),
        "diagc torch": lambda: module.mace_sc(At, yt, *Wt),
        "diagc numpy": lambda: module.mace_sc(An, yn, *Wn),
    }
    return calls, {L: len(t) for L, t in bases.items()}, residual


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--channels", type=int, nargs="+", default=[32, 128])
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    p.add_argument("--dtype", nargs="+", default=["float64", "float32"])
    p.add_argument("--write", action="store_true", help="write benchmarks/results/mace.md")
    args = p.parse_args(argv)
    if example.load_mace() is None:
        print("mace-torch is not installed (pip install --no-deps mace-torch)")
        return 1
    threads = harness.Threads()
    lines = harness.machine_line(threads, harness.bandwidth()) + [
        "",
        f"MACE symmetric contraction, correlation 3, Kx0e+Kx1o+Kx2e -> Kx0e+Kx1o, {Z} elements, "
        f"{args.nodes} nodes; forward only (torch.no_grad), best of 5, contenders alternating.",
        "",
        "| K | dtype | threads | mace-torch (ms) | diagc torch (ms) | diagc numpy (ms) | diagc torch / mace-torch |",
        "|---|---|---|---|---|---|---|",
    ]
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for K in args.channels:
            for dtype in args.dtype:
                calls, counts, residual = contenders(K, args.nodes, dtype, rng)
                for n in args.threads:
                    threads.set(n)
                    warm = {name: harness.seconds(f) for name, f in calls.items()}
                    warm = {name: harness.seconds(f) for name, f in calls.items()}
                    best, _ = harness.timeit(calls, warm, 5, 0.2, None)
                    ms = {k: v * 1e3 for k, v in best.items()}
                    lines.append(f"| {K} | {dtype} | {n} | {ms['mace-torch']:.2f} | {ms['diagc torch']:.2f} | "
                                 f"{ms['diagc numpy']:.2f} | {ms['diagc torch'] / ms['mace-torch']:.2f} |")
                    print(lines[-1], flush=True)
    lines += ["", f"Weights per element and channel: diagc {sum(counts.values())} ({counts}); "
              "mace-torch 41 (15 + 26: its basis is overcomplete, the spans are equal)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        (ROOT / "benchmarks" / "results" / "mace.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
