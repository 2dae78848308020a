"""Staged against one-call: TensorNet's channel mixings scaled per channel (``project``,
``compose_mixed`` of diagrams/tensornet_layer.diag), which the emitted module runs in stages
(compiler.planning.staging: an elementwise diagram, a GEMM per part, an elementwise diagram), against
the same diagram run as one call (the module built with ``staging=False``: its own emitted code, and
for the backward its derivative's), forward and
forward + backward (torch autograd through the generated VJPs), CPU float32, planned and
``fused=True``, the two alternating, best of R. Values and gradients are checked against each
other first.

    python benchmarks/staging_ab.py [N] [C] [R] [THREADS...]     # default 2000 64 5 1 2
"""
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from compiler.api import load  # noqa: E402


def main(argv):
    n, C, R = (int(a) for a in (argv[0:3] + ["2000", "64", "5"][len(argv[0:3]):]))
    threads = [int(a) for a in argv[3:]] or [1, 2]
    m = load(ROOT / "diagrams" / "tensornet_layer.diag", "staging_ab_layer")
    unstaged = load(ROOT / "diagrams" / "tensornet_layer.diag", "staging_ab_layer_one_call", staging=False)
    torch.manual_seed(0)
    X = torch.randn(n, C, 3, 3, requires_grad=True)
    s = torch.rand(n, C, requires_grad=True)
    i, n0, n1, n2 = (torch.randn(n, C, requires_grad=True) for _ in range(4))
    a, t = torch.randn(n, C, 3, requires_grad=True), torch.randn(n, C, 5, requires_grad=True)
    W = [(torch.randn(C, C) / 8).requires_grad_() for _ in range(3)]
    cases = {"project": (X, s, *W), "compose_mixed": (i, a, t, *W, n0, n1, n2)}

    def staged(name, args, fused):
        return getattr(m, name)(*args, fused=fused)

    def one_call(name, args, fused):
        return getattr(unstaged, name)(*args, fused=fused)

    ways = {"staged": staged, "one call": one_call}

    def outputs(result):
        return result if isinstance(result, tuple) else (result,)

    for name, args in cases.items():
        got = {}
        for way, f in ways.items():
            outs = outputs(f(name, args, False))
            cot = [torch.ones_like(o) for o in outs]
            got[way] = [o.detach() for o in outs] + list(torch.autograd.grad(outs, args, cot))
        for p, q in zip(got["staged"], got["one call"]):
            assert float((p - q).abs().max()) <= 1e-4 * (float(q.abs().max()) or 1.0), name
    print(f"| {n} atoms x {C} channels, float32 | threads | path | pass | one call (ms) | staged (ms) | staged / one call |")
    print("|---|---:|---|---|---:|---:|---:|")
    for th in threads:
        torch.set_num_threads(th)
        for fused in (False, True):
            for name, args in cases.items():
                for way, f in ways.items():  # first calls: host loops built, caches warm
                    outputs(f(name, args, fused))
                best = {}
                for _ in range(R):
                    for way, f in ways.items():
                        with torch.no_grad():
                            t0 = time.perf_counter()
                            f(name, args, fused)
                            best["fwd", way] = min(best.get(("fwd", way), 1e9), time.perf_counter() - t0)
                        t0 = time.perf_counter()
                        outs = outputs(f(name, args, fused))
                        torch.autograd.grad(outs, args, [torch.ones_like(o) for o in outs])
                        best["fwd+bwd", way] = min(best.get(("fwd+bwd", way), 1e9), time.perf_counter() - t0)
                for pas in ("fwd", "fwd+bwd"):
                    one, st = best[pas, "one call"], best[pas, "staged"]
                    print(f"| {name} | {th} | {'fused' if fused else 'planned'} | {pas} | {one * 1e3:.1f} | "
                          f"{st * 1e3:.1f} | {st / one:.2f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
