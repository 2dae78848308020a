"""What the emitted functions' input checks cost per argument.

    python benchmarks/shape_check_bench.py [--repeat 7] [--number 100000]

For every diagram of every ``diagrams/*.diag`` file, the lines that ``compiler.targets.python.codegen.input_checks``
emits for its signature (shape tuples read, compared, the exact-arithmetic test) are compiled into a
function of the inputs alone, and timed with ``timeit`` on valid numpy arrays and torch CPU tensors
(batch 8, channels 4) against a function of the same parameters that does nothing; the difference,
divided by the number of arguments, is the cost per argument (best of ``--repeat`` runs of
``--number`` calls). Printed as a table; the module's own run time is not measured here.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402
from compiler.targets.python.codegen import input_checks, runtime_source  # noqa: E402
from compiler.frontend.lower import lower_source  # noqa: E402
from compiler.testing import random_input  # noqa: E402


def checker(diagram):
    """(checks, nothing): functions of the inputs, with and without the emitted check lines."""
    names = [t.name for t in diagram.inputs]
    params = ", ".join(["_b"] + names) + ", out=None, fused=False"
    body = [f"    _like = {names[0]}"] + input_checks(diagram.name, diagram.inputs) + ["    return None"]
    code = (f"def {diagram.name}({params}):\n" + "\n".join(body) + "\n"
            f"def nothing({params}):\n    _like = {names[0]}\n    return None\n")
    ns = {}
    # the runtime these functions reach, as an emitted module carries it (and the backend lookup)
    exec(compile(runtime_source([code, "_backend"], False), "<runtime>", "exec"), ns)
    exec(compile(code, "<checks>", "exec"), ns)
    return ns[diagram.name], ns["nothing"], ns["_backend"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--number", type=int, default=100000)
    args = ap.parse_args()
    import torch

    rng = np.random.default_rng(0)
    print(f"diagc {compiler.__version__}; numpy {np.__version__}, torch {torch.__version__}")
    print("| function | args | numpy ns/arg | torch ns/arg |")
    print("|---|---|---|---|")
    worst = {"numpy": 0.0, "torch": 0.0}
    for path in sorted((ROOT / "diagrams").glob("*.diag")):
        for d in lower_source(path.read_text(), str(path)).diagrams:
            if not d.inputs:
                continue
            checks, nothing, backend = checker(d)
            arrays = [random_input(t.type, rng, (8,), {"c": 4, "d": 4}) for t in d.inputs]
            row = []
            for lib, xs in (("numpy", arrays), ("torch", [torch.from_numpy(a) for a in arrays])):
                b = backend(*xs)
                cost = []
                for f in (checks, nothing):
                    t = timeit.Timer(lambda: f(b, *xs))
                    cost.append(min(t.repeat(args.repeat, args.number)) / args.number)
                per_arg = (cost[0] - cost[1]) / len(xs) * 1e9
                worst[lib] = max(worst[lib], per_arg)
                row.append(f"{per_arg:.0f}")
            print(f"| {path.stem}.{d.name} | {len(d.inputs)} | {row[0]} | {row[1]} |")
    print(f"\nworst: numpy {worst['numpy']:.0f} ns per argument, torch {worst['torch']:.0f} ns per argument")


if __name__ == "__main__":
    main()
