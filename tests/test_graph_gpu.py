"""Graph diagrams on the GPU path of an emitted module, without a GPU.

* The fused gather - per-edge product - sum-over-edges kernel (compiler/targets/cuda/graph.py) is
  what a graph diagram's function runs on CUDA arrays, forward and VJP, with torch autograd through
  the generated VJP: the module's embedded CUDA source is compiled for the host by g++ (the prelude of
  tests/test_cuda_module.py), a stand-in for cupy hands each launch's arguments to it exactly as the
  kernel's signature says, and the results are compared with the array code (kernels=False).
* An edge list's range is read back from the device once per edge list, not once per call: the
  check is cached on the tensor's memory and version counter, and the cache cannot hide an edit.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import compiler
from test_cuda_module import _EMULATOR_PRELUDE, StandIn, cupy_arrays, host_gpu

ROOT = Path(__file__).resolve().parent.parent
# the examples' message steps (TensorNet's parts; PaiNN's message with a per-edge vector shared by the
# channels), one gathering a per-node vector shared by the channels (its cotangent: summed over the
# channels, then into the nodes) and one with a per-node term; text of its own so that its torch ops
# are this file's
SOURCE = (ROOT / "examples" / "tensornet_graph.diag").read_text() + """
diagram painn_message(xs: scalar[n,c], xv: scalar[n,c], xr: scalar[n,c], v: vec[n,c],
                      ws: scalar[e,c], wv: scalar[e,c], wr: scalar[e,c], u: vec[e],
                      src: edges[e,n], dst: edges[e,n])
    -> (ds: scalar[n,c], dv: vec[n,c]) {
    ds[n,c] = dst[e,n] src[e,m] ws[e,c] xs[m,c]
    dv[n,c,i] = dst[e,n] src[e,m] (wv[e,c] xv[m,c] v[m,c,i] + wr[e,c] xr[m,c] u[e,i])
}

diagram spread(q: vec[n], w: scalar[e,c], src: edges[e,n], dst: edges[e,n]) -> v: vec[n,c] {
    v[n,c,i] = dst[e,n] src[e,m] w[e,c] q[m,i]
}

diagram with_self(v: vec[n,c], f: scalar[e,c], s: scalar[n,c], src: edges[e,n], dst: edges[e,n])
    -> w: vec[n,c] {
    w[n,c,i] = dst[e,n] src[e,m] f[e,c] v[m,c,i] + s[n,c] v[n,c,i]
}
"""
_STATE = {}


def _m():
    if "m" not in _STATE:
        _STATE["m"] = compiler.load_source(SOURCE, "graph_gpu")
    return _STATE["m"]


def _emulator(m, tmp: Path):
    """The module's CUDA source compiled for the host with, per graph kernel symbol, ``run_SYMBOL``:
    every block and thread of the grid in turn (the thread form uses no shared memory and no
    barrier; atomicAdd is a plain add on the host); a block-form kernel's blocks in turn, each
    block's threads as std::threads meeting at barriers (test_cuda_module.py's prelude), shared
    memory filled with NaN bytes first."""
    if ("lib", id(m)) in _STATE:
        return _STATE["lib", id(m)]
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("no g++: the kernels cannot be run on the host")
    # a block-form kernel's threads run at once: diagc_atomic_add is the prelude's atomicAdd (an
    # atomic_ref) on the host too, not the host element functions' plain add
    # (counted: diagc_atomics_taken() returns and resets the count)
    atomic = "#if defined(__CUDA_ARCH__)\n    atomicAdd(p, v);"
    assert m._CUDA_SOURCE.count(atomic) == 1
    counter = ("static std::atomic<long long> diagc_atomics{0};\n"
               'extern "C" long long diagc_atomics_taken() { return diagc_atomics.exchange(0); }\n')
    lines = [_EMULATOR_PRELUDE, counter,
             m._CUDA_SOURCE.replace(atomic, "#if 1\n    diagc_atomics.fetch_add(1);\n    atomicAdd(p, v);")]
    for name in dir(m):
        if not name.endswith("_GRAPH"):
            continue
        cfg = getattr(m, name)
        n_l, n_i, n_o = len(cfg["lists"]), len(cfg["inputs"]), len(cfg["outputs"])
        n_l += cfg["visit"] is not None  # the order of the edges, after the lists
        for dtype, ctype in (("float32", "float"), ("float64", "double")):
            symbol = cfg["symbols"][dtype]
            args = [f"(const long long*)p[{k}]" for k in range(n_l)]
            args += [f"(const {ctype}*)p[{n_l + k}]" for k in range(n_i)]
            args += [f"({ctype}*)p[{n_l + n_i + k}]" for k in range(n_o)]
            # edges, the channel sizes, then the rows' strides of the inputs with rows
            args += [f"tl[{k}]" for k in range(1 + len(cfg["channels"]) + sum(lead for _, lead, _, _ in cfg["inputs"]))]
            if cfg["form"] == "block":
                lines += [f'extern "C" void run_{symbol}(void* const* p, const long long* tl, unsigned gx, unsigned bx_) {{',
                          "    for (unsigned bx = 0; bx < gx; ++bx) { blockIdx = {bx, 0, 0};",
                          "        std::memset(diagc_shared, 0xff, sizeof diagc_shared);",
                          "        std::barrier<> bar(bx_);",
                          "        diagc_barrier = &bar;",
                          "        std::vector<std::barrier<>*> warps;",
                          "        for (unsigned w = 0; w < bx_ / 32; ++w) warps.push_back(diagc_warp_barrier[w] = new std::barrier<>(32));",
                          "        std::vector<std::thread> team;",
                          "        for (unsigned t = 0; t < bx_; ++t) team.emplace_back([=] { threadIdx = {t, 0, 0};",
                          f"            {symbol}({', '.join(args)}); }});",
                          "        for (auto& th : team) th.join();",
                          "        for (auto* w : warps) delete w;", "    }", "}"]
                continue
            lines += [f'extern "C" void run_{symbol}(void* const* p, const long long* tl, unsigned gx, unsigned bx_) {{',
                      "    for (unsigned bx = 0; bx < gx; ++bx) { blockIdx = {bx, 0, 0};",
                      "        for (unsigned t = 0; t < bx_; ++t) { threadIdx = {t, 0, 0};",
                      f"            {symbol}({', '.join(args)}); }} }}", "}"]
    src, so = tmp / "emu_graph.cpp", tmp / "libemu_graph.so"
    src.write_text("\n".join(lines) + "\n")
    run = subprocess.run([cxx, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", str(src), "-o", str(so)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    _STATE["lib", id(m)] = ctypes.CDLL(str(so))
    return _STATE["lib", id(m)]


class GraphStandIn(StandIn):
    """StandIn (test_cuda_module.py) that also runs the fused graph kernels, compiled for the host."""

    def __init__(self, module, lib):
        super().__init__(module)
        self.lib = lib
        self.graphs = {cfg["symbols"][k]: (cfg, k) for cfg in (getattr(module, n) for n in dir(module)
                                                               if n.endswith("_GRAPH")) for k in cfg["symbols"]}

    def launch(self, symbol, grid, block, args, shared_mem):
        if symbol not in self.graphs:
            return super().launch(symbol, grid, block, args, shared_mem)
        cfg, dtype = self.graphs[symbol]
        n_p = len(cfg["lists"]) + (cfg["visit"] is not None) + len(cfg["inputs"]) + len(cfg["outputs"])
        assert len(args) == n_p + 1 + len(cfg["channels"]) + sum(lead for _, lead, _, _ in cfg["inputs"])
        assert shared_mem == cfg["shared_words"] * np.dtype(dtype).itemsize
        assert all(type(a) is np.uint64 for a in args[:n_p]) and all(type(a) is np.int64 for a in args[n_p:])
        tail = [int(a) for a in args[n_p:]]
        runs = -(-tail[0] // cfg["edges_per_thread"])
        elements = int(np.prod(tail[1:1 + len(cfg["channels"])]))
        if cfg["form"] == "block":  # a block owns 128 // min(elements, 128) runs of edges
            assert shared_mem > 0 and grid == (-(-runs // (block[0] // min(elements, block[0]))), 1, 1)
        else:
            assert shared_mem == 0 and grid == (-(-runs * elements // block[0]), 1, 1)
        assert block == (cfg["block"], 1, 1)
        self.launches.append((symbol, grid, block, shared_mem))
        run = getattr(self.lib, f"run_{symbol}")
        run.restype = None
        run((ctypes.c_void_p * n_p)(*[int(a) for a in args[:n_p]]), (ctypes.c_longlong * len(tail))(*tail),
            ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]))


def _install(monkeypatch, tmp_path_factory, m):
    """Module ``m`` with CPU tensors counted as CUDA tensors, kernels run on the host."""
    s = GraphStandIn(m, _emulator(m, tmp_path_factory.mktemp("emu")))
    return host_gpu(m, s.cupy, monkeypatch), s


@pytest.fixture
def gpu(monkeypatch, tmp_path_factory):
    return _install(monkeypatch, tmp_path_factory, _m())


def _graph(N=7, E=41, seed=0, ordered=False):
    """A random graph; ``ordered``: dst sorted (runs of edges into one node, as a neighbour list)."""
    rng = np.random.default_rng(seed)
    src = torch.tensor(rng.integers(0, N, E))
    dst = torch.tensor(rng.integers(0, N - 1, E))  # node N-1 receives nothing
    return rng, src, torch.sort(dst).values if ordered else dst


def _args(m, name, rng, N, E, C, dtype):
    """Random arrays for graph diagram ``name``'s array inputs (per node, per edge)."""
    shapes = {"message": [(N, C), (N, C, 3), (N, C, 5), (E, C), (E, C), (E, C)],
              "embed": [(N, C), (N, C), (E, C), (E, C), (E, C), (E, 3), (E, 5)],
              "spread": [(N, 3), (E, C)],
              "painn_message": [(N, C), (N, C), (N, C), (N, C, 3), (E, C), (E, C), (E, C), (E, 3)],
              "with_self": [(N, C, 3), (E, C), (N, C)]}[name]
    return [torch.tensor(rng.standard_normal(s), dtype=dtype) for s in shapes]


def _close(got, want, tol):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        assert g.shape == w.shape and g.dtype == w.dtype
        assert float((g - w).abs().max()) <= tol * max(1.0, float(w.abs().max()))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("name", ["message", "painn_message"])
@pytest.mark.parametrize("ordered", [False, True])
def test_one_fused_kernel_per_call_matches_the_array_code(gpu, name, dtype, tol, ordered):
    m, s = gpu
    rng, src, dst = _graph(ordered=ordered)
    args = _args(m, name, rng, 7, 41, 3, dtype)
    want = getattr(m, name)(*args, src, dst, kernels=False)
    assert s.launches == []
    got = getattr(m, name)(*args, src, dst)
    _close(got, want, tol)
    kind = "f32" if dtype == torch.float32 else "f64"
    # one launch: the fused kernel, no per-edge kernel and no per-edge array in between
    assert [x[0] for x in s.launches] == [f"diagc_{name}_graph_kernel_{kind}"]
    assert all(float(w.abs().max()) > 0 for w in (want if isinstance(want, tuple) else (want,)))


def _cotangents(name, rng, N, C, dtype):
    shapes = {"message": [(N, C), (N, C, 3), (N, C, 5)], "embed": [(N, C), (N, C, 3), (N, C, 5)],
              "painn_message": [(N, C), (N, C, 3)], "spread": [(N, C, 3)]}[name]
    return [torch.tensor(rng.standard_normal(s), dtype=dtype) for s in shapes]


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("name, C", [("message", 4), ("embed", 3), ("embed", 64), ("embed", 130),
                                     ("painn_message", 5), ("spread", 3), ("spread", 130)])
@pytest.mark.parametrize("ordered", [False, True])
def test_vjp_kernel_matches_the_array_code(gpu, name, C, dtype, tol, ordered):
    """NAME_vjp on CUDA arrays is one launch of its fused kernel, every cotangent equal to the array
    code's. The embedding's u, y and PaiNN's u (per edge, no channel axis) have cotangents summed
    over the channels: the block form, here with a block holding several runs (C = 3, 5: 42 and 25
    runs of 4 or 8 edges a block, their channels' shares summed across warps), two (C = 64) and one
    run whose threads loop over the channels (C = 130 > 128 threads). spread's q (per node, no channel
    axis) has its channel sums added into its nodes."""
    m, s = gpu
    rng, src, dst = _graph(seed=1, ordered=ordered)
    args = _args(m, name, rng, 7, 41, C, dtype)
    cot = _cotangents(name, rng, 7, C, dtype)
    vjp = getattr(m, f"{name}_vjp")
    want = vjp(*args, src, dst, *cot, kernels=False)
    assert s.launches == []
    got = vjp(*args, src, dst, *cot)
    _close(got, want, tol)
    kind = "f32" if dtype == torch.float32 else "f64"
    assert [x[0] for x in s.launches] == [f"diagc_{name}_vjp_graph_kernel_{kind}"]
    assert all(float(w.abs().max()) > 0 for w in want if w is not None)
    cfg = getattr(m, f"_{name}_vjp_GRAPH")
    assert cfg["form"] == ("thread" if name == "message" else "block")
    if cfg["form"] == "block":
        assert s.launches[0][3] == cfg["shared_words"] * (4 if dtype == torch.float32 else 8)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_the_vjp_visits_edges_sorted_by_the_nodes_it_adds_into(gpu, monkeypatch, dtype, tol):
    """message's VJP adds its messages into the senders (src), the nodes its forward gathered from,
    while a neighbour list is sorted by the receivers: the kernel visits the edges in the order of
    a stable sort of src (GRAPH_ORDER), so a thread's run of 8 consecutive edges mostly goes into one
    node. Exactly one atomicAdd per word, channel element and change of node within a run, the
    values the array code's either way; the forward (summing into dst) and embed's VJP (into both
    lists) keep the edges' own order."""
    m, s = gpu
    lib = _emulator(m, None)
    lib.diagc_atomics_taken.restype = ctypes.c_longlong
    assert m._message_vjp_GRAPH["visit"] == 0 and m._message_vjp_GRAPH["form"] == "thread"  # src
    assert m._message_GRAPH["visit"] is None and m._embed_vjp_GRAPH["visit"] is None
    N, E, C = 9, 203, 5
    rng, src, dst = _graph(N=N, E=E, seed=4, ordered=True)
    args = _args(m, "message", rng, N, E, C, dtype)
    cot = _cotangents("message", rng, N, C, dtype)
    want = m.message_vjp(*args, src, dst, *cot, kernels=False)

    def atomics(visited):  # per run of 8 positions: the node changes, plus the last run's flush
        runs = [visited[k:k + 8] for k in range(0, E, 8)]
        return C * 9 * sum(1 + sum(int(a != b) for a, b in zip(r, r[1:])) for r in runs)

    counts = {}
    for order in (True, False):
        monkeypatch.setattr(m, "GRAPH_ORDER", order)
        lib.diagc_atomics_taken()
        got = m.message_vjp(*args, src, dst, *cot)
        counts[order] = lib.diagc_atomics_taken()
        _close(got, want, tol)
    visited = src[torch.sort(src, stable=True)[1]].tolist()
    assert counts == {True: atomics(visited), False: atomics(src.tolist())}
    assert counts[True] * 4 < counts[False]  # 9 nodes, 203 edges: runs into one node, or nearly
    assert [x[0] for x in s.launches] == [f"diagc_message_vjp_graph_kernel_{'f64' if dtype == torch.float64 else 'f32'}"] * 2
    # cupy arrays (tests/fake_cupy.py): the order from cupy's argsort, the same atomics and values
    import fake_cupy

    monkeypatch.setattr(m, "GRAPH_ORDER", True)
    monkeypatch.setattr(m, "_BACKENDS", {k: v for k, v in m._BACKENDS.items() if k != "cupy"})  # this test's cupy
    cp = cupy_arrays(s, monkeypatch)
    got = m.message_vjp(*[cp.asarray(x.numpy()) for x in args], cp.asarray(src.numpy()), cp.asarray(dst.numpy()),
                        *[cp.asarray(x.numpy()) for x in cot])
    assert lib.diagc_atomics_taken() == counts[True]
    _close(tuple(torch.from_numpy(fake_cupy.asnumpy(g)) for g in got[:6]), want[:6], tol)


def test_no_channels_and_no_edges(gpu):
    """C = 0: u's and y's cotangents sum over no channel element (zeros, not memory left as it was);
    E = 0: every cotangent of a per-edge input is empty, the nodes' zero. Nothing is launched."""
    m, s = gpu
    for N, E, C in ((7, 41, 0), (7, 0, 4)):
        rng = np.random.default_rng(3)
        src = torch.tensor(rng.integers(0, N, E), dtype=torch.int64)
        dst = torch.tensor(rng.integers(0, N, E), dtype=torch.int64)
        args = [x + 1 for x in _args(m, "embed", rng, N, E, C, torch.float64)]
        cot = _cotangents("embed", rng, N, C, torch.float64)
        got = m.embed_vjp(*args, src, dst, *cot)
        want = m.embed_vjp(*args, src, dst, *cot, kernels=False)
        assert [None if g is None else tuple(g.shape) for g in got] == [None if w is None else tuple(w.shape)
                                                                         for w in want]
        assert all(g is None or (g == 0).all() for g in got)
        assert all(w is None or (w == 0).all() for w in want)
    assert s.launches == []


def test_the_vjp_docstrings_say_what_runs_fused(gpu):
    m, _ = gpu
    for name in ("message", "embed", "painn_message", "spread"):
        assert "On CUDA arrays: one fused kernel" in getattr(m, f"{name}_vjp").__doc__
    assert "no fused kernel: it has per-node terms" in m.with_self_vjp.__doc__
    shared = compiler.load_source("""group O3
diagram scaled(x: scalar[n,c], W: scalar[c], src: edges[e,n], dst: edges[e,n]) -> y: scalar[n,c] {
    y[n,c] = dst[e,n] src[e,m] W[c] x[m,c]
}
""", "graph_gpu_shared")
    assert hasattr(shared, "_scaled_GRAPH") and not hasattr(shared, "_scaled_vjp_GRAPH")
    assert "no fused kernel: input W is shared by every edge" in shared.scaled_vjp.__doc__


def test_a_wrong_sum_over_the_channels_is_caught(monkeypatch, tmp_path_factory):
    """The comparison above sees a planted bug in the block's sum over the channel elements: lanes
    reading every other share leave u's and y's cotangents wrong, the others right."""
    m = compiler.load_source(SOURCE, "graph_gpu_planted")
    good = "for (int i = lane; i < width; i += 32) v += s["
    assert m._CUDA_SOURCE.count(good) == 3  # embed_vjp's, painn_message_vjp's and spread_vjp's
    monkeypatch.setattr(m, "_CUDA_SOURCE", m._CUDA_SOURCE.replace(good, good.replace("i += 32", "i += 64")))
    m, s = _install(monkeypatch, tmp_path_factory, m)
    rng, src, dst = _graph(seed=1, ordered=True)
    args = _args(m, "embed", rng, 7, 41, 64, torch.float64)
    cot = _cotangents("embed", rng, 7, 64, torch.float64)
    want = m.embed_vjp(*args, src, dst, *cot, kernels=False)
    got = m.embed_vjp(*args, src, dst, *cot)
    assert [x[0] for x in s.launches] == ["diagc_embed_vjp_graph_kernel_f64"]
    _close(got[:5], want[:5], 1e-12)  # d_zd, d_zs, d_w0, d_w1, d_w2: not summed over the channels
    for k in (5, 6):  # d_u, d_y
        with pytest.raises(AssertionError):
            _close(got[k], want[k], 1e-12)


@pytest.mark.parametrize("name", ["message", "painn_message", "embed"])
def test_autograd_through_the_fused_kernel(gpu, name):
    """gradcheck: the forward kernel with the generated VJP as backward (the fused VJP kernel where
    there is one); gradgradcheck: a gradient of that gradient (the differentiable array path)."""
    m, s = gpu
    rng, src, dst = _graph(N=5, E=11, seed=2)
    args = [a.requires_grad_(True) for a in _args(m, name, rng, 5, 11, 2, torch.float64)]
    fn = lambda *x: getattr(m, name)(*x, src, dst)  # noqa: E731
    # atomics into nodes add in whatever order the threads come (on a GPU too): backward is
    # reproducible to rounding only. A block-form VJP's emulated block is 128 std::threads: the
    # Jacobian is checked along random directions (fast_mode) rather than one backward per output
    block = getattr(m, f"_{name}_vjp_GRAPH")["form"] == "block"
    assert torch.autograd.gradcheck(fn, args, nondet_tol=1e-12, fast_mode=block)
    symbols = {x[0] for x in s.launches}
    assert f"diagc_{name}_graph_kernel_f64" in symbols
    assert f"diagc_{name}_vjp_graph_kernel_f64" in symbols
    assert torch.autograd.gradgradcheck(fn, args)
    # a loss through the kernel path and through the array code: the same gradients
    outs = fn(*args)
    loss = sum((o * o).sum() for o in outs)
    grads = torch.autograd.grad(loss, args)
    outs_ref = getattr(m, name)(*args, src, dst, kernels=False)
    grads_ref = torch.autograd.grad(sum((o * o).sum() for o in outs_ref), args)
    _close(tuple(grads), tuple(grads_ref), 1e-12)


def test_strided_and_int32_edge_lists_and_cupy_arrays(gpu, monkeypatch):
    """A strided torch edge list (a column of an (E, 2) array) and int32 lists are handed to the
    kernel as contiguous int64; cupy arrays (tests/fake_cupy.py) run the same kernel."""
    import fake_cupy

    m, s = gpu
    rng, src, dst = _graph(seed=8, ordered=True)
    args = _args(m, "painn_message", rng, 7, 41, 3, torch.float64)
    want = m.painn_message(*args, src, dst, kernels=False)
    pairs = torch.stack([src, dst], 1)  # (E, 2): columns with stride 2
    _close(m.painn_message(*args, pairs[:, 0], pairs[:, 1].int()), want, 1e-12)
    cp = cupy_arrays(s, monkeypatch)
    got = m.painn_message(*[cp.asarray(a.numpy()) for a in args], cp.asarray(src.numpy().astype(np.int32)),
                          cp.asarray(dst.numpy()))
    assert all(type(g).__module__ == "cupy" for g in got)
    _close(tuple(torch.from_numpy(fake_cupy.asnumpy(g)) for g in got), want, 1e-12)
    assert [x[0] for x in s.launches] == ["diagc_painn_message_graph_kernel_f64"] * 2


@pytest.mark.parametrize("where", ["gpu", "host loop"])
def test_rows_of_a_wider_array_are_read_in_place(gpu, monkeypatch, where):
    """Per-edge and per-node inputs whose rows are contiguous but further apart (TensorNet's radial
    weights f0, f1, f2: unbind's views of one (E, 3, C) array; a per-node array's every other row;
    a broadcast row, stride 0) reach the kernel (and its host loop, fused=True on CPU arrays) as
    they are, read at row * stride: no copy, values those of the array code, forward and VJP. Rows
    that are not contiguous (a transposed array, numpy's reversed rows) are copied first."""
    from torch.utils._python_dispatch import TorchDispatchMode

    m, s = gpu
    if where == "host loop":  # CPU arrays, not counted as CUDA arrays: the host loops run (fused=True)
        monkeypatch.setattr(m, "_on_gpu", lambda b, args: False)
    b = m._backend(torch.zeros(1))
    rng, src, dst = _graph(N=7, E=41, seed=9, ordered=True)
    C = 4
    f = torch.tensor(rng.standard_normal((41, 3, C)))
    f0, f1, f2 = f.unbind(1)
    wide = torch.tensor(rng.standard_normal((14, C, 3)))
    i = torch.tensor(rng.standard_normal((7, C)))
    a, t = wide[::2], torch.tensor(rng.standard_normal((1, C, 5))).expand(7, C, 5)
    assert (m._row_stride(b, f0), m._row_stride(b, a), m._row_stride(b, t)) == (3 * C, 6 * C, 0)
    assert m._row_stride(b, f0.t().contiguous().t()) is None
    assert m._row_stride(m._backend(np.zeros(1)), f0.numpy()[::-1]) is None
    cot = _cotangents("message", rng, 7, C, torch.float64)
    plain = [x.contiguous() for x in (i, a, t, f0, f1, f2)]
    want = m.message(*plain, src, dst, kernels=False)
    want_vjp = m.message_vjp(*plain, src, dst, *cot, kernels=False)

    class Copies(TorchDispatchMode):
        seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in ("clone", "copy_", "contiguous"):
                self.seen.append(tuple(args[0].shape))
            return func(*args, **(kwargs or {}))

    with Copies() as copies:
        got = m.message(i, a, t, f0, f1, f2, src, dst, fused=True)
        got_vjp = m.message_vjp(i, a, t, f0, f1, f2, src, dst, *cot, fused=True)
    _close(got, want, 1e-12)
    _close(got_vjp[:6], want_vjp[:6], 1e-12)
    assert copies.seen == []
    transposed = f0.t().contiguous().t()  # rows not contiguous: copied, same values
    with Copies() as copies:
        _close(m.message(i, a, t, transposed, f1, f2, src, dst, fused=True), want, 1e-12)
    assert copies.seen == [(41, C)]
    if where == "host loop":
        assert {"diagc_message_graph_host_f64", "diagc_message_vjp_graph_host_f64"} <= set(m._HOST["functions"])
    launched = [x[0] for x in s.launches]
    assert launched == ([] if where == "host loop" else
                        ["diagc_message_graph_kernel_f64", "diagc_message_vjp_graph_kernel_f64",
                         "diagc_message_graph_kernel_f64"])


def test_per_node_terms_fall_back_with_the_reason(gpu):
    m, s = gpu
    assert not hasattr(m, "_with_self_GRAPH")
    assert "no fused kernel: it has per-node terms" in m.with_self.__doc__
    assert "one fused gather - per-edge product - sum-over-edges kernel" in m.message.__doc__
    rng, src, dst = _graph(seed=3)
    args = _args(m, "with_self", rng, 7, 41, 3, torch.float64)
    _close(m.with_self(*args, src, dst), m.with_self(*args, src, dst, kernels=False), 1e-12)
    assert not any("graph_kernel" in x[0] for x in s.launches)


def test_bad_edge_lists_are_refused_before_the_kernel(gpu):
    m, s = gpu
    rng, src, dst = _graph(seed=4)
    args = _args(m, "message", rng, 7, 41, 3, torch.float64)
    bad = src.clone()
    bad[5] = 7
    with pytest.raises(ValueError, match=r"src holds node 7, outside 0\.\.6 \(n = 7 from i\)"):
        m.message(*args, bad, dst)
    with pytest.raises(ValueError, match="dst has dtype"):
        m.message(*args, src, dst.double())
    assert s.launches == []


# ---------------------------------------------------------------------------------------------
# the range of an edge list is read back once per edge list


def _counting(monkeypatch, m):
    calls = []
    checked = m._range_checked
    monkeypatch.setattr(m, "_range_checked", lambda b, idx, n: (calls.append(idx), checked(b, idx, n)))
    return calls


def test_an_edge_list_is_range_checked_once(monkeypatch):
    m = _m()
    calls = _counting(monkeypatch, m)
    rng, src, dst = _graph(seed=5)
    edge_index = torch.stack([dst, src])
    args = _args(m, "message", rng, 7, 41, 3, torch.float64)
    first = m.message(*args, edge_index[1], edge_index[0])
    assert len(calls) == 2
    for _ in range(3):  # a layer stack: fresh views of the same edge_index
        _close(m.message(*args, edge_index[1], edge_index[0]), first, 0)
    assert len(calls) == 2
    m.message_vjp(*args, edge_index[1], edge_index[0], *first)  # the backward reads the same lists
    assert len(calls) == 2
    # the same memory with fewer nodes is checked again (and refused)
    with pytest.raises(ValueError, match="outside 0..4"):
        m.message(*[a[:5] if a.shape[0] == 7 else a for a in args], edge_index[1], edge_index[0])


@pytest.mark.parametrize("edit", ["index", "view", "base"])
def test_the_cache_cannot_hide_an_edited_edge_list(monkeypatch, edit):
    m = _m()
    rng, src, dst = _graph(seed=6)
    edge_index = torch.stack([dst, src])
    args = _args(m, "message", rng, 7, 41, 3, torch.float64)
    m.message(*args, edge_index[1], edge_index[0])
    if edit == "index":
        edge_index[1, 3] = 9
    elif edit == "view":
        edge_index[1][3] = 9
    else:
        edge_index.add_(2)  # every node number + 2: 8 appears
    with pytest.raises(ValueError, match=r"src holds node (9|8), outside 0\.\.6"):
        m.message(*args, edge_index[1], edge_index[0])


def test_a_new_edge_list_at_freed_memory_is_checked(monkeypatch):
    """A list checked, freed, and a bad one made (possibly at the same address): checked afresh."""
    m = _m()
    calls = _counting(monkeypatch, m)
    rng, src, dst = _graph(seed=7)
    args = _args(m, "message", rng, 7, 41, 3, torch.float64)
    m.message(*args, src.clone(), dst)
    bad = src.clone()
    bad[0] = 11
    with pytest.raises(ValueError, match="src holds node 11"):
        m.message(*args, bad, dst)
    assert len(calls) == 2  # src's first copy and dst; the bad one was refused, never cached


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_nvcc_compiles_the_embedded_graph_kernels(tmp_path):
    """The module's CUDA source with its forward and VJP graph kernels, as NVRTC will see it; the
    embedding's block-form VJP kernel (its channel sums held per edge in registers) spills nothing."""
    import re

    m = compiler.load(ROOT / "examples" / "tensornet_graph.diag")
    for symbol in ("diagc_message_graph_kernel_f32", "diagc_message_vjp_graph_kernel_f64",
                   "diagc_embed_vjp_graph_kernel_f32", "diagc_embed_vjp_graph_kernel_f64"):
        assert f" {symbol}(" in m._CUDA_SOURCE
    (tmp_path / "m.cu").write_text(m._CUDA_SOURCE)
    run = subprocess.run(["nvcc", "-arch=sm_90", "-Xptxas", "-v", "-c", str(tmp_path / "m.cu"), "-o",
                          str(tmp_path / "m.o")], capture_output=True, text=True)
    assert run.returncode == 0 and "warning" not in run.stderr, run.stderr
    for suffix in ("f32", "f64"):
        spills = re.search(rf"Function properties for diagc_embed_vjp_graph_kernel_{suffix}\n\s*(\d+) bytes stack "
                           r"frame, (\d+) bytes spill stores, (\d+) bytes spill loads", run.stderr)
        assert spills is not None and spills.groups() == ("0", "0", "0"), run.stderr


def test_tensornet_message_passing_runs_the_fused_kernels(monkeypatch, tmp_path_factory):
    """examples/tensornet.py with its graph module on the (emulated) GPU path: the embedding's and
    every interaction's message passing are one fused kernel each, features and forces equal to the
    array code's."""
    import sys

    sys.path.insert(0, str(ROOT / "examples"))
    import tensornet

    torch.manual_seed(0)
    model = tensornet.TensorNet(hidden_channels=4, num_layers=2, num_rbf=5, cutoff_upper=3.0, dtype=torch.float64)
    z = torch.tensor([8, 1, 1, 6, 1, 1, 1, 7])
    pos = torch.randn(8, 3, dtype=torch.float64) * 1.1
    batch = torch.zeros(8, dtype=torch.long)

    def run():
        p = pos.clone().requires_grad_(True)
        x = model(z, p, batch)[0]
        (g,) = torch.autograd.grad((x * x).sum(), p)
        return x.detach(), g

    want = run()
    m, s = _install(monkeypatch, tmp_path_factory, tensornet.GRAPH)
    from torch.utils._python_dispatch import TorchDispatchMode

    edges = model.distance(pos, batch)[0].shape[1]
    graph_code = m.message.__code__.co_filename  # the graph module's source name

    class EdgeCopies(TorchDispatchMode):
        """Copies of per-edge arrays made by the graph module's code (its launches' inputs)."""
        seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in ("clone", "copy_") and args[0].dim() and args[0].shape[0] == edges:
                import inspect

                frame = inspect.currentframe()
                while frame is not None and frame.f_code.co_filename != graph_code:
                    frame = frame.f_back
                if frame is not None:
                    self.seen.append((frame.f_code.co_name, tuple(args[0].shape)))
            return func(*args, **(kwargs or {}))

    with EdgeCopies() as copies:
        got = run()
    _close(got, want, 1e-12)
    # the radial weights (unbind's views of one (E, 3, C) array) are read in place, forward and backward
    assert copies.seen == []
    # forward: the embedding's and each interaction's fused kernel; backward: each interaction's
    # fused VJP kernel, and the embedding's (its u, y cotangents summed over the channels in the
    # block): no gather, per-edge kernel or sum in between
    assert [x[0] for x in s.launches] == (["diagc_embed_graph_kernel_f64"] + ["diagc_message_graph_kernel_f64"] * 2
                                          + ["diagc_message_vjp_graph_kernel_f64"] * 2
                                          + ["diagc_embed_vjp_graph_kernel_f64"])


def test_tensornet_on_the_gpu_path_runs_kernels_for_its_3x3_work(monkeypatch, tmp_path_factory):
    """Every module of examples/tensornet.py on the (stand-in) GPU path at once: features and forces
    equal the CPU path's; project and compose_mixed run in stages (compiler.planning.staging): the
    kernels of their elementwise stages (_project_pre, _compose_mixed_post, forward and VJP) around
    plain channel mixing, and neither runs as one call (the module has no one-call code for their
    forwards; their VJPs' own code, array code on the GPU, is not called)."""
    import sys

    sys.path.insert(0, str(ROOT / "examples"))
    import tensornet
    from test_cuda_module import StandIn

    torch.manual_seed(1)
    model = tensornet.TensorNet(hidden_channels=4, num_layers=2, num_rbf=5, cutoff_upper=3.0, dtype=torch.float64)
    z = torch.tensor([8, 1, 1, 6, 1, 1, 7])
    pos = torch.randn(7, 3, dtype=torch.float64) * 1.1
    batch = torch.zeros(7, dtype=torch.long)

    def run():
        p = pos.clone().requires_grad_(True)
        x = model(z, p, batch)[0]
        (g,) = torch.autograd.grad((x * x).sum(), p)
        return x.detach(), g

    want = run()
    _install(monkeypatch, tmp_path_factory, tensornet.GRAPH)
    stand_ins = {}
    for name in ("BASE", "LAYER", "SO3"):
        m = getattr(tensornet, name)
        stand_ins[name] = StandIn(m)
        host_gpu(m, stand_ins[name].cupy, monkeypatch)
    called = []
    real_call = tensornet.LAYER._call
    monkeypatch.setattr(tensornet.LAYER, "_call", lambda spec, *a: called.append(spec[0].__name__) or real_call(spec, *a))
    got = run()
    _close(got, want, 1e-12)
    assert not any(hasattr(tensornet.LAYER, f"_{name}_{part}") for name in ("project", "compose_mixed")
                   for part in ("planned", "SPEC", "KERNEL"))
    one_call = {f"_{name}_planned" for name in ("project_vjp", "compose_mixed_vjp")}
    assert called and not one_call & set(called), sorted(set(called))
    launched = {x[0] for x in stand_ins["LAYER"].launches}
    for fn in ("_project_pre", "_compose_mixed_post", "_project_pre_vjp", "_compose_mixed_post_vjp", "compose"):
        assert f"diagc_{fn}_kernel_f64" in launched, (fn, sorted(launched))
