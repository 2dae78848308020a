"""What emitted functions do with their inputs: shape checks naming the argument (numpy, torch,
torch.compile(fullgraph=True), jax.jit), exact arithmetic without batch axes, the cupy path (on a
stand-in built over numpy), and the documented shape of a stacked basis."""

from __future__ import annotations

import re
import zlib
from fractions import Fraction

import numpy as np
import pytest

import compiler
import fake_cupy
from compiler.frontend.lower import lower_source
from compiler.testing import random_input
from conftest import ROOT, example_diagrams

MODULES = {}

EXTRA = """group O3
diagram scale(g: scalar, a: vec) -> b: vec {
    b[i] = g a[i]
}
diagram quadrupole(r: vec[p]) -> Q: sym2t {
    Q[i,j] = r[p,i] r[p,j] - 1/3 r[p,k] r[p,k] delta[i,j]
}
diagram parts(E: sym2) -> (D: sym2, F: sym2, n: scalar) {
    D[i,j] = delta[i,j]
    F[i,j] = E[i,k] E[k,j]
    n = 2
}
basis stress(E: sym2^<=2) -> S: sym2
"""


def module(stem):
    if stem not in MODULES:
        MODULES[stem] = compiler.load_source(EXTRA, "extra") if stem == "extra" else \
            compiler.load(ROOT / "diagrams" / f"{stem}.diag")
    return MODULES[stem]


def _tuple(x):
    return x if isinstance(x, tuple) else (x,)


# -- shape errors: one table for every type ---------------------------------------------------------

SHAPE_ERRORS = [  # (file, function, argument shapes, message)
    # Cartesian
    ("products", "dot", [(4, 2), (4, 3)], "a has shape (4, 2); expected (..., 3)"),
    ("products", "cross", [(4, 3), ()], "b has shape (); expected (..., 3)"),
    ("decompose", "decompose", [(3,)], "X has shape (3,); expected (..., 3, 3)"),
    ("decompose", "decompose", [(5, 3, 4)], "X has shape (5, 3, 4); expected (..., 3, 3)"),
    ("extra", "quadrupole", [(4, 4)], "r has shape (4, 4); expected (..., p, 3)"),
    ("extra", "stress", [(5, 3)], "E has shape (5, 3); expected (..., 3, 3)"),
    # graded, with channels
    ("tensornet", "matmul_o3", [(5, 4, 3, 3), (5, 4, 3, 4)],
     "Y has shape (5, 4, 3, 4); expected (..., c, 3, 3) with c = 4 from M"),
    ("tensornet", "matmul_o3", [(5, 4, 3, 3), (5, 2, 3, 3)],
     "Y has shape (5, 2, 3, 3); expected (..., c, 3, 3) with c = 4 from M"),
    ("tensornet", "decompose", [(3, 3)], "X has shape (3, 3); expected (..., c, 3, 3)"),
    ("tensornet_so3", "matmul_so3", [(2, 3, 3), (2, 3, 3, 3)],
     "Y has shape (2, 3, 3, 3); expected (..., c, 3, 3) with c = 2 from M"),
    # spherical: e3nn's flat layout of 1o+2e is not sph(2e)
    ("spherical", "sph_to_sym2t", [(6, 15)], "t has shape (6, 15); expected (..., 5)"),
    ("spherical", "vec_vec", [(4, 3), (4, 5)], "y has shape (4, 5); expected (..., 3)"),
    ("spherical", "tp_2e", [(4, 3, 5), (4, 2, 5)], "y has shape (4, 2, 5); expected (..., c, 5) with c = 3 from x"),
    ("spherical", "tp_1o_2e", [(4, 3, 5), (4, 3, 5)], "x has shape (4, 3, 5); expected (..., c, 3)"),
    # channels on scalars
    ("tensornet", "edge_tensor", [(4, 3), (4, 2), (4, 3), (4, 2)],
     "fA has shape (4, 3); expected (..., c) with c = 2 from fI"),
    # weights
    ("linear", "mix", [(5, 4, 3, 3), (3, 2)], "W has shape (3, 2); expected (..., c, d) with c = 4 from X"),
    ("linear", "mix", [(5, 4, 3, 3), (4,)], "W has shape (4,); expected (..., c, d) with c = 4 from X"),
    ("linear", "linear_cart2", [(5, 4, 3, 3), (4, 2), (4, 3), (4, 2)],
     "W1 has shape (4, 3); expected (..., c, d) with c = 4 from X, d = 2 from W0"),
    ("tensornet", "mix_skew", [(5, 4, 3, 3), (2, 2)], "W has shape (2, 2); expected (..., c, d) with c = 4 from A"),
    # cotangents of the generated derivatives (a weight shared by the batch, and not)
    ("tensornet", "mix_skew_vjp", [(5, 4, 3, 3), (4, 2), (5, 2, 3, 2)],
     "d_B has shape (5, 2, 3, 2); expected (..., d, 3, 3) with d = 2 from W"),
    ("tensornet", "mix_skew_vjp", [(5, 4, 3, 3), (5, 4, 2), (5, 3, 3, 3)],
     "d_B has shape (5, 3, 3, 3); expected (..., d, 3, 3) with d = 2 from W"),
    ("tensornet", "mix_skew_vjp", [(5, 4, 3, 3), (4, 2), (6, 2, 3, 3)],
     "d_B has batch shape (6,), which does not broadcast with the batch shape (5,) of A and W"),
    ("tensornet", "matmul_o3_vjp", [(5, 4, 3, 3), (5, 4, 3, 3), (5, 4, 3)],
     "d_C has shape (5, 4, 3); expected (..., c, 3, 3) with c = 4 from M"),
    ("tensornet", "edge_tensor_vjp_vjp", [(4, 3), (4, 2), (4, 2), (4, 2), (4, 2, 3, 3), (4, 3), (4, 2), (4, 2), (4, 3)],
     "d_d_fS has shape (4, 3); expected (..., c) with c = 2 from fI"),
    # batch axes that do not broadcast
    ("products", "dot", [(4, 3), (5, 3)], "b has batch shape (5,), which does not broadcast with the batch shape "
                                          "(4,) of a"),
    ("products", "triple", [(4, 3), (1, 3), (2, 3)], "c has batch shape (2,), which does not broadcast with the "
                                                     "batch shape (4,) of a and b"),
    ("linear", "mix", [(5, 4, 3, 3), (2, 4, 2)], "W has batch shape (2,), which does not broadcast with the batch "
                                                 "shape (5,) of X"),
    ("extra", "scale", [(4,), (5, 3)], "a has batch shape (5,), which does not broadcast with the batch shape "
                                       "(4,) of g"),
]


def _library(lib):
    if lib == "numpy":
        return lambda shape: np.zeros(shape)
    torch = pytest.importorskip("torch")
    return lambda shape: torch.zeros(shape, dtype=torch.float64)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("stem, name, shapes, message", SHAPE_ERRORS,
                         ids=[f"{s}.{n}-{m.split()[0]}" for s, n, _, m in SHAPE_ERRORS])
def test_shape_error_names_the_argument(lib, stem, name, shapes, message):
    make = _library(lib)
    fn = getattr(module(stem), name)
    with pytest.raises(ValueError) as err:
        fn(*[make(s) for s in shapes])
    assert str(err.value) == message
    argument = message.split()[0]
    assert argument in fn.__code__.co_varnames[:fn.__code__.co_argcount]
    # out= and fused= take the same checks, before anything else
    with pytest.raises(ValueError, match=re.escape(message)):
        fn(*[make(s) for s in shapes], out=object(), fused=True)


def test_a_python_float_is_a_scalar_and_a_vector_is_not():
    ops = module("extra")
    np.testing.assert_allclose(ops.scale(2.0, np.ones((4, 3))), 2 * np.ones((4, 3)))
    with pytest.raises(ValueError, match=re.escape("a has shape (); expected (..., 3)")):
        ops.scale(np.ones(4), 2.0)


def test_arguments_may_be_named_like_the_builtins_the_checks_use():
    ops = compiler.load_source("diagram f(len: vec, tuple: vec[c]) -> object: scalar[c] {\n"
                               "    object[c] = len[i] tuple[c,i]\n}\n", "builtins")
    a, b = np.ones((4, 3)), np.ones((4, 2, 3))
    np.testing.assert_allclose(ops.f(a, b), np.full((4, 2), 3.0))
    with pytest.raises(ValueError, match=re.escape("tuple has shape (4, 2, 2); expected (..., c, 3)")):
        ops.f(a, np.ones((4, 2, 2)))


def test_batches_that_broadcast_pass_the_checks():
    rng = np.random.default_rng(0)
    lin, prod = module("linear"), module("products")
    x, w = rng.normal(size=(5, 4, 3, 3)), rng.normal(size=(4, 2))
    want = np.einsum("cd,ncij->ndij", w, x)
    np.testing.assert_allclose(lin.mix(x, w[None]), want, atol=1e-12)
    np.testing.assert_allclose(lin.mix(x[:, None], w[None, None].repeat(3, 1)), want[:, None].repeat(3, 1),
                               atol=1e-12)
    a, b = rng.normal(size=(5, 1, 3)), rng.normal(size=(1, 7, 3))
    np.testing.assert_allclose(prod.dot(a, b), (a * b).sum(-1), atol=1e-12)


def _reference_error(diagram, shapes):
    """The first argument whose shape does not fit, by the storage convention (independently of the
    emitted code): the last axes are the channels then the geometric axes, the rest broadcast."""
    sizes = {}
    for t, shape in zip(diagram.inputs, shapes):
        dims, channels = t.type.geometric_dims, t.type.channels
        rank = len(dims) + len(channels)
        if len(shape) < rank or tuple(shape[len(shape) - len(dims):]) != dims:
            return t.name
        for c, n in zip(channels, shape[len(shape) - rank:]):
            if sizes.setdefault(c, n) != n:
                return t.name
    batches = [s[:len(s) - len(t.type.geometric_dims) - len(t.type.channels)] for t, s in zip(diagram.inputs, shapes)]
    for k in range(1, len(batches) + 1):
        try:
            np.broadcast_shapes(*batches[:k])
        except ValueError:
            return diagram.inputs[k - 1].name
    return None


@pytest.mark.parametrize("path, diagram", example_diagrams())
def test_shape_checks_agree_with_the_storage_convention(path, diagram):
    """Random near-miss shapes for every example function: an error exactly when the convention says
    so, naming the argument it names; otherwise a result of the broadcast batch shape."""
    fn = getattr(compiler.load(path), diagram.name)
    rng = np.random.default_rng(zlib.crc32(diagram.name.encode()))
    batches = [(), (4,), (1,), (5,), (2, 4), (2, 1)]
    seen = {True: 0, False: 0}
    for trial in range(60):
        sizes = {"c": 3, "d": 2, "p": 2}
        shapes = []
        for t in diagram.inputs:
            channels = [sizes[c] if rng.random() > 0.15 else int(rng.integers(1, 5)) for c in t.type.channels]
            dims = [d if rng.random() > 0.1 else int(rng.integers(1, 6)) for d in t.type.geometric_dims]
            shape = batches[rng.integers(len(batches))] + tuple(channels) + tuple(dims)
            if rng.random() < 0.08 and shape:
                shape = shape[1:]
            shapes.append(shape)
        args = [rng.normal(size=s) for s in shapes]
        culprit = _reference_error(diagram, shapes)
        seen[culprit is None] += 1
        if culprit is None:
            fn(*args)
            continue
        with pytest.raises(ValueError) as err:
            fn(*args)
        assert str(err.value).startswith(f"{culprit} has "), (shapes, str(err.value))
    assert seen[True] and seen[False]


# -- compilers: no graph break, the same checks -----------------------------------------------------

def test_checks_compile_with_torch_fullgraph():
    torch = pytest.importorskip("torch")
    lin, tn = module("linear"), module("tensornet")
    x = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    w = torch.randn(4, 2, dtype=torch.float64)
    mix = torch.compile(lin.mix, fullgraph=True)  # fullgraph: a graph break would raise
    torch.testing.assert_close(mix(x, w), lin.mix(x, w))
    torch.testing.assert_close(mix(x, w[None]), lin.mix(x, w))  # unequal batches: the slow check, traced
    product = torch.compile(tn.matmul_o3, fullgraph=True)
    torch.testing.assert_close(product(x, x), tn.matmul_o3(x, x))
    bad = torch.zeros(5, 4, 3, 4, dtype=torch.float64)
    message = "Y has shape (5, 4, 3, 4); expected (..., c, 3, 3) with c = 4 from M"
    with pytest.raises(Exception, match=re.escape(message)):  # fullgraph: torch reports it as its own error
        product(x, bad)
    with pytest.raises(ValueError, match=re.escape(message)):  # without fullgraph: the ValueError itself
        torch.compile(tn.matmul_o3)(x, bad)


def test_checks_run_under_jax_jit():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    lin, tn = module("linear"), module("tensornet")
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(5, 4, 3, 3)), rng.normal(size=(4, 2))
    np.testing.assert_allclose(jax.jit(lin.mix)(jnp.asarray(x), jnp.asarray(w[None])), lin.mix(x, w), atol=1e-12)
    with pytest.raises(ValueError, match=re.escape("Y has shape (5, 4, 3, 4); expected (..., c, 3, 3) with c = 4 "
                                                   "from M")):
        jax.jit(tn.matmul_o3)(jnp.asarray(x), jnp.zeros((5, 4, 3, 4)))


# -- exact arithmetic without a batch axis ---------------------------------------------------------

def _fractions(x):
    return np.array([Fraction(int(v * 16), 16) for v in np.ravel(x)], dtype=object).reshape(np.shape(x))


def _inexact(diagram) -> bool:
    """A diagram with a cg / P constant: its tables are rounded floats, so object results are floats."""
    return any(n.constant is not None for e in diagram.equations for t in e.terms for n in t.nodes)


@pytest.mark.parametrize("path, diagram", example_diagrams())
def test_exact_arithmetic_without_batch_axes(path, diagram):
    """Unbatched object arrays of Fractions give arrays (0-d for a scalar) of the float path's shapes,
    equal to the batched exact result; also into out= and with fused=True."""
    fn = getattr(compiler.load(path), diagram.name)
    rng = np.random.default_rng(7)
    args = [_fractions(random_input(t.type, rng, (), {"c": 2, "d": 3})) for t in diagram.inputs]
    floats = _tuple(fn(*[a.astype(float) for a in args]))
    batched = _tuple(fn(*[a[None] for a in args]))
    for kw in ({}, {"fused": True}, {"out": True}):
        if kw.get("out"):
            buffers = tuple(np.empty(np.shape(f), dtype=object) for f in floats)
            result = fn(*args, out=buffers if len(buffers) > 1 else buffers[0])
            assert all(r is b for r, b in zip(_tuple(result), buffers))
        else:
            result = fn(*args, **kw)
        result = _tuple(result)
        assert len(result) == len(floats)
        for r, f, b in zip(result, floats, batched):
            assert isinstance(r, np.ndarray) and r.dtype == object and r.shape == np.shape(f)
            np.testing.assert_allclose(r.astype(float), f, atol=1e-12)
            if not _inexact(diagram):
                assert all(isinstance(v, (int, Fraction)) for v in r.flat)
                assert (r == b[0]).all()


def test_exact_arithmetic_with_one_unbatched_scalar():
    ops = module("extra")
    g = np.array(Fraction(1, 3), dtype=object)
    a = _fractions(np.arange(6.0).reshape(2, 3))
    b = ops.scale(g, a)
    assert b.shape == (2, 3) and (b == a * Fraction(1, 3)).all()
    with pytest.raises(ValueError, match="out has shape"):  # out= keeps its checks
        ops.scale(g, a[0], out=np.empty((2, 3), dtype=object))


# -- constant outputs take the batch shape ---------------------------------------------------------

@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_constant_outputs_have_the_batch_shape(lib):
    make = _library(lib)
    ops = module("extra")
    d, f, n = ops.parts(make((5, 3, 3)))
    assert tuple(d.shape) == (5, 3, 3) and tuple(f.shape) == (5, 3, 3) and tuple(n.shape) == (5,)
    assert (np.asarray(d) == np.eye(3)).all() and (np.asarray(n) == 2).all()
    d[0, 0, 0] = 7  # a fresh array, not a view of a shared constant
    assert ops.parts(make((5, 3, 3)))[0][0, 0, 0] == 1


# -- cupy, on a stand-in ---------------------------------------------------------------------------

def test_stand_in_devices_are_not_hashable():
    with pytest.raises(TypeError):
        hash(fake_cupy.Device(0))


@pytest.mark.parametrize("path, diagram", example_diagrams())
def test_cupy_path_matches_numpy(monkeypatch, path, diagram):
    """Every example function on stand-in cupy arrays (plain, fused, out=): cupy arrays back, equal
    to numpy's result; constant tables cached per device id."""
    cp = fake_cupy.install(monkeypatch)
    mod = compiler.load(path)
    fn = getattr(mod, diagram.name)
    rng = np.random.default_rng(11)
    args = [random_input(t.type, rng, (4,), {"c": 3, "d": 2}) for t in diagram.inputs]
    want = _tuple(fn(*args))
    dev = [cp.asarray(a) for a in args]
    buffers = tuple(cp.asarray(np.empty_like(w)) for w in want)
    for result in (fn(*dev), fn(*dev, fused=True), fn(*dev, out=buffers if len(buffers) > 1 else buffers[0])):
        for r, w in zip(_tuple(result), want):
            assert type(r) is cp.ndarray
            np.testing.assert_allclose(cp.asnumpy(r), w, rtol=1e-12, atol=1e-12)
    for key in getattr(mod, "_CONSTANTS", {}):  # only a module whose functions read constant tables has the cache
        if key[0] == "cupy":
            assert key[3] == 0  # the device id


# -- stacked basis ---------------------------------------------------------------------------------

def test_stacked_basis_docstring_names_the_output_and_the_words():
    from compiler.tools.enumeration import enumerate_degrees
    from compiler.ir.types import TensorType

    fn = module("extra").stress
    doc = fn.__doc__
    assert "_e" not in doc and "Returns a tuple" not in doc
    found = enumerate_degrees([("E", TensorType.parse("sym2"), (0, 1, 2))], TensorType.parse("sym2"), "O3", "S")
    assert len(found.elements) == 7
    assert "S: the 7 basis elements of sym2 stacked, shape (..., 7, 3, 3)" in doc
    for k, e in enumerate(found.elements):
        assert re.search(rf"^ +{k}\. {re.escape(e.words)} +S\[i,j\] = ", doc, re.M), e.words
    out = fn(np.ones((5, 3, 3)))
    assert out.shape == (5, 7, 3, 3)


def test_stacked_basis_elements_in_the_tuple_form_have_the_batch_shape(tmp_path):
    """``enumerate -o`` writes the basis as an ordinary diagram too; its constant element (delta) is a
    (..., 3, 3) array like the others, and equals the stacked form's."""
    from compiler.cli import main

    target = tmp_path / "b.diag"
    assert main(["enumerate", "--in", "E=sym2", "--degree", "E<=1", "--out", "sym2", "-o", str(target)]) == 0
    mod = compiler.load(target)
    tuple_form = [f for f in mod.__all__ if not f.endswith("_stacked")][0]
    stacked_form = [f for f in mod.__all__ if f.endswith("_stacked")][0]
    e = np.random.default_rng(2).normal(size=(5, 3, 3))
    e = e + np.swapaxes(e, -1, -2)
    parts = getattr(mod, tuple_form)(e)
    assert all(p.shape == (5, 3, 3) for p in parts)
    np.testing.assert_allclose(np.stack(parts, -3), getattr(mod, stacked_form)(e), atol=1e-12)


def test_picture_of_a_basis_is_titled_by_the_declaration_and_rows_by_words(tmp_path):
    from compiler.tools.draw import draw_program

    source = "group O3\nbasis stress(E: sym2^<=4) -> S: sym2\n"
    svg = draw_program(lower_source(source, "b.diag"))
    assert "_e" not in svg
    title = re.search(r'<text class="title"[^>]*>([^<]*)</text>', svg).group(1)
    assert title == "basis stress: (E: sym2^&lt;=4) -&gt; S: sym2, 22 elements stacked"
    labels = re.findall(r'<text class="lhs"[^>]*>([^<]*)</text>', svg)
    assert labels[0] == "0. delta:  S[i,j] =" and labels[1] == "1. tr(E) delta:  S[i,j] ="
    assert len(labels) == 22
    # the canvas is as wide as its rows (636 px), not as a title listing every element (2,579 px before)
    width = float(re.search(r'<svg[^>]* width="([0-9.]+)"', svg).group(1))
    assert width < 900
