"""Graphs in the language: edge lists, gathers, sums over edges (compiler/frontend/graph.py, graph_emit.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

import compiler
from compiler.errors import DiagError
from compiler.testing import assert_equivariant

ROOT = Path(__file__).resolve().parent.parent
OPS = compiler.load(ROOT / "examples" / "gnn.diag")
TN_GRAPH = compiler.load(ROOT / "examples" / "tensornet_graph.diag")

SOURCE = """group O3
diagram conv(Y: cart2(0e+1o+2e)[n,c], f: scalar[e,c], s: scalar[n,c], W: weight[c,d],
             src: edges[e,n], dst: edges[e,n]) -> (M: cart2(0e+1o+2e)[n,d], m: vec[e,c]) {
    M[n,d,i,j] = W[c,d] (dst[e,n] src[e,m] f[e,c] Y[m,c,i,j] + dst[e,n] f[e,c] Y[n,c,j,i]
                 + s[n,c] Y[n,c,i,j])
    m[e,c,i] = src[e,p] dst[e,q] eps[i,j,k] Y[p,c,j,k] s[q,c]
}
"""
CONV = compiler.load_source(SOURCE, "conv")


def _graph(N=6, E=15, C=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng, N, E, C, rng.integers(0, N, E), rng.integers(0, N, E)


def reference_conv(Y, f, s, W, src, dst):
    """Edge by edge, independent of diagc."""
    N, C = Y.shape[:2]
    M = np.einsum("cd,ncij->ndij", W, s[:, :, None, None] * Y)
    m = np.zeros((len(src), C, 3))
    eps = np.zeros((3, 3, 3))
    eps[0, 1, 2] = eps[1, 2, 0] = eps[2, 0, 1] = 1
    eps[0, 2, 1] = eps[2, 1, 0] = eps[1, 0, 2] = -1
    for e, (a, b) in enumerate(zip(src, dst)):
        M[b] += np.einsum("cd,cij->dij", W, f[e][:, None, None] * (Y[a] + Y[b].transpose(0, 2, 1)))
        m[e] = np.einsum("ijk,cjk->ci", eps, Y[a]) * s[b][:, None]
    return M, m


def conv_args(seed=0):
    rng, N, E, C, src, dst = _graph(seed=seed)
    return (rng.normal(size=(N, C, 3, 3)), rng.normal(size=(E, C)), rng.normal(size=(N, C)),
            rng.normal(size=(C, 2)), src, dst)


def test_values_numpy_torch_jax_and_exact():
    args = conv_args()
    ref = reference_conv(*args)
    for got in (CONV.conv(*args), [t.numpy() for t in CONV.conv(*(torch.tensor(a) for a in args))]):
        for a, b in zip(got, ref):
            assert np.abs(a - b).max() < 1e-12
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jargs = [jax.numpy.asarray(a) for a in args]
    for fn in (CONV.conv, jax.jit(CONV.conv)):
        for a, b in zip(fn(*jargs), ref):
            assert np.abs(np.asarray(a) - b).max() < 1e-12
    # exact: numpy object arrays of Fractions, the same identity with no rounding
    ints = [np.vectorize(lambda x: Fraction(int(round(4 * x))), otypes=[object])(a) for a in args[:4]]
    exact = CONV.conv(*ints, args[4], args[5])
    ref_exact = reference_conv(*[a.astype(float) for a in ints], args[4], args[5])
    assert exact[0].dtype == object and all(isinstance(x, Fraction) for x in exact[0].flat)
    assert np.array_equal(exact[0].astype(float), ref_exact[0])


def test_the_checker_proves_it_and_refuses_a_wrong_parity():
    verdicts = compiler.check_source(SOURCE)
    assert all(v.ok for v in verdicts)
    lemmas = [l for p in verdicts[0].proofs for l in p.lemmas]
    assert "src: edge list (incidence matrix), no geometric leg: invariant" in lemmas
    bad = SOURCE.replace("m: vec[e,c]", "m: axial[e,c]")
    (v,) = compiler.check_source(bad)
    assert not v.ok and "inversion" in v.error.message


def test_equivariance_of_the_emitted_functions():
    _, N, E, C, src, dst = _graph()
    sizes = {"n": N, "e": E, "c": C, "d": 2}
    assert_equivariant(lambda Y, f, s, W: CONV.conv(Y, f, s, W, src, dst),
                       ["cart2(0e+1o+2e)[n,c]", "scalar[e,c]", "scalar[n,c]", "weight[c,d]"],
                       ["cart2(0e+1o+2e)[n,d]", "vec[e,c]"], batch=(), channel_sizes=sizes)
    assert_equivariant(lambda *a: OPS.painn_message(*a, src, dst),
                       ["scalar[n,c]"] * 3 + ["vec[n,c]"] + ["scalar[e,c]"] * 3 + ["vec[e]"],
                       ["scalar[n,c]", "vec[n,c]"], batch=(), channel_sizes=sizes)
    with pytest.raises(AssertionError):  # the test can fail: a vector output declared scalar-like
        assert_equivariant(lambda *a: OPS.painn_message(*a, src, dst)[1],
                           ["scalar[n,c]"] * 3 + ["vec[n,c]"] + ["scalar[e,c]"] * 3 + ["vec[e]"],
                           ["scalar[n,c,k]"], batch=(), channel_sizes=sizes)


def test_permuting_edges_and_renumbering_nodes():
    Y, f, s, W, src, dst = conv_args(1)
    M, m = CONV.conv(Y, f, s, W, src, dst)
    perm = np.random.default_rng(5).permutation(len(src))
    M2, m2 = CONV.conv(Y, f[perm], s, W, src[perm], dst[perm])
    assert np.abs(M2 - M).max() < 1e-12 and np.abs(m2 - m[perm]).max() < 1e-12
    nodes = np.random.default_rng(6).permutation(len(Y))  # node k becomes node nodes[k]
    inv = np.argsort(nodes)
    M3, _ = CONV.conv(Y[inv], f, s[inv], W, nodes[src], nodes[dst])
    assert np.abs(M3[nodes] - M).max() < 1e-12


def test_vjp_against_autograd_and_gradcheck(monkeypatch):
    args = [torch.tensor(a) for a in conv_args(2)]
    Y, f, s, W = (a.clone().requires_grad_(True) for a in args[:4])
    src, dst = args[4], args[5]
    with monkeypatch.context() as m:  # autograd traced through the gathers and sums, not conv_vjp
        m.setattr(CONV, "EDGE_CHUNK_BYTES", 0)
        M, m = CONV.conv(Y, f, s, W, src, dst)
        assert type(M.grad_fn).__name__ != "_GraphFunctionBackward"
    dM, dm = torch.randn_like(M), torch.randn_like(m)
    auto = torch.autograd.grad((M * dM).sum() + (m * dm).sum(), (Y, f, s, W))
    vjp = CONV.conv_vjp(Y, f, s, W, src, dst, dM, dm)
    assert vjp[4] is None and vjp[5] is None
    for a, b in zip(vjp[:4], auto):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    # the reference's own autograd (independent of diagc's derivative and its gathers)
    ref = reference_conv(*[a.detach().numpy() for a in (Y, f, s, W)], src.numpy(), dst.numpy())
    assert np.abs(M.detach().numpy() - ref[0]).max() < 1e-12
    # numerical checks on a small graph (3 nodes, 4 edges, one channel: a few hundred evaluations)
    rng = np.random.default_rng(3)
    s_src, s_dst = torch.tensor([0, 1, 2, 2]), torch.tensor([1, 1, 0, 2])
    small = [torch.tensor(rng.normal(size=shape)).requires_grad_(True)
             for shape in ((3, 1, 3, 3), (4, 1), (3, 1), (1, 1))]
    fn = lambda *x: CONV.conv(*x, s_src, s_dst)  # noqa: E731
    assert torch.autograd.gradcheck(fn, small)
    assert torch.autograd.gradgradcheck(fn, small)
    vjp_fn = lambda *x: OPS.tensornet_message_vjp(x[0], x[1], s_src, s_dst, x[2])[:2]  # noqa: E731
    Yt = torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    ft = torch.randn(4, 1, dtype=torch.float64, requires_grad=True)
    dMt = torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(vjp_fn, (Yt, ft, dMt))


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_runs_of_edges_give_the_values_of_one_run(monkeypatch, library):
    """The host code takes the edges in runs (EDGE_CHUNK_BYTES); every run's messages are summed
    into the nodes, per-edge outputs stored in their rows, a weight's cotangent summed over the runs:
    the same values as every edge at once (conv has all three, gathers at both lists, a node part)."""
    args = conv_args(4)
    if library == "torch":
        args = [torch.tensor(a) for a in args]
    cots = [np.random.default_rng(8).normal(size=(6, 2, 3, 3)), np.random.default_rng(9).normal(size=(15, 3, 3))]
    if library == "torch":
        cots = [torch.tensor(c) for c in cots]
    monkeypatch.setattr(CONV, "EDGE_CHUNK_BYTES", 0)
    whole, whole_vjp = CONV.conv(*args), CONV.conv_vjp(*args, *cots)
    calls = []
    edge = CONV._conv_edge
    monkeypatch.setattr(CONV, "_conv_edge", lambda *a, **k: calls.append(len(a[0])) or edge(*a, **k))
    # a row of conv's arrays: Y 9 x 3, f 3, s 3, W 2 doubles (280 bytes); 15 edges
    for size, expected in ((1, [1] * 15), (4 * 280, [4, 4, 4, 3]), (15 * 280, [15])):
        monkeypatch.setattr(CONV, "EDGE_CHUNK_BYTES", size)
        calls.clear()
        runs, runs_vjp = CONV.conv(*args), CONV.conv_vjp(*args, *cots)
        assert calls == expected
        for a, b in zip(runs, whole):
            assert np.abs(np.asarray(a) - np.asarray(b)).max() < 1e-12
        for a, b in zip(runs_vjp[:4], whole_vjp[:4]):
            assert a.shape == b.shape and np.abs(np.asarray(a) - np.asarray(b)).max() < 1e-12
    ref = reference_conv(*[np.asarray(a) for a in args])
    assert all(np.abs(np.asarray(a) - b).max() < 1e-12 for a, b in zip(runs, ref))


def test_torch_autograd_of_a_graph_function_is_its_vjp_in_runs(monkeypatch):
    """torch CPU arrays wanting a gradient: one autograd function, forward in runs of edges with no
    gradient recorded, backward conv_vjp (in runs too); equal to autograd traced through the gathers
    and sums; the gradient of the gradient (create_graph) is traced through conv_vjp's array code."""
    args = [torch.tensor(a) for a in conv_args(5)]
    leaves = [a.clone().requires_grad_(True) for a in args[:4]]
    src, dst = args[4], args[5]

    def grads(create_graph=False):
        M, m = CONV.conv(*leaves, src, dst)
        loss = (M.sin()).sum() + (m * m).sum()
        return M, torch.autograd.grad(loss, leaves, create_graph=create_graph)

    monkeypatch.setattr(CONV, "EDGE_CHUNK_BYTES", 0)
    M0, traced = grads()
    assert type(M0.grad_fn).__name__ != "_GraphFunctionBackward"
    second_traced = torch.autograd.grad(sum(g.square().sum() for g in grads(True)[1]), leaves)
    monkeypatch.setattr(CONV, "EDGE_CHUNK_BYTES", 300)
    M1, wrapped = grads()
    assert type(M1.grad_fn).__name__ == "_GraphFunctionBackward"
    second = torch.autograd.grad(sum(g.square().sum() for g in grads(True)[1]), leaves)
    for a, b in zip(wrapped + second, traced + second_traced):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # nothing recorded: no autograd function
        assert CONV.conv(*leaves, src, dst)[0].grad_fn is None


@pytest.mark.parametrize("which, value, message", [
    ("src", np.arange(15, dtype=float) % 6, "src has dtype float64; an edge list holds integer node numbers"),
    ("src", (np.arange(15) % 2).astype(bool), "src has dtype bool"),
    ("dst", np.zeros((15, 1), dtype=int), "dst has shape (15, 1); an edge list is one-dimensional"),
    ("dst", np.zeros(14, dtype=int), "dst has shape (14,); expected (15,), one node per edge, e = 15 from f"),
    ("src", np.r_[np.zeros(14, dtype=int), 6], "src holds node 6, outside 0..5 (n = 6 from Y)"),
    ("dst", np.r_[np.zeros(14, dtype=int), -1], "dst holds node -1, outside 0..5 (n = 6 from Y)"),
])
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_bad_edge_lists(which, value, message, library):
    args = list(conv_args())
    args[4 if which == "src" else 5] = value
    if library == "torch":
        args = [torch.tensor(a) for a in args]
    with pytest.raises(ValueError) as err:
        CONV.conv(*args)
    assert str(err.value).replace("torch.", "").startswith(message)


def test_bad_node_and_edge_arrays():
    Y, f, s, W, src, dst = conv_args()
    with pytest.raises(ValueError, match=r"Y has shape \(1, 6, 3, 3, 3\); expected \(n, c, 3, 3\): arguments of conv"):
        CONV.conv(Y[None], f, s, W, src, dst)
    with pytest.raises(ValueError, match=r"s has shape \(5, 3\); expected \(\.\.\., n, c\) with n = 6 from Y"):
        CONV.conv(Y, f, s[:5], W, src, dst)
    with pytest.raises(ValueError, match=r"W has shape \(3, 2, 1\)"):
        CONV.conv(Y, f, s, W[..., None], src, dst)


def test_out_buffers():
    args = conv_args()
    M, m = CONV.conv(*args)
    out = (np.empty_like(M), np.empty_like(m))
    assert CONV.conv(*args, out=out) is out
    assert np.array_equal(out[0], M) and np.array_equal(out[1], m)


@pytest.mark.parametrize("text, message", [
    ("diagram f(v: vec[c,n], src: edges[e,n]) -> w: vec[n,c] { w[n,c,i] = src[e,n] v[c,n,i] }",
     "'v: vec[c,n]' has the graph axis 'n' after its first channel axis"),
    ("diagram f(v: vec[n,c], src: edges[e,n]) -> w: vec[n,c] { w[n,c,i] = src[e,m] v[m,c,i] }",
     "the sum over edges 'e' has no edge list joining it to the output's node 'n'"),
    ("diagram f(v: vec[n,c], r: scalar[e], src: edges[e,n]) -> w: vec[n,c] { w[n,c,i] = src[e,n] r[e] v[m,c,i] }",
     "node index 'm' is on no edge list"),
    ("diagram f(v: vec[n,c], src: edges[e,n]) -> w: vec[c] { w[c,i] = src[e,n] v[n,c,i] }",
     "outputs of a graph diagram are per node or per edge"),
    ("diagram f(v: vec[n,c], src: edges[e,n]) -> w: vec[n,c] { w[n,c,i] = v[m,c,i] }",
     "node index 'm' is summed over every node"),
    ("diagram f(v: vec[n,c], a: vec[c], src: edges[e,n]) -> w: vec[n,c] { w[n,c,i] = v[n,c,i] + a[c,i] }",
     "a per-node term needs a per-node factor"),
    ("diagram f(v: vec[n,c], src: edges[e,n], b: edges[k,n]) -> w: vec[n,c] { w[n,c,i] = src[e,n] v[n,c,i] }",
     "a diagram has one edge set and one node set"),
    ("diagram f(v: vec[n,c], src: edges[e,n,c]) -> w: vec[n,c] { w[n,c,i] = v[n,c,i] }",
     "'edges' takes two axes"),
])
def test_diagrams_it_refuses_with_a_position(tmp_path, text, message):
    with pytest.raises(DiagError) as err:
        compiler.compile_source(text, "g.diag")
    assert message in str(err.value) and str(err.value).startswith("g.diag:1:")
    path = tmp_path / "g.diag"
    path.write_text(text + "\n")
    run = subprocess.run([sys.executable, "-m", "compiler", "check", str(path)], capture_output=True, text=True,
                         cwd=ROOT)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr


def test_certificate_covers_graph_diagrams(tmp_path):
    src = tmp_path / "conv.diag"
    src.write_text(SOURCE)
    run = lambda *a: subprocess.run([sys.executable, "-m", "compiler", *a], capture_output=True,  # noqa: E731
                                    text=True, cwd=ROOT)
    assert run("prove", str(src), "-o", str(tmp_path / "cert")).returncode == 0
    import json

    cert = json.loads((tmp_path / "cert" / "certificate.json").read_text())
    (claim,) = cert["graphs"]
    assert claim["parts"] == ["_conv_edge", "_conv_node"]
    assert {(g["input"], g["edge_list"]) for g in claim["gathers"]} == {("Y", "src"), ("Y", "dst"), ("s", "dst")}
    assert "_conv_edge" in [d["name"] for d in cert["diagrams"]]
    ok = run("verify", str(tmp_path / "cert"))
    assert ok.returncode == 0, ok.stderr
    claim["gathers"] = claim["gathers"][1:]  # a tampered claim is caught
    (tmp_path / "cert" / "certificate.json").write_text(json.dumps(cert))
    bad = run("verify", str(tmp_path / "cert"))
    assert bad.returncode == 1 and "graph diagrams" in bad.stdout + bad.stderr


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_nvcc_compiles_the_fused_graph_kernels(tmp_path):
    text = compiler.compile_source((ROOT / "examples" / "gnn.diag").read_text(), "gnn.diag", target="cuda")
    for name in ("tensornet_message", "painn_message"):
        assert f"diagc_{name}_graph_kernel_f32" in text and f"diagc_{name}_graph_f64" in text
    (tmp_path / "gnn.cu").write_text(text)
    run = subprocess.run(["nvcc", "-arch=sm_90", "-c", str(tmp_path / "gnn.cu"), "-o", str(tmp_path / "gnn.o")],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "warning" not in run.stderr, run.stderr
    # a per-edge part the kernels cannot express (outputs with different channel axes) is refused cleanly
    with pytest.raises(DiagError, match="the cuda target cannot express it"):
        compiler.compile_source(SOURCE, "conv.diag", target="cuda")


def _graph_harness(cu: Path, kernels) -> str:
    # the element functions only (no host loop, DIAGC_HOST_ONLY naming none); the loops' headers
    # outside the namespace
    lines = ["#include <cstddef>", "#include <cstdlib>", "#include <cstring>", "#include <pthread.h>", "#define DIAGC_HOST_ONLY",
             "namespace f {", f'#include "{cu}"', "}"]
    for gk in kernels:
        n_ch = len(gk.edge.channels)
        outs = list(dict.fromkeys(o.output for o in gk.outs))
        args = ([f"l[{j}]" for j in range(len(gk.lists))] + [f"v[{j}]" for j in range(len(gk.edge.inputs))]
                + [f"o[{j}]" for j in range(len(outs))] + [f"ch[{j}]" for j in range(n_ch)]
                + [f"st[{j}]" for j in range(sum(r.batched for r in gk.rows))])  # the rows' strides
        lines += [f'extern "C" void host_{gk.name}(const long long* const* l, const double* const* v, double* const* o, '
                  "long long edges, const long long* ch, const long long* st) {",
                  "    long long chans = 1;" + "".join(f" chans *= ch[{j}];" for j in range(n_ch)),
                  "    for (long long b = 0; b < edges; ++b)",
                  "        for (long long c = 0; c < chans; ++c)",
                  f"            f::diagc_{gk.name}_graph_element<double>(b, c, {', '.join(args)});",
                  "}"]
    return "\n".join(lines) + "\n"


def test_fused_graph_kernel_arithmetic_on_the_host(tmp_path):
    """The fused gather-product-scatter element function, compiled as host C++ (atomicAdd is a plain
    add there) and called over every (edge, channel), against the numpy module."""
    import ctypes

    from compiler.frontend.graph import split_program
    from compiler.targets.cuda.graph import lower_graph

    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    source = (ROOT / "examples" / "gnn.diag").read_text()
    cu = tmp_path / "gnn.cu"
    cu.write_text(compiler.compile_source(source, "gnn.diag", target="cuda"))
    graphs = split_program(compiler.api.checked_program(source, "gnn.diag"))[1]
    kernels = [lower_graph(g) for g in graphs.values()]
    assert all(k is not None for k in kernels) and "atomicAdd" in cu.read_text()
    (tmp_path / "h.cpp").write_text(_graph_harness(cu, kernels))
    lib = tmp_path / "libgraph.so"
    run = subprocess.run([cxx, "-O1", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
                          str(tmp_path / "h.cpp"), "-o", str(lib)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    host = ctypes.CDLL(str(lib))
    rng, N, E, C, src, dst = _graph(N=7, E=20, C=3, seed=4)
    lists = {"src": src.astype(np.int64), "dst": dst.astype(np.int64)}
    for gk in kernels:
        g = graphs[gk.name]
        types = {t.name: t.type for t in g.diagram.inputs}
        args = {t.name: (lists[t.name] if t.type.family == "edges" else
                         rng.normal(size=(N if t.type.channels[0] == "n" else E,)
                                    + (C,) * (len(t.type.channels) - 1) + t.type.geometric_dims))
                for t in g.diagram.inputs}
        expected = getattr(OPS, gk.name)(*args.values(), num_nodes=N)
        expected = expected if isinstance(expected, tuple) else (expected,)
        node_of = {x.name: x.source for x in g.gathers}
        ins = [np.ascontiguousarray(args[node_of.get(i.name, i.name)]) for i in gk.edge.inputs]
        outs = [np.zeros_like(e) for e in expected]
        ptr = lambda arrays, kind: (kind * len(arrays))(*[a.ctypes.data for a in arrays])  # noqa: E731
        host[f"host_{gk.name}"](ptr([lists[n] for n in gk.lists], ctypes.c_void_p), ptr(ins, ctypes.c_void_p),
                                ptr(outs, ctypes.c_void_p), ctypes.c_longlong(E),
                                (ctypes.c_longlong * 1)(C),
                                (ctypes.c_longlong * len(gk.rows))(*[x[0].size for x, r in zip(ins, gk.rows) if r.batched]))
        assert types  # the diagram's inputs were all given
        for got, want in zip(outs, expected):
            assert np.abs(got - want).max() < 1e-12 and np.abs(want).max() > 1e-3


# ---- per-node outputs summed from per-edge inputs only (TensorNet's embedding): num_nodes= ----

def reference_embedding(fI, fA, fS, r, dst, n):
    """Edge by edge with the exact P(2) table (compiler.math.constants), independent of the planner."""
    from compiler.math.constants import constant_table

    P2 = constant_table("P", (2,)).astype(float)
    C = fI.shape[1]
    i, a, t = np.zeros((n, C)), np.zeros((n, C, 3)), np.zeros((n, C, 5))
    for e, node in enumerate(dst):
        i[node] += fI[e]
        a[node] += fA[e][:, None] * r[e]
        t[node] += fS[e][:, None] * np.einsum("mij,i,j->m", P2, r[e], r[e])
    return i, a, t


def embedding_args(seed=0, N=6, E=15, C=3):
    rng = np.random.default_rng(seed)
    dst = rng.integers(0, N - 1, E)  # node N-1 receives no edge: its parts are zero
    return (rng.normal(size=(E, C)), rng.normal(size=(E, C)), rng.normal(size=(E, C)), rng.normal(size=(E, 3)),
            dst), N


def test_per_node_outputs_from_per_edge_inputs():
    args, N = embedding_args()
    ref = reference_embedding(*args, N)
    got_np = OPS.tensornet_embedding(*args, num_nodes=N)
    got_t = OPS.tensornet_embedding(*(torch.tensor(a) for a in args), num_nodes=torch.tensor(N).item())
    for got in (got_np, [x.numpy() for x in got_t]):
        assert [x.shape for x in got] == [(N, 3), (N, 3, 3), (N, 3, 5)]
        for x, y in zip(got, ref):
            assert np.abs(x - y).max() < 1e-12
        assert not any(np.any(x[N - 1]) for x in got)  # the node without edges
    assert np.abs(ref[2]).max() > 0.1  # the reference is not trivially zero
    _, _, _, _, dst = args
    assert_equivariant(lambda fI, fA, fS, r: OPS.tensornet_embedding(fI, fA, fS, r, dst, num_nodes=N),
                       ["scalar[e,c]"] * 3 + ["vec[e]"], ["scalar[n,c]", "vec[n,c]", "sph(2e)[n,c]"], batch=(),
                       channel_sizes={"n": N, "e": len(dst), "c": 3})
    with pytest.raises(AssertionError):  # the test can fail: the vector part declared scalar-like
        assert_equivariant(lambda fI, fA, fS, r: OPS.tensornet_embedding(fI, fA, fS, r, dst, num_nodes=N)[1],
                           ["scalar[e,c]"] * 3 + ["vec[e]"], ["scalar[n,c,k]"], batch=(),
                           channel_sizes={"n": N, "e": len(dst), "c": 3, "k": 3})


def test_per_node_outputs_from_per_edge_inputs_vjp():
    args, N = embedding_args(1)
    fI, fA, fS, r = (torch.tensor(a).requires_grad_(True) for a in args[:4])
    dst = torch.tensor(args[4])
    outs = OPS.tensornet_embedding(fI, fA, fS, r, dst, num_nodes=N)
    cots = [torch.randn_like(o) for o in outs]
    auto = torch.autograd.grad(sum((o * c).sum() for o, c in zip(outs, cots)), (fI, fA, fS, r))
    vjp = OPS.tensornet_embedding_vjp(fI, fA, fS, r, dst, *cots)  # n from the cotangents
    assert vjp[4] is None
    # i is linear in fI: its cotangent is d_i read at each edge's receiver
    ref_dfI = cots[0].numpy()[args[4]]
    assert np.abs(vjp[0].detach().numpy() - ref_dfI).max() < 1e-12
    for a, b in zip(vjp[:4], auto):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    small = [torch.randn(4, 1, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    small.append(torch.randn(4, 3, dtype=torch.float64, requires_grad=True))
    s_dst = torch.tensor([1, 1, 0, 2])
    fn = lambda *x: OPS.tensornet_embedding(*x, s_dst, num_nodes=4)  # noqa: E731
    assert torch.autograd.gradcheck(fn, small)
    assert torch.autograd.gradgradcheck(fn, small)


def test_num_nodes_errors():
    args, N = embedding_args()
    with pytest.raises(ValueError, match="tensornet_embedding has no per-node array argument: give num_nodes="):
        OPS.tensornet_embedding(*args)
    with pytest.raises(ValueError, match=r"dst holds node 4, outside 0..3 \(n = 4 from num_nodes\)"):
        OPS.tensornet_embedding(*args, num_nodes=4)
    with pytest.raises(TypeError, match="num_nodes is float; the number of nodes is an int"):
        OPS.tensornet_embedding(*args, num_nodes=6.0)
    with pytest.raises(ValueError, match="num_nodes is -1; the number of nodes is not negative"):
        OPS.tensornet_embedding(*args, num_nodes=-1)
    conv = conv_args()
    with pytest.raises(ValueError, match="num_nodes is 7 but Y has n = 6 nodes"):
        CONV.conv(*conv, num_nodes=7)
    M, _ = CONV.conv(*conv, num_nodes=6)  # agreeing: accepted
    assert np.abs(M - reference_conv(*conv)[0]).max() < 1e-12


# ---- functions of invariants inside a graph diagram ----

FN_SOURCE = """group O3
diagram gmsg(x: scalar[n,c], v: vec[n,c], f: scalar[e,c], r: vec[e], src: edges[e,n], dst: edges[e,n],
             phi: fn(1 -> 1)) -> (m: vec[n,c], s: scalar[n,c]) {
    m[n,c,i] = dst[e,n] src[e,m] silu(f[e,c]) v[m,c,i] + dst[e,n] phi(r[e,k] r[e,k])[0] x[n,c] r[e,i]
    s[n,c] = sigmoid(x[n,c]) x[n,c] + dst[e,n] src[e,m] tanh(v[m,c,k] v[m,c,k]) f[e,c]
}
"""
GFN = compiler.load_source(FN_SOURCE, "gmsg")


def phi(z):
    return torch.sin(3 * z) + z * z


def reference_gmsg(x, v, f, r, src, dst):
    """Edge by edge in torch (autograd-able), independent of diagc."""
    m = torch.zeros_like(v)
    s = torch.sigmoid(x) * x
    m = m.index_add(0, dst, torch.nn.functional.silu(f)[:, :, None] * v[src]
                    + phi((r * r).sum(-1, keepdim=True))[:, :, None] * x[dst][:, :, None] * r[:, None, :])
    s = s.index_add(0, dst, torch.tanh((v[src] * v[src]).sum(-1)) * f)
    return m, s


def gmsg_args(seed=0, N=5, E=12, C=2):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N, C, generator=g, dtype=torch.float64), torch.randn(N, C, 3, generator=g, dtype=torch.float64),
            torch.randn(E, C, generator=g, dtype=torch.float64), torch.randn(E, 3, generator=g, dtype=torch.float64),
            torch.randint(0, N, (E,), generator=g), torch.randint(0, N, (E,), generator=g))


def test_functions_inside_a_graph_diagram():
    verdicts = compiler.check_source(FN_SOURCE)
    assert all(v.ok for v in verdicts) and len(verdicts) >= 2  # every stage proved
    args = gmsg_args()
    ref = reference_gmsg(*args)
    got = GFN.gmsg(*args, phi)
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    x, v, f, r, src, dst = args
    sizes = {"n": 5, "e": 12, "c": 2}
    assert_equivariant(lambda x, v, f, r: [t.numpy() for t in GFN.gmsg(*(torch.tensor(a) for a in (x, v, f, r)),
                                                                         src, dst, phi)],
                       ["scalar[n,c]", "vec[n,c]", "scalar[e,c]", "vec[e]"], ["vec[n,c]", "scalar[n,c]"], batch=(),
                       channel_sizes=sizes)
    # derivatives: the chain-rule VJP (graph stage's generated VJP, None for the edge lists) and autograd
    xs = [a.clone().requires_grad_(True) for a in args[:4]]
    outs = reference_gmsg(*xs, src, dst)
    cots = [torch.randn_like(o) for o in outs]
    auto = torch.autograd.grad(sum((o * c).sum() for o, c in zip(outs, cots)), xs)
    vjp = GFN.gmsg_vjp(*args, phi, *cots)
    assert vjp[4] is None and vjp[5] is None
    for a, b in zip(vjp[:4], auto):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)
    small = [a[:3, :1].clone().requires_grad_(True) for a in (x, v)] + \
        [a[:4, :1].clone().requires_grad_(True) if a.dim() == 2 and a.shape[1] != 3 else a[:4].clone().requires_grad_(True)
         for a in (f, r)]
    s_src, s_dst = torch.tensor([0, 1, 2, 2]), torch.tensor([1, 1, 0, 2])
    assert torch.autograd.gradcheck(lambda *a: GFN.gmsg(*a, s_src, s_dst, phi), small)


def test_graph_function_runtime_errors_name_the_users_function():
    """The argument checks of a graph diagram with functions run in its stages (_gmsg_s0, ...) but name
    the function the user called, and its arguments (issue 16)."""
    args = gmsg_args()
    with pytest.raises(ValueError) as info:  # a batch axis: the stages' check (graph arguments have none)
        GFN.gmsg(*(a[None] for a in args[:4]), *args[4:], phi)
    assert "arguments of gmsg have no batch axes" in str(info.value) and "_s" not in str(info.value)
    assert str(info.value).startswith("x has shape (1, 5, 2)")
    cots = [torch.zeros(1, 5, 2, 3, dtype=torch.float64), torch.zeros(1, 5, 2, dtype=torch.float64)]
    with pytest.raises(ValueError) as info:  # its forward stages check, naming gmsg_vjp (not gmsg)
        GFN.gmsg_vjp(*(a[None] for a in args[:4]), *args[4:], phi, *cots)
    assert "arguments of gmsg_vjp have no batch axes" in str(info.value) and "_s" not in str(info.value)
    with pytest.raises(ValueError, match=r"^num_nodes is 7 but x has n = 5 nodes$"):
        GFN.gmsg(*args, phi, num_nodes=7)


EDGE_GATE = """
diagram gate(v: vec[n,c], f: scalar[e,c], src: edges[e,n], dst: edges[e,n]) -> m: vec[n,c] {
    m[n,c,i] = dst[e,n] src[e,m] silu(f[e,c]) v[m,c,i]
}
"""


def test_a_graph_function_whose_first_stage_reads_no_per_node_array_takes_n_from_one():
    """silu(f) runs in a stage of per-edge arrays only: the number of nodes comes from v (a per-node
    argument), also in the VJP, where it once asked for num_nodes=; values against a loop."""
    ops = compiler.load_source(EDGE_GATE, "edge_gate")
    rng = np.random.default_rng(4)
    v, f = rng.normal(size=(4, 2, 3)), rng.normal(size=(5, 2))
    src, dst = np.array([0, 1, 2, 3, 0]), np.array([1, 2, 3, 0, 1])
    want = np.zeros_like(v)
    for k in range(5):
        want[dst[k]] += (f[k] / (1 + np.exp(-f[k])))[:, None] * v[src[k]]
    assert np.allclose(ops.gate(v, f, src, dst), want, atol=1e-14)
    d_v, d_f, _, _ = ops.gate_vjp(v, f, src, dst, np.ones_like(want))
    assert d_v.shape == v.shape and d_f.shape == f.shape
    vt, ft = torch.tensor(v, requires_grad=True), torch.tensor(f, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ops.gate(a, b, torch.tensor(src), torch.tensor(dst)), (vt, ft))
    with pytest.raises(ValueError, match=r"^v has shape \(1, 4, 2, 3\); expected \(n, c, 3\): arguments of gate have no batch"):
        ops.gate(v[None], f, src, dst)
    with pytest.raises(ValueError, match="arguments of gate_vjp have no batch"):
        ops.gate_vjp(v[None], f, src, dst, np.ones_like(want))


def _graph_vjp_calls():
    """(function, its arguments) that are right, per graph diagram VJP: tensornet_graph.diag's
    message_vjp, gnn.diag's tensornet_embedding_vjp (no per-node input) and gmsg_vjp (stages)."""
    rng = np.random.default_rng(0)
    N, E, C = 5, 7, 3
    src, dst = rng.integers(0, N, E), rng.integers(0, N, E)
    msg = [rng.normal(size=s) for s in ((N, C), (N, C, 3), (N, C, 5), (E, C), (E, C), (E, C))]
    emb, _ = embedding_args()
    x, v, f, r, gs, gd = gmsg_args()
    return {"message_vjp": (TN_GRAPH.message_vjp, [*msg, src, dst, np.ones((N, C)), np.ones((N, C, 3)),
                                                  np.ones((N, C, 5))]),
            "tensornet_embedding_vjp": (OPS.tensornet_embedding_vjp, [*emb, np.ones((6, 3)), np.ones((6, 3, 3)),
                                                                      np.ones((6, 3, 5))]),
            "gmsg_vjp": (GFN.gmsg_vjp, [x, v, f, r, gs, gd, phi, torch.ones(5, 2, 3, dtype=torch.float64),
                                        torch.ones(5, 2, dtype=torch.float64)])}


def _batched(a):
    return a[None]


#: (function, argument position, replacement (a function of the argument), keyword arguments, message)
GRAPH_VJP_ERRORS = [
    ("message_vjp", 0, _batched, {}, "i has shape (1, 5, 3); expected (n, c): arguments of message_vjp have no "
                                     "batch axes (the node or edge axis leads)"),
    ("message_vjp", 8, _batched, {}, "d_mi has shape (1, 5, 3); expected (n, c): arguments of message_vjp have no "
                                     "batch axes (the node or edge axis leads)"),
    ("message_vjp", 9, lambda a: a[:, :2], {}, "d_ma has shape (5, 2, 3); expected (..., n, c, 3) with n = 5 from i, "
                                               "c = 3 from i"),
    ("message_vjp", 3, lambda a: a[:4], {}, "f1 has shape (7, 3); expected (..., e, c) with e = 4 from f0, c = 3 from i"),
    ("message_vjp", 6, lambda a: a + 5, {}, "src holds node 9, outside 0..4 (n = 5 from i)"),
    ("message_vjp", 7, lambda a: a[:3], {}, "dst has shape (3,); expected (7,), one node per edge, e = 7 from f0"),
    ("message_vjp", 0, lambda a: a, {"num_nodes": 9}, "num_nodes is 9 but i has n = 5 nodes"),
    ("tensornet_embedding_vjp", 5, _batched, {}, "d_i has shape (1, 6, 3); expected (n, c): arguments of "
                                                 "tensornet_embedding_vjp have no batch axes (the node or edge axis leads)"),
    ("tensornet_embedding_vjp", 0, lambda a: a, {"num_nodes": 4}, "num_nodes is 4 but d_i has n = 6 nodes"),
    ("tensornet_embedding_vjp", 4, lambda a: a.astype(float), {},
     "dst has dtype float64; an edge list holds integer node numbers"),
    ("gmsg_vjp", 0, _batched, {}, "x has shape (1, 5, 2); expected (n, c): arguments of gmsg_vjp have no batch axes "
                                  "(the node or edge axis leads)"),
    ("gmsg_vjp", 6, lambda a: 3.0, {}, "gmsg_vjp: argument 'phi' (fn(1 -> 1)) must be a callable of the array library "
                                       "(a function or an nn.Module); got float"),
    ("gmsg_vjp", 6, lambda a: (lambda z: z[..., :0]), {},
     "gmsg_vjp: function argument 'phi' (fn(1 -> 1)) returned shape (12, 0); expected (12, 1) (its 1 arguments are "
     "stacked on the last axis of its input, shape (12, 1))"),
    ("gmsg_vjp", 7, lambda a: a[:, :1], {}, "d_m has shape (5, 1, 3); expected (..., n, c, 3) with n = 5 from x, "
                                            "c = 2 from x"),
    ("gmsg_vjp", 4, lambda a: a - 1 - a.max(), {}, "src holds node -"),
]


@pytest.mark.parametrize("name, k, change, options, message", GRAPH_VJP_ERRORS,
                         ids=[f"{r[0]}-{r[4].split()[0]}-{i}" for i, r in enumerate(GRAPH_VJP_ERRORS)])
def test_graph_vjp_argument_errors_name_what_the_user_called(name, k, change, options, message):
    """A graph diagram's NAME_vjp refuses a bad argument before computing, with one message that names
    the argument (as the user wrote it) and, where a message names a function, NAME_vjp: never the
    forward NAME, a stage or a per-edge part."""
    fn, args = _graph_vjp_calls()[name]
    fn(*args)  # the arguments as given are right
    args[k] = change(args[k])
    with pytest.raises((ValueError, TypeError)) as info:
        fn(*args, **options)
    text = str(info.value)
    assert text.startswith(message), text
    assert not re.search(r"\b_\w|\w_(edge|node|s\d+)\b", text), text  # no stage's or part's name
    forward = name[:-len("_vjp")]
    assert not re.search(rf"\b{forward}\b", text), text  # a function named is the VJP itself


def test_graph_vjp_takes_numpy_and_torch_arguments_together():
    """numpy arrays beside a torch cotangent: torch throughout (the converted first argument gives the
    others their dtype and device), the same values as numpy alone; a plain diagram's VJP likewise."""
    fn, args = _graph_vjp_calls()["message_vjp"]
    want = fn(*args)
    got = fn(*args[:8], torch.tensor(args[8]), *args[9:])
    for g, w in zip(got, want):
        assert (g is None and w is None) or (isinstance(g, torch.Tensor) and np.allclose(g.numpy(), w, atol=1e-12))
    products = compiler.load(ROOT / "diagrams" / "products.diag")
    a, b = np.ones((4, 3)), np.arange(12.0).reshape(4, 3)
    da, db = products.dot_vjp(a, b, torch.full((4,), 2.0, dtype=torch.float64))
    assert torch.equal(da, torch.tensor(2 * b)) and torch.equal(db, torch.tensor(2 * a))


EMB_FN = compiler.load_source("""group O3
diagram emb(f: scalar[e,c], r: vec[e], dst: edges[e,n]) -> (s: scalar[n,c], t: vec[n,c]) {
    s[n,c] = dst[e,n] silu(f[e,c])
    t[n,c,i] = dst[e,n] tanh(f[e,c] r[e,k] r[e,k]) r[e,i]
}
""", "emb")


def reference_emb(f, r, dst, N):
    """Edge by edge in torch, independent of diagc."""
    s = torch.zeros(N, f.shape[1], dtype=f.dtype).index_add(0, dst, torch.nn.functional.silu(f))
    t = torch.zeros(N, f.shape[1], 3, dtype=f.dtype).index_add(
        0, dst, torch.tanh(f * (r * r).sum(-1, keepdim=True))[:, :, None] * r[:, None, :])
    return s, t


def test_graph_function_without_per_node_input_takes_num_nodes():
    """No argument is per node, so the number of nodes comes from num_nodes=, passed through the
    public function (and its VJP) to the graph stages; without it, one message naming 'emb'."""
    g = torch.Generator().manual_seed(3)
    E, N, C = 11, 6, 2
    f, r = torch.randn(E, C, generator=g, dtype=torch.float64), torch.randn(E, 3, generator=g, dtype=torch.float64)
    dst = torch.tensor([0, 2, 2, 3, 0, 1, 3, 3, 2, 0, 1])  # node 4 and 5 reached by no edge: zeros
    with pytest.raises(ValueError) as info:
        EMB_FN.emb(f, r, dst)
    assert str(info.value) == "emb has no per-node array argument: give num_nodes=, the number of nodes"
    got = EMB_FN.emb(f, r, dst, num_nodes=N)
    ref = reference_emb(f, r, dst, N)
    for a, b in zip(got, ref):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=1e-12)
    assert float(got[0][4:].abs().max()) == 0.0
    with pytest.raises(ValueError, match=r"^dst holds node 3, outside 0..2 \(n = 3 from num_nodes\)$"):
        EMB_FN.emb(f, r, dst, num_nodes=3)
    # the VJP takes it too, and agrees with torch autograd of the reference
    xs = [a.clone().requires_grad_(True) for a in (f, r)]
    outs = reference_emb(*xs, dst, N)
    cots = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in outs]
    auto = torch.autograd.grad(sum((o * c).sum() for o, c in zip(outs, cots)), xs)
    df, dr, ddst = EMB_FN.emb_vjp(f, r, dst, *cots, num_nodes=N)
    assert ddst is None
    for a, b in zip((df, dr), auto):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)
    assert torch.autograd.gradcheck(lambda f, r: EMB_FN.emb(f, r, dst, num_nodes=N),
                                    [a[:, :1].clone().requires_grad_(True) if a.shape[1] != 3 else a.clone().requires_grad_(True)
                                     for a in (f, r)])


def test_a_graph_function_argument_must_be_invariant(tmp_path):
    text = ("group O3\ndiagram g(v: vec[n,c], src: edges[e,n], dst: edges[e,n]) -> w: vec[n,c] {\n"
            "    w[n,c,i] = dst[e,n] src[e,m] silu(v[m,c,i]) v[m,c,i]\n}\n")
    with pytest.raises(DiagError, match="the argument of silu, 'v\\[m,c,i\\]', has rank 1"):
        compiler.compile_source(text, "g.diag")
    path = tmp_path / "g.diag"
    path.write_text(text)
    run = subprocess.run([sys.executable, "-m", "compiler", "check", str(path)], capture_output=True, text=True,
                         cwd=ROOT)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert f"{path}:3:" in run.stderr and "the argument of silu" in run.stderr and "rank 1" in run.stderr


def test_certificate_of_a_graph_diagram_with_functions(tmp_path):
    src = tmp_path / "gmsg.diag"
    src.write_text(FN_SOURCE)
    run = lambda *a: subprocess.run([sys.executable, "-m", "compiler", *a], capture_output=True,  # noqa: E731
                                    text=True, cwd=ROOT)
    proved = run("prove", str(src), "-o", str(tmp_path / "cert"))
    assert proved.returncode == 0, proved.stderr
    import json

    cert = json.loads((tmp_path / "cert" / "certificate.json").read_text())
    assert [c["name"] for c in cert["graphs"]] == ["_gmsg_s0", "_gmsg_s1"]  # both stages touch the graph
    (fn,) = cert["functions"]
    assert [s.get("apply") for s in fn["steps"] if "apply" in s] == ["silu", "phi", "sigmoid", "tanh"]
    ok = run("verify", str(tmp_path / "cert"))
    assert ok.returncode == 0, ok.stderr


def test_embedding_step_benchmark_glue_agrees_with_embed(capsys):
    """benchmarks/tensornet_embedding_step.py at a tiny size: its one copy of the former torch glue
    (``glue_sums``, also benchmarks/tensornet_embedding_ab.py's) and ``embed`` of
    examples/tensornet_graph.diag agree forward and backward (it exits otherwise), then one table."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import tensornet_embedding_step

    threads = torch.get_num_threads()
    try:
        assert tensornet_embedding_step.main(["--atoms", "20", "--edges", "90", "--repeats", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("| step (20 atoms, 90 edges") and [r.split("|")[1].strip() for r in rows[2:]] == [
        "forward", "forward + backward"]
    with pytest.raises(SystemExit):
        tensornet_embedding_step.main(["--edges", "0"])
