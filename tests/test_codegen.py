"""The emitted Python modules: equivariance, agreement with independent references, backends,
exactness, determinism, safety of what the module carries."""

import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

import compiler
from compiler.testing import assert_equivariant, random_input
from conftest import DIAGRAMS, ROOT, example_diagrams
from reference import REFERENCES

MODULES = {}


def module_for(path):
    if path not in MODULES:
        MODULES[path] = compiler.load(path)
    return MODULES[path]


def inputs_for(diagram, rng, batch=(5,), channels=None, dtype=np.float64):
    sizes = channels or {"c": 3, "d": 2}
    return [random_input(t.type, rng, batch, sizes, dtype) for t in diagram.inputs]


@pytest.mark.parametrize("path, diagram", example_diagrams())
def test_example_is_equivariant(path, diagram):
    fn = getattr(module_for(path), diagram.name)
    assert_equivariant(fn, [t.type for t in diagram.inputs], [t.type for t in diagram.outputs],
                       diagram.group, trials=3, channel_sizes={"c": 3, "d": 2}, tol=1e-12)


@pytest.mark.parametrize("path, diagram", example_diagrams())
def test_example_matches_independent_reference(path, diagram):
    fn = getattr(module_for(path), diagram.name)
    ref = REFERENCES[(path.stem, diagram.name)]
    rng = np.random.default_rng(7)
    for batch in [(), (4,), (2, 3)]:
        args = inputs_for(diagram, rng, batch)
        got, want = fn(*args), ref(*args)
        if len(diagram.outputs) == 1:
            got, want = (got,), (want,)
        assert len(got) == len(want) == len(diagram.outputs)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_references_cover_every_example():
    assert {(p.values[0].stem, p.values[1].name) for p in example_diagrams()} == set(REFERENCES)


def test_so3_product_is_not_reflection_equivariant():
    """TensorNet's SO(3) product passes rotations and must fail a reflection (SEEDS T9)."""
    fn = module_for(ROOT / "diagrams" / "tensornet_so3.diag").matmul_so3
    t = ["cart2(0e+1o+2e)[c]"] * 2
    assert_equivariant(fn, t, t[:1], "SO3")
    with pytest.raises(AssertionError, match="reflection"):
        assert_equivariant(fn, t, t[:1], "O3")


def test_float32_stays_float32_and_batches_broadcast():
    ops = module_for(ROOT / "diagrams" / "tensornet.diag")
    rng = np.random.default_rng(0)
    r = rng.normal(size=(4, 3)).astype(np.float32)
    f = rng.normal(size=(2, 4, 5)).astype(np.float32)
    x = ops.edge_tensor(r, f, f, f)
    assert x.dtype == np.float32 and x.shape == (2, 4, 5, 3, 3)


def test_exact_rational_inputs_give_exact_outputs():
    """Object arrays of Fractions go through numpy exactly (what certificates rely on)."""
    ops = module_for(ROOT / "diagrams" / "tensornet.diag")
    x = np.array([[[Fraction(i * 3 + j + 1, 7) for j in range(3)] for i in range(3)]], dtype=object)
    i_part, a_part, s_part = ops.decompose(x)
    assert all(isinstance(v, Fraction) for v in s_part.flat)
    assert (i_part + a_part + s_part == x).all()
    assert sum(s_part[0, k, k] for k in range(3)) == 0


def test_delta_contractions_are_eliminated_not_multiplied():
    text = compiler.compile_source(
        "diagram f(X: cart2, a: vec) -> y: vec {\n  y[i] = delta[i,j] X[j,k] a[k] + X[k,k] a[i] + delta[k,k] a[i]\n}\n")
    body = text[text.index("def _f_planned("):text.index("def f(")]  # f's code (its VJP needs a delta)
    assert "_eye" not in body and '"eye"' not in body
    ns = {}
    exec(text, ns)
    rng = np.random.default_rng(1)
    X, a = rng.normal(size=(3, 3)), rng.normal(size=3)
    np.testing.assert_allclose(ns["f"](X, a), X @ a + np.trace(X) * a + 3 * a)


def test_common_subexpressions_are_computed_once():
    text = (ROOT / "diagrams" / "decompose.diag").read_text()
    module = compiler.compile_source(text)
    body = module[module.index("def _decompose_planned("):module.index("def decompose(")]
    assert body.count('"...aa->..."') == 1  # the trace, shared by I and S


def test_output_is_never_a_view_of_an_input():
    ns = {}
    exec(compiler.compile_source("diagram f(X: cart2) -> Y: cart2 {\n  Y[i,j] = X[j,i]\n}\n"), ns)
    x = np.arange(9.0).reshape(3, 3)
    y = ns["f"](x)
    y[0, 1] = 100.0
    assert x[1, 0] == 3.0


def test_module_is_standalone():
    text = compiler.compile_file(ROOT / "diagrams" / "tensornet.diag")
    assert "compiler" not in [line.split()[1] for line in text.splitlines() if line.startswith(("import ", "from "))]
    code = ("import sys, runpy; ns = runpy.run_path(sys.argv[1]); "
            "assert 'numpy' not in sys.modules and 'torch' not in sys.modules and 'compiler' not in sys.modules; "
            "import numpy as np; ns['tensor_norm'](np.ones((2, 3, 3))); print('ok')")
    out_dir = ROOT / "build" / "test_standalone"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "tn.py"
    target.write_text(text)
    env = dict(os.environ, PYTHONPATH="")
    res = subprocess.run([sys.executable, "-S", "-c", code, str(target)], capture_output=True, text=True,
                         cwd=out_dir, env=env)
    # -S leaves site-packages out: numpy is then only importable if it is on the default path
    if "No module named 'numpy'" in res.stderr:
        res = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True,
                             cwd=out_dir, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_docstring_carries_source_version_and_hash_and_cannot_run_code():
    import hashlib

    source = ('# """ ; import os; os.system("echo pwned") ; """\n'
              "# \\\"\"\" \\x00 \\N{DIGIT ONE} \r tab\t \u2028 end\n"
              "diagram dot(a: vec, b: vec) -> s: scalar {\n  s = a[i] b[i]\n}\n")
    text = compiler.compile_source(source, "evil\"\"\"name.diag")
    ns = {}
    exec(compile(text, "m", "exec"), ns)
    doc = ns["__doc__"]
    assert source in doc
    assert compiler.__version__ in doc
    assert hashlib.sha256(source.encode()).hexdigest() in doc
    # nothing from the source ran: the module defines its functions, their derivatives, MIXING,
    # HOST_KERNELS and private helpers only (no `os`, no name the source's text could have introduced)
    names = set(k for k in ns if not k.startswith("__"))
    assert {k for k in names if not k.startswith("_")} == {"dot", "dot_vjp", "dot_vjp_vjp", "MIXING", "HOST_KERNELS"}
    assert "os" not in ns and {"_dot_fused", "_call", "_check_shapes"} <= names


@pytest.mark.parametrize("path", DIAGRAMS, ids=[p.stem for p in DIAGRAMS])
def test_output_is_byte_identical_across_hash_seeds(path):
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        res = subprocess.run([sys.executable, "-m", "compiler", "compile", str(path)], capture_output=True,
                             env=env, cwd=ROOT)
        assert res.returncode == 0, res.stderr
        outputs.add(res.stdout)
    assert len(outputs) == 1


# -- other array libraries -------------------------------------------------------------------------

def _torch():
    import torch  # installed by the test extra: `pip install -e '.[test]'`

    return torch


@pytest.mark.parametrize("path, diagram", example_diagrams())
def test_torch_in_torch_out_with_gradients(path, diagram):
    torch = _torch()
    fn = getattr(module_for(path), diagram.name)
    rng = np.random.default_rng(3)
    args = inputs_for(diagram, rng, batch=(2,), channels={"c": 2, "d": 2})
    targs = [torch.tensor(a, requires_grad=True) for a in args]
    out = fn(*targs)
    outs = out if isinstance(out, tuple) else (out,)
    want = fn(*args)
    wants = want if isinstance(want, tuple) else (want,)
    for o, w in zip(outs, wants):
        assert isinstance(o, torch.Tensor) and o.dtype == torch.float64
        np.testing.assert_allclose(o.detach().numpy(), w, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fn, tuple(targs), eps=1e-6, atol=1e-8)


def test_torch_float32_and_mixed_weight_inputs():
    torch = _torch()
    ops = module_for(ROOT / "diagrams" / "linear.diag")
    x = torch.randn(4, 3, 3, 3, dtype=torch.float32)
    w = np.random.default_rng(0).normal(size=(3, 2))  # numpy weights are converted to x's dtype
    y = ops.mix(x, w)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.shape == (4, 2, 3, 3)
    np.testing.assert_allclose(y.numpy(), np.einsum("cd,ncij->ndij", w, x.numpy()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path, diagram", example_diagrams())
def test_jax_in_jax_out(path, diagram):
    import jax  # installed by the test extra

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    fn = getattr(module_for(path), diagram.name)
    args = inputs_for(diagram, np.random.default_rng(4), batch=(2,))
    out = jax.jit(fn)(*[jnp.asarray(a) for a in args])
    outs = out if isinstance(out, tuple) else (out,)
    want = fn(*args)
    wants = want if isinstance(want, tuple) else (want,)
    for o, w in zip(outs, wants):
        assert isinstance(o, jax.Array)
        np.testing.assert_allclose(np.asarray(o), w, rtol=1e-12, atol=1e-12)


# -- preallocated outputs (out=) --------------------------------------------------------------------

def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _buffers(want, make):
    bufs = tuple(make(w) for w in _as_tuple(want))
    return bufs if isinstance(want, tuple) else bufs[0]


@pytest.mark.parametrize("path, diagram", example_diagrams())
def test_out_numpy_writes_the_planned_result_in_place(path, diagram):
    fn = getattr(module_for(path), diagram.name)
    rng = np.random.default_rng(11)
    args = inputs_for(diagram, rng, batch=(3, 2))
    before = [a.copy() for a in args]
    want = fn(*args)
    out = _buffers(want, lambda w: np.full_like(w, np.nan))
    got = fn(*args, out=out)
    for g, o, w in zip(_as_tuple(got), _as_tuple(out), _as_tuple(want)):
        assert g is o  # the very buffers, filled in place
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    for a, b in zip(args, before):
        assert np.array_equal(a, b)  # inputs untouched


@pytest.mark.parametrize("path, diagram", example_diagrams())
def test_out_torch_writes_the_planned_result_in_place(path, diagram):
    torch = _torch()
    fn = getattr(module_for(path), diagram.name)
    args = inputs_for(diagram, np.random.default_rng(12), batch=(4,))
    want = fn(*args)
    out = _buffers(want, lambda w: torch.full(w.shape, float("nan"), dtype=torch.float64))
    got = fn(*[torch.from_numpy(a) for a in args], out=out)
    for g, o, w in zip(_as_tuple(got), _as_tuple(out), _as_tuple(want)):
        assert g is o
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-12, atol=1e-12)


def test_out_is_exact_on_rational_inputs_and_broadcasts_batches():
    ops = module_for(ROOT / "diagrams" / "tensornet.diag")
    x = np.array([[[Fraction(i * 3 + j + 1, 7) for j in range(3)] for i in range(3)]], dtype=object)
    out = tuple(np.empty((1, 3, 3), dtype=object) for _ in range(3))
    ops.decompose(x, out=out)
    for o, w in zip(out, ops.decompose(x)):
        assert (o == w).all() and all(isinstance(v, Fraction) for v in o.flat)
    rng = np.random.default_rng(0)
    r = rng.normal(size=(4, 3)).astype(np.float32)
    f = rng.normal(size=(2, 4, 5)).astype(np.float32)
    buf = np.empty((2, 4, 5, 3, 3), np.float32)
    assert ops.edge_tensor(r, f, f, f, out=buf) is buf
    np.testing.assert_allclose(buf, ops.edge_tensor(r, f, f, f), rtol=1e-6, atol=1e-6)


def _bad_out_cases():
    z = np.zeros((2, 3, 3, 3))
    x = np.ones((2, 3, 3, 3))
    read_only = np.zeros((2, 3, 3, 3))
    read_only.flags.writeable = False
    return [
        ("matmul_o3", (x, x), np.zeros((2, 3, 3)), ValueError, r"out has shape \(2, 3, 3\); the result has shape \(2, 3, 3, 3\)"),
        ("matmul_o3", (x, x), z.astype(np.float32), TypeError, "out has dtype float32; the result has dtype float64"),
        ("matmul_o3", (x, x), x, ValueError, "out shares memory with an input"),
        ("matmul_o3", (x, x), [[0.0]], TypeError, "out must be a numpy array like the inputs, not list"),
        ("matmul_o3", (x, x), read_only, ValueError, "out is read-only"),
        ("decompose", (x,), (z, z.copy()), TypeError, "out must be a tuple of 3 arrays, one per result"),
        ("decompose", (x,), (z, z, z.copy()), ValueError, "two arrays of out share memory"),
        ("decompose", (x,), (z, z.copy(), np.zeros(3)), ValueError, r"out\[2\] has shape \(3,\)"),
    ]


@pytest.mark.parametrize("name, args, out, error, message", _bad_out_cases())
def test_bad_out_gets_one_clear_error(name, args, out, error, message):
    fn = getattr(module_for(ROOT / "diagrams" / "tensornet.diag"), name)
    with pytest.raises(error, match=message):
        fn(*args, out=out)


def test_out_is_refused_for_jax_and_torch_buffers_must_match():
    import jax.numpy as jnp

    torch = _torch()
    ops = module_for(ROOT / "diagrams" / "tensornet.diag")
    with pytest.raises(TypeError, match="jax arrays are immutable"):
        ops.tensor_norm(jnp.ones((2, 3, 3, 3)), out=jnp.zeros((2, 3)))
    x = torch.ones(2, 3, 3, 3)
    with pytest.raises(TypeError, match="out has dtype torch.float64; the result has dtype torch.float32"):
        ops.tensor_norm(x, out=torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="out must be a torch array like the inputs, not ndarray"):
        ops.tensor_norm(x, out=np.zeros((2, 3), np.float32))


def test_out_unrolled_cells_with_every_sign_pattern():
    """Components written into out= views by one ufunc: a + b, a - b, -a + b and -(a + b)."""
    src = ("diagram f(A: cart2, X: cart2) -> (v: axial, w: axial, y: cart2) {\n"
           "  v[i] = -eps[i,j,k] A[j,k]\n  w[i] = eps[i,j,k] A[j,k]\n"
           "  y[i,j] = -X[i,j] - X[j,i] + 2 X[k,k] delta[i,j]\n}\n")
    ns = {}
    exec(compiler.compile_source(src), ns)
    rng = np.random.default_rng(3)
    A, X = rng.normal(size=(2, 4, 3, 3))
    want = ns["f"](A, X)
    out = tuple(np.full_like(w, np.nan) for w in want)
    ns["f"](A, X, out=out)
    for o, w in zip(out, want):
        np.testing.assert_allclose(o, w, rtol=1e-12, atol=1e-12)
    vec = np.stack([A[:, 1, 2] - A[:, 2, 1], A[:, 2, 0] - A[:, 0, 2], A[:, 0, 1] - A[:, 1, 0]], -1)
    np.testing.assert_allclose(out[1], vec)
    np.testing.assert_allclose(out[0], -vec)
    np.testing.assert_allclose(out[2], -X - np.swapaxes(X, -1, -2) + 2 * np.trace(X, axis1=1, axis2=2)[:, None, None]
                               * np.eye(3))


def test_channel_mixing_into_a_non_contiguous_out_buffer():
    """The flat matmul writes in place into a contiguous buffer, and copies into any other view."""
    torch = _torch()
    ops = module_for(ROOT / "diagrams" / "linear.diag")
    rng = np.random.default_rng(4)
    x, w = rng.normal(size=(5, 3, 3, 3)), rng.normal(size=(3, 2))
    want = np.einsum("cd,ncij->ndij", w, x)
    strided = np.zeros((5, 2, 3, 6))[..., ::2]  # every other column: not contiguous
    assert ops.mix(x, w, out=strided) is strided
    np.testing.assert_allclose(strided, want, atol=1e-12)
    tbuf = torch.zeros(5, 2, 3, 6, dtype=torch.float64)[..., ::2]
    ops.mix(torch.from_numpy(x), torch.from_numpy(w), out=tbuf)
    np.testing.assert_allclose(tbuf.numpy(), want, atol=1e-12)
