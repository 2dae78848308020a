"""Time enumerations with 8 to 14 legs in total (inputs + output), O(3) and SO(3).

    python benchmarks/enumerate_bench.py            # the default table
    python benchmarks/enumerate_bench.py --quick    # skip the distinct-input 12- and 14-leg cases
    python benchmarks/enumerate_bench.py --six      # only six distinct cart2 -> cart2 (30,537; allow_large)
    python benchmarks/enumerate_bench.py --repeat 3 # best of 3 runs per case

Each case is run once in this process (an enumeration is deterministic; the timings are wall-clock
on whatever machine runs it) and split into its stages: candidate generation with canonical
dedupe, evaluation at random points mod p, and the exact rank profile (blocked, float64, mod p).
Every count is checked against character theory by enumerate_basis itself (a shortfall raises).
The six-input case is above the 5,000-dimension guard (allow_large): it takes the coupling basis,
whose "candidates" column is the building of its 30,537 networks and which has no rank step.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's compiler, not an installed one

from compiler.tools.enumeration import InputSpec, Request, enumerate_basis
from compiler.ir.types import TensorType as T

CASES = [
    # (label, inputs (name, type, degree), output, group)
    ("E^3 -> sym2 (sym2 inputs)", [("E", "sym2", 3)], "sym2", "O3"),
    ("3 cart2 -> cart2", [("A", "cart2", 1), ("B", "cart2", 1), ("C", "cart2", 1)], "cart2", "O3"),
    ("X^4 -> cart2 (4 copies)", [("X", "cart2", 4)], "cart2", "SO3"),
    ("4 cart2 -> cart2", [(n, "cart2", 1) for n in "ABCD"], "cart2", "O3"),
    ("4 cart2 -> cart2", [(n, "cart2", 1) for n in "ABCD"], "cart2", "SO3"),
    ("E^4 + v^2 -> sym2", [("E", "sym2", 4), ("v", "vec", 2)], "sym2", "O3"),
    ("X^5 -> cart2 (5 copies)", [("X", "cart2", 5)], "cart2", "O3"),
    ("E^5 -> sym2", [("E", "sym2", 5)], "sym2", "O3"),
    ("v^3 + X^3 -> cart2", [("v", "vec", 3), ("X", "cart2", 3)], "cart2", "SO3"),
    ("E^6 -> sym2", [("E", "sym2", 6)], "sym2", "O3"),
    ("X^6 -> cart2 (6 copies)", [("X", "cart2", 6)], "cart2", "SO3"),
    ("5 cart2 -> cart2 (distinct)", [(n, "cart2", 1) for n in "ABCDE"], "cart2", "O3"),
]
SIX = ("6 cart2 -> cart2 (distinct, --allow-large)", [(n, "cart2", 1) for n in "ABCDEF"], "cart2", "O3")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the distinct-input 12- and 14-leg cases")
    ap.add_argument("--six", action="store_true", help="only the six distinct inputs case")
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the best total is shown")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, Python {platform.python_version()}")
    print("| case | group | legs | candidates | distinct | dimension | total s | candidates s | evaluate s | rank s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, inputs, out, group in [SIX] if args.six else CASES + [SIX]:
        if args.quick and "distinct" in label:
            continue
        req = Request(tuple(InputSpec(n, T.parse(t), d) for n, t, d in inputs), T.parse(out), group)
        legs = sum(T.parse(t).rank * d for _, t, d in inputs) + T.parse(out).rank
        best = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            b = enumerate_basis(req, allow_large=label == SIX[0])
            total = time.perf_counter() - t0
            if best is None or total < best[0]:
                best = (total, b)
        total, b = best
        tm = b.timings
        print(f"| {label} | {group} | {legs} | {b.candidates} | {b.unique} | {b.dimension} (= {b.expected}) | "
              f"{total:.2f} | {tm.get('candidates', 0):.2f} | {tm.get('evaluate', 0):.2f} | {tm.get('rank', 0):.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
