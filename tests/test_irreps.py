"""irreps(...) types: e3nn's flat layout (blocks selected as h.1o[u,m]), zero-copy views of the
inputs, fixed-size channel axes, and e3nn's TensorProduct instructions (uvw, uvu, uuu) as diagrams,
against e3nn's values in float64."""

import math
import sys

import numpy as np
import pytest

import compiler
from compiler.api import checked_program
from compiler.testing import assert_equivariant
from compiler.ir.types import TensorType
from conftest import ROOT

sys.path.insert(0, str(ROOT / "examples"))
from e3nn_paths import diagram_weights  # noqa: E402

INSTRUCTIONS = ROOT / "examples" / "e3nn_instructions.diag"

LINEAR = """
diagram lin(h: irreps(32x0e+16x1o+8x2e), W0: weight[32,4], W2: weight[8,4]) -> o: irreps(4x0e+4x2e) {
    o.0e[w] = W0[u,w] h.0e[u]
    o.2e[w,m] = W2[u,w] h.2e[u,m]
}
diagram blocks(h: irreps(32x0e+16x1o+8x2e)) -> (a: scalar[32], b: sph(1o)[16], c: sph(2e)[8], s: irreps(16x1o)) {
    a[u] = h.0e[u]
    b[u,m] = h.1o[u,m]
    c[u,m] = h.2e[u,m]
    s.1o[u,m] = h.1o[u,m]
}
"""


@pytest.fixture(scope="module")
def e3nn():
    pytest.importorskip("e3nn")
    import torch
    from e3nn import o3

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield o3
    torch.set_default_dtype(old)


@pytest.fixture(scope="module")
def lin():
    return compiler.load_source(LINEAR, "irreps_linear")


def test_type_parses_and_prints():
    t = TensorType.parse("irreps(32x0e+16x1o+8x2e)")
    assert str(t) == "irreps(32x0e+16x1o+8x2e)"
    assert t.flat_dim == 32 + 48 + 40
    assert [(o, m, str(ir)) for o, m, ir in t.block_offsets()] == [(0, 32, "0e"), (32, 16, "1o"), (80, 8, "2e")]
    assert str(TensorType.parse("irreps(1o+2x0e)")) == "irreps(1x1o+2x0e)"


def test_layout_matches_e3nn(e3nn, lin):
    """Each block is e3nn's slice, multiplicity-major: irreps.slices() and x[..., s].reshape(mul, 2l+1)."""
    import torch

    irreps = e3nn.Irreps("32x0e+16x1o+8x2e")
    assert TensorType.parse("irreps(32x0e+16x1o+8x2e)").flat_dim == irreps.dim
    x = torch.randn(3, 2, irreps.dim)
    a, b, c, s = lin.blocks(x)
    want = [x[..., sl].reshape(x.shape[:-1] + (mul, ir.dim)) for (mul, ir), sl in zip(irreps, irreps.slices())]
    assert torch.equal(a, want[0][..., 0]) and torch.equal(b, want[1]) and torch.equal(c, want[2])
    assert torch.equal(s, x[..., irreps.slices()[1]])  # an irreps output: the flat block back
    # e3nn's own split of the same array
    from e3nn.util.jit import compile_mode  # noqa: F401  (e3nn importable in full)
    ex = e3nn.Irreps("16x1o").randn(5, -1)
    assert torch.equal(lin.blocks(torch.cat([torch.zeros(5, 32), ex, torch.zeros(5, 40)], -1))[3], ex)


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_input_blocks_are_views(lin, library):
    """The block-level function receives views of the flat input (no copy)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 120))
    if library == "torch":
        import torch

        x = torch.tensor(x)
    seen = []
    inner = lin._blocks_blocks

    def spy(*args, **kw):
        seen.extend(args)
        return inner(*args, **kw)

    lin._blocks_blocks = spy
    try:
        lin.blocks(x)
    finally:
        lin._blocks_blocks = inner
    assert [tuple(a.shape) for a in seen] == [(7, 32), (7, 16, 3), (7, 8, 5)]
    for a in seen:
        if library == "torch":
            assert a.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
        else:
            assert a.base is not None and np.shares_memory(a, x)


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_single_block_output_is_a_view_of_its_block(lin, library):
    """Where e3nn's layout allows it (an irreps output of one block, which is one contiguous slab of
    the flat axis) the flat output is the block-level result reshaped, no copy; an output of several
    blocks is one concatenation of them (the blocks are computed separately)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(7, 120))
    if library == "torch":
        import torch

        x = torch.tensor(x)
    got = []
    inner = lin._blocks_blocks

    def spy(*args, **kw):
        got.extend(inner(*args, **kw))
        return tuple(got)

    lin._blocks_blocks = spy
    try:
        a, b, c, s = lin.blocks(x)
    finally:
        lin._blocks_blocks = inner
    assert tuple(s.shape) == (7, 48) and tuple(got[3].shape) == (7, 16, 3)
    if library == "torch":
        assert s.data_ptr() == got[3].data_ptr()
    else:
        assert np.shares_memory(s, got[3])
    np.testing.assert_array_equal(np.asarray(s), np.asarray(x[:, 32:80]))


def test_linear_values_and_out(lin):
    rng = np.random.default_rng(2)
    h, W0, W2 = rng.normal(size=(5, 120)), rng.normal(size=(32, 4)), rng.normal(size=(8, 4))
    o = lin.lin(h, W0, W2)
    want = np.concatenate([h[:, :32] @ W0, np.einsum("uw,num->nwm", W2, h[:, 80:].reshape(5, 8, 5)).reshape(5, 20)], -1)
    assert o.shape == (5, 24) and np.abs(o - want).max() < 1e-12
    buf = np.empty((5, 24))
    assert lin.lin(h, W0, W2, out=buf) is buf and np.abs(buf - want).max() < 1e-12
    with pytest.raises(ValueError, match="has shape"):
        lin.lin(h, W0, W2, out=np.empty((5, 23)))


def test_bad_shapes_name_the_argument(lin):
    rng = np.random.default_rng(3)
    h, W0, W2 = rng.normal(size=(5, 120)), rng.normal(size=(32, 4)), rng.normal(size=(8, 4))
    with pytest.raises(ValueError, match=r"h has shape \(5, 119\); expected \(\.\.\., 120\) for irreps\(32x0e"):
        lin.lin(h[:, :119], W0, W2)
    with pytest.raises(ValueError, match=r"W0 has shape \(31, 4\); expected \(\.\.\., 32, 4\)"):
        lin.lin(h, W0[:31], W2)


def test_linear_is_equivariant(lin):
    program = checked_program(LINEAR)
    d = program.diagrams[0]
    assert_equivariant(lin._lin_blocks, [t.type for t in d.inputs], [t.type for t in d.outputs], "O3")


def test_torch_autograd_through_the_flat_arrays(lin):
    import torch

    h = torch.randn(4, 120, dtype=torch.float64, requires_grad=True)
    W0 = torch.randn(32, 4, dtype=torch.float64, requires_grad=True)
    W2 = torch.randn(8, 4, dtype=torch.float64)
    torch.autograd.gradcheck(lambda h, W0: lin.lin(h, W0, W2), (h, W0))


# -- e3nn's instructions ------------------------------------------------------------------------------
PATHS = [(0, 0, 0), (1, 1, 0), (0, 1, 1), (1, 0, 1), (1, 1, 2)]
CASES = {
    "uvw": ("4x0e+4x1o", "0e+1o", "4x0e+4x1o+4x1e"),
    "uvu": ("4x0e+4x1o", "0e+1o", "4x0e+4x1o+4x1e"),
    "uuu": ("4x0e+4x1o", "4x0e+4x1o", "4x0e+4x1o+4x1e"),
}


@pytest.fixture(scope="module")
def instructions():
    return compiler.load(INSTRUCTIONS)


@pytest.mark.parametrize("mode", ["uvw", "uvu", "uuu"])
def test_instructions_match_e3nn(e3nn, instructions, mode):
    import torch

    in1, in2, out = CASES[mode]
    tp = e3nn.TensorProduct(in1, in2, out, [p + (mode, True) for p in PATHS], shared_weights=True,
                            internal_weights=False)
    torch.manual_seed(0)
    x, y = e3nn.Irreps(in1).randn(6, -1), e3nn.Irreps(in2).randn(6, -1)
    w = torch.randn(tp.weight_numel)
    want = tp(x, y, w).detach().numpy()
    got = getattr(instructions, f"tp_{mode}")(x.numpy(), y.numpy(), *(a.detach().numpy() for a in diagram_weights(tp, w)))
    assert got.shape == want.shape == (6, e3nn.Irreps(out).dim)
    assert np.abs(got - want).max() < 1e-10
    # the same through torch (flat tensors in, a flat tensor out)
    got_t = getattr(instructions, f"tp_{mode}")(x, y, *diagram_weights(tp, w))
    assert torch.allclose(got_t, tp(x, y, w), atol=1e-10, rtol=0)


@pytest.fixture(scope="module")
def every_path():
    """examples/e3nn_paths.py's product of (0e, 1o, 2e) features with (0e, 1o, 2e) harmonics along
    all 11 paths (cg(1,1,2), cg(1,2,1), cg(2,1,1), cg(2,2,2) among them), K = 3, per mode."""
    import e3nn_paths

    return {mode: compiler.load_source(e3nn_paths.source(3, mode), f"every_path_{mode}") for mode in ("uvw", "uvu")}


@pytest.mark.parametrize("mode", ["uvw", "uvu"])
def test_every_path_to_l2_matches_e3nn_with_its_gradients(e3nn, every_path, mode):
    """Values, and the gradients of a random linear functional with respect to x, y and every
    weight (diagc's generated VJPs against e3nn's autograd), equal e3nn's in float64; the product
    is O(3)-equivariant on the flat arrays."""
    import torch
    import e3nn_paths

    tp = e3nn_paths.e3nn_tensor_product(3, mode)
    torch.manual_seed(1)
    x = tp.irreps_in1.randn(5, -1, dtype=torch.float64).requires_grad_(True)
    y = tp.irreps_in2.randn(5, -1, dtype=torch.float64).requires_grad_(True)
    w = torch.randn(tp.weight_numel, dtype=torch.float64, requires_grad=True)
    want = tp(x, y, w)
    got = every_path[mode].tp(x, y, *diagram_weights(tp, w))
    assert got.shape == want.shape == (5, 27)
    assert (got - want).abs().max() < 1e-12
    cot = torch.randn(want.shape, dtype=torch.float64)
    g_want = torch.autograd.grad(want, (x, y, w), cot)
    g_got = torch.autograd.grad(got, (x, y, w), cot)
    for a, b in zip(g_got, g_want):
        assert (a - b).abs().max() < 1e-12 * max(1.0, float(b.abs().max()))
    R = e3nn.rand_matrix(dtype=torch.float64)
    D_x, D_y = (ir.D_from_matrix(-R) for ir in (tp.irreps_in1, tp.irreps_in2))  # an improper rotation
    ws = [a.detach() for a in diagram_weights(tp, w)]
    with torch.no_grad():
        rotated = every_path[mode].tp(x @ D_x.T, y @ D_y.T, *ws)
        assert (rotated - every_path[mode].tp(x, y, *ws) @ D_x.T).abs().max() < 1e-12


def test_instructions_equivariant(e3nn, instructions):
    """Rotating every block of the flat inputs by e3nn's D rotates the flat output by its D."""
    import torch

    in1, in2, out = CASES["uvw"]
    R = e3nn.rand_matrix(dtype=torch.float64)
    D1, D2, Do = (e3nn.Irreps(s).D_from_matrix(-R) for s in (in1, in2, out))  # with the inversion
    x, y = e3nn.Irreps(in1).randn(3, -1), e3nn.Irreps(in2).randn(3, -1)
    ws = [torch.randn(4, 1, 4, dtype=torch.float64) for _ in PATHS]
    a = instructions.tp_uvw(x @ D1.T, y @ D2.T, *ws)
    b = instructions.tp_uvw(x, y, *ws) @ Do.T
    assert torch.allclose(a, b, atol=1e-10, rtol=0)


def test_jax_flat_arrays_jit_and_grad(lin):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(4)
    h, W0, W2 = rng.normal(size=(5, 120)), rng.normal(size=(32, 4)), rng.normal(size=(8, 4))
    want = lin.lin(h, W0, W2)
    got = jax.jit(lambda h: lin.lin(h, W0, W2))(jnp.asarray(h))
    assert np.abs(np.asarray(got) - want).max() < 1e-12
    g = jax.grad(lambda h: lin.lin(h, W0, W2).sum())(jnp.asarray(h))
    expect = np.zeros(120)
    expect[:32] = W0.sum(1)
    expect[80:] = np.repeat(W2.sum(1), 5)
    assert np.abs(np.asarray(g) - expect).max() < 1e-12


def test_certificate_and_derivative_text(tmp_path, capsys):
    """diagc prove / verify bind the block-level function; diagc grad prints .diag text (fixed-size
    channels as numbers, labels u0, u1...) that checks again."""
    from compiler import cli

    src = tmp_path / "tp.diag"
    src.write_text("diagram tp(x: irreps(2x0e+2x1o), y: irreps(0e+1o), W: weight[2,1,2]) -> o: irreps(2x1o+2x1e) {\n"
                   "    o.1o[w,m] = W[u,v,w] x.1o[u,m] y.0e[v] + W[u,v,w] x.0e[u] y.1o[v,m]\n"
                   "    o.1e[w,k] = W[u,v,w] cg(1,1,1)[i,j,k] x.1o[u,i] y.1o[v,j]\n}\n")
    assert cli.main(["prove", str(src), "-o", str(tmp_path / "cert")]) == 0
    assert cli.main(["verify", str(tmp_path / "cert")]) == 0
    capsys.readouterr()
    assert cli.main(["grad", str(src)]) == 0
    text = capsys.readouterr().out
    assert "d_W[u0,u1,u2] =" in text and "W: weight[2,1,2]" in text
    assert [d.name for d in checked_program(text).diagrams] == ["tp_vjp"]


def test_exact_unbatched_object_arrays(lin):
    """Fractions without batch axes go through the flat function exactly (the block-level function
    re-entered with a batch axis of 1)."""
    from fractions import Fraction

    rng = np.random.default_rng(5)
    h = np.array([Fraction(int(v), 7) for v in rng.integers(-9, 9, 120)], dtype=object)
    W0 = np.array([[Fraction(int(v)) for v in row] for row in rng.integers(-3, 3, (32, 4))], dtype=object)
    W2 = np.array([[Fraction(int(v)) for v in row] for row in rng.integers(-3, 3, (8, 4))], dtype=object)
    o = lin.lin(h, W0, W2)
    assert o.shape == (24,) and o.dtype == object
    want = list(h[:32] @ W0) + list(np.einsum("uw,um->wm", W2, h[80:].reshape(8, 5)).reshape(-1))
    assert list(o) == want
