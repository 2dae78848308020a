"""Time coupled enumerations: symmetric powers of spherical inputs (MACE's symmetric contraction),
symt(l) and mixed Cartesian/spherical requests.

    python benchmarks/enumerate_coupled_bench.py

Each case is run once to build the exact 3j symbols and P tables it needs (cached, reported as
"first s"), then timed best of 3, split into its stages: candidate coupling paths, evaluation at
random points mod p, and the exact rank profile. Wall-clock on whatever machine runs it.
"""

from __future__ import annotations

import platform
import time

from compiler.tools.enumeration import enumerate_degrees
from compiler.ir.types import TensorType as T

MACE = [("a0", "0e", range(4)), ("a1", "1o", range(4)), ("a2", "2e", range(4))]
CASES = [
    # (label, inputs (name, type, degrees), output, total degrees or None)
    ("S^3(2e) -> 2e", [("x", "2e", (3,))], "2e", None),
    ("S^4(4e) -> 4e", [("x", "4e", (4,))], "4e", None),
    ("S^4(4e) -> 12e", [("x", "4e", (4,))], "12e", None),
    ("S^4(3o) -> 6e", [("x", "3o", (4,))], "6e", None),
    ("MACE 0e+1o+2e, nu <= 3 -> 0e", MACE, "0e", (1, 2, 3)),
    ("MACE 0e+1o+2e, nu <= 3 -> 1o", MACE, "1o", (1, 2, 3)),
    ("MACE 0e+1o+2e, nu <= 3 -> 2e", MACE, "2e", (1, 2, 3)),
    ("x: 1o^2, E: sym2^2 -> sym2", [("x", "1o", (2,)), ("E", "sym2", (2,))], "sym2", None),
    ("S: sym3t^4 -> scalar", [("S", "sym3t", (4,))], "scalar", None),
]


def main() -> None:
    print(f"machine: {platform.machine()}, Python {platform.python_version()}")
    print("| case | candidates | dimension | first s | best of 3 s | candidates s | evaluate s | rank s |")
    print("|---|---|---|---|---|---|---|---|")
    for label, inputs, out, total in CASES:
        specs = [(n, T.parse(t), tuple(d)) for n, t, d in inputs]
        t0 = time.perf_counter()
        enumerate_degrees(specs, T.parse(out), total=total)
        first = time.perf_counter() - t0
        best, found = None, None
        for _ in range(3):
            t0 = time.perf_counter()
            found = enumerate_degrees(specs, T.parse(out), total=total)
            dt = time.perf_counter() - t0
            best = dt if best is None or dt < best else best
        stages = {k: sum(b.timings.get(k, 0.0) for b in found.parts) for k in ("candidates", "evaluate", "rank")}
        print(f"| {label} | {found.candidates} | {found.dimension} (= {found.expected}) | {first:.2f} | {best:.2f} | "
              f"{stages['candidates']:.2f} | {stages['evaluate']:.2f} | {stages['rank']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
