"""Two builds of the same diagrams, timed side by side in one process: did a change to the compiler
make any emitted function slower?

    # build both, e.g. an older commit from a worktree:
    (cd ../old && PYTHONPATH=. python -m compiler build diagrams -o /tmp/ab/old)
    diagc build diagrams -o /tmp/ab/new
    python benchmarks/module_ab.py /tmp/ab/old /tmp/ab/new --sizes 1e4 1e5 --threads 1

Emitted modules are standalone, so two versions of one module load side by side. For every
function both builds have (by module and name), on the same inputs (contenders.make_inputs,
C = 64), numpy and torch CPU: the old and new function alternate inside every repeat
(harness.timeit), best of the repeats; the results must agree (1e-9 relative, float64 inputs
cast to the dtype). Prints new / old per case and the geometric mean per function, and the
run-to-run noise bound: the same comparison of old against itself (a second timing of the old
function in the same alternation), whose spread is what a ratio must exceed to mean anything.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import harness  # noqa: E402
from contenders import make_inputs, max_rel_err  # noqa: E402

from compiler.api import lower_source  # noqa: E402


def load_module(path: Path, tag: str):
    spec = importlib.util.spec_from_file_location(f"_ab_{tag}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def geomean(values) -> float:
    values = list(values)
    return math.exp(sum(map(math.log, values)) / len(values)) if values else math.nan


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path, help="folder of the old build's modules")
    ap.add_argument("new", type=Path, help="folder of the new build's modules")
    ap.add_argument("--diagrams", type=Path, default=ROOT / "diagrams", help="the .diag files both were built from")
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5])
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--libraries", nargs="+", default=["numpy", "torch"], choices=("numpy", "torch"))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--only", default="", help="only functions whose 'module:name' contains this text")
    ap.add_argument("--channels", type=int, default=64)
    args = ap.parse_args(argv)

    import torch

    threads = harness.Threads()
    rng = np.random.default_rng(0)
    per_fn, noise = {}, []
    for path in sorted(args.diagrams.glob("*.diag")):
        old_file, new_file = args.old / f"{path.stem}.py", args.new / f"{path.stem}.py"
        if not (old_file.exists() and new_file.exists()):
            continue
        old, new = load_module(old_file, "old"), load_module(new_file, "new")
        for d in lower_source(path.read_text(encoding="utf-8"), str(path)).diagrams:
            label = f"{path.stem}:{d.name}"
            if args.only not in label or not hasattr(old, d.name) or not hasattr(new, d.name):
                continue
            f_old, f_new = getattr(old, d.name), getattr(new, d.name)
            for size in args.sizes:
                _, _, a64 = make_inputs(d, int(size), args.channels, rng)
                for dtype in args.dtypes:
                    for lib in args.libraries:
                        a = [x.astype(dtype) for x in a64]
                        if lib == "torch":
                            a = [torch.from_numpy(x) for x in a]
                        calls = {"old": lambda f=f_old, a=a: f(*a), "new": lambda f=f_new, a=a: f(*a),
                                 "old again": lambda f=f_old, a=a: f(*a)}
                        err = max_rel_err(calls["new"](), calls["old"]())
                        if not err < (1e-4 if dtype == "float32" else 1e-9):
                            raise SystemExit(f"{label} {lib} {dtype}: old and new disagree ({err:.1e})")
                        for nt in args.threads:
                            threads.set(nt)
                            warm = {k: harness.seconds(f) for k, f in calls.items()}
                            best, _ = harness.timeit(calls, warm, args.repeats, target=0.05, earlier=None)
                            ratio, again = best["new"] / best["old"], best["old again"] / best["old"]
                            per_fn.setdefault((label, lib), []).append(ratio)
                            noise.append(again)
                            print(f"| {label} | {lib} | {dtype} | {size:.0e} | {nt} | "
                                  f"{1e6 * best['old']:.0f} | {1e6 * best['new']:.0f} | {ratio:.2f} | {again:.2f} |",
                                  flush=True)
    print("\n| function | library | new / old (geomean over sizes, dtypes, threads) |\n|---|---|---:|")
    for (label, lib), v in sorted(per_fn.items(), key=lambda kv: -geomean(kv[1])):
        print(f"| {label} | {lib} | {geomean(v):.2f} |")
    every = [r for v in per_fn.values() for r in v]
    noise.sort()
    print(f"\nall cases: new / old geomean {geomean(every):.3f} over {len(every)} cases; old again / old "
          f"(the noise) geomean {geomean(noise):.3f}, 10th-90th percentile {noise[len(noise) // 10]:.2f}-"
          f"{noise[9 * len(noise) // 10]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
