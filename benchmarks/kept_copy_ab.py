"""A/B of the copy a forward keeps for its VJP under torch autograd (plan.KeptCopy; a benchmark, not a test).

    python benchmarks/kept_copy_ab.py                        # mix_skew, N*C = 2^18..2^20, 1 and 2 threads
    python benchmarks/kept_copy_ab.py --sizes 18 --repeats 9 --out DIR

torch CPU float32, C = 64, ``diagrams/tensornet.diag``'s ``mix_skew``: forward on tensors that
require grad, then ``torch.autograd.grad`` (the backward runs the generated ``mix_skew_vjp``), in
one process: ``kept`` = as emitted (the forward's channels-last copy of A handed to the VJP),
``not kept`` = the same module with its SPEC's kept copies emptied (the VJP copies A again), and the
expert (``benchmarks/experts.py``) under autograd. The three alternate, each the best of
``--repeats`` rounds (the machine is shared and noisy). Gradients are checked against the expert's
first. Writes ``kept_copy.md`` and ``kept_copy.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import compiler  # noqa: E402
from experts import expert_set  # noqa: E402  (the one copy of the expert formulas)

C = 64


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[18, 19, 20], help="log2 of N*C")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    ops = compiler.load(ROOT / "diagrams" / "tensornet.diag")
    expert = expert_set(torch)[("tensornet", "mix_skew")][1]
    spec = ops._mix_skew_SPEC
    if not spec[7]:
        raise SystemExit("mix_skew keeps no copy for its VJP: nothing to compare")
    rng = np.random.default_rng(0)
    rows = []
    for k in args.sizes:
        n = 2 ** k // C
        A = torch.from_numpy(rng.normal(size=(n, C, 3, 3)).astype(np.float32))
        A = A - A.transpose(-1, -2)
        W = torch.from_numpy(rng.normal(size=(C, C)).astype(np.float32))
        dB = torch.from_numpy(rng.normal(size=(n, C, 3, 3)).astype(np.float32))

        def diagc(kept):
            def run():
                ops._mix_skew_SPEC = spec if kept else spec[:7] + ((),)
                a, w = A.detach().requires_grad_(True), W.detach().requires_grad_(True)
                return torch.autograd.grad(ops.mix_skew(a, w, fused=True), (a, w), dB)
            return run

        def reference():
            a, w = A.detach().requires_grad_(True), W.detach().requires_grad_(True)
            return torch.autograd.grad(expert(a, w), (a, w), dB)

        calls = {"kept": diagc(True), "not kept": diagc(False), "expert": reference}
        want = reference()
        for name in ("kept", "not kept"):
            for g, e in zip(calls[name](), want):
                err = float((g - e).abs().max()) / max(1.0, float(e.abs().max()))
                if err > 1e-3:
                    raise SystemExit(f"{name}: gradients differ from the expert's by {err:.1e}")
        for threads in args.threads:
            torch.set_num_threads(threads)
            times = {name: [] for name in calls}
            for f in calls.values():
                f()
            for _ in range(args.repeats):
                for name, f in calls.items():
                    t = time.perf_counter()
                    f()
                    times[name].append(time.perf_counter() - t)
            row = {"log2_NC": k, "threads": threads, **{name: min(v) for name, v in times.items()}}
            rows.append(row)
            print(f"2^{k} {threads}t  kept {row['kept']*1e3:8.2f}  not kept {row['not kept']*1e3:8.2f}  "
                  f"expert {row['expert']*1e3:8.2f} ms", flush=True)
    ops._mix_skew_SPEC = spec
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "channels": C, "repeats": args.repeats,
            "load": os.getloadavg(), "cpus": os.cpu_count()}
    (out / "kept_copy.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["# mix_skew under torch autograd: the forward's copy kept for the VJP, or made again", "",
             f"torch {meta['torch']} CPU float32, C = {C}, best of {args.repeats} alternating rounds, "
             f"load average at the end {meta['load'][0]:.1f} on {meta['cpus']} CPUs.", "",
             "| N*C | threads | kept ms | not kept ms | expert ms | kept / expert | not kept / expert |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| 2^{r['log2_NC']} | {r['threads']} | {r['kept']*1e3:.2f} | {r['not kept']*1e3:.2f} | "
                     f"{r['expert']*1e3:.2f} | {r['kept']/r['expert']:.2f} | {r['not kept']/r['expert']:.2f} |")
    (out / "kept_copy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
