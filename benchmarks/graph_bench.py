"""Graph diagrams on CPU: PaiNN's message (``painn_message`` of examples/gnn.diag) and TensorNet's
message (``tensornet_message``) as emitted by diagc, against the same step hand-written in torch
(index_select, elementwise products, index_add). Float32, torch, 1 and 2 threads, best of 5 with
the contenders alternating (benchmarks/harness.py).

    python benchmarks/graph_bench.py [--atoms 2000] [--neighbours 34] [--channels 64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import compiler  # noqa: E402
from harness import Threads, seconds, timeit  # noqa: E402


def hand_painn(xs, xv, xr, v, ws, wv, wr, u, src, dst):
    n = xs.shape[0]
    ds = xs.new_zeros(xs.shape).index_add(0, dst, ws * xs.index_select(0, src))
    msg = (wv * xv.index_select(0, src))[..., None] * v.index_select(0, src) + (wr * xr.index_select(0, src))[..., None] * u[:, None, :]
    dv = v.new_zeros((n,) + v.shape[1:]).index_add(0, dst, msg)
    return ds, dv


def hand_tensornet(Y, f, src, dst):
    return Y.new_zeros(Y.shape).index_add(0, dst, f[..., None, None] * Y.index_select(0, src))


def hand_embed_vjp(zd, zs, w0, w1, w2, u, y, src, dst, gi, ga, gt):
    """The VJP of TensorNet's embedding step (``embed`` of examples/tensornet_graph.diag: i, a, t =
    sums at dst of w0 Z, w1 Z u, w2 Z y with Z = zd[dst] + zs[src]) written out in torch: the
    cotangents gathered at dst, u's and y's summed over the channels, zd's and zs's index_add-ed."""
    Z = zd.index_select(0, dst) + zs.index_select(0, src)
    Gi, Ga, Gt = gi.index_select(0, dst), ga.index_select(0, dst), gt.index_select(0, dst)
    Gu, Gy = (Ga * u[:, None, :]).sum(-1), (Gt * y[:, None, :]).sum(-1)
    q = w0 * Gi + w1 * Gu + w2 * Gy
    d_zd = zd.new_zeros(zd.shape).index_add(0, dst, q)
    d_zs = zs.new_zeros(zs.shape).index_add(0, src, q)
    d_u = ((w1 * Z)[..., None] * Ga).sum(1)
    d_y = ((w2 * Z)[..., None] * Gt).sum(1)
    return d_zd, d_zs, Gi * Z, Gu * Z, Gy * Z, d_u, d_y


def hand_message_vjp(i, a, t, f0, f1, f2, src, dst, gi, ga, gt):
    """The VJP of TensorNet's interaction message (``message`` of examples/tensornet_graph.diag: mi,
    ma, mt = sums at dst of f0 i, f1 a, f2 t read at src) written out in torch: the cotangents
    gathered at dst, the parts' index_add-ed at src, the radial weights' per edge."""
    Gi, Ga, Gt = gi.index_select(0, dst), ga.index_select(0, dst), gt.index_select(0, dst)
    d_i = i.new_zeros(i.shape).index_add(0, src, f0 * Gi)
    d_a = a.new_zeros(a.shape).index_add(0, src, f1[..., None] * Ga)
    d_t = t.new_zeros(t.shape).index_add(0, src, f2[..., None] * Gt)
    return (d_i, d_a, d_t, Gi * i.index_select(0, src), (Ga * a.index_select(0, src)).sum(-1),
            (Gt * t.index_select(0, src)).sum(-1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atoms", type=int, default=2000)
    parser.add_argument("--neighbours", type=int, default=34)
    parser.add_argument("--channels", type=int, default=64)
    args = parser.parse_args()
    ops = compiler.load(ROOT / "examples" / "gnn.diag")
    N, C = args.atoms, args.channels
    E = N * args.neighbours
    g = torch.Generator().manual_seed(0)
    src = torch.randint(0, N, (E,), generator=g)
    dst = torch.sort(torch.randint(0, N, (E,), generator=g)).values
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    painn = (r(N, C), r(N, C), r(N, C), r(N, C, 3), r(E, C), r(E, C), r(E, C), r(E, 3), src, dst)
    tn = (r(N, C, 3, 3), r(E, C), src, dst)
    for a, b in zip(ops.painn_message(*painn), hand_painn(*painn)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    assert torch.allclose(ops.tensornet_message(*tn), hand_tensornet(*tn), rtol=1e-4, atol=1e-4)
    threads = Threads()
    print(f"{N} atoms, {E} edges, {C} channels, float32, torch {torch.__version__}")
    print("| message | threads | diagc ms | hand-written torch ms | diagc / hand |")
    print("|---|---|---|---|---|")
    for n in (1, 2):
        threads.set(n)
        for name, fn, ref, a in (("painn_message", ops.painn_message, hand_painn, painn),
                                 ("tensornet_message", ops.tensornet_message, hand_tensornet, tn)):
            calls = {"diagc": lambda: fn(*a), "hand": lambda: ref(*a)}
            warm = {k: seconds(f) for k, f in calls.items()}
            best, _ = timeit(calls, warm, 5, 0.2, None)
            print(f"| {name} | {n} | {best['diagc'] * 1e3:.1f} | {best['hand'] * 1e3:.1f} | "
                  f"{best['diagc'] / best['hand']:.2f} |")


if __name__ == "__main__":
    main()
