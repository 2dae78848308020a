"""TensorNet's embedding step alone: the graph diagram ``embed`` of examples/tensornet_graph.diag
against the torch glue of the same recipe (gathers of zd, zs, the scaled edge parts, three
``index_add_``), forward and forward + backward (torch autograd: the generated VJP of the per-edge
diagram against autograd of the glue), CPU float32, the two alternating, best of R. Random edge
lists (E edges on N atoms, C channels); both results are checked against each other first.

    python benchmarks/tensornet_embedding_step.py [N] [E] [R] [THREADS]    # default 1000 34000 5 1
"""
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402
import compiler  # noqa: E402

n, E = (int(a) for a in (sys.argv[1:3] + ["1000", "34000"][len(sys.argv[1:3]):]))
R = int(sys.argv[3]) if len(sys.argv) > 3 else 5
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
C = 64
G = compiler.load(ROOT / "examples" / "tensornet_graph.diag")
torch.manual_seed(0)
dst, src = torch.randint(0, n, (E,)), torch.randint(0, n, (E,))
zd, zs = (torch.randn(n, C, requires_grad=True) for _ in range(2))
proj = torch.randn(E, 3 * C, requires_grad=True)
w0, w1, w2 = proj.view(-1, 3, C).unbind(1)  # views of one (E, 3C) array, as the model's
u = torch.nn.functional.normalize(torch.randn(E, 3), dim=-1).requires_grad_()
y = torch.randn(E, 5, requires_grad=True)
args, leaves = (zd, zs, w0, w1, w2, u, y), (zd, zs, proj, u, y)


def glue(zd, zs, w0, w1, w2, u, y):
    Z = zd.index_select(0, dst) + zs.index_select(0, src)
    fI, fA, fS = w0 * Z, w1 * Z, w2 * Z
    i = fI.new_zeros((n, C)).index_add_(0, dst, fI)
    a = fA.new_zeros((n, C, 3)).index_add_(0, dst, fA[:, :, None] * u[:, None, :])
    t = fS.new_zeros((n, C, 5)).index_add_(0, dst, fS[:, :, None] * y[:, None, :])
    return i, a, t


def graph(zd, zs, w0, w1, w2, u, y):
    return G.embed(zd, zs, w0, w1, w2, u, y, src, dst)


fs = {"glue": glue, "embed": graph}
outs = {k: f(*args) for k, f in fs.items()}
cots = [torch.randn_like(x) for x in outs["glue"]]
for x, z in zip(*outs.values()):
    assert torch.allclose(x, z, rtol=1e-4, atol=1e-4)
for x, z in zip(*(torch.autograd.grad(outs[k], leaves, cots) for k in fs)):
    assert torch.allclose(x, z, rtol=1e-4, atol=1e-3)


def forward(f):
    with torch.no_grad():
        f(*args)


def backward(f):
    torch.autograd.grad(f(*args), leaves, cots)


best = {}
for _ in range(R):
    for mode, run in (("forward", forward), ("forward + backward", backward)):
        for k, f in fs.items():
            s = time.perf_counter(); run(f); best[mode, k] = min(best.get((mode, k), 1e9), time.perf_counter() - s)
print(f"| step ({n} atoms, {E} edges, {torch.get_num_threads()} thread) | glue (ms) | embed (ms) | embed / glue |")
print("|---|---:|---:|---:|")
for mode in ("forward", "forward + backward"):
    g, e = best[mode, "glue"], best[mode, "embed"]
    print(f"| {mode} | {g*1e3:.1f} | {e*1e3:.1f} | {e/g:.2f} |")
