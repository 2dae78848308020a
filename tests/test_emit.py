"""The emit program (compiler/planning/emit.py): every decision about how a planned function is written is
recorded as data, and the Python printer prints it without state or string inspection."""

import dataclasses
import inspect
from fractions import Fraction

import numpy as np
import pytest

import compiler
from compiler.planning import emit
from compiler.api import checked_program
from compiler.math.einsum import Floats, evaluate_sum
from compiler.planning.plan import plan_diagram
from compiler.targets.python.printer import PythonPrinter
from conftest import ROOT

# F and G share the term (W X[k,k]) ⊗ delta: one product for both, written once
EYES = """group O3
diagram eyes(X: cart2[c], W: weight[c,d]) -> (F: cart2[d], G: cart2[d]) {
    F[d,i,j] = W[c,d] X[c,i,j] + W[c,d] X[c,k,k] delta[i,j]
    G[d,i,j] = W[c,d] X[c,j,i] - 2 W[c,d] X[c,k,k] delta[i,j]
}
"""


def programs(source, filename="<string>"):
    return {d.name: emit.lower_function(plan_diagram(d)) for d in checked_program(source, filename).diagrams}


def node_kinds():
    return [obj for _, obj in inspect.getmembers(emit, inspect.isclass)
            if dataclasses.is_dataclass(obj) and obj.__module__ == emit.__name__
            and obj.__name__ not in ("Reuse", "SharedEye", "_Context")]


def test_every_node_kind_has_a_printer():
    kinds = {k.__name__ for k in node_kinds()}
    assert {"Assign", "AddInPlace", "ScaleInPlace", "AddDiagonal", "CopyInto", "MatmulInto", "EinsumInto",
            "FunctionProgram", "FusedProgram"} <= kinds
    missing = [k for k in sorted(kinds) if not hasattr(PythonPrinter, "_print_" + k)]
    assert missing == []
    for k in node_kinds():  # frozen: a stage's output cannot be changed by the next stage
        assert k.__dataclass_params__.frozen, k.__name__


def test_printer_keeps_no_state():
    printer = PythonPrinter()
    text = compiler.compile_source((ROOT / "diagrams" / "tensornet.diag").read_text())
    assert "def decompose" in text
    for p in programs(EYES).values():
        if p.plan.fused.outputs:
            printer.doprint(emit.lower_fused(p.plan.fused, None))
        printer._print_FunctionProgram(p, '""')
    assert vars(printer) == {}
    mutable = [n for n, v in vars(PythonPrinter).items() if isinstance(v, (dict, list, set))]
    assert mutable == []


def test_reuse_of_an_earlier_output_is_recorded():
    p = programs((ROOT / "diagrams" / "tensornet.diag").read_text())["decompose"]
    assert p.reuses == (emit.Reuse("S", "I", Fraction(-1)),)
    # S is written from I: the only term naming another output reads I
    reads = [s for s in p.into if isinstance(s, emit.AddInPlace) and s.target == "S"]
    assert emit.Ref("I") in [s.value for s in reads]


EQUAL_OUTPUTS = """group O3
diagram twice(x: scalar[c], v: vec[c], u: vec) -> (p: scalar[c], q: scalar[c], r: scalar[c]) {
    p[c] = x[c] + v[c,k] u[k]
    q[c] = x[c] + v[c,k] u[k]
    r[c] = -2 x[c] - 2 v[c,k] u[k]
}
"""


def test_an_output_equal_to_an_earlier_one_is_a_copy_of_it():
    """q has p's terms (a derivative's two equal cotangents, TensorNet's embedding d_zd and d_zs):
    q is a copy of p (one pass where the sum again takes one per term), never p itself; r, p
    scaled, is p times -2; values, with and without out=, equal the reference evaluator."""
    p = programs(EQUAL_OUTPUTS)["twice"]
    assert p.reuses == (emit.Reuse("q", "p", Fraction(1)), emit.Reuse("r", "p", Fraction(-2)))
    (fresh_q,) = [s for s in p.fresh if s.target == emit.Ref("q")]
    assert isinstance(fresh_q.value, emit.Call) and fresh_q.value.method == "copy"
    assert emit.CopyInto(emit.Ref("q"), emit.Ref("p")) in p.into
    text = compiler.compile_source(EQUAL_OUTPUTS)
    assert "q = _b.copy(p)" in text and "_b.copyto(q, p)" in text
    module = compiler.load_source(EQUAL_OUTPUTS, "equal_outputs")
    (d,) = checked_program(EQUAL_OUTPUTS).diagrams
    rng = np.random.default_rng(2)
    args = [rng.normal(size=(3, 4)), rng.normal(size=(3, 4, 3)), rng.normal(size=(3, 3))]
    arrays = dict(zip(("x", "v", "u"), args))
    want = [evaluate_sum(eq.terms, arrays, Floats()) for eq in d.equations]
    got = module.twice(*args)
    assert got[0] is not got[1]
    outs = tuple(np.empty((3, 4)) for _ in range(3))
    module.twice(*args, out=outs)
    for g, o, w in zip(got, outs, want):
        np.testing.assert_allclose(g, w, rtol=1e-12)
        np.testing.assert_allclose(o, w, rtol=1e-12)


def test_seeds_and_fresh_buffers_are_recorded():
    ps = programs((ROOT / "diagrams" / "products.diag").read_text())
    cross = ps["cross"]
    assert cross.seeds == ("_t0",) and cross.fresh_buffers
    # the seed is not computed before the branch, only in it (fresh) or into out
    assert not any(isinstance(s, emit.Assign) and s.target == emit.Ref("_t0") for s in cross.steps)


def test_shared_eye_product_is_computed_once_and_values_agree():
    p = programs(EYES)["eyes"]
    assert p.shared_eyes == (emit.SharedEye("_e0", "_t2", "...a,bc->...abc"),)
    defs = [s for s in p.steps if isinstance(s, emit.Assign) and s.target == emit.Ref("_e0")]
    assert len(defs) == 1
    for block in (p.fresh, p.into):
        assert sum(isinstance(s, emit.AddInPlace) and s.value == emit.Ref("_e0") for s in block) == 2
    module = compiler.load_source(EYES, "eyes_emit")
    rng = np.random.default_rng(0)
    X, W = rng.normal(size=(4, 3, 3, 3)), rng.normal(size=(3, 2))
    d = checked_program(EYES).diagrams[0]
    want = [evaluate_sum(eq.terms, {"X": X, "W": W}, Floats()) for eq in d.equations]
    got = module.eyes(X, W)
    out = (np.empty((4, 2, 3, 3)), np.empty((4, 2, 3, 3)))
    module.eyes(X, W, out=out)
    for g, o, w in zip(got, out, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(o, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stmt, text", [
    (emit.AddDiagonal("T", emit.Ref("x"), emit.Paren(emit.Int(-2))), "T = _b.add_diagonal(T, x, (-2))"),
    (emit.ScaleInPlace("T", emit.Rational(1, 3)), "T *= _b.rational(1, 3, _like)"),
    (emit.AddInPlace("T", -1, emit.Mul((emit.Index(emit.Ref("x"), (emit.Slot.NEW, emit.Slot.NEW)), emit.EYE))),
     "T -= x[..., None, None] * _eye"),
    (emit.CopyInto(emit.Index(emit.Ref("T"), (0, emit.Slot.ALL)), emit.SignedSum(((-1, emit.Ref("a")),
                                                                                    (1, emit.Ref("b"))))),
     "_b.copyto(T[..., 0, :], -a + b)"),
    (emit.EinsumInto("T", "...a,...a->...", (emit.Ref("x"), emit.Table("eps")), True),
     '_b.einsum_into(T, "...a,...a->...", x, _eps, blas=True)'),
])
def test_statement_printing(stmt, text):
    assert PythonPrinter().doprint(stmt) == text


def test_batch_sums_are_lowered_to_channels_last_copies_and_one_contraction():
    """A weight's cotangent summed over the batch (plan.BatchSum): channels-last contiguous copies,
    one contraction with the batch summed, recorded as data with its SPEC entry; the other output,
    channel mixing of d_Y (plan.BatchRest), computed in the same function from d_Y's copy through a
    view (two copies in all, not three); the module's values equal the reference evaluator's."""
    from compiler.ir.grad import with_derivatives

    source = (ROOT / "diagrams" / "linear.diag").read_text()
    program = with_derivatives(checked_program(source), checked=True)
    d = next(d for d in program.diagrams if d.name == "mix_vjp")
    plan = plan_diagram(d)
    summed, spec = emit.lower_batch_sums(plan, "_mix_vjp_batchrest_planned")
    assert summed.outputs == ("d_W", "d_X") and spec.weights == (1,) and spec.order == ((1, 1), (1, 0))
    copies = [s for s in summed.steps if isinstance(s.value, emit.Call) and s.value.method == "contiguous"]
    assert len(copies) == 2 and all(isinstance(s.value.args[0], emit.Einsum) for s in copies)
    summed_over_batch = [s.value for s in summed.steps if isinstance(s.value, emit.Einsum)
                         and "..." not in s.value.spec.split("->")[1]]
    assert len(summed_over_batch) == 1
    mixed = [s.value for s in summed.steps if isinstance(s.value, emit.Call) and s.value.method == "matmul_flat"]
    assert len(mixed) == 1  # d_X = W d_Y from d_Y's channels-last copy, read through a view
    text = PythonPrinter()._print_BatchSumProgram(summed, d.inputs)
    assert text.startswith("def _mix_vjp_batch_summed(_b, X, W, d_Y):") and "_unbatched" not in text
    assert PythonPrinter().doprint(spec) == \
        "(_mix_vjp_batchrest_planned, _mix_vjp_batch_summed, (1,), ((1, 1), (1, 0)))"
    module = compiler.load_source(source, "linear_emit")
    rng = np.random.default_rng(2)
    X, W, dY = rng.normal(size=(5, 4, 3, 3)), rng.normal(size=(4, 2)), rng.normal(size=(5, 2, 3, 3))
    eq = next(eq for eq in d.equations if eq.target == "d_W")
    want = evaluate_sum(eq.terms, {"X": X, "W": W, "d_Y": dY}, Floats()).sum(0)
    got = module.mix_vjp(X, W, dY)
    np.testing.assert_allclose(got[1], want, rtol=1e-12, atol=1e-12)
    eq = next(eq for eq in d.equations if eq.target == "d_X")
    want = evaluate_sum(eq.terms, {"X": X, "W": W, "d_Y": dY}, Floats())
    np.testing.assert_allclose(got[0], want, rtol=1e-12, atol=1e-12)


def _cell_value(cell, env):
    """A cell's (sign, Expr) terms evaluated on plain numbers (Ref: a value of env)."""
    def value(e):
        if isinstance(e, emit.Ref):
            return env[e.name]
        if isinstance(e, emit.Real):
            return e.value
        if isinstance(e, emit.Mul):
            return np.prod([value(f) for f in e.factors])
        if isinstance(e, emit.Paren):
            return value(e.value)
        if isinstance(e, emit.SignedSum):
            return sum(s * value(t) for s, t in e.terms)
        raise TypeError(e)
    return sum(s * value(e) for s, e in cell)


def _operations(cell):
    """Array operations a cell's text costs: a product or sum of n parts is n - 1 of them."""
    def ops(e):
        if isinstance(e, emit.Mul):
            return len(e.factors) - 1 + sum(ops(f) for f in e.factors)
        if isinstance(e, emit.Paren):
            return ops(e.value)
        if isinstance(e, emit.SignedSum):
            return len(e.terms) - 1 + sum(ops(t) for _, t in e.terms)
        return 0
    return len(cell) - 1 + sum(ops(e) for _, e in cell)


R = emit.Ref


@pytest.mark.parametrize("cell, factored_ops", [
    # s a - s b: s (a - b)
    ([(1, emit.Mul((R("s"), R("a")))), (-1, emit.Mul((R("s"), R("b"))))], 2),
    # a coefficient shared with the factor: c s (a + b)
    ([(1, emit.Mul((emit.Real(0.5), R("s"), R("a")))), (1, emit.Mul((emit.Real(0.5), R("s"), R("b"))))], 3),
    # like products summed: (r0 r2 + r2 r0) / 2 is r0 r2
    ([(1, emit.Mul((emit.Real(0.5), R("r0"), R("r2")))), (1, emit.Mul((emit.Real(0.5), R("r2"), R("r0"))))], 1),
    # no common factor, a shared coefficient: c (a s + b t) - d c u
    ([(1, emit.Mul((emit.Real(0.25), R("a"), R("s")))), (1, emit.Mul((emit.Real(0.25), R("b"), R("t")))),
      (-1, emit.Mul((emit.Real(0.75), R("c"), R("u"))))], 7),
    # a bilinear form: grouped by the factor most products share, then by the next
    ([(1, emit.Mul((emit.Real(0.5), R("a"), R("u")))), (1, emit.Mul((emit.Real(0.5), R("b"), R("u")))),
      (-1, emit.Mul((emit.Real(0.25), R("a"), R("v")))), (1, emit.Mul((emit.Real(0.75), R("c"), R("v")))),
      (-1, emit.Mul((emit.Real(0.25), R("b"), R("v"))))], 9),
    # nothing shared: unchanged
    ([(1, emit.Mul((R("a"), R("u")))), (-1, emit.Mul((R("b"), R("v"))))], None),
])
def test_a_cell_with_common_factors_is_factored(cell, factored_ops):
    """Unrolled cells take their common factors and coefficients out (fewer array passes; None: a
    cell with nothing to take out stays as it is), and the value is unchanged; the result is
    deterministic."""
    out = emit.factored(cell)
    if factored_ops is None:
        assert out == cell
    else:
        assert _operations(out) == factored_ops < _operations(cell)
    assert emit.factored(cell) == out
    rng = np.random.default_rng(0)
    for _ in range(5):
        env = {k: rng.normal() for k in ("s", "t", "u", "v", "a", "b", "c", "r0", "r2")}
        assert _cell_value(out, env) == pytest.approx(_cell_value(cell, env), rel=1e-12, abs=1e-12)
