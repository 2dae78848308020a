"""First calls of the fused paths across batch sizes: torch.compile's default against dynamic=True
(a benchmark, not a test).

    python benchmarks/compile_dynamic_bench.py --ops skew_to_vector --out DIR

``fused=True`` on torch tensors compiles each function's component formulas with ``torch.compile``
(the runtime's ``compile`` hook). By default torch specialises the first call's shapes and, when a
later call brings another batch size, compiles again with symbolic sizes (automatic dynamic); with
``dynamic=True`` the first compile is already symbolic. Per mode, one fresh process on a new, empty
``TORCHINDUCTOR_CACHE_DIR`` (cold), then a second process on the same folder (warm: inductor's
on-disk FX graph cache), each calling ``NAME`` and ``NAME_vjp`` (``fused=True``, torch CPU float32,
C = 64) at N*C = 2^13, 2^14, 2^16 in turn: the time of each call (compiles included), then the best
of 5 steady-state calls at 2^16 (what the compiled code costs once compiled). The mode is set by
replacing the hook of the loaded module's torch backend, nothing else. Writes
``compile_dynamic.md`` / ``.json``.
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
SIZES = (13, 14, 16)  # N = 128, 256, 1024 rows of C = 64: never N == C (duck sizing would tie them)
SUFFIXES = ("", "_vjp")


def child(ops_names, mode) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import compiler
    from contenders import make_inputs
    from compiler.frontend.lower import lower_source

    path = ROOT / "diagrams" / "tensornet.diag"
    ops = compiler.load(path)
    torch.zeros(1) + ops.tensor_norm(torch.zeros(1, 3, 3))  # the torch backend exists
    backend = ops._BACKENDS["torch"]
    if mode == "dynamic":
        backend.compile = lambda fn: torch.compile(fn, dynamic=True)
    rng = np.random.default_rng(0)
    out = {}
    for d in lower_source(path.read_text(), str(path)).diagrams:
        if d.name not in ops_names:
            continue
        rows = {}
        for k in SIZES:
            _, _, arrays = make_inputs(d, 2 ** k, 64, rng)
            xs = [torch.from_numpy(a.astype(np.float32)) for a in arrays]
            y = getattr(ops, d.name)(*xs)
            cots = [torch.randn(t.shape) for t in (y if isinstance(y, tuple) else (y,))]
            args = {"": xs, "_vjp": xs + cots}
            for s in SUFFIXES:
                f = getattr(ops, d.name + s)
                t = time.perf_counter()
                f(*args[s], fused=True)
                rows[f"{s or 'NAME'} 2^{k}"] = time.perf_counter() - t
        for s in SUFFIXES:  # steady state at the last size
            f = getattr(ops, d.name + s)
            best = float("inf")
            for _ in range(5):
                t = time.perf_counter()
                f(*args[s], fused=True)
                best = min(best, time.perf_counter() - t)
            rows[f"{s or 'NAME'} steady 2^{SIZES[-1]}"] = best
        out[d.name] = rows
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", nargs="*", default=["skew_to_vector", "tensor_norm"])
    p.add_argument("--modes", nargs="*", default=["default", "dynamic"])
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.ops, args.child)))
        return 0
    runs = {}
    for mode in args.modes:
        with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
            env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
            for label in ("cold", "warm"):
                r = subprocess.run([sys.executable, __file__, "--child", mode, "--ops", *args.ops], env=env,
                                   capture_output=True, text=True)
                if r.returncode:
                    raise SystemExit(r.stderr[-3000:])
                runs[f"{mode} {label}"] = json.loads(r.stdout.strip().splitlines()[-1])
                print(mode, label, runs[f"{mode} {label}"], flush=True)
    import torch

    keys = list(next(iter(next(iter(runs.values())).values())))
    lines = ["# First calls of the fused functions across batch sizes: torch.compile default vs dynamic=True", "",
             f"torch {torch.__version__} CPU, float32, C = 64; per mode a fresh process on a new "
             "TORCHINDUCTOR_CACHE_DIR (cold), then a second one on the same folder (warm); seconds, one run "
             "each, calls in the order listed (the 2^14 call of the default mode recompiles with symbolic "
             "sizes); steady = best of 5 calls once compiled; a shared, loaded 2-core machine.", "",
             "| operation | call | " + " | ".join(runs) + " |", "|---|---|" + "---|" * len(runs)]
    for op in args.ops:
        for key in keys:
            lines.append(f"| {op} | {key} | " + " | ".join(f"{runs[r][op][key]:.3f}" for r in runs) + " |")
    for r in runs:
        total = sum(v for op in args.ops for k, v in runs[r][op].items() if "steady" not in k)
        lines.append(f"\n{r}: {total:.1f} s of first calls in all")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compile_dynamic.json").write_text(json.dumps(runs, indent=1))
    (out / "compile_dynamic.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
