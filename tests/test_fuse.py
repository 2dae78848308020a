"""The fused plan (compiler/planning/fuse.py) and the emitted ``fused=True`` path: every output component as
one formula, equal to the planned code; channel contractions have no fused form."""

from fractions import Fraction

import numpy as np
import pytest

import compiler
from compiler.planning.fuse import Entry, fuse_diagram
from compiler.frontend.lower import lower_source
from compiler.testing import random_input
from conftest import ROOT, example_diagrams

MODULES = {}


def module_for(path):
    if path not in MODULES:
        MODULES[path] = compiler.load(path)
    return MODULES[path]


def diagram(source, name=None):
    prog = lower_source(source, "t.diag")
    return prog.diagrams[0] if name is None else next(d for d in prog.diagrams if d.name == name)


def _tuple(x):
    return x if isinstance(x, tuple) else (x,)


def test_matmul_product_has_51_products_and_eps_its_six_terms():
    tensornet = (ROOT / "diagrams" / "tensornet.diag").read_text()
    plan = fuse_diagram(diagram(tensornet, "matmul_o3"))
    # 9 components x 6 products, minus the 3 diagonal pairs M_ik Y_ki + Y_ik M_ki that coincide for k = i
    assert plan.products == 51
    c01 = plan.outputs[0].components[1]
    assert {tuple((e.input, e.component) for e in m.factors) for m in c01} >= {(("M", (0, 0)), ("Y", (0, 1)))}
    cross = fuse_diagram(diagram("diagram f(a: vec, b: vec) -> c: axial {\n  c[i] = eps[i,j,k] a[j] b[k]\n}\n"))
    assert cross.products == 6
    assert [len(c) for c in cross.outputs[0].components] == [2, 2, 2]
    (first, second) = cross.outputs[0].components[0]
    assert {first.coefficient, second.coefficient} == {1, -1}


def test_coefficients_are_exact_and_channels_broadcast():
    plan = fuse_diagram(diagram(
        "diagram f(r: vec, s: scalar[c]) -> X: sym2t[c] {\n"
        "  X[c,i,j] = s[c] (r[i] r[j] - 1/3 r[k] r[k] delta[i,j])\n}\n"))
    x00 = plan.outputs[0].components[0]
    assert sorted(m.coefficient for m in x00) == [Fraction(-1, 3), Fraction(-1, 3), Fraction(2, 3)]
    entries = {e for m in x00 for e in m.factors}
    assert Entry("s", (0,), ()) in entries and Entry("r", (), (0,)) in entries


@pytest.mark.parametrize("source, reason", [
    ("diagram f(A: skew2[c], W: weight[c,d]) -> B: skew2[d] {\n  B[d,i,j] = W[c,d] A[c,i,j]\n}\n",
     "channel axis 'c' is contracted"),
    ("diagram f(x: vec[c,d]) -> y: vec[d,c] {\n  y[d,c,i] = x[c,d,i]\n}\n", "channel axes are repeated or reordered"),
    ("diagram f(x: vec) -> y: cart2 {\n  y[i,j] = delta[i,j]\n}\n", "output 'y' is a constant"),
])
def test_no_fused_form_says_why(source, reason):
    plan = fuse_diagram(diagram(source))
    assert plan.outputs == () and plan.reason == reason
    text = compiler.compile_source(source)
    assert "_f_fused" not in text and reason in text  # the docstring says so
    ns = {}
    exec(text, ns)
    args = [np.ones((2, 2, 3, 3)), np.ones((2, 2, 2))] if "W" in source else [np.ones((2, 2, 2, 3))] \
        if "vec[c,d]" in source else [np.ones((2, 3))]
    np.testing.assert_array_equal(ns["f"](*args, fused=True), ns["f"](*args))  # the planned path runs


@pytest.mark.parametrize("path, d", example_diagrams())
def test_fused_equals_planned_numpy_and_torch_eager(path, d):
    torch = pytest.importorskip("torch")
    module = module_for(path)
    fn = getattr(module, d.name)
    rng = np.random.default_rng(5)
    args = [random_input(t.type, rng, (3, 2), {"c": 3, "d": 2}) for t in d.inputs]
    want = _tuple(fn(*args))
    got = _tuple(fn(*args, fused=True))
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    components = getattr(module, f"_{d.name}_fused", None)
    if components is None:
        assert not fuse_diagram(d).outputs
        return
    eager = _tuple(components(module._backend(torch.zeros(1)), *[torch.from_numpy(a) for a in args]))
    for g, w in zip(eager, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-12, atol=1e-12)
    out = tuple(np.full_like(w, np.nan) for w in want)
    result = fn(*args, fused=True, out=out if len(out) > 1 else out[0])
    for o, r, w in zip(out, _tuple(result), want):
        assert o is r
        np.testing.assert_allclose(o, w, rtol=1e-12, atol=1e-12)


def test_fused_torch_runs_through_torch_compile(monkeypatch):
    """One real torch.compile (seconds on the first call): the compiled formulas equal the planned
    matmul form in float32, and out= receives them (the host loops off: with them, fused=True on CPU
    tensors runs the kernel's C++ loop, tests/test_host_kernels.py)."""
    torch = pytest.importorskip("torch")
    ops = module_for(ROOT / "diagrams" / "tensornet.diag")
    monkeypatch.setattr(ops, "HOST_KERNELS", False)
    torch.manual_seed(0)
    m, y = torch.randn(64, 4, 3, 3), torch.randn(64, 4, 3, 3)
    got = ops.matmul_o3(m, y, fused=True)
    want = ops.matmul_o3(m, y)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    buf = torch.empty(64, 4, 3, 3)
    assert ops.matmul_o3(m, y, fused=True, out=buf) is buf
    torch.testing.assert_close(buf, want, rtol=1e-5, atol=1e-5)
    assert any(key[0] == "torch" for key in ops._COMPILED)


def test_fused_jax_runs_under_jit():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    ops = module_for(ROOT / "diagrams" / "tensornet.diag")
    rng = np.random.default_rng(2)
    r, f = rng.normal(size=(4, 3)), rng.normal(size=(4, 5))
    got = ops.edge_tensor(jnp.asarray(r), jnp.asarray(f), jnp.asarray(f), jnp.asarray(f), fused=True)
    assert isinstance(got, jax.Array)
    np.testing.assert_allclose(np.asarray(got), ops.edge_tensor(r, f, f, f), rtol=1e-12, atol=1e-12)


def test_constant_components_become_arrays():
    """A component that is a number alone (here the diagonal: X_ii - X_ii cancels, 1/3 stays)."""
    torch = pytest.importorskip("torch")
    src = "diagram f(X: cart2) -> Y: cart2 {\n  Y[i,j] = X[i,j] - X[j,i] + 1/3 delta[i,j]\n}\n"
    ns = {}
    exec(compiler.compile_source(src), ns)
    x = np.random.default_rng(0).normal(size=(4, 3, 3))
    want = x - np.swapaxes(x, -1, -2) + np.eye(3) / 3
    np.testing.assert_allclose(ns["f"](x, fused=True), want, atol=1e-12)
    got = ns["_f_fused"](ns["_backend"](torch.zeros(1)), torch.from_numpy(x))
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)


def test_each_fused_function_has_its_own_compile_budget(monkeypatch):
    """torch.compile counts recompiles per code object: two diagrams must not share one (a shared
    wrapper made the ninth compile of a module fail or fall back to eager). Host loops off."""
    torch = pytest.importorskip("torch")
    import torch._dynamo.config as dynamo_config

    ops = compiler.load(ROOT / "diagrams" / "products.diag")
    monkeypatch.setattr(ops, "HOST_KERNELS", False)
    a, b = torch.randn(8, 3), torch.randn(8, 3)
    with dynamo_config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True):
        torch.testing.assert_close(ops.cross(a, b, fused=True), torch.linalg.cross(a, b))
        torch.testing.assert_close(ops.dot(a, b, fused=True), (a * b).sum(-1))


def test_fused_out_for_a_stacked_basis_numpy_and_torch():
    """A basis returns its elements stacked; fused=True with out= fills the one stacked buffer."""
    torch = pytest.importorskip("torch")
    src = "basis B(X: sym2) -> S: sym2\n"
    ns = {}
    exec(compiler.compile_source(src), ns)
    x = random_input("sym2", np.random.default_rng(1), (5,))
    want = ns["B"](x)
    for lib in ("numpy", "torch"):
        buf = np.full_like(want, np.nan) if lib == "numpy" else torch.full(want.shape, float("nan"), dtype=torch.float64)
        arg = x if lib == "numpy" else torch.from_numpy(x)
        assert ns["B"](arg, fused=True, out=buf) is buf
        np.testing.assert_allclose(np.asarray(buf), want, atol=1e-12)
