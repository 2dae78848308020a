"""Time the generated derivatives against autograd of the expert code (a benchmark, not a test).

    python benchmarks/grad_bench.py                   # N*C = 2^18, 2^19, 2^20; 1 and 2 threads
    python benchmarks/grad_bench.py --sizes 18 20 --repeats 3 --out DIR

For every operation of ``diagrams/tensornet.diag`` with an expert implementation (the torchmd-net
formulas of ``benchmarks/experts.py``, reused, not copied), torch CPU float32, C = 64 channels:

* first order: ``diagc`` = ``NAME(fused=True)`` then ``NAME_vjp(fused=True)`` (generated code, no
  autograd), against ``expert`` = the expert forward on tensors that require grad, then
  ``torch.autograd.grad`` with the same cotangents; and ``autograd``: ``NAME(fused=True)`` on tensors
  that require grad, then ``torch.autograd.grad`` (the backward runs ``NAME_vjp``, reading the
  copies the forward kept for it: plan.KeptCopy);
* second order: ``diagc`` = forward, ``NAME_vjp`` and ``NAME_vjp_vjp`` (all fused), against the
  expert forward, ``autograd.grad(create_graph=True)`` and the backward of that.

Results are checked against the expert's before timing. The contenders alternate, each timed as the
best of ``--repeats`` rounds (the machine is shared and noisy: best-of is the figure that noise
distorts least). First-call (compile) times of the fused NAME, NAME_vjp, NAME_vjp_vjp are reported
per operation: on torch CPU tensors ``fused=True`` runs the kernels' host loops, built by the C++
compiler at the first call (the cache ``DIAGC_CACHE`` as found: set it to a new folder for cold
figures); with the modules' ``HOST_KERNELS = False`` or no compiler it is torch.compile (inductor's
on-disk cache as found, ``TORCHINDUCTOR_CACHE_DIR``; ``compile_cache_bench.py`` compares cold and
warm). Channel mixing (mix_skew) has no fused form: on torch CPU tensors its host loops run (a
mixing loop for the forward and the mixed input's cotangent, rank-K updates for the weight's), else
the planned code. Writes ``grad.md``
and ``grad.json`` (after each operation, so an interrupted run keeps what it measured).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import compiler  # noqa: E402
from contenders import make_inputs  # noqa: E402
from experts import expert_set  # noqa: E402  (benchmarks/experts.py: the one copy of the expert formulas)
from compiler.frontend.lower import lower_source  # noqa: E402

C = 64
OPS_FILE = ROOT / "diagrams" / "tensornet.diag"


def as_tuple(y):
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


def best(f, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def first_call(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def contenders(ops, name, expert, xs, cots, cots2):
    fwd, vjp, vjp2 = (getattr(ops, name + s) for s in ("", "_vjp", "_vjp_vjp"))

    def diagc1():
        y = fwd(*xs, fused=True)
        return vjp(*xs, *cots, fused=True)

    def autograd1():  # the same generated code recorded by torch autograd (its backward: NAME_vjp)
        leaves = [x.detach().requires_grad_(True) for x in xs]
        y = as_tuple(fwd(*leaves, fused=True))
        return torch.autograd.grad(y, leaves, cots)

    def expert1():
        leaves = [x.detach().requires_grad_(True) for x in xs]
        y = as_tuple(expert(*leaves))
        return torch.autograd.grad(y, leaves, cots)

    def diagc2():
        y = fwd(*xs, fused=True)
        g = vjp(*xs, *cots, fused=True)
        return vjp2(*xs, *cots, *cots2, fused=True)

    def expert2():
        leaves = [x.detach().requires_grad_(True) for x in xs]
        cl = [c.detach().requires_grad_(True) for c in cots]
        y = as_tuple(expert(*leaves))
        g = torch.autograd.grad(y, leaves, cl, create_graph=True)
        used = [(gi, c) for gi, c in zip(g, cots2) if gi.requires_grad]
        return torch.autograd.grad([u for u, _ in used], leaves + cl, [c for _, c in used], allow_unused=True)

    return (diagc1, expert1), (diagc2, expert2), autograd1


def check(a, b, what):
    for x, y in zip(as_tuple(a), as_tuple(b)):
        if y is None:
            y = torch.zeros_like(x)
        err = float((x - y).abs().max()) / max(1.0, float(y.abs().max()))
        if err > 1e-3:
            raise SystemExit(f"{what}: the generated derivative differs from autograd of the expert by {err:.1e}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[18, 19, 20], help="log2 of N*C")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ops", nargs="*", help="only these operations")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    torch._dynamo.config.cache_size_limit = 64
    ops = compiler.load(OPS_FILE)
    experts = expert_set(torch)
    rng = np.random.default_rng(0)
    rows, compile_times = [], {}
    for d in lower_source(OPS_FILE.read_text(), str(OPS_FILE)).diagrams:
        entry = experts.get(("tensornet", d.name))
        if entry is None or (args.ops and d.name not in args.ops):
            continue
        expert = entry[1]
        for k in args.sizes:
            _, total, arrays = make_inputs(d, 2 ** k, C, rng)
            xs = [torch.from_numpy(a.astype(np.float32)) for a in arrays]
            ys = as_tuple(getattr(ops, d.name)(*xs))
            cots = [torch.randn(y.shape) for y in ys]
            cots2 = [torch.randn(x.shape) for x in xs]
            (d1, e1), (d2, e2), a1 = contenders(ops, d.name, expert, xs, cots, cots2)
            if d.name not in compile_times:  # first calls: the three fused functions' builds
                torch.set_num_threads(max(args.threads))
                fwd, vjp, vjp2 = (getattr(ops, d.name + s) for s in ("", "_vjp", "_vjp_vjp"))
                compile_times[d.name] = {
                    "forward": first_call(lambda: fwd(*xs, fused=True)),
                    "vjp": first_call(lambda: vjp(*xs, *cots, fused=True)),
                    "vjp_vjp": first_call(lambda: vjp2(*xs, *cots, *cots2, fused=True)),
                }
            check(d1(), e1(), f"{d.name} first order")
            check(a1(), e1(), f"{d.name} first order, autograd")
            second = d2()
            ref = e2()
            check(second, ref, f"{d.name} second order")
            for threads in args.threads:
                torch.set_num_threads(threads)
                for f in (d1, a1, e1, d2, e2):  # warm (a new thread count may recompile)
                    f()
                t = {"d1": [], "a1": [], "e1": [], "d2": [], "e2": []}
                for _ in range(args.repeats):  # alternate the contenders, best of the rounds
                    for key, f in (("d1", d1), ("a1", a1), ("e1", e1), ("d2", d2), ("e2", e2)):
                        t[key].append(best(f, 1))
                row = {"op": d.name, "log2_NC": k, "threads": threads,
                       **{key: min(v) for key, v in t.items()}}
                row["ratio1"] = row["d1"] / row["e1"]
                row["ratio2"] = row["d2"] / row["e2"]
                row["ratio1a"] = row["a1"] / row["e1"]
                rows.append(row)
                print(f"{d.name:16s} 2^{k} {threads}t  first {row['d1']*1e3:8.2f} ms vs {row['e1']*1e3:8.2f} ms "
                      f"({row['ratio1']:.2f})  autograd {row['a1']*1e3:8.2f} ({row['ratio1a']:.2f})  second {row['d2']*1e3:8.2f} vs {row['e2']*1e3:8.2f} "
                      f"({row['ratio2']:.2f})", flush=True)
        write(args.out, rows, compile_times, args.repeats)  # after each operation: a long run keeps what it has
    print(write(args.out, rows, compile_times, args.repeats))
    return 0


def write(folder, rows, compile_times, repeats) -> str:
    """grad.json and grad.md in ``folder``; returns the report."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "torch": torch.__version__, "channels": C, "repeats": repeats}
    (out / "grad.json").write_text(json.dumps({"meta": meta, "rows": rows, "compile_s": compile_times}, indent=1))
    text = report(rows, compile_times, meta)
    (out / "grad.md").write_text(text)
    return text


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def report(rows, compile_times, meta) -> str:
    lines = ["# Generated derivatives vs autograd of the expert (torch CPU float32)", "",
             f"torch {meta['torch']}, C = {meta['channels']}, best of {meta['repeats']} alternating rounds; "
             "the machine is shared and noisy.", "",
             "ratio = diagc / expert time (below 1: the generated code is faster).", "",
             "| operation | N*C | threads | fwd+vjp ms | expert fwd+bwd ms | ratio | fwd+autograd ms | ratio "
             "| 2nd order ms | expert 2nd ms | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['op']} | 2^{r['log2_NC']} | {r['threads']} | {r['d1']*1e3:.2f} | {r['e1']*1e3:.2f} | "
                     f"{r['ratio1']:.2f} | {r['a1']*1e3:.2f} | {r['ratio1a']:.2f} | {r['d2']*1e3:.2f} | {r['e2']*1e3:.2f} | {r['ratio2']:.2f} |")
    lines += ["", "| threads | geomean ratio, first order | max | geomean ratio, second order | max |", "|---|---|---|---|---|"]
    for th in sorted({r["threads"] for r in rows}):
        sel = [r for r in rows if r["threads"] == th]
        lines.append(f"| {th} | {geomean([r['ratio1'] for r in sel]):.2f} | {max(r['ratio1'] for r in sel):.2f} | "
                     f"{geomean([r['ratio2'] for r in sel]):.2f} | {max(r['ratio2'] for r in sel):.2f} |")
    lines += ["", "First call of the fused functions (host loops built, or torch.compile where they are off), seconds:", "",
              "| operation | NAME | NAME_vjp | NAME_vjp_vjp |", "|---|---|---|---|"]
    for op, t in compile_times.items():
        lines.append(f"| {op} | {t['forward']:.1f} | {t['vjp']:.1f} | {t['vjp_vjp']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
