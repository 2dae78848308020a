"""TensorNet's embedding step alone: the graph diagram ``embed`` of examples/tensornet_graph.diag
against the torch glue of the same recipe (gathers of zd, zs, the scaled edge parts, three
``index_add_``), forward and forward + backward (torch autograd: the generated VJP of the per-edge
diagram against autograd of the glue), CPU float32, the two alternating, best of R. Random edge
lists (E edges on N atoms, C channels); both results are checked against each other first.

    python benchmarks/tensornet_embedding_step.py                 # --atoms 1000 --edges 34000 --repeats 5 --threads 1
    python benchmarks/tensornet_embedding_step.py --atoms 2000 --edges 68000 --repeats 3

``glue_sums`` is the former torch glue's sums (benchmarks/tensornet_embedding_ab.py times the whole
model with it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
C = 64


def glue_sums(n, dst, Z, w0, w1, w2, u, y):
    """The former torch glue of TensorNet's embedding: the per-edge features ``Z`` (E, C) scaled by
    the edge weights ``w0, w1, w2`` (E, C), times 1, the unit vector ``u`` (E, 3) and its P(2) part
    ``y`` (E, 5), summed at the destination atoms ``dst`` (``index_add_``): the parts i (n, C),
    a (n, C, 3), t (n, C, 5)."""
    fI, fA, fS = w0 * Z, w1 * Z, w2 * Z
    i = fI.new_zeros((n, Z.shape[1])).index_add_(0, dst, fI)
    a = fA.new_zeros((n, Z.shape[1], 3)).index_add_(0, dst, fA[:, :, None] * u[:, None, :])
    t = fS.new_zeros((n, Z.shape[1], 5)).index_add_(0, dst, fS[:, :, None] * y[:, None, :])
    return i, a, t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, default=1000)
    ap.add_argument("--edges", type=int, default=34000)
    ap.add_argument("--repeats", type=int, default=5, help="best of this many alternating rounds")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if min(args.atoms, args.edges, args.repeats, args.threads) < 1:
        ap.error("--atoms, --edges, --repeats and --threads must be positive")

    import torch

    sys.path.insert(0, str(ROOT))
    import compiler

    n, E = args.atoms, args.edges
    torch.set_num_threads(args.threads)
    G = compiler.load(ROOT / "examples" / "tensornet_graph.diag")
    torch.manual_seed(0)
    dst, src = torch.randint(0, n, (E,)), torch.randint(0, n, (E,))
    zd, zs = (torch.randn(n, C, requires_grad=True) for _ in range(2))
    proj = torch.randn(E, 3 * C, requires_grad=True)
    w0, w1, w2 = proj.view(-1, 3, C).unbind(1)  # views of one (E, 3C) array, as the model's
    u = torch.nn.functional.normalize(torch.randn(E, 3), dim=-1).requires_grad_()
    y = torch.randn(E, 5, requires_grad=True)
    args_, leaves = (zd, zs, w0, w1, w2, u, y), (zd, zs, proj, u, y)

    def glue(zd, zs, w0, w1, w2, u, y):
        return glue_sums(n, dst, zd.index_select(0, dst) + zs.index_select(0, src), w0, w1, w2, u, y)

    def graph(zd, zs, w0, w1, w2, u, y):
        return G.embed(zd, zs, w0, w1, w2, u, y, src, dst)

    fs = {"glue": glue, "embed": graph}
    outs = {k: f(*args_) for k, f in fs.items()}
    cots = [torch.randn_like(x) for x in outs["glue"]]
    for x, z in zip(*outs.values()):
        if not torch.allclose(x, z, rtol=1e-4, atol=1e-4):
            raise SystemExit("embed and the glue disagree (forward)")
    for x, z in zip(*(torch.autograd.grad(outs[k], leaves, cots) for k in fs)):
        if not torch.allclose(x, z, rtol=1e-4, atol=1e-3):
            raise SystemExit("embed and the glue disagree (backward)")

    def forward(f):
        with torch.no_grad():
            f(*args_)

    def backward(f):
        torch.autograd.grad(f(*args_), leaves, cots)

    best = {}
    for _ in range(args.repeats):
        for mode, run in (("forward", forward), ("forward + backward", backward)):
            for k, f in fs.items():
                s = time.perf_counter()
                run(f)
                best[mode, k] = min(best.get((mode, k), 1e9), time.perf_counter() - s)
    print(f"| step ({n} atoms, {E} edges, {torch.get_num_threads()} thread) | glue (ms) | embed (ms) | embed / glue |")
    print("|---|---:|---:|---:|")
    for mode in ("forward", "forward + backward"):
        g, e = best[mode, "glue"], best[mode, "embed"]
        print(f"| {mode} | {g*1e3:.1f} | {e*1e3:.1f} | {e/g:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
