"""Derivatives as diagrams (compiler.ir.grad): NAME_vjp and NAME_vjp_vjp against torch autograd of the
planned forward, gradcheck / gradgradcheck on every path, jax grad of grad, diagc grad, certificates."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DIAGRAMS, ROOT, example_diagrams

import compiler
from compiler.ir.grad import diag_text, general_types, vjp_diagram
from compiler.frontend.lower import lower_source
from compiler.testing import random_input
from compiler.ir.types import TensorType

_MODULES = {}
SIZES = {"c": 2, "d": 3}


def module(path, staging=True):
    """The module of ``path``; ``staging=False``: built without stages, so that a staged diagram's
    one-call code (``_NAME_planned``) is there to differentiate by autograd."""
    if (path, staging) not in _MODULES:
        _MODULES[path, staging] = compiler.load(path, staging=staging)
    return _MODULES[path, staging]


def inputs_for(d, seed=0, batch=(3,)):
    """float64 torch inputs of the diagram's types; weights without batch axes (shared by the batch,
    so their cotangent is a sum over it)."""
    rng = np.random.default_rng(seed)
    return [torch.tensor(random_input(t.type, rng, () if t.type.family == "weight" else batch, SIZES))
            for t in d.inputs]


def outputs_list(y):
    return list(y) if isinstance(y, tuple) else [y]


@pytest.mark.parametrize("path,d", [p for p in example_diagrams() if not p.values[1].stacked])
def test_vjp_equals_autograd_of_planned_forward(path, d):
    """For every example diagram and every input: NAME_vjp == torch.autograd of the planned forward
    (a staged diagram's: NAME_vjp runs the stages' VJPs, the forward is the diagram as one call)."""
    ops = module(path)
    xs = [x.clone().requires_grad_(True) for x in inputs_for(d)]
    ys = outputs_list(getattr(module(path, staging=False), f"_{d.name}_planned")(*xs))  # plain torch code
    rng = np.random.default_rng(1)
    cots = [torch.tensor(rng.normal(size=tuple(y.shape))) for y in ys]
    expected = torch.autograd.grad(ys, xs, cots, allow_unused=True)
    got = outputs_list(getattr(ops, f"{d.name}_vjp")(*[x.detach() for x in xs], *cots))
    assert len(got) == len(d.inputs)
    for x, e, g in zip(xs, expected, got):
        e = torch.zeros_like(x) if e is None else e
        assert g.shape == x.shape
        assert torch.allclose(g, e, rtol=0, atol=1e-12), (d.name, float((g - e).abs().max()))
    # numpy: the same values (weights summed over the batch there too)
    got_np = outputs_list(getattr(ops, f"{d.name}_vjp")(*[x.detach().numpy() for x in xs],
                                                         *[c.numpy() for c in cots]))
    for g, n in zip(got, got_np):
        assert np.allclose(n, g.numpy(), rtol=0, atol=1e-12)


SYM = """
group O3
diagram bilinear(X: sym2, a: vec, b: vec) -> s: scalar { s = X[i,j] a[i] b[j] }
diagram sym_out(v: vec) -> S: sym2t { S[i,j] = v[i] v[j] - 1/3 v[k] v[k] delta[i,j] }
"""


def test_symmetric_input_convention_is_the_plain_partial_derivative():
    """The cotangent of a sym2 input is the plain partial derivative of the formula as written (as
    autograd gives), a b^T, not its symmetrisation; declared with the general type cart2."""
    ops = compiler.load_source(SYM)
    prog = lower_source(SYM)
    v = vjp_diagram(prog.diagrams[0])
    assert str(v.outputs[0].type) == "cart2" and str(v.inputs[-1].type) == "scalar"
    assert str(vjp_diagram(prog.diagrams[1]).inputs[-1].type) == "cart2"  # cotangent of a sym2t output
    rng = np.random.default_rng(3)
    X = torch.tensor(random_input("sym2", rng), requires_grad=True)
    a, b = (torch.tensor(rng.normal(size=(4, 3))) for _ in range(2))
    ops.bilinear(X, a, b).sum().backward()
    d_X, d_a, d_b = ops.bilinear_vjp(X.detach(), a, b, torch.ones(4, dtype=torch.float64))
    assert torch.allclose(d_X, X.grad, atol=1e-14)
    assert torch.allclose(d_X, a[:, :, None] * b[:, None, :], atol=1e-14)
    assert not torch.allclose(d_X, d_X.transpose(-1, -2))  # not symmetrised


def test_general_types():
    assert [str(t) for t in general_types(TensorType.parse("sym2[c]"))] == ["cart2[c]", "cart2(0e+1o+2e)[c]"]
    assert str(general_types(TensorType.parse("skew2(1o)"))[0]) == "pcart(2)"
    assert str(general_types(TensorType.parse("weight[c,d]"))[0]) == "scalar[c,d]"
    assert general_types(TensorType.parse("vec[c]")) == [TensorType.parse("vec[c]")]


def test_unused_input_gets_zeros_and_broadcast_inputs_are_summed():
    ops = compiler.load_source("group O3\ndiagram f(a: vec, b: vec, w: scalar) -> y: vec { y[i] = a[i] w }")
    a = np.arange(12.0).reshape(4, 3)
    b = np.ones(3)
    w = np.array(2.0)  # a scalar shared by the whole batch
    d_a, d_b, d_w = ops.f_vjp(a, b, w, np.ones((4, 3)))
    assert np.array_equal(d_b, np.zeros(3)) and d_w.shape == () and d_w == a.sum()
    assert np.array_equal(d_a, np.full((4, 3), 2.0))


TN = ROOT / "diagrams" / "tensornet.diag"
LINEAR = ROOT / "diagrams" / "linear.diag"


def _paths(fn, xs, outs_like):
    """The function on its three paths: planned, out= (fresh buffers each call), fused=True."""
    def with_out(*args):
        ys = outs_like(*[a.detach() for a in args])
        bufs = tuple(torch.empty_like(y) for y in ys)
        return fn(*args, out=bufs if len(bufs) > 1 else bufs[0])
    return {"planned": fn, "out": with_out, "fused": lambda *a: fn(*a, fused=True)}


@pytest.mark.parametrize("path,name,paths", [
    (TN, "matmul_o3", ("planned", "out", "fused")),
    (TN, "edge_tensor", ("planned", "out", "fused")),
    (TN, "decompose", ("planned", "out")),
    (TN, "mix_skew", ("planned", "out", "fused")),
    (LINEAR, "linear_cart2", ("planned", "out")),
])
def test_gradcheck_and_gradgradcheck_on_every_path(path, name, paths):
    ops = module(path)
    d = next(x for x in lower_source(Path(path).read_text()).diagrams if x.name == name)
    xs = [x.requires_grad_(True) for x in inputs_for(d, batch=(2,))]
    fn = getattr(ops, name)
    variants = _paths(fn, xs, lambda *a: outputs_list(fn(*a)))
    for which in paths:
        f = variants[which]
        assert torch.autograd.gradcheck(f, xs), which
        assert torch.autograd.gradgradcheck(f, xs), which


def test_vjp_of_the_vjp_is_the_generated_second_order_function():
    """The double backward runs NAME_vjp_vjp (counted), and equals autograd of the planned VJP."""
    ops = module(TN)
    d = next(x for x in lower_source(TN.read_text()).diagrams if x.name == "matmul_o3")
    M, Y = (x.requires_grad_(True) for x in inputs_for(d))
    calls = []
    original = ops._matmul_o3_vjp_vjp_planned
    ops._matmul_o3_vjp_vjp_SPEC = (lambda *a, **k: calls.append(1) or original(*a, **k),) + ops._matmul_o3_vjp_vjp_SPEC[1:]
    try:
        C = ops.matmul_o3(M, Y)
        (gM,) = torch.autograd.grad((C ** 2).sum(), M, create_graph=True)
        (ggY,) = torch.autograd.grad(gM.sum(), Y)
    finally:
        ops._matmul_o3_vjp_vjp_SPEC = (original,) + ops._matmul_o3_vjp_vjp_SPEC[1:]
    assert calls
    M2, Y2 = M.detach().requires_grad_(True), Y.detach().requires_grad_(True)
    C2 = ops._matmul_o3_planned(M2, Y2)
    (gM2,) = torch.autograd.grad((C2 ** 2).sum(), M2, create_graph=True)
    (ggY2,) = torch.autograd.grad(gM2.sum(), Y2)
    assert torch.allclose(ggY, ggY2, atol=1e-12)


def test_jax_grad_of_grad_equals_torch():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)  # as the other jax tests do
    ops = module(TN)
    d = next(x for x in lower_source(TN.read_text()).diagrams if x.name == "edge_tensor")
    r, fI, fA, fS = inputs_for(d)
    w = torch.tensor(np.random.default_rng(5).normal(size=(3, 3)))

    def energy_t(r):
        return (ops.edge_tensor(r, fI, fA, fS) ** 2).sum()

    rt = r.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(energy_t(rt), rt, create_graph=True)
    (gg,) = torch.autograd.grad((g * w).sum(), rt)
    args = [jnp.asarray(x.numpy()) for x in (fI, fA, fS)]

    def energy_j(r):
        return (ops.edge_tensor(r, *args) ** 2).sum()

    gg_j = jax.grad(lambda r: (jax.grad(energy_j)(r) * jnp.asarray(w.numpy())).sum())(jnp.asarray(r.numpy()))
    g_j = jax.jit(jax.grad(energy_j))(jnp.asarray(r.numpy()))
    assert np.allclose(np.asarray(g_j), g.detach().numpy(), atol=1e-12)
    assert np.allclose(np.asarray(gg_j), gg.numpy(), atol=1e-12)


def _diagc(*args, **kw):
    return subprocess.run([sys.executable, "-m", "compiler", *args], capture_output=True, text=True, cwd=ROOT, **kw)


@pytest.mark.parametrize("path", DIAGRAMS, ids=lambda p: p.stem)
def test_grad_output_compiles_and_checks(path, tmp_path):
    r = _diagc("grad", str(path))
    assert r.returncode == 0, r.stderr
    text = r.stdout
    out = tmp_path / "g.diag"
    out.write_text(text)
    assert _diagc("check", str(out)).returncode == 0
    compiler.compile_source(text, str(out))  # compiles back
    # the printed networks are the derivative networks: same functions as the emitted NAME_vjp
    prog = lower_source(path.read_text(), str(path))
    firsts = [d for d in prog.diagrams if not d.stacked]
    reparsed = {d.name: d for d in lower_source(text).diagrams}
    assert set(reparsed) == {d.name + "_vjp" for d in firsts}
    assert diag_text([reparsed[n] for n in sorted(reparsed)], prog.group) == \
        diag_text([vjp_diagram(d) for d in sorted(firsts, key=lambda d: d.name + "_vjp")], prog.group)


def test_grad_wrt_and_order():
    r = _diagc("grad", str(TN), "--wrt", "r", "--order", "2")
    assert r.returncode == 0, r.stderr
    names = [d.name for d in lower_source(r.stdout).diagrams]
    assert names == ["edge_tensor_vjp", "edge_tensor_vjp_vjp"]
    assert "-> d_r: vec {" in r.stdout


def test_grad_wrt_unknown_input_is_a_positioned_error():
    r = _diagc("grad", str(TN), "--wrt", "nothere")
    assert r.returncode == 2 and r.stdout == ""
    assert "tensornet.diag:" in r.stderr and "no diagram" in r.stderr and "'nothere'" in r.stderr
    assert "Traceback" not in r.stderr


def test_draw_derivatives(tmp_path):
    out = tmp_path / "d.svg"
    assert _diagc("draw", str(ROOT / "diagrams" / "products.diag"), "--derivatives", "-o", str(out)).returncode == 0
    assert out.read_text().count('class="diagram"') == 9  # 3 diagrams, each with two derivatives


def test_derivative_name_clash_is_positioned():
    with pytest.raises(compiler.DiagError, match="clashes with the derivative"):
        compiler.compile_source("group O3\ndiagram f(a: vec) -> y: vec { y[i] = a[i] }\n"
                                "diagram f_vjp(a: vec) -> y: vec { y[i] = a[i] }")


def test_certificate_covers_vjp_and_an_edited_vjp_fails_verify(tmp_path):
    import hashlib

    src = tmp_path / "p.diag"
    src.write_text("group O3\ndiagram cross(a: vec, b: vec) -> c: axial { c[i] = eps[i,j,k] a[j] b[k] }\n")
    cert = tmp_path / "cert"
    assert _diagc("prove", str(src), "-o", str(cert)).returncode == 0
    data = json.loads((cert / "certificate.json").read_text())
    assert [d["name"] for d in data["diagrams"]] == ["cross", "cross_vjp"]
    assert _diagc("verify", str(cert)).returncode == 0
    module = (cert / "module.py").read_text()
    start = module.index("def _cross_vjp_planned(")
    body = module[start:module.index("\ndef ", start + 1)]
    assert "return (d_a, d_b)" in body
    bad = module.replace(body, body.replace("return (d_a, d_b)", "return (d_a, 2 * d_b)"))
    (cert / "module.py").write_text(bad)
    data["module"]["sha256"] = hashlib.sha256(bad.encode()).hexdigest()  # a consistent forgery
    (cert / "certificate.json").write_text(json.dumps(data))
    r = _diagc("verify", str(cert))
    assert r.returncode == 1 and "cross_vjp" in r.stderr and "differs from the source" in r.stderr


def test_weight_cotangent_is_one_contraction_over_the_batch():
    """A weight shared by the batch gets its cotangent as one contraction over the batch axes too
    (plan.BatchSum, no per-element temporary), equal to autograd; a weight with batch axes takes the
    planned code; out= is written."""
    from compiler.ir.grad import vjp_diagram
    from compiler.planning.plan import BatchSum, Layout, explain, plan_diagram

    d = next(x for x in lower_source(TN.read_text()).diagrams if x.name == "mix_skew")
    plan = plan_diagram(vjp_diagram(d))
    assert [(s.output.name, s.input) for s in plan.batch_sums] == [("d_W", "W")]
    assert isinstance(plan.batch_sums[0], BatchSum) and "->ab" in plan.batch_sums[0].contractions[-1].spec
    # d_A = W[c,d] d_B[d,i,j] is computed with d_W, reading the same channels-last copy of d_B
    # (plan.BatchRest): each input is copied once, A and d_B (three copies before)
    assert plan.rest is None and [o.name for o in plan.batch_rest.outputs] == ["d_A"]
    copies = [c for s in plan.batch_sums for c in s.contractions if isinstance(c, Layout)] + \
        [c for c in plan.batch_rest.contractions if isinstance(c, Layout)]
    assert sorted(c.operand for c in copies) == ["A", "d_B"]
    second = plan_diagram(vjp_diagram(vjp_diagram(d)))  # d_B, d_d_A, A once each (five before)
    copies = [c for s in second.batch_sums for c in s.contractions if isinstance(c, Layout)] + \
        [c for c in second.batch_rest.contractions if isinstance(c, Layout)]
    assert sorted(c.operand for c in copies) == ["A", "d_B", "d_d_A"] and second.rest is None
    assert "d_A with them, from the same copies: _v0 = view('...bca->...abc', _l1); " \
        "_t0 = matmul_flat(W, _v0, 2)" in explain(plan)
    ops = module(TN)
    A, W = inputs_for(d, batch=(4, 3))
    dB = torch.tensor(np.random.default_rng(2).normal(size=(4, 3, SIZES["d"], 3, 3)))
    A2, W2 = A.clone().requires_grad_(True), W.clone().requires_grad_(True)
    expected = torch.autograd.grad(ops._mix_skew_planned(A2, W2), (A2, W2), dB)
    spec = ops._mix_skew_vjp_SPEC
    calls = []
    ops._mix_skew_vjp_SPEC = (lambda *a, **k: calls.append(1) or spec[0](*a, **k),) + spec[1:]
    try:
        for lib in (lambda x: x, lambda x: x.numpy()):
            got = ops.mix_skew_vjp(lib(A), lib(W), lib(dB))
            for g, e in zip(got, expected):
                assert np.allclose(np.asarray(g), e.numpy(), rtol=0, atol=1e-12)
        assert not calls  # the batch-summed path: the whole planned VJP never ran
        bufs = (torch.empty_like(A), torch.empty_like(W))
        assert ops.mix_skew_vjp(A, W, dB, out=bufs) == bufs
        assert all(torch.allclose(b, e, rtol=0, atol=1e-12) for b, e in zip(bufs, expected))
        per_entry = ops.mix_skew_vjp(A, W.expand(4, 3, *W.shape).clone(), dB)  # a weight per batch entry
        assert calls and per_entry[1].shape == (4, 3) + tuple(W.shape)
        assert torch.allclose(per_entry[1].sum((0, 1)), expected[1], rtol=0, atol=1e-12)
    finally:
        ops._mix_skew_vjp_SPEC = spec


def test_forward_keeps_its_channels_last_copy_for_the_vjp():
    """Under autograd, the copy of A that mix_skew's channel mixing makes (A with c last) is made once
    and read again by the backward's NAME_vjp (its batch sum d_W = A^T d_B lays A out the same way:
    plan.KeptCopy, the SPEC's last entry): two copies for forward + backward (A, d_B), three when the
    entry is emptied; gradients equal to the planned VJP's, and a double backward still reaches A."""
    from compiler.planning.plan import KeptCopy, kept_copies, plan_diagram

    lowered = {x.name: x for x in lower_source(TN.read_text()).diagrams}
    d = lowered["mix_skew"]
    first, second = vjp_diagram(d), vjp_diagram(vjp_diagram(d))
    assert kept_copies(plan_diagram(d), plan_diagram(first)) == (KeptCopy(0, (1, 2, 0)),)  # A
    assert kept_copies(plan_diagram(first), plan_diagram(second)) == (KeptCopy(2, (1, 2, 0)),)  # d_B
    m = lowered["matmul_o3"]  # no channel mixing: nothing kept
    assert kept_copies(plan_diagram(m), plan_diagram(vjp_diagram(m))) == ()
    ops = module(TN)
    assert ops._mix_skew_SPEC[7] == ((0, (1, 2, 0)),) and ops._matmul_o3_SPEC[7] == ()
    A, W = inputs_for(d, batch=(4, 3))
    dB = torch.tensor(np.random.default_rng(3).normal(size=(4, 3, SIZES["d"], 3, 3)))
    expected = ops.mix_skew_vjp(A, W, dB)

    def backward():
        a, w = A.clone().requires_grad_(True), W.clone().requires_grad_(True)
        with torch.profiler.profile() as prof:
            got = torch.autograd.grad(ops.mix_skew(a, w), (a, w), dB)
        return got, sum(e.count for e in prof.key_averages() if e.key == "aten::contiguous")

    got, copies = backward()
    assert copies == 2 and all(torch.allclose(g, e, rtol=0, atol=1e-12) for g, e in zip(got, expected))
    spec = ops._mix_skew_SPEC
    ops._mix_skew_SPEC = spec[:7] + ((),)
    try:
        got, copies = backward()
        assert copies == 3 and all(torch.allclose(g, e, rtol=0, atol=1e-12) for g, e in zip(got, expected))
    finally:
        ops._mix_skew_SPEC = spec
    a, w = A.clone().requires_grad_(True), W.clone().requires_grad_(True)
    d_a, d_w = torch.autograd.grad(ops.mix_skew(a, w), (a, w), dB, create_graph=True)
    (dd_a,) = torch.autograd.grad((d_w * W).sum(), (a,))  # d_W = sum A^T d_B: its derivative in A
    # d(sum W * d_W)/dA = W[c,d] d_B[d,i,j]: d_A's formula (zero if the kept copy cut A off)
    assert torch.allclose(dd_a, expected[0], rtol=0, atol=1e-12) and float(dd_a.abs().max()) > 0


def test_order_2_text_compiles_back(tmp_path):
    """`diagc grad --order 2` prints NAME_vjp and NAME_vjp_vjp; compiled, its NAME_vjp_vjp is taken as
    the derivative of its NAME_vjp (no name clash) and equals the module's NAME_vjp_vjp."""
    path = ROOT / "diagrams" / "products.diag"
    r = _diagc("grad", str(path), "--order", "2")
    assert r.returncode == 0, r.stderr
    src = tmp_path / "g2.diag"
    src.write_text(r.stdout)
    r = _diagc("compile", str(src), "-o", str(tmp_path / "g2.py"))
    assert r.returncode == 0 and "error" not in r.stderr, r.stderr
    reparsed = compiler.load(src)
    ops = module(path)
    rng = np.random.default_rng(4)
    for d in lower_source(src.read_text()).diagrams:
        if not d.name.endswith("_vjp_vjp"):
            continue
        assert hasattr(reparsed, d.name + "_vjp")  # the derivatives of the spelled-out derivative
        args = [random_input(t.type, rng, (3,), SIZES) for t in d.inputs]
        for a, b in zip(outputs_list(getattr(reparsed, d.name)(*args)), outputs_list(getattr(ops, d.name)(*args))):
            assert np.allclose(a, b, rtol=0, atol=1e-12)
    # a diagram named like a derivative that is not one is still a clash
    text = src.read_text().replace("dd_a[i] = d_s", "dd_a[i] = 2 * d_s", 1)
    with pytest.raises(compiler.DiagError, match="clashes with the derivative"):
        compiler.compile_source(text, str(src))


def test_weight_cotangents_of_products_with_constants_are_batch_sums():
    """Every weight cotangent of TensorNet's project / compose_mixed (terms of three or more
    factors, constants eps and P(2), a trace) is summed over the batch inside its contractions
    (plan.BatchSum: the batch survives every step but the last, which reads channels-last copies),
    never as a (batch, c, d) product per term; the values equal autograd's, numpy and torch."""
    from compiler.planning.plan import Layout, plan_diagram

    path = ROOT / "diagrams" / "tensornet_layer.diag"
    ops = module(path)
    for name in ("project", "compose_mixed"):
        d = next(x for x in lower_source(path.read_text()).diagrams if x.name == name)
        plan = plan_diagram(vjp_diagram(d))
        weights = [t.name for t in d.inputs if t.type.family == "weight"]
        assert [s.input for s in plan.batch_sums] == weights
        for s in plan.batch_sums:
            last = [c for c in s.contractions if not isinstance(c, Layout)]
            finals = {t.var for t in s.output.terms}
            assert all("..." not in c.spec.split("->")[1] for c in last if c.var in finals)
            assert all("..." in c.spec.split("->")[1] for c in last if c.var not in finals)
        args = inputs_for(d, batch=(5,))
        grads = [a.clone().requires_grad_(True) for a in args]
        y = getattr(module(path, staging=False), f"_{name}_planned")(*grads)  # one call (ops runs stages)
        ys = outputs_list(y)
        cots = [torch.tensor(np.random.default_rng(k).normal(size=tuple(o.shape))) for k, o in enumerate(ys)]
        expected = torch.autograd.grad(ys, grads, cots, allow_unused=True)
        for lib in (lambda x: x, lambda x: x.numpy()):
            got = getattr(ops, f"{name}_vjp")(*[lib(a) for a in args], *[lib(c) for c in cots])
            for t, g, e in zip(d.inputs, got, expected):
                e = torch.zeros_like(args[0].new_empty(np.shape(g))) if e is None else e
                assert np.allclose(np.asarray(g), e.numpy(), rtol=0, atol=1e-10), (name, t.name)
