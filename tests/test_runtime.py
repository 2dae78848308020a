"""The run-time support of emitted modules (compiler/targets/python/runtime.py), exercised directly: one class per
array library, each agreeing with numpy; and what an emitted module copies of it (only the
definitions and methods its functions reach, as written in runtime.py, never a diagc import)."""

import ast
import inspect
from fractions import Fraction

import numpy as np
import pytest
import torch

import compiler
import fake_cupy
from compiler.targets.python import runtime as rt
from compiler.targets.python.codegen import runtime_source
from conftest import DIAGRAMS, ROOT

LIBRARIES = ("numpy", "torch", "jax")
DOT = "diagram dot(a: vec, b: vec) -> s: scalar {\n    s = a[i] b[i]\n}\n"


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    monkeypatch.setattr(rt, "_CONSTANTS", {})
    monkeypatch.setattr(rt, "_COMPILED", {})
    monkeypatch.setattr(rt, "_BACKENDS", {})
    monkeypatch.setattr(rt, "_TABLES", {"eye": ((1, 0, 0), (0, 1, 0), (0, 0, 1))})


def backend(root):
    if root == "jax":
        pytest.importorskip("jax")
    return rt._LIBRARIES[root]()


def on(root, b, a):
    """numpy array ``a`` as an array of ``root``."""
    return torch.from_numpy(a) if root == "torch" else b.asarray(a)


def back(x):
    return np.asarray(x.detach() if isinstance(x, torch.Tensor) else x)


def test_backend_follows_the_first_foreign_input():
    import jax.numpy as jnp

    assert type(rt._backend(np.zeros(1), torch.zeros(1))) is rt._Torch
    assert type(rt._backend(np.zeros(1), jnp.zeros(1))) is rt._Jax
    assert type(rt._backend(np.zeros(1), 2.0)) is rt._Numpy
    assert rt._backend(torch.zeros(1)) is rt._backend(torch.ones(2))  # one per library, cached


@pytest.mark.parametrize("root", LIBRARIES)
def test_array_operations_agree_with_numpy(root):
    b = backend(root)
    tol = 1e-5 if root == "jax" else 1e-12  # jax computes in float32 unless told otherwise
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(4, 5, 3, 3)), rng.normal(size=(2, 5))
    X, W = on(root, b, x), on(root, b, w)
    close = lambda a, w: np.testing.assert_allclose(a, w, rtol=tol, atol=tol)  # noqa: E731
    close(back(b.swap(X)), np.swapaxes(x, -1, -2))
    close(back(b.moveaxis(X, (-1,), (1,))), np.moveaxis(x, -1, 1))
    close(back(b.unflatten(on(root, b, x.reshape(4, 5, 9)), (3, 3))), x)
    close(back(b.einsum_blas("...ad,...dij->...aij", W, X)),
                               np.einsum("ad,...dij->...aij", w, x))
    close(back(b.matmul_flat(W, X, 2)), np.einsum("ad,...dij->...aij", w, x))
    y = rng.normal(size=(4, 3, 3, 2))  # a weight's cotangent summed over the batch: one matrix product
    for spec in ("...cda,...cdb->ab", "...cdb,...cda->ab", "...cda,...cdb->ba", "...cda,...dcb->ab"):
        close(back(b.einsum_blas(spec, on(root, b, np.moveaxis(x, 1, -1)), on(root, b, y))),
              np.einsum(spec.replace("...", "n"), np.moveaxis(x, 1, -1), y))
    wb = rng.normal(size=(4, 2, 5))  # per-entry weights
    close(back(b.matmul_flat(on(root, b, wb), X, 2)), np.einsum("...ad,...dij->...aij", wb, x))
    last = b.contiguous(b.einsum("...acd->...cda", X))  # channels last, row-major
    close(back(last), np.einsum("...acd->...cda", x))
    assert back(last).flags.c_contiguous and not b.exact(X)
    s = b.stack((on(root, b, np.ones(3)), on(root, b, np.zeros((4, 3)))), -1)  # broadcast first
    assert tuple(s.shape) == (4, 3, 2)
    assert tuple(b.filled(2.0, (4, 3), X).shape) == (4, 3)
    assert b.batch((4, 1), (5,), ()) == (4, 5)
    assert back(b.one(X)) == 1 and b.one(X).dtype == X.dtype
    diag = back(b.add_diagonal(b.copy(X) if root == "jax" else X.clone() if root == "torch" else x.copy(),
                               on(root, b, x[..., 0, 0]), -2.5))
    close(diag, x - 2.5 * x[..., 0, 0, None, None] * np.eye(3))


@pytest.mark.parametrize("root", ("numpy", "torch"))
def test_in_place_operations(root):
    b = backend(root)
    rng = np.random.default_rng(1)
    x, y, w = rng.normal(size=(4, 5, 3)), rng.normal(size=(4, 5, 3)), rng.normal(size=(2, 5))
    X, Y, W = on(root, b, x), on(root, b, y), on(root, b, w)
    out = on(root, b, np.empty((4, 5, 3)))
    for op, want in (("add", x + y), ("subtract", x - y), ("multiply", x * y)):
        getattr(b, op)(X, Y, out)
        np.testing.assert_allclose(back(out), want)
    b.negative(X, out)
    np.testing.assert_allclose(back(out), -x)
    b.einsum_into(out, "...i,...i->...i", X, Y)
    np.testing.assert_allclose(back(out), x * y)
    for target in (np.empty((4, 2, 3)), np.empty((4, 3, 2)).swapaxes(-1, -2)):  # contiguous or not
        t = on(root, b, target)
        assert b.matmul_flat(W, X, 1, t) is t
        np.testing.assert_allclose(back(t), np.einsum("ad,...di->...ai", w, x), atol=1e-12)
    for diagonal_factor in (1, -1, 3):
        m = on(root, b, np.zeros((4, 3, 3)))
        b.add_diagonal(m, on(root, b, x[:, 0, 0]), diagonal_factor)
        np.testing.assert_allclose(back(m), diagonal_factor * x[:, 0, 0, None, None] * np.eye(3))


@pytest.mark.parametrize("root", ("numpy", "torch"))
def test_out_is_checked(root):
    b = backend(root)
    x = on(root, b, np.ones((4, 3)))
    good = on(root, b, np.empty((4, 3)))
    assert b.out(good, (4, 3), (x,), "out") is good
    with pytest.raises(TypeError, match="out must be a"):
        b.out(np.empty((4, 3)) if root == "torch" else torch.empty(4, 3), (4, 3), (x,), "out")
    with pytest.raises(ValueError, match=r"has shape \(4, 2\); the result has shape \(4, 3\)"):
        b.out(on(root, b, np.empty((4, 2))), (4, 3), (x,), "out")
    with pytest.raises(TypeError, match="has dtype"):
        b.out(on(root, b, np.empty((4, 3), np.float32)), (4, 3), (x,), "out")
    with pytest.raises(ValueError, match="shares memory with an input"):
        b.out(x, (4, 3), (x,), "out")
    with pytest.raises(ValueError, match="two arrays of out share memory"):
        b.outs((good, good), ((4, 3), (4, 3)), (x,))
    if root == "numpy":
        ro = np.empty((4, 3))
        ro.flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            b.out(ro, (4, 3), (x,), "out")
    else:
        assert b.writable(x) and not b.writable(x.clone().requires_grad_())
        assert b.empty((2, 3), (x, torch.ones(1, dtype=torch.float32))).dtype == torch.float64


def test_jax_is_immutable_and_uncached():
    b = backend("jax")
    x = b.asarray(np.ones((2, 3, 3)))
    with pytest.raises(TypeError, match="jax arrays are immutable"):
        b.out(x, (2, 3, 3), (x,), "out")
    assert not b.writable(x) and b.differentiable((x,))
    assert b.const("eye", x) is not b.const("eye", x) and rt._CONSTANTS == {}


def test_constants_cached_per_library_dtype_and_device(monkeypatch):
    n, t = backend("numpy"), backend("torch")
    like = np.ones(2, np.float32)
    assert n.const("eye", like) is n.const("eye", like) and n.const("eye", like).dtype == np.float32
    assert t.const("eye", torch.ones(2)).dtype == torch.float32
    cp = fake_cupy.install(monkeypatch)
    c = rt._Cupy()
    c.const("eye", cp.asarray(np.ones(2)))
    assert set(rt._CONSTANTS) == {("eye", np.dtype(np.float32)), ("torch", "eye", torch.float32, torch.device("cpu")),
                                  ("cupy", "eye", np.dtype(np.float64), 0)}


def test_rational_is_exact_on_object_arrays():
    b = backend("numpy")
    assert b.rational(1, 3, np.array([Fraction(1)], dtype=object)) == Fraction(1, 3)
    assert b.rational(1, 4, np.ones(1)) == 0.25
    assert b.exact(np.array([Fraction(1, 3)], dtype=object)) and not b.exact(np.ones(1))


@pytest.mark.parametrize("root", LIBRARIES)
def test_sum_to_and_unstack(root):
    b = backend(root)
    g = np.arange(24.0).reshape(2, 3, 4)
    G = on(root, b, g)
    np.testing.assert_allclose(back(b.sum_to(G, (3, 4))), g.sum(0), rtol=1e-6)
    np.testing.assert_allclose(back(b.sum_to(G, (2, 1, 4))), g.sum(1, keepdims=True))
    np.testing.assert_allclose(back(b.sum_to(on(root, b, g[0, 0]), (2, 4))), np.broadcast_to(g[0, 0], (2, 4)))
    parts = b.unstack(G, -1, 4)
    assert len(parts) == 4 and all(np.array_equal(back(p), g[..., k]) for k, p in enumerate(parts))


BUILTINS = {"silu": lambda x: x / (1 + np.exp(-x)), "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "tanh": np.tanh,
            "exp": np.exp, "sqrt": np.sqrt, "rsqrt": lambda x: 1 / np.sqrt(x), "recip": lambda x: 1 / x}


@pytest.mark.parametrize("root", LIBRARIES)
def test_functions_of_invariants_and_their_derivatives(root):
    """The built-ins against numpy formulas; their written-out derivatives against central
    differences; a user function's derivative by the library's autograd (none on numpy)."""
    b = backend(root)
    tol = 1e-5 if root == "jax" else 1e-9
    x = np.random.default_rng(1).uniform(0.3, 3.0, size=(4, 5))
    g = np.random.default_rng(2).normal(size=(4, 5))
    X, G = on(root, b, x), on(root, b, g)
    for name, f in BUILTINS.items():
        r = getattr(b, name)(X)
        np.testing.assert_allclose(back(r), f(x), rtol=tol, atol=tol, err_msg=name)
        h = 1e-6
        want = g * (f(x + h) - f(x - h)) / (2 * h)
        np.testing.assert_allclose(back(getattr(b, name + "_vjp")(X, r, G)), want, rtol=1e-5, atol=1e-5, err_msg=name)
    if root == "numpy":
        with pytest.raises(TypeError, match="f: the derivative of function argument 'phi' needs torch or jax"):
            b.fn_vjp("f", "phi", lambda y: y * y, X, G)
        with pytest.raises(TypeError, match="f_vjp: the derivative of a diagram with function nodes runs by autograd"):
            b.chain_vjp("f_vjp", lambda y: (y,), (X,), (G,))
        return
    np.testing.assert_allclose(back(b.fn_vjp("f", "phi", lambda y: y * y, X, G)), 2 * x * g, rtol=tol)
    (gx, gy) = b.chain_vjp("f_vjp", lambda u, v: (u * v, u), (X, G), (G, G))
    np.testing.assert_allclose(back(gx), g * g + g, rtol=tol)
    np.testing.assert_allclose(back(gy), g * x, rtol=tol)


def test_user_function_arguments_aligned_and_summed():
    """_apply_fn stacks the arguments broadcast to the results' channel axes; _sum_parts adds parts
    carrying different channel axes; their VJPs sum back to each argument's shape."""
    rng = np.random.default_rng(3)
    u, w = rng.normal(size=(2, 4)), rng.normal(size=(2,))  # u per channel, w without channel axes
    got = rt._apply_fn("f", "phi", "fn(2 -> 1)", lambda x: x[..., :1] * x[..., 1:], (u, w), ((0,), ()), 1, 1)
    np.testing.assert_allclose(got[0], u * w[:, None])
    with pytest.raises(ValueError, match=r"f: function argument 'phi' \(fn\(2 -> 1\)\) returned shape \(2, 4, 2\)"):
        rt._apply_fn("f", "phi", "fn(2 -> 1)", lambda x: x, (u, w), ((0,), ()), 1, 1)
    np.testing.assert_allclose(rt._sum_parts((w, u), ((), (0,)), 1), u + w[:, None])
    g = rng.normal(size=(2, 4))
    gw, gu = rt._sum_parts_vjp((w, u), ((), (0,)), 1, g)
    np.testing.assert_allclose(gw, g.sum(1))
    np.testing.assert_allclose(gu, g)
    tu, tw = torch.tensor(u), torch.tensor(w)
    du, dw = rt._apply_fn_vjp("f", "phi", lambda x: x[..., :1] * x[..., 1:], (tu, tw), ((0,), ()), 1,
                              (torch.tensor(g),))
    np.testing.assert_allclose(back(du), g * w[:, None])
    np.testing.assert_allclose(back(dw), (g * u).sum(1))
    with pytest.raises(TypeError, match="argument 'phi' \\(fn\\(2 -> 1\\)\\) must be a callable"):
        rt._check_callable("f", "phi", "fn(2 -> 1)", 3.0)


def test_check_shapes_names_the_argument():
    sig = (("x", ("c",), (3,)), ("y", ("c",), (3,)))
    with pytest.raises(ValueError, match=r"y has shape \(2, 4, 3\); expected \(\.\.\., c, 3\) with c = 5 from x"):
        rt._check_shapes(sig, (np.ones((2, 5, 3)), np.ones((2, 4, 3))))
    with pytest.raises(ValueError, match="does not broadcast"):
        rt._check_shapes(sig, (np.ones((2, 5, 3)), np.ones((3, 5, 3))))
    rt._check_shapes(sig, (np.ones((2, 5, 3)), np.ones((1, 5, 3))))  # broadcasts: no error


def test_check_shapes_takes_fixed_sizes_as_ints():
    """A fixed-size channel axis (an irreps block's multiplicity, weight[16,c]) is an int in the
    signature, a named one a str; a name that looks like a number is still a name."""
    sig = (("w", (4, "c"), ()), ("x", ("c",), (3,)))
    rt._check_shapes(sig, (np.ones((4, 5)), np.ones((2, 5, 3))))
    with pytest.raises(ValueError, match=r"w has shape \(3, 5\); expected \(\.\.\., 4, c\)"):
        rt._check_shapes(sig, (np.ones((3, 5)), np.ones((2, 5, 3))))
    with pytest.raises(ValueError, match=r"x has shape \(2, 6, 3\); expected \(\.\.\., c, 3\) with c = 5 from w"):
        rt._check_shapes(sig, (np.ones((4, 5)), np.ones((2, 6, 3))))
    rt._check_shapes((("y", ("4",), ()),), (np.ones((7,)),))  # a str is a name, whatever it reads


def test_library_classes_are_branch_free():
    """No method tests which library it is: the differences are the classes."""
    tree = ast.parse(inspect.getsource(rt))
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for node in ast.walk(cls):
            if isinstance(node, (ast.If, ast.IfExp)):
                names = {a.attr for a in ast.walk(node.test) if isinstance(a, ast.Attribute)}
                assert "root" not in names, (cls.name, ast.unparse(node.test))


# -- what a module carries ---------------------------------------------------------------------------

FUNCTIONS = """diagram gate(v: vec[c], X: sym2[c], phi: fn(2 -> 1)) -> w: vec[c] {
  w[c,i] = silu(X[c,j,k] X[c,j,k]) v[c,i] + phi(v[c,j] v[c,j], X[c,j,j])[0] X[c,i,j] v[c,j] / (1 + v[c,k] v[c,k])
}
"""


def modules():
    out = [pytest.param(p.read_text(), f"diagrams/{p.name}", id=p.stem) for p in DIAGRAMS]
    return out + [pytest.param(DOT, "dot.diag", id="dot"), pytest.param(FUNCTIONS, "gate.diag", id="functions")]


def top_level(text):
    return {getattr(n, "name", None) or n.targets[0].id: n for n in ast.parse(text).body
            if isinstance(n, (ast.FunctionDef, ast.ClassDef)) or (isinstance(n, ast.Assign)
                                                                and isinstance(n.targets[0], ast.Name))}


@pytest.mark.parametrize("source, filename", modules())
def test_module_carries_every_method_its_functions_call(source, filename):
    text = compiler.compile_source(source, filename)
    assert "diagc" not in {n.names[0].name.partition(".")[0] for n in ast.walk(ast.parse(text))
                           if isinstance(n, ast.Import)}
    assert "from compiler" not in text and "import compiler" not in text
    module = compiler.load_source(source, "runtime_" + filename.replace("/", "_").replace(".", "_"))
    runtime_names = set(top_level(inspect.getsource(rt)))
    own = [n for name, n in top_level(text).items() if name not in runtime_names]  # the diagrams' functions
    called = {n.attr for f in own for n in ast.walk(f)
              if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "_b"}
    assert {"asarray", "out"} <= called
    for cls in module._LIBRARIES.values():
        missing = {m for m in called if not hasattr(cls, m)} - {"root"}
        assert missing == set(), (cls.__name__, missing)
    defined = top_level(text)
    for name, node in top_level(inspect.getsource(rt)).items():
        if name in defined and isinstance(node, ast.FunctionDef) and name != "_call":
            # as written in runtime.py (less its docstrings)
            assert ast.dump(defined[name].body[-1]) == ast.dump(node.body[-1]), name


def test_module_carries_only_what_it_reaches():
    dot = compiler.compile_source(DOT, "dot.diag")
    assert "def _kernel_launch" in dot and "_KERNEL_SPECS" in dot  # dot has a CUDA kernel
    basis = compiler.compile_source("group O3\nbasis stress(E: sym2^<=2) -> S: sym2\n", "basis.diag")
    assert "def _kernel_launch" not in basis and "_KERNEL_SPECS" not in basis  # a stacked basis: no kernel
    assert "def _call(" in basis and "_use_kernel" not in basis
    assert "def add_diagonal" not in dot  # no function of dot adds to a diagonal
    tensornet = compiler.compile_source((ROOT / "diagrams" / "tensornet.diag").read_text(), "tensornet.diag")
    assert "def add_diagonal" in tensornet
    # functions of invariants: only in modules with function nodes, only the functions applied
    for name in ("def silu", "def tanh", "def _apply_fn", "def _sum_parts", "def fn_vjp", "def _composite_vjp"):
        assert name not in dot and name not in tensornet
    tanh = compiler.compile_source("diagram t(a: vec) -> s: scalar {\n    s = tanh(a[i] a[i])\n}\n", "t.diag")
    assert "def tanh(" in tanh and "def tanh_vjp(" in tanh
    for name in ("def silu", "def sqrt", "def _apply_fn", "def _sum_parts", "def fn_vjp", "def chain_vjp"):
        assert name not in tanh, name
    gate = compiler.compile_source(FUNCTIONS, "gate.diag")
    for name in ("def silu(", "def recip_vjp(", "def _apply_fn(", "def _apply_fn_vjp(", "def fn_vjp(",
                 "def _sum_parts("):
        assert name in gate, name
    # the runtime part is a function of what the code reaches, nothing else
    code = ["def f(x):\n    _b = _backend(x)\n    return _b.add_diagonal(x, x, 2)\n"]
    part = runtime_source(code, False)
    assert part == runtime_source(code, False)
    assert "def add_diagonal" in part and "def _call" not in part and "def matmul_flat" not in part
    compile(part, "runtime", "exec")


def runtime_lines(text, diagram_names):
    """Lines of the module's top-level definitions that are not a diagram's own (its functions, its
    spec and kernel configuration, the CUDA source of its kernels)."""
    own = {"_CUDA_SOURCE", "__all__"}
    for n in diagram_names:
        own |= {n, f"_{n}_planned", f"_{n}_fused", f"_{n}_SPEC", f"_{n}_KERNEL", f"_{n}_batch_summed",
                f"_{n}_batchrest_planned", f"_{n}_batchrest_fused"}
    tree = ast.parse(text)
    return sum(n.end_lineno - n.lineno + 1 for n in tree.body[1:]
               if (getattr(n, "name", None) or (n.targets[0].id if isinstance(n, ast.Assign) else None)) not in own)


def test_runtime_size():
    """Measured: the runtime part of `dot` (with its CUDA kernel launcher, derivatives wired into
    torch and jax) and of tensornet.diag. The issue's targets (100 and 200 lines) were set before the
    derivatives and the CUDA launcher (about 280 lines alone) arrived; these ceilings keep the size
    from growing back (760 lines each before the runtime became code; 611 and 745 before the
    batch-summed weight cotangents: their dispatch in evaluate, exact, contiguous, torch's
    matmul_flat on a channels-last copy, out= checked after the inputs; 775 for tensornet before
    torch's einsum_blas sent a weight's batch-summed cotangent to one torch.mm; 630 and 785 before
    results were written out by one backend method, deliver, and the kernel launcher's batch
    broadcast taken from the shape check; 597 and 752 before one _vjp served torch autograd, jax and
    the custom ops; 591 and 746 before the kernel path cached its launch plans per dtypes, devices,
    shapes and strides and launched eager torch calls through its own autograd.Function rather than
    the custom op: benchmarks/host_overhead.py measured tp_2e's forward host time 7x lower; 666 and
    821 before a Python number among CUDA tensors was filled on the device, not copied there; 668 and
    823 before torch autograd's forward kept its channels-last copies for the backward, plan.KeptCopy;
    684 and 839 before the arguments after the first were converted like the converted first, not the
    given one: numpy arrays beside a torch tensor raised torch's TypeError; 840 for tensornet before
    torch's mm ran a batch of matrices times one weight as one GEMM; 685 and 850 before fused=True
    on CPU arrays ran the kernels' host loops: finding the C++ compiler, building and loading a loop
    at first use, calling it, about 105 lines; 791 and 956 before a compiler without OpenMP had the
    loops built again without -fopenmp; 794 and 959 before channel mixing and its derivatives ran
    host loops: outputs totalled over the batch, weights without batch axes, host-only kernels; 805
    and 970 before the derivatives of channel mixing ran GPU kernels, several launches a call, and
    a channel axis of size 0 was reshaped by counted rows rather than -1; 997 for tensornet before a
    batched dot product ran as a multiply and a sum, sum_product: torch's einsum made it a gemv per
    65,535 rows on the GPU; 1004 for tensornet before out= under autograd, on a kernel's or host
    loop's path, ran the recorded array code: a kernel writing out= records no gradient; 830 and 1006
    before host loops were built in the background, a VJP's while its forward runs, stopped at exit
    when never waited for (a forked child leaving its parent's alone): TensorNet's first fused call
    8.1 -> 6.0 s on 2 cores; 860 and 1036 before a review's mends: one thread builds at a time (a
    lock), a build finished but never waited for is kept at exit, the partial files of processes
    that are gone are swept, the no-OpenMP rebuild only when the compiler's message names OpenMP)."""
    from compiler.api import checked_program
    from compiler.ir.grad import with_derivatives

    sizes = {}
    for name, source in (("dot", DOT), ("tensornet", (ROOT / "diagrams" / "tensornet.diag").read_text())):
        names = [d.name for d in with_derivatives(checked_program(source), checked=True).diagrams]
        sizes[name] = runtime_lines(compiler.compile_source(source), names)
    assert sizes["dot"] <= 890 and sizes["tensornet"] <= 1066, sizes


def test_torch_mm_of_a_batch_and_one_matrix_is_one_gemm():
    """_b.mm (an emitted Matmul step) on torch: a permuted batch times a weight, either side, equals
    x @ y and runs as one mm over the flattened batch (torch's own @ would expand the weight and
    multiply per batch entry, a bmm)."""
    import torch
    from torch.profiler import profile

    from compiler.targets.python import runtime as rt

    b = rt._backend(torch.zeros(1))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 4, 3, generator=g, dtype=torch.float64).transpose(-1, -2)  # (7, 3, 4), permuted
    w = torch.randn(4, 5, generator=g, dtype=torch.float64)
    v = torch.randn(6, 3, generator=g, dtype=torch.float64)
    with profile() as p:
        right, left = b.mm(x, w), b.mm(v, x)
    names = [e.name for e in p.events()]
    assert "aten::bmm" not in names and names.count("aten::mm") == 2
    torch.testing.assert_close(right, x @ w, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(left, v @ x, rtol=1e-14, atol=1e-14)
    y = torch.randn(7, 4, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(b.mm(x, y), x @ y)  # batch times batch: torch's own
    assert type(rt._backend(np.zeros(1))).mm(None, np.eye(2), np.ones((3, 2, 2))).shape == (3, 2, 2)


@pytest.mark.parametrize("sizes", [{"c": 0, "d": 4}, {"c": 3, "d": 0}])
def test_channel_mixing_and_its_derivatives_with_an_empty_channel_axis(sizes):
    """One channel axis of size 0: every function of linear.diag (a mixing, its VJP and second
    order; linear_cart2 in stages and, built without stages, as one call) returns arrays of the
    right shapes, zeros where the contracted axis is empty, the same on numpy and torch, planned and
    fused (a reshape to (-1, 0) is ambiguous: the rows are counted)."""
    m = compiler.load(ROOT / "diagrams" / "linear.diag")
    unstaged = compiler.load(ROOT / "diagrams" / "linear.diag", staging=False)
    rng = np.random.default_rng(4)
    # the functions with a kernel (its config gives their inputs' shapes) in either module
    cfgs = {spec[5]["name"]: spec[5] for module in (unstaged, m) for spec in module._KERNEL_SPECS}
    for cfg in cfgs.values():
        args = [rng.standard_normal(((5,) if not (len(chans) == 2 and not dims) else ())
                                    + tuple(sizes[c] for c in chans) + tuple(dims)) for _, chans, dims in cfg["inputs"]]
        for module in (m, unstaged) if hasattr(unstaged, cfg["name"]) else (m,):
            want = getattr(module, cfg["name"])(*args)
            want = want if isinstance(want, tuple) else (want,)
            for fused in (False, True):
                got = getattr(module, cfg["name"])(*[torch.tensor(a) for a in args], fused=fused)
                got = got if isinstance(got, tuple) else (got,)
                assert [tuple(g.shape) for g in got] == [w.shape for w in want]
                for g, w in zip(got, want):
                    assert np.array_equal(g.detach().numpy(), w) or np.abs(g.detach().numpy() - w).max() <= 1e-12
    X, W, dY = (rng.standard_normal(s) for s in ((5, sizes["c"], 3, 3), (sizes["c"], sizes["d"]), (5, sizes["d"], 3, 3)))
    Y, (dX, dW) = m.mix(torch.tensor(X), torch.tensor(W)), m.mix_vjp(torch.tensor(X), torch.tensor(W), torch.tensor(dY))
    assert Y.shape == (5, sizes["d"], 3, 3) and dX.shape == X.shape and dW.shape == W.shape
    assert not Y.any() and not dX.any()  # sums over an empty axis, or empty
