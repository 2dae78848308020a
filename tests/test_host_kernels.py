"""The kernels' host loops: ``fused=True`` on CPU arrays (numpy, torch on the CPU).

A module with kernels carries, in its embedded C++/CUDA source, a host loop per elementwise kernel
(``diagc_NAME_host_f32/64``: every (batch, channel) element through the same ``__host__
__device__`` element function the GPU kernel calls) and per graph kernel (every (edge, channel
element) gathered, computed and added into its node in one pass). ``fused=True`` on CPU arrays
builds them with the C++ compiler at first use (one shared library per loop, cached on disk) and
runs them. Channel mixing and its derivatives have host loops too (a register-tiled mixing row per
batch row, weight cotangents as rank-K updates summed over the batch), used where every weight has
no batch axes. Checked here against the array code of the same module (``kernels=False``) for
every elementwise and mixing kernel of every file in diagrams/ (forward, VJP, second order), for
the graph functions in both forms, through torch autograd (gradcheck and gradgradcheck), with
broadcast and non-contiguous inputs, on several threads, and what happens without a compiler or
when the build fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import compiler
from conftest import ROOT

torch = pytest.importorskip("torch")

_MODULES = {}


def _module(stem: str, staging: bool = True):
    if (stem, staging) not in _MODULES:
        path = ROOT / ("examples" if stem == "tensornet_graph" else "diagrams") / f"{stem}.diag"
        _MODULES[stem, staging] = compiler.load(path, staging=staging)
    return _MODULES[stem, staging]


def _needs_compiler():
    if _module("products")._host_compiler() is None:
        pytest.skip("no C++ compiler (g++, c++ or CXX): the host loops cannot be built")


def _every_kernel(kinds):
    """(file, kernel, staging) for every kernel of these kinds of every file in diagrams/: its module's,
    and those only its module without stages has (a staged diagram's own one-call kernel)."""
    params = []
    for stem in sorted(p.stem for p in (ROOT / "diagrams").glob("*.diag")):
        staged = {s[5]["name"] for s in _module(stem)._KERNEL_SPECS}
        for staging in (True, False):
            params += [pytest.param(stem, s[5]["name"], staging,
                                    id=f"{stem}.{s[5]['name']}" + ("" if staging else ".unstaged"))
                       for s in _module(stem, staging)._KERNEL_SPECS
                       if s[5]["kind"] in kinds and (staging or s[5]["name"] not in staged)]
    return params


def _every_elementwise_kernel():
    return _every_kernel(("elementwise",))


def _every_mixing_kernel():
    return _every_kernel(("mixing", "mixing_vjp"))


def _arrays(cfg, rng, batch, channels, xp="numpy", dtype=np.float64, unbatched=()):
    sizes = {}
    out = []
    for k, (_, chans, dims) in enumerate(cfg["inputs"]):
        shape = (() if k in unbatched else tuple(batch)) + tuple(c if isinstance(c, int) else sizes.setdefault(c, channels + len(sizes))
                                     for c in chans) + tuple(dims)
        x = rng.standard_normal(shape).astype(dtype)
        out.append(torch.from_numpy(x) if xp == "torch" else x)
    return out


def _same(got, want, tol):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = np.asarray(g.detach() if hasattr(g, "detach") else g), np.asarray(w.detach() if hasattr(w, "detach") else w)
        assert g.shape == w.shape and g.dtype == w.dtype
        assert float(np.abs(g - w).max(initial=0)) <= tol * max(1.0, float(np.abs(w).max(initial=0)))


@pytest.mark.parametrize("stem, name, staging", _every_elementwise_kernel())
def test_host_loops_match_the_array_code(stem, name, staging):
    """Every elementwise kernel's host loop (forward, VJP, second order), float64 to 1e-12 on numpy
    at a batch of 37 and at a (3, 3) batch with 40-odd channels per axis (channel axes of different
    sizes: the index arithmetic of broadcast views and summed rows), float32 to 1e-5 on torch; the
    loop was loaded (no silent fallback to the array code)."""
    _needs_compiler()
    m = _module(stem, staging)
    cfg = getattr(m, f"_{name}_KERNEL")
    fn = getattr(m, name)
    rng = np.random.default_rng(len(stem) * 31 + len(name))
    for xp, dtype, tol, batch, channels in (("numpy", np.float64, 1e-12, (37,), 3),
                                            ("numpy", np.float64, 1e-12, (3, 3), 40),
                                            ("torch", np.float32, 1e-5, (37,), 5)):
        args = _arrays(cfg, rng, batch, channels, xp, dtype)
        _same(fn(*args, fused=True), fn(*args, kernels=False), tol)
    assert {cfg["host"]["float64"], cfg["host"]["float32"]} <= set(m._HOST["functions"])


def test_every_file_has_mixing_loops():
    """The mixing kernels the test below covers: tensornet's mix_skew with both derivatives, and
    linear.diag's (several terms, transposed and traced inputs; linear_cart2's second order has 54
    polynomial components a channel, more than a GPU mixing kernel stages: a host loop's part is not
    limited by shared memory; linear_cart2 itself is staged, its one-call loop that of the module
    without stages)."""
    found = {p.values[1] for p in _every_mixing_kernel()}
    assert {"mix_skew", "mix_skew_vjp", "mix_skew_vjp_vjp", "mix", "mix_vjp", "mix_vjp_vjp", "linear_cart2",
            "linear_cart2_vjp", "linear_cart2_vjp_vjp"} <= found


@pytest.mark.parametrize("stem, name, staging", _every_mixing_kernel())
def test_mixing_host_loops_match_the_array_code(stem, name, staging):
    """Every channel-mixing kernel's host loop (forward, VJP, second order) with weights without batch
    axes: float64 to 1e-12 on numpy at a batch of 37 with 3-4 channels (narrower than a vector: the
    scalar tails) and at a (3, 3) batch with 40-41 channels (whole vectors and tails), float32 to
    1e-5 on torch; the loop was loaded. Weights with batch axes (one per row) run the array code,
    still right."""
    _needs_compiler()
    m = _module(stem, staging)
    cfg = getattr(m, f"_{name}_KERNEL")
    spec = getattr(m, f"_{name}_SPEC")  # as one call (a staged diagram's NAME_vjp without out= runs its stages')

    def fn(*args, fused=False, kernels=True):
        return m._call(spec, tuple(args), None, fused, kernels)
    rng = np.random.default_rng(len(stem) * 17 + len(name))
    weights = cfg["unbatched"]
    assert weights
    for xp, dtype, tol, batch, channels in (("numpy", np.float64, 1e-12, (37,), 3),
                                            ("numpy", np.float64, 1e-12, (3, 3), 40),
                                            ("torch", np.float32, 1e-5, (37,), 5)):
        args = _arrays(cfg, rng, batch, channels, xp, dtype, unbatched=weights)
        _same(fn(*args, fused=True), fn(*args, kernels=False), tol)
    assert {cfg["host"]["float64"], cfg["host"]["float32"]} <= set(m._HOST["functions"])
    args = _arrays(cfg, rng, (4,), 3)  # batched weights: not the host loop's case
    assert not m._use_kernel(m._backend(*args), spec, tuple(args), True)
    _same(fn(*args, fused=True), fn(*args, kernels=False), 1e-12)


def test_mixing_loops_threaded_and_broadcast():
    """mix_skew and its derivatives past the serial threshold on 1, 2 and 3 threads (the weight
    cotangent's per-thread sums added), an input broadcast over the batch (its cotangent summed to
    it), and an empty batch (the weight cotangent zero)."""
    _needs_compiler()
    m = _module("tensornet")
    rng = np.random.default_rng(8)
    A, dB, ddA = (torch.from_numpy(rng.standard_normal((301, 24, 3, 3))) for _ in range(3))
    W, ddW = (torch.from_numpy(rng.standard_normal((24, 24))) for _ in range(2))
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            _same(m.mix_skew(A, W, fused=True), m.mix_skew(A, W, kernels=False), 1e-12)
            _same(m.mix_skew_vjp(A, W, dB, fused=True), m.mix_skew_vjp(A, W, dB, kernels=False), 1e-12)
            _same(m.mix_skew_vjp_vjp(A, W, dB, ddA, ddW, fused=True),
                  m.mix_skew_vjp_vjp(A, W, dB, ddA, ddW, kernels=False), 1e-12)
    finally:
        torch.set_num_threads(before)
    _same(m.mix_skew_vjp(A[:1], W, dB, fused=True), m.mix_skew_vjp(A[:1], W, dB, kernels=False), 1e-12)
    empty = m.mix_skew_vjp(A[:0], W, dB[:0], fused=True)
    assert empty[0].shape == (0, 24, 3, 3) and float(empty[1].abs().max()) == 0.0
    assert "diagc_mix_skew_vjp_vjp_host_f64" in m._HOST["functions"]


def test_gradients_through_the_mixing_loops():
    """torch autograd over fused=True mixing: forward and backward host loops (NAME_vjp's), double
    backward through the differentiable array code."""
    _needs_compiler()
    m = _module("tensornet")
    rng = np.random.default_rng(9)
    args = (torch.from_numpy(rng.standard_normal((3, 4, 3, 3))).requires_grad_(),
            torch.from_numpy(rng.standard_normal((4, 5))).requires_grad_())
    assert torch.autograd.gradcheck(lambda *xs: m.mix_skew(*xs, fused=True), args)
    assert torch.autograd.gradgradcheck(lambda *xs: m.mix_skew(*xs, fused=True), args)
    assert {"diagc_mix_skew_host_f64", "diagc_mix_skew_vjp_host_f64"} <= set(m._HOST["functions"])


def test_broadcast_non_contiguous_and_threaded():
    """Inputs broadcast over the batch (batch flag 0), over some batch axes (copied), transposed
    views (copied), a channel-less input read per element; and a call past the serial threshold,
    split among threads at whole batch rows (a summed row is one thread's)."""
    _needs_compiler()
    m = _module("tensornet")
    rng = np.random.default_rng(5)
    M, Y = (rng.standard_normal((7, 5, 3, 3)) for _ in range(2))
    _same(m.matmul_o3(M[:1], Y, fused=True), m.matmul_o3(M[:1], Y), 1e-12)
    _same(m.matmul_o3(M.transpose(0, 1, 3, 2), Y, fused=True), m.matmul_o3(M.transpose(0, 1, 3, 2), Y), 1e-12)
    B = rng.standard_normal((2, 1, 5, 3, 3))
    Z = rng.standard_normal((2, 4, 5, 3, 3))
    _same(m.matmul_o3(B, Z, fused=True), m.matmul_o3(B, Z), 1e-12)
    r = rng.standard_normal((7, 3))
    f = [rng.standard_normal((7, 5)) for _ in range(3)]
    _same(m.edge_tensor(r, *f, fused=True), m.edge_tensor(r, *f), 1e-12)
    layer = _module("tensornet_layer")
    args = _arrays(layer._residual_vjp_KERNEL, rng, (3000,), 16)  # 48,000 elements, rows summed over c
    before = torch.get_num_threads()
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        try:
            targs = [torch.from_numpy(a) for a in args]
            _same(layer.residual_vjp(*targs, fused=True), layer.residual_vjp(*targs, kernels=False), 1e-12)
        finally:
            torch.set_num_threads(before)


def test_gradients_through_the_host_loops():
    """torch autograd over fused=True: the forward's host loop, the backward NAME_vjp's (loaded beside
    it), the double backward through the differentiable array code."""
    _needs_compiler()
    m = _module("tensornet")
    rng = np.random.default_rng(6)
    args = tuple(torch.from_numpy(a).requires_grad_() for a in _arrays(m._matmul_o3_KERNEL, rng, (2,), 2))
    assert torch.autograd.gradcheck(lambda *xs: m.matmul_o3(*xs, fused=True), args)
    assert torch.autograd.gradgradcheck(lambda *xs: m.matmul_o3(*xs, fused=True), args)
    assert {"diagc_matmul_o3_host_f64", "diagc_matmul_o3_vjp_host_f64"} <= set(m._HOST["functions"])


def test_a_vjp_loop_builds_while_its_forward_runs(monkeypatch, tmp_path):
    """Under autograd the forward's loop is built and waited for; its VJP's build starts beside it and
    is waited for only by the backward (elementwise and graph functions alike)."""
    _needs_compiler()
    monkeypatch.setenv("DIAGC_CACHE", str(tmp_path))
    m = _fresh("later")
    rng = np.random.default_rng(14)
    args = tuple(torch.from_numpy(a).requires_grad_() for a in _arrays(m._cross_KERNEL, rng, (6,), 3))
    got = m.cross(*args, fused=True)
    assert set(m._HOST["functions"]) == {"diagc_cross_host_f64"}
    assert set(m._HOST["building"]) == {"diagc_cross_vjp_host_f64"}
    got.backward(torch.ones_like(got))
    assert set(m._HOST["functions"]) == {"diagc_cross_host_f64", "diagc_cross_vjp_host_f64"}
    assert not m._HOST["building"]
    want = [torch.autograd.grad(m.cross(*args, kernels=False).sum(), a)[0] for a in args]
    _same(tuple(a.grad for a in args), tuple(want), 1e-12)
    g = compiler.load_source((ROOT / "examples" / "tensornet_graph.diag").read_text(), "diagc_test_host_later_graph")
    arrays, lists = _graph_inputs(rng)
    message = [torch.from_numpy(x).requires_grad_() for x in arrays["message"]]
    g.message(*message, *(torch.from_numpy(x) for x in lists), fused=True)
    assert set(g._HOST["building"]) == {"diagc_message_vjp_graph_host_f64"}


def test_a_forked_child_leaves_its_parents_builds_alone(monkeypatch, tmp_path):
    """A child made by fork() while a build runs (a data-loader worker) neither waits for nor stops
    its parent's builds: it sees none of its own, starts its own, and the parent's stays its."""
    _needs_compiler()
    monkeypatch.setenv("DIAGC_CACHE", str(tmp_path))
    m = _fresh("fork")
    args = tuple(torch.from_numpy(a).requires_grad_()
                 for a in _arrays(m._cross_KERNEL, np.random.default_rng(15), (6,), 3))
    m.cross(*args, fused=True)
    parents = m._host_jobs()
    assert set(parents) == {"diagc_cross_vjp_host_f64"}
    pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: pid + 1)  # as seen from the child
    assert m._host_jobs() == {}
    m._host_abandon()  # the child's exit: nothing of the parent's is stopped
    assert parents["diagc_cross_vjp_host_f64"][2].poll() in (None, 0)
    monkeypatch.setattr(os, "getpid", lambda: pid)
    m._HOST["pid"], m._HOST["building"] = pid, parents  # back in the parent
    m._host_finish("diagc_cross_vjp_host_f64")
    assert any((tmp_path / "host").rglob("diagc_cross_vjp_host_f64.so"))


def _slow_vjp_compiler(tmp_path):
    """A C++ compiler whose VJP builds never finish (they sleep), its other builds the real compiler's."""
    real = _module("products")._host_compiler()
    wrapper = tmp_path / "cxx-slow-vjp"
    wrapper.write_text(f'#!/bin/sh\ncase "$*" in *_vjp_*) exec sleep 600;; esac\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def test_builds_never_waited_for_are_stopped_at_exit(monkeypatch, tmp_path):
    """A process that exits with a VJP's build still running (no backward came) stops it and leaves
    no partial file in the cache; the forward's library stays. A partial file left by a process that
    is gone (killed mid-build) is removed by the next process's first build."""
    _needs_compiler()
    script = (
        "import sys, numpy as np, torch, compiler\n"
        f"m = compiler.load_source(open({str(ROOT / 'diagrams' / 'products.diag')!r}).read(), 'diagc_test_host_exit')\n"
        "x = [torch.from_numpy(np.random.default_rng(0).standard_normal((4, 2, 3))).requires_grad_() for _ in range(2)]\n"
        "m.cross(*x, fused=True)\n"
        "assert 'diagc_cross_vjp_host_f64' in m._HOST['building']\n"
    )
    monkeypatch.setenv("DIAGC_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(_slow_vjp_compiler(tmp_path)))
    m = _fresh("exit")  # the same source as the script's module: the same cache folder
    m._host_compiler()
    folder = Path(m._HOST["dir"])
    folder.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    (folder / f"diagc_dot_host_f64.so.{gone.pid}").write_bytes(b"partial")
    done = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    left = sorted(p.name for p in folder.iterdir() if p.suffix != ".cpp")
    assert left == ["diagc_cross_host_f64.so"], left


def test_a_finished_build_never_waited_for_is_kept(monkeypatch, tmp_path):
    """A VJP's build that finished but was never waited for (the backward ran the array code, or
    none came) is put in place at exit, not thrown away; a later forward finds it on disk and does
    not build it again."""
    _needs_compiler()
    monkeypatch.setenv("DIAGC_CACHE", str(tmp_path))
    m = _fresh("kept")
    args = tuple(torch.from_numpy(a).requires_grad_() for a in _arrays(m._cross_KERNEL, np.random.default_rng(16), (6,), 3))
    m.cross(*args, fused=True)
    (job,) = (entry[2] for entry in m._HOST["building"].values())
    assert job.wait(timeout=300) == 0
    m._host_abandon()
    left = sorted(p.name for p in (tmp_path / "host").rglob("*") if p.is_file() and p.suffix != ".cpp")
    assert left == ["diagc_cross_host_f64.so", "diagc_cross_vjp_host_f64.so"], left
    again = _fresh("kept")  # a module of its own, as in a new process
    again.cross(*args, fused=True)
    assert not again._HOST["building"] and "diagc_cross_vjp_host_f64" in again._HOST["started"]


def _graph_inputs(rng, nodes=50, edges=300, channels=8, sort=False):
    src, dst = rng.integers(0, nodes, edges), rng.integers(0, nodes, edges)
    if sort:
        order = np.argsort(dst, kind="stable")
        src, dst = src[order], dst[order]
    i, zd, zs = (rng.standard_normal((nodes, channels)) for _ in range(3))
    a, t = rng.standard_normal((nodes, channels, 3)), rng.standard_normal((nodes, channels, 5))
    f = [rng.standard_normal((edges, channels)) for _ in range(3)]
    u, y = rng.standard_normal((edges, 3)), rng.standard_normal((edges, 5))
    return {"message": (i, a, t, *f), "embed": (zd, zs, *f, u, y)}, (src, dst)


def _graph_case(name, rng, **sizes):
    arrays, lists = _graph_inputs(rng, **sizes)
    return arrays[name], lists


@pytest.mark.parametrize("name", ["message", "embed"])
def test_graph_host_loops(name):
    """The graph functions in one pass (message: the thread form; embed, whose VJP sums the unit
    vector's cotangent over the channels: the block form), forward and VJP, against the array code:
    numpy float64 on an unsorted and a sorted edge list, torch float32 and float64 past the serial
    threshold on two and three threads (the block form's sums over the channels in shares per
    thread); gradcheck and gradgradcheck through fused=True."""
    _needs_compiler()
    g = _module("tensornet_graph")
    fn, vjp = getattr(g, name), getattr(g, f"{name}_vjp")
    rng = np.random.default_rng(7)
    for sort in (False, True):
        arrays, lists = _graph_case(name, rng, sort=sort)
        _same(fn(*arrays, *lists, fused=True), fn(*arrays, *lists), 1e-12)
        cot = tuple(rng.standard_normal(r.shape) for r in fn(*arrays, *lists))
        got, want = vjp(*arrays, *lists, *cot, fused=True), vjp(*arrays, *lists, *cot)
        _same(tuple(x for x in got if x is not None), tuple(x for x in want if x is not None), 1e-12)
    arrays, lists = _graph_case(name, rng, nodes=400, edges=6000, channels=16)
    tl = [torch.from_numpy(x) for x in lists]
    before = torch.get_num_threads()
    try:
        for threads in (2, 3):  # past the serial threshold: parts of the channel elements (and of the sums over them)
            torch.set_num_threads(threads)
            t32 = [torch.from_numpy(x.astype(np.float32)) for x in arrays]
            _same(fn(*t32, *tl, fused=True), fn(*t32, *tl), 1e-5)
            t64 = [torch.from_numpy(x) for x in arrays]
            cot = tuple(torch.from_numpy(rng.standard_normal(r.shape)) for r in fn(*t64, *tl))
            got, want = vjp(*t64, *tl, *cot, fused=True), vjp(*t64, *tl, *cot)
            _same(tuple(x for x in got if x is not None), tuple(x for x in want if x is not None), 1e-12)
    finally:
        torch.set_num_threads(before)
    arrays, lists = _graph_case(name, rng, nodes=6, edges=20, channels=2)
    targs = [torch.from_numpy(x).requires_grad_() for x in arrays]
    tl = [torch.from_numpy(x) for x in lists]
    assert torch.autograd.gradcheck(lambda *xs: fn(*xs, *tl, fused=True), targs)
    assert torch.autograd.gradgradcheck(lambda *xs: fn(*xs, *tl, fused=True), targs)
    assert {f"diagc_{name}_graph_host_f64", f"diagc_{name}_vjp_graph_host_f64",
            f"diagc_{name}_graph_host_f32"} <= set(g._HOST["functions"])


@pytest.mark.parametrize("openmp", [True, False], ids=["openmp", "std_thread"])
def test_threads_with_and_without_openmp(monkeypatch, tmp_path, openmp):
    """The loops' threads. Built as the module builds them (-fopenmp), the parts run on OpenMP's
    threads: in a torch process the libgomp torch loaded (one copy mapped), whose threads its own
    operations use; built without, on POSIX threads. Either way the thread form (message) and the
    block form's shares (embed_vjp) agree with the array code on one to three threads."""
    _needs_compiler()
    monkeypatch.setenv("DIAGC_CACHE", str(tmp_path))
    g = compiler.load_source((ROOT / "examples" / "tensornet_graph.diag").read_text(), f"diagc_test_omp_{openmp}")
    if not openmp:
        monkeypatch.setattr(g, "_HOST_FLAGS", tuple(f for f in g._HOST_FLAGS if f != "-fopenmp"))
    rng = np.random.default_rng(12)
    arrays, lists = _graph_inputs(rng, nodes=400, edges=6000, channels=16)
    tl = [torch.from_numpy(x) for x in lists]
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            message = [torch.from_numpy(x) for x in arrays["message"]]
            _same(g.message(*message, *tl, fused=True), g.message(*message, *tl), 1e-12)
            embed = [torch.from_numpy(x) for x in arrays["embed"]]
            cot = tuple(torch.from_numpy(rng.standard_normal(r.shape)) for r in g.embed(*embed, *tl))
            got, want = g.embed_vjp(*embed, *tl, *cot, fused=True), g.embed_vjp(*embed, *tl, *cot)
            _same(tuple(x for x in got if x is not None), tuple(x for x in want if x is not None), 1e-12)
    finally:
        torch.set_num_threads(before)
    built = sorted(tmp_path.rglob("*.so"))
    assert {p.name for p in built} == {"diagc_message_graph_host_f64.so", "diagc_embed_vjp_graph_host_f64.so"}
    data = [p.read_bytes() for p in built]
    gnu = [b"GOMP_parallel" in d for d in data]  # GNU OpenMP
    omp = [b"GOMP_parallel" in d or b"__kmpc_fork_call" in d for d in data]  # or llvm's
    if openmp:  # the loops use OpenMP exactly when the compiler builds and links -fopenmp
        probe = subprocess.run([g._host_compiler(), "-fopenmp", "-shared", "-fPIC", "-x", "c++", "-",
                                "-o", str(tmp_path / "probe.so")], input=b"int diagc_probe() { return 0; }\n",
                               capture_output=True)
        assert all(omp) if probe.returncode == 0 else not any(omp)
    else:
        assert not any(omp)
    torch_gomp = os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp.so.1")
    if openmp and all(gnu) and os.path.exists(torch_gomp) and os.path.exists("/proc/self/maps"):
        with open("/proc/self/maps") as f:  # the loops' libgomp.so.1 is the one torch loaded
            mapped = {os.path.realpath(line.split()[-1]) for line in f if "libgomp" in line}
        assert mapped == {os.path.realpath(torch_gomp)}, mapped


_FORK = """
import os, sys
import numpy as np
import compiler
m = compiler.load(sys.argv[1])
rng = np.random.default_rng(14)
a, b = rng.standard_normal((100000, 3)), rng.standard_normal((100000, 3))
want = m.cross(a, b, kernels=False)
assert np.abs(m.cross(a, b, fused=True) - want).max() < 1e-12  # the parent: every CPU, OpenMP's threads
assert m._HOST["functions"], "no host loop ran"
pid = os.fork()
if pid == 0:
    os._exit(0 if np.abs(m.cross(a, b, fused=True) - want).max() < 1e-12 else 3)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_runs_the_loops(tmp_path):
    """A child made by fork() after the parent ran a loop on several OpenMP threads (numpy: every
    CPU) runs it too, on POSIX threads (GNU libgomp's threads do not survive a fork: the child hung),
    and agrees. In a process of its own (no torch, no jax threads of the test process forked)."""
    _needs_compiler()
    import subprocess
    import sys

    if not hasattr(os, "fork") or (os.cpu_count() or 1) < 2:
        pytest.skip("no fork(), or one CPU (the loop runs on one thread)")
    env = dict(os.environ, PYTHONPATH=str(ROOT), DIAGC_CACHE=str(tmp_path))
    try:
        run = subprocess.run([sys.executable, "-c", _FORK, str(ROOT / "diagrams" / "products.diag")],
                             capture_output=True, text=True, timeout=300, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("the forked child hung in its host loop")
    assert run.returncode == 0 and run.stdout.split() == ["child", "0"], run.stdout + run.stderr[-2000:]


def test_a_compiler_without_openmp_builds_the_loops_without_it(monkeypatch, tmp_path):
    """A compiler that refuses -fopenmp (here a wrapper that fails on it, as Apple's clang does): the
    loops are built again without it (POSIX threads), with no warning, and agree with the array code."""
    _needs_compiler()
    real = _module("products")._host_compiler()
    wrapper = tmp_path / "cxx-no-openmp"
    wrapper.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && {{ echo "unsupported option -fopenmp" >&2; exit 1; }}; done\n'
                       f'exec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("CXX", str(wrapper))
    monkeypatch.setenv("DIAGC_CACHE", str(tmp_path / "cache"))
    m = _fresh("no_openmp")
    args = _arrays(m._cross_KERNEL, np.random.default_rng(13), (5000,), 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _same(m.cross(*args, fused=True), m.cross(*args, kernels=False), 1e-12)
    (lib,) = (tmp_path / "cache").rglob("*.so")
    assert b"GOMP_parallel" not in lib.read_bytes() and "diagc_cross_host_f64" in m._HOST["functions"]


def _fresh(tag):
    """A module of its own (its host-loop state untouched by other tests)."""
    text = (ROOT / "diagrams" / "products.diag").read_text()
    return compiler.load_source(text, f"diagc_test_host_{tag}")


def test_without_a_compiler_fused_runs_the_array_code(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    m = _fresh("nocxx")
    assert m._host_compiler() is None
    rng = np.random.default_rng(8)
    args = _arrays(m._cross_KERNEL, rng, (9,), 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _same(m.cross(*args, fused=True), m.cross(*args, kernels=False), 1e-12)
    assert not m._HOST["functions"]


def test_a_failed_build_warns_once_and_runs_the_array_code(monkeypatch, tmp_path):
    """A compiler that fails (here `false`): one RuntimeWarning with its message, then the array code,
    for this call and every later one (no second attempt)."""
    false = next((p for p in ("/bin/false", "/usr/bin/false") if os.path.exists(p)), None)
    if false is None:
        pytest.skip("no `false` program")
    monkeypatch.setenv("CXX", false)
    monkeypatch.setenv("DIAGC_CACHE", str(tmp_path))
    m = _fresh("failing")
    rng = np.random.default_rng(9)
    args = _arrays(m._cross_KERNEL, rng, (9,), 4)
    with pytest.warns(RuntimeWarning, match="host loops could not be built"):
        _same(m.cross(*args, fused=True), m.cross(*args, kernels=False), 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _same(m.cross(*args, fused=True), m.cross(*args, kernels=False), 1e-12)
    assert m._HOST["failed"] and not m._HOST["functions"]


def test_built_loops_are_reused_from_disk(monkeypatch, tmp_path):
    """A loop built once is loaded from the cache folder afterwards (here: the module's loaded loops
    forgotten, as in a new process) without running the compiler."""
    _needs_compiler()
    monkeypatch.setenv("DIAGC_CACHE", str(tmp_path))
    rng = np.random.default_rng(10)
    m = _fresh("cache")
    args = _arrays(m._dot_KERNEL, rng, (9,), 4)
    want = m.dot(*args, kernels=False)
    _same(m.dot(*args, fused=True), want, 1e-12)
    built = sorted(p.name for p in tmp_path.rglob("*.so"))
    assert built == ["diagc_dot_host_f64.so"], built

    import subprocess

    def refuse(*a, **k):
        raise AssertionError("the compiler ran again")

    m._HOST["functions"].clear()
    monkeypatch.setattr(subprocess, "Popen", refuse)
    _same(m.dot(*args, fused=True), want, 1e-12)
    assert "diagc_dot_host_f64" in m._HOST["functions"]


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_bad_edge_lists_are_refused_before_the_loop(lib):
    """An edge list with a node number out of range, of a float dtype or of two dimensions: the
    ValueError naming it, before any host loop runs (a loop would read and write out of bounds)."""
    _needs_compiler()
    g = _module("tensornet_graph")
    rng = np.random.default_rng(11)
    arrays, (src, dst) = _graph_case("message", rng, nodes=6, edges=20, channels=2)
    wrap = (lambda x: torch.from_numpy(np.asarray(x))) if lib == "torch" else np.asarray
    arrays = [wrap(x) for x in arrays]
    g.message(*arrays, wrap(src), wrap(dst), fused=True)  # built and run once: the loop is there
    for bad, match in ((np.where(src == src[3], 6, src), "src"), (-1 - src, "src"), (src.astype(float), "src"),
                       (src.reshape(4, 5), "src")):
        with pytest.raises(ValueError, match=match):
            g.message(*arrays, wrap(bad), wrap(dst), fused=True)


def test_out_under_autograd_with_fused_true_records_the_gradient():
    """fused=True on CPU tensors runs the host loop, whose out= records no gradient: with inputs
    requiring grad and out= given, the recorded array code runs instead (as with fused=False), so
    the result still differentiates; the host loop still serves the other calls."""
    _needs_compiler()
    m = _module("tensornet")
    rng = np.random.default_rng(5)
    X = torch.from_numpy(rng.standard_normal((6, 4, 3, 3))).requires_grad_(True)
    out = torch.empty(6, 4, 3, 3, dtype=torch.float64)
    got = m.matmul_o3(X, X.detach(), out=out, fused=True)
    assert got.requires_grad and torch.equal(out, got.detach())
    (g,) = torch.autograd.grad(got.sum(), X)
    (want,) = torch.autograd.grad(m.matmul_o3(X, X.detach(), kernels=False).sum(), X)
    assert torch.allclose(g, want, atol=1e-12)
    plain = m.matmul_o3(X.detach(), X.detach(), out=out, fused=True)  # no autograd: the host loop writes out
    assert plain is out
