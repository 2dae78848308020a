"""The planner: delta elimination, shared contractions, compile-time contraction order."""

import numpy as np

import compiler
from compiler.api import checked_program
from compiler.plan import explain, plan_diagram

CHAIN = """diagram chain(a: vec, X: cart2, Y: cart2, Z: cart2, b: vec) -> s: scalar {
    s = a[i] X[i,j] Y[j,k] Z[k,l] b[l] + eps[i,j,k] a[i] X[j,l] b[l] Y[k,m] Z[m,n] eps[n,p,q] Y[p,q] / 2
}
"""


def test_long_products_become_pairwise_steps_with_the_same_value():
    (d,) = checked_program(CHAIN).diagrams
    plan = plan_diagram(d)
    assert all(len(c.operands) <= 2 for c in plan.contractions)
    # n operands: n - 1 pairwise steps; the two eps of the second term are folded into one table first
    assert len(plan.contractions) == 4 + 6
    assert len(plan.tables) == 1
    f = compiler.load_source(CHAIN).chain
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 3))
    X, Y, Z = rng.normal(size=(3, 5, 3, 3))
    eps = np.zeros((3, 3, 3))
    eps[0, 1, 2] = eps[1, 2, 0] = eps[2, 0, 1] = 1
    eps[0, 2, 1] = eps[2, 1, 0] = eps[1, 0, 2] = -1
    want = (np.einsum("ni,nij,njk,nkl,nl->n", a, X, Y, Z, b)
            + np.einsum("ijk,ni,njl,nl,nkm,nmo,opq,npq->n", eps, a, X, b, Y, Z, eps, Y) / 2)
    np.testing.assert_allclose(f(a, X, Y, Z, b), want, rtol=1e-12)


def test_plan_is_deterministic_and_explained():
    (d,) = checked_program(CHAIN).diagrams
    text = explain(plan_diagram(d))
    assert text == explain(plan_diagram(checked_program(CHAIN).diagrams[0]))
    assert "multiply-adds" in text and text.startswith("chain(a, X, Y, Z, b):")


def test_shared_trace_and_no_copy_of_fresh_results():
    src = "diagram f(X: cart2, a: vec) -> (t: scalar, v: vec, w: vec) {\n t = X[k,k]\n v[i] = X[k,k] a[i]\n w[i] = X[i,j] a[j]\n}\n"
    text = compiler.compile_source(src)
    assert text.count('"...aa->..."') == 1  # the trace is computed once
    assert "t = _b.copy(_t0)" in text  # a single-operand einsum may be a view: copied
    assert "w = _b.copy(" not in text and "w = _t" in text  # a fresh product is returned as is
