"""Functions of invariants in diagrams: values against a hand-written numpy reference, equivariance,
derivatives (gradcheck, gradgradcheck, NAME_vjp), argument checks, certificates."""

import json

import numpy as np
import pytest
import torch

from compiler import cli
from compiler.api import load_source, lower_source
from compiler.tools.certify import verify
from compiler.testing import assert_equivariant, random_input

BUILTINS = """
diagram g(X: sym2[c], Y: cart2[c], a: vec, b: vec, s0: scalar) -> (s: scalar[c], v: vec) {
  s[c] = silu(X[c,i,j] X[c,i,j]) Y[c,k,k] + sigmoid(Y[c,i,i]) - tanh(X[c,i,i]) exp(s0)
  v[i] = sqrt(1 + a[j] a[j]) b[i] + rsqrt(1 + b[j] b[j]) a[i] + a[i] / (1 + b[j] b[j] + Y[c,k,k] Y[c,l,l])
}
diagram odd(a: vec, b: vec, c: vec, d: vec) -> (p: pscalar, w: vec) {
  p = tanh(eps[i,j,k] a[i] b[j] c[k])
  w[i] = d[i] / (eps[j,k,l] a[j] b[k] c[l]) tanh(eps[j,k,l] a[j] b[k] c[l])
}
diagram mix(v: vec[c], X: sym2[c], s0: scalar, phi: fn(3 -> 2)) -> w: vec[c] {
  w[c,i] = phi(v[c,j] v[c,j], X[c,j,j], s0)[0] v[c,i] + phi(v[c,j] v[c,j], X[c,j,j], s0)[1] X[c,i,j] v[c,j]
}
diagram soft(v: vec[c], X: sym2[c]) -> w: vec[c] {
  w[c,i] = silu(X[c,j,k] X[c,j,k]) v[c,i] / (1 + v[c,k] v[c,k])
}
diagram nested(a: vec, s0: scalar) -> s: scalar {
  s = silu(tanh(a[i] a[i]) s0 + 1) s0
}
"""


def _silu(x):
    return x / (1 + np.exp(-x))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.fixture(scope="module")
def mod():
    return load_source(BUILTINS, "functions_test")


def _inputs(types, seed=0, batch=(5,), c=4):
    rng = np.random.default_rng(seed)
    return [random_input(t, rng, batch, {"c": c}) for t in types]


G_TYPES = ["sym2[c]", "cart2[c]", "vec", "vec", "scalar"]


def test_builtins_match_a_numpy_reference(mod):
    X, Y, a, b, s0 = _inputs(G_TYPES)
    s, v = mod.g(X, Y, a, b, s0)
    trY, trX = np.einsum("bcii->bc", Y), np.einsum("bcii->bc", X)
    ref_s = (_silu(np.einsum("bcij,bcij->bc", X, X)) * trY + _sigmoid(trY)
             - np.tanh(trX) * np.exp(s0)[:, None])
    aa, bb = (a * a).sum(-1), (b * b).sum(-1)
    ref_v = (np.sqrt(1 + aa)[:, None] * b + (1 / np.sqrt(1 + bb))[:, None] * a
             + a / (1 + bb + (trY * trY).sum(-1))[:, None])
    np.testing.assert_allclose(s, ref_s, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(v, ref_v, rtol=1e-12, atol=1e-12)
    # torch and jax run the same functions in their own library
    ts, tv = mod.g(*[torch.tensor(x) for x in (X, Y, a, b, s0)])
    np.testing.assert_allclose(ts.numpy(), ref_s, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tv.numpy(), ref_v, rtol=1e-12, atol=1e-12)
    import jax
    jax.config.update("jax_enable_x64", True)
    js, jv = mod.g(*[jax.numpy.asarray(x) for x in (X, Y, a, b, s0)])
    np.testing.assert_allclose(np.asarray(js), ref_s, rtol=1e-12, atol=1e-12)


def test_builtins_and_pseudoscalar_into_odd_functions_are_equivariant(mod):
    assert_equivariant(mod.g, G_TYPES, ["scalar[c]", "vec"], "O3", channel_sizes={"c": 3})
    assert_equivariant(mod.odd, ["vec"] * 4, ["pscalar", "vec"], "O3")
    a, b, c, d = _inputs(["vec"] * 4, seed=3)
    p, w = mod.odd(a, b, c, d)
    t = np.einsum("bi,bi->b", a, np.cross(b, c))
    np.testing.assert_allclose(p, np.tanh(t), rtol=1e-12)
    np.testing.assert_allclose(w, d * (np.tanh(t) / t)[:, None], rtol=1e-12)


class MLP(torch.nn.Module):
    def __init__(self, n_in, n_out, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(n_in, 8), torch.nn.SiLU(), torch.nn.Linear(8, n_out))
        self.double()

    def forward(self, x):
        return self.net(x)


def test_user_function_an_nn_module_broadcast_over_channels():
    mod = load_source(BUILTINS, "functions_user")
    phi = MLP(3, 2)
    v, X, s0 = _inputs(["vec[c]", "sym2[c]", "scalar"], seed=1)
    w = mod.mix(torch.tensor(v), torch.tensor(X), torch.tensor(s0), phi).detach().numpy()
    # reference: the module applied to the stacked invariants by hand
    vv, trX = (v * v).sum(-1), np.einsum("bcii->bc", X)
    args = np.stack([vv, trX, np.broadcast_to(s0[:, None], vv.shape)], -1)
    out = phi(torch.tensor(args)).detach().numpy()
    ref = out[..., 0, None] * v + out[..., 1, None] * np.einsum("bcij,bcj->bci", X, v)
    np.testing.assert_allclose(w, ref, rtol=1e-12, atol=1e-12)
    # any callable of the library: a numpy function of the stacked arguments
    W = np.random.default_rng(2).normal(size=(3, 2))
    f = lambda x: np.tanh(x @ W)  # noqa: E731
    assert_equivariant(lambda v, X, s0: mod.mix(v, X, s0, f), ["vec[c]", "sym2[c]", "scalar"], ["vec[c]"],
                       "O3", channel_sizes={"c": 3})


def test_user_function_arguments_are_checked(mod):
    v, X, s0 = _inputs(["vec[c]", "sym2[c]", "scalar"])
    with pytest.raises(TypeError, match=r"mix: argument 'phi' \(fn\(3 -> 2\)\) must be a callable"):
        mod.mix(v, X, s0, 3.0)
    with pytest.raises(ValueError, match=r"function argument 'phi' \(fn\(3 -> 2\)\) returned shape \(5, 4, 3\); "
                                         r"expected \(5, 4, 2\)"):
        mod.mix(v, X, s0, lambda x: x)
    with pytest.raises(ValueError, match="X has shape"):
        mod.mix(v, X[:, :3], s0, lambda x: x[..., :2])
    # NAME_vjp's messages name NAME_vjp, the function the user called (its forward steps run inside it)
    with pytest.raises(TypeError, match=r"^mix_vjp: argument 'phi' \(fn\(3 -> 2\)\) must be a callable"):
        mod.mix_vjp(v, X, s0, 3.0, np.ones_like(v))
    with pytest.raises(ValueError, match=r"^mix_vjp: function argument 'phi' \(fn\(3 -> 2\)\) returned shape \(5, 4, 3\)"):
        mod.mix_vjp(*(torch.tensor(a) for a in (v, X, s0)), lambda x: x, torch.ones(v.shape, dtype=torch.float64))


def test_derivatives_gradcheck_gradgradcheck_and_vjp(mod):
    phi = MLP(3, 2, seed=4)
    v, X, s0 = [torch.tensor(x, requires_grad=True) for x in _inputs(["vec[c]", "sym2[c]", "scalar"], batch=(2,), c=2)]
    f = lambda v, X, s0: mod.mix(v, X, s0, phi)  # noqa: E731
    assert torch.autograd.gradcheck(f, (v, X, s0))
    assert torch.autograd.gradgradcheck(f, (v, X, s0))
    X2, Y2, a2, b2, s2 = [torch.tensor(x, requires_grad=True) for x in _inputs(G_TYPES, batch=(2,), c=2)]
    assert torch.autograd.gradcheck(mod.g, (X2, Y2, a2, b2, s2))
    assert torch.autograd.gradgradcheck(mod.g, (X2, Y2, a2, b2, s2))
    a, s = torch.randn(3, 3, dtype=torch.float64, requires_grad=True), torch.randn(3, dtype=torch.float64,
                                                                                 requires_grad=True)
    assert torch.autograd.gradcheck(mod.nested, (a, s))
    # NAME_vjp (the chain rule, the module's derivative by torch): the cotangents autograd gives,
    # and differentiable again
    g = torch.randn_like(mod.mix(v, X, s0, phi))
    got = mod.mix_vjp(v, X, s0, phi, g)
    want = torch.autograd.grad(mod.mix(v, X, s0, phi), (v, X, s0), g, create_graph=True)
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y)
    assert torch.autograd.gradcheck(lambda v, X, s0: mod.mix_vjp(v, X, s0, phi, g), (v, X, s0))


def test_chain_rule_vjp_on_numpy_agrees_with_torch_autograd(mod):
    """NAME_vjp of built-in functions runs on numpy too: the stages' generated VJPs and the
    functions' derivatives written out, chained in reverse."""
    xs = _inputs(G_TYPES, seed=8, batch=(3,), c=2)
    gs = _inputs(["scalar[c]", "vec"], seed=9, batch=(3,), c=2)
    got = mod.g_vjp(*xs, *gs)
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    want = torch.autograd.grad(mod.g(*ts), ts, [torch.tensor(g) for g in gs])
    assert len(got) == 5 and all(isinstance(x, np.ndarray) for x in got)
    for x, y in zip(got, want):
        np.testing.assert_allclose(x, y.numpy(), rtol=1e-10, atol=1e-12)
    a, b, c, d = _inputs(["vec"] * 4, seed=10)
    p, w = mod.odd(a, b, c, d)
    gp, gw = _inputs(["pscalar", "vec"], seed=11)
    ta = [torch.tensor(x, requires_grad=True) for x in (a, b, c, d)]
    want = torch.autograd.grad(mod.odd(*ta), ta, [torch.tensor(gp), torch.tensor(gw)])
    for x, y in zip(mod.odd_vjp(a, b, c, d, gp, gw), want):
        np.testing.assert_allclose(x, y.numpy(), rtol=1e-10, atol=1e-12)
    with pytest.raises(TypeError, match="derivative of function argument 'phi' needs torch or jax"):
        v, X, s0 = _inputs(["vec[c]", "sym2[c]", "scalar"])
        mod.mix_vjp(v, X, s0, lambda x: x[..., :2], np.ones_like(v))


def test_an_argument_whose_terms_carry_different_channels_is_broadcast(mod):
    """1 + v[c,k] v[c,k]: the constant part has no channel axis; the parts are added, broadcast."""
    v, X = _inputs(["vec[c]", "sym2[c]"], seed=12)
    ref = (_silu(np.einsum("bcjk,bcjk->bc", X, X)) / (1 + (v * v).sum(-1)))[..., None] * v
    np.testing.assert_allclose(mod.soft(v, X), ref, rtol=1e-12)
    (soft,) = [c for c in lower_source(BUILTINS).composites if c.name == "soft"]
    (summed,) = [s for s in soft.steps if type(s).__name__ == "Sum"]
    assert summed.channels == ((), (0,))
    g = _inputs(["vec[c]"], seed=13)[0]
    tv, tX = [torch.tensor(x, requires_grad=True) for x in (v, X)]
    want = torch.autograd.grad(mod.soft(tv, tX), (tv, tX), torch.tensor(g))
    for x, y in zip(mod.soft_vjp(v, X, g), want):
        np.testing.assert_allclose(x, y.numpy(), rtol=1e-10, atol=1e-12)
    assert_equivariant(mod.soft, ["vec[c]", "sym2[c]"], ["vec[c]"], "O3", channel_sizes={"c": 3})


def test_nested_functions_run_in_stages(mod):
    program = lower_source(BUILTINS)
    (nested,) = [c for c in program.composites if c.name == "nested"]
    assert [s if isinstance(s, str) else s.function for s in nested.steps] == \
        ["_nested_s0", "tanh", "_nested_s1", "silu", "_nested_s2"]
    a, s0 = _inputs(["vec", "scalar"], seed=5)
    ref = _silu(np.tanh((a * a).sum(-1)) * s0 + 1) * s0
    np.testing.assert_allclose(mod.nested(a, s0), ref, rtol=1e-12)


def test_a_call_written_twice_is_applied_once():
    program = lower_source(BUILTINS)
    (mix,) = [c for c in program.composites if c.name == "mix"]
    applies = [s for s in mix.steps if not isinstance(s, str)]
    assert len(applies) == 1 and len(applies[0].results) == 2


def test_certificate_states_function_nodes_as_axioms(tmp_path):
    src = tmp_path / "fn.diag"
    src.write_text("diagram gate(v: vec[c], X: sym2[c], phi: fn(2 -> 1)) -> w: vec[c] {\n"
                   "  w[c,i] = silu(X[c,j,k] X[c,j,k]) v[c,i] + phi(v[c,j] v[c,j], X[c,j,j]) X[c,i,j] v[c,j]\n}\n")
    assert cli.main(["prove", str(src), "-o", str(tmp_path / "cert")]) == 0
    cert = json.loads((tmp_path / "cert" / "certificate.json").read_text())
    (entry,) = cert["functions"]
    assert [s.get("stage") or s["apply"] for s in entry["steps"]] == ["_gate_s0", "silu", "phi", "_gate_s1"]
    assert verify(str(tmp_path / "cert")).startswith("verified 4 diagram")
    cert["functions"][0]["steps"][1]["results"][0]["type"] = "vec[c]"  # a forged axiom is caught
    (tmp_path / "cert" / "certificate.json").write_text(json.dumps(cert))
    with pytest.raises(Exception, match="function nodes"):
        verify(str(tmp_path / "cert"))


def test_a_name_before_a_parenthesis_with_a_space_stays_a_product():
    (d,) = lower_source("diagram f(a: vec, s0: scalar) -> s: scalar {\n  s = s0 (a[i] a[i] + 1)\n}\n").diagrams
    assert [t.formula() for t in d.equations[0].terms] == ["s0 a[i] a[i]", "s0"]


def test_the_same_call_with_other_pass_through_indices_is_another_call():
    """silu(X[c,i,i]) per channel in s, of the channel sum in t: two applications."""
    m = load_source("diagram f(X: cart2[c]) -> (s: scalar[c], t: scalar) {\n  s[c] = silu(X[c,i,i])\n"
                    "  t = silu(X[c,i,i])\n}\n", "through")
    X = _inputs(["cart2[c]"], seed=14)[0]
    s, t = m.f(X)
    tr = np.einsum("bcii->bc", X)
    np.testing.assert_allclose(s, _silu(tr), rtol=1e-12)
    np.testing.assert_allclose(t, _silu(tr.sum(-1)), rtol=1e-12)


def test_a_graph_diagram_with_functions_lowers_and_its_stages_keep_positioned_errors():
    """Functions inside a graph diagram (values: tests/test_graph.py): the stages are ordinary and
    graph diagrams; a graph stage that is not a gather / sum over edges is refused with its position."""
    from compiler.errors import DiagTypeError

    src = ("diagram msg(Y: vec[n,c], f: scalar[e,c], src: edges[e,n], dst: edges[e,n]) -> M: vec[n,c] {\n"
           "    M[n,c,i] = dst[e,n] src[e,m] silu(f[e,c]) Y[m,c,i]\n}\n")
    program = lower_source(src, "g.diag")
    assert [d.name for d in program.diagrams] == ["_msg_s0", "_msg_s1"]
    bad = ("diagram msg(Y: vec[n,c], f: scalar[e,c], src: edges[e,n], dst: edges[e,n]) -> M: vec[n,c] {\n"
           "    M[n,c,i] = silu(f[e,c]) f[e,c] Y[n,c,i]\n}\n")
    with pytest.raises(DiagTypeError, match="the sum over edges 'e' has no edge list joining it") as info:
        lower_source(bad, "g.diag")
    assert info.value.position.line == 2
    summed = bad.replace("silu(f[e,c]) f[e,c]", "silu(f[e,c])")  # silu of a sum over every edge
    with pytest.raises(DiagTypeError, match=r"error: 'silu\(f\[e,c\]\)' is neither per node nor per edge") as info:
        lower_source(summed, "g.diag")  # named as written, not as the stage's internal '_msg_a0_0' of '_msg_s0'
    assert "_msg_" not in str(info.value) and "graph diagram a function applies per node or per edge" in str(info.value)
    assert (info.value.position.line, info.value.position.column) == (2, 21)


def test_an_irreps_diagram_with_functions_is_refused_with_its_position():
    from compiler.errors import DiagTypeError

    src = ("diagram f(h: irreps(2x0e+2x1o), s0: scalar) -> y: irreps(2x1o) {\n"
           "    y.1o[u,m] = silu(h.0e[u] s0) h.1o[u,m]\n}\n")
    with pytest.raises(DiagTypeError, match=r"irreps tensors \(h, y\) and applies functions of invariants") as info:
        lower_source(src, "i.diag")
    assert (info.value.position.line, info.value.position.column) == (2, 17)
