"""First-call compile time of the fused paths, cold and with torch's on-disk cache (a benchmark).

    python benchmarks/compile_cache_bench.py                    # every tensornet op with a fused form
    python benchmarks/compile_cache_bench.py --ops matmul_o3 --out DIR

``fused=True`` on torch tensors runs each function's component formulas through ``torch.compile``,
once per function and process. What a later process can reuse is inductor's on-disk cache (the FX
graph cache, on by default in torch 2.x; ``TORCHINDUCTOR_CACHE_DIR`` says where, default
``/tmp/torchinductor_<user>``). This runs two fresh processes in a row on one new, empty cache
folder and times, in each, the first call of ``NAME``, ``NAME_vjp`` and ``NAME_vjp_vjp`` with
``fused=True`` (torch CPU float32, N*C = 2^12, C = 64): the first process compiles from nothing
("cold"), the second finds the first one's cache ("warm"). Writes ``compile_cache.md`` / ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = ("", "_vjp", "_vjp_vjp")


def child(ops_names) -> dict:
    """In this process: the first-call time of each fused function (seconds)."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import compiler
    from contenders import make_inputs
    from compiler.frontend.lower import lower_source

    path = ROOT / "diagrams" / "tensornet.diag"
    ops = compiler.load(path)
    rng = np.random.default_rng(0)
    times = {}
    for d in lower_source(path.read_text(), str(path)).diagrams:
        if d.name not in ops_names:
            continue
        _, _, arrays = make_inputs(d, 2 ** 12, 64, rng)
        xs = [torch.from_numpy(a.astype(np.float32)) for a in arrays]
        y = getattr(ops, d.name)(*xs)
        cots = [torch.randn(t.shape) for t in (y if isinstance(y, tuple) else (y,))]
        cots2 = [torch.randn(x.shape) for x in xs]
        args = {"": xs, "_vjp": xs + cots, "_vjp_vjp": xs + cots + cots2}
        times[d.name] = {}
        for s in SUFFIXES:
            f = getattr(ops, d.name + s)
            t = time.perf_counter()
            f(*args[s], fused=True)
            times[d.name][s] = time.perf_counter() - t
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", nargs="*", default=["vector_to_skew", "vector_to_sym", "decompose", "tensor_norm",
                                                 "matmul_o3", "edge_tensor", "skew_to_vector"])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.ops)))
        return 0
    runs = {}
    with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        for label in ("cold", "warm"):
            r = subprocess.run([sys.executable, __file__, "--child", "--ops", *args.ops], env=env,
                               capture_output=True, text=True, check=True)
            runs[label] = json.loads(r.stdout.strip().splitlines()[-1])
            print(label, runs[label], flush=True)
    import torch

    lines = ["# First call of the fused functions: cold, and with inductor's on-disk cache", "",
             f"torch {torch.__version__} CPU, float32, N*C = 2^12, C = 64; two fresh processes on one new "
             "TORCHINDUCTOR_CACHE_DIR (the second reuses the first one's cache); seconds, one run each, "
             "on a shared, loaded 2-core machine.", "",
             "| operation | NAME cold | NAME warm | NAME_vjp cold | NAME_vjp warm | NAME_vjp_vjp cold | "
             "NAME_vjp_vjp warm |", "|---|---|---|---|---|---|---|"]
    for op in args.ops:
        cells = [f"{runs[label][op][s]:.1f}" for s in SUFFIXES for label in ("cold", "warm")]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    total = {label: sum(sum(t.values()) for t in runs[label].values()) for label in runs}
    lines += ["", f"Total: {total['cold']:.1f} s cold, {total['warm']:.1f} s warm."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compile_cache.json").write_text(json.dumps(runs, indent=1))
    (out / "compile_cache.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
