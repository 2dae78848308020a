"""The planner: delta elimination, shared contractions, compile-time contraction order."""

from fractions import Fraction

import numpy as np

import compiler
from compiler.api import checked_program
from compiler.math.constants import EPS
from compiler.planning.plan import explain, plan_diagram

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
    eps = EPS.astype(float)
    want = (np.einsum("ni,nij,njk,nkl,nl->n", a, X, Y, Z, b)
            + np.einsum("ijk,ni,njl,nl,nkm,nmo,opq,npq->n", eps, a, X, b, Y, Z, eps, Y) / 2)
    np.testing.assert_allclose(f(a, X, Y, Z, b), want, rtol=1e-12)


def test_plan_is_deterministic_and_explained():
    (d,) = checked_program(CHAIN).diagrams
    text = explain(plan_diagram(d))
    assert text == explain(plan_diagram(checked_program(CHAIN).diagrams[0]))
    assert "multiply-adds" in text and text.startswith("chain(a, X, Y, Z, b):")


def test_shared_trace_and_no_copy_of_fresh_results():
    src = "diagram f(X: cart2, a: vec) -> (t: scalar, v: vec, w: vec) {\n t = X[k,k]\n v[i] = X[i,j] a[j] X[k,k]\n w[i] = X[i,j] a[j]\n}\n"
    text = compiler.compile_source(src)
    assert text.count('"...aa->..."') == 1  # the trace is computed once, also inside v's product
    assert "t = _b.copy(_t0)" in text  # a single-operand einsum may be a view: copied
    assert "w = _b.copy(" not in text and "w = _t" in text  # a fresh product is returned as is


def _naive(diagram, args):
    """The unplanned evaluation (the shared reference evaluator): one dense einsum per term, deltas, eps
    and constants as arrays."""
    from compiler.math.einsum import Floats, evaluate_sum

    arrays = {t.name: a for t, a in zip(diagram.inputs, args)}
    return [evaluate_sum(eq.terms, arrays, Floats()) for eq in diagram.equations]


def test_planned_code_equals_unplanned_for_every_example():
    from conftest import example_diagrams
    from compiler.testing import random_input

    rng = np.random.default_rng(11)
    for param in example_diagrams():
        path, d = param.values
        fn = getattr(compiler.load(path), d.name)
        args = [random_input(t.type, rng, (4,), {"c": 3, "d": 2}) for t in d.inputs]
        got = fn(*args)
        got = list(got) if isinstance(got, tuple) else [got]
        for g, w in zip(got, _naive(d, args)):
            np.testing.assert_allclose(g, np.broadcast_to(w, np.shape(g)), rtol=1e-12, atol=1e-12)


def test_cost_model_choices():
    from compiler.planning.plan import Contraction, Matmul, Unrolled

    src = """diagram f(X: cart2[c], Y: cart2[c], a: vec, b: vec) -> (t: scalar[c], M: cart2[c], N: cart2[c], w: axial) {
    t[c] = X[c,k,k]
    M[c,i,j] = X[c,i,k] Y[c,k,j]
    N[c,i,j] = X[c,k,i] Y[c,j,k]
    w[i] = eps[i,j,k] a[j] b[k]
}
"""
    (d,) = checked_program(src).diagrams
    plan = plan_diagram(d)
    kinds = [type(c) for c in plan.contractions]
    assert kinds == [Contraction, Matmul, Matmul, Unrolled]
    assert plan.contractions[1].transpose == (False, False)
    assert plan.contractions[2].transpose == (True, True)  # X^T Y^T
    text = compiler.compile_source(src)
    assert "_t1 = _b.mm(X, Y)" in text and "_t2 = _b.mm(_b.swap(X), _b.swap(Y))" in text
    assert "a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1]" in text and '"eps"' not in text.split('"""')[2]
    f = compiler.load_source(src).f
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(2, 5, 2, 3, 3))
    a, b = rng.normal(size=(2, 5, 3))
    t, M, N, w = f(X, Y, a, b)
    np.testing.assert_allclose(M, X @ Y)
    np.testing.assert_allclose(N, np.swapaxes(X, -1, -2) @ np.swapaxes(Y, -1, -2))
    np.testing.assert_allclose(w, np.cross(a, b))
    np.testing.assert_allclose(t, np.trace(X, axis1=-2, axis2=-1))


def test_cost_model_blas_broadcast_tables_and_whole_diagram_unrolling():
    """The later choices of the cost model: BLAS only for matrix-shaped contractions, a broadcast
    multiply for an outer product, a sparse constant table as its nonzero entries, a trace summed
    before the product it feeds, and the component formulas for a diagram with an outer product."""
    from compiler.planning.plan import Contraction, FlatMatmul, Unrolled

    src = """diagram f(X: cart2[c], W: weight[c,d], a: vec, b: vec, p: 1o, q: 1o) -> (Y: cart2[d], s: scalar, t: sph(2e), y: scalar[d]) {
    Y[d,i,j] = W[c,d] X[c,i,j]
    s = a[i] b[i]
    t[m] = cg(1,1,2)[i,j,m] p[i] q[j]
    y[d] = W[c,d] X[c,k,k]
}
"""
    (d,) = checked_program(src).diagrams
    plan = plan_diagram(d)
    by_spec = {c.spec: c for c in plan.contractions}
    mixing = by_spec["...da,...dbc->...abc"]  # channel mixing: W^T @ X with X's 3x3 flattened
    assert isinstance(mixing, FlatMatmul) and mixing.transpose and mixing.n == 2
    assert not by_spec["...a,...a->..."].blas  # a dot product: einsum's own loop, no path search
    (table,) = [c for c in plan.contractions if isinstance(c, Unrolled)]
    assert sum(len(cell) for cell in table.cells) == 11  # cg(1,1,2): 11 nonzero entries of 45
    trace = by_spec["...abb->...a"]  # X[c,k,k] summed first, then a matrix-vector product (BLAS)
    assert isinstance(trace, Contraction) and by_spec["...ba,...b->...a"].blas
    assert not plan.prefer_unrolled  # channel mixing has no component form
    outer = "diagram g(v: vec) -> S: sym2t {\n  S[i,j] = v[i] v[j] - 1/3 v[k] v[k] delta[i,j]\n}\n"
    (g,) = checked_program(outer).diagrams
    gplan = plan_diagram(g)
    assert any(isinstance(c, Contraction) and c.broadcast for c in gplan.contractions)
    assert gplan.prefer_unrolled and "the component formulas" in explain(gplan)
    text = compiler.compile_source(outer)
    assert "return _g_fused(_b, v)" in text
    v = np.random.default_rng(0).normal(size=(4, 3))
    want = np.einsum("ni,nj->nij", v, v) - np.einsum("nk,nk->n", v, v)[:, None, None] * np.eye(3) / 3
    np.testing.assert_allclose(compiler.load_source(outer).g(v), want, atol=1e-12)
    # an outer product that spreads a per-channel factor over a geometric axis (f[c] r[k]: long rows)
    # keeps the planned broadcast; one of tiny vectors per channel (v[c,i] v[c,j]) the component formulas
    spread = ("diagram h(f: scalar[c], r: vec, y: sph(2e)) -> (a: vec[c], t: sph(2e)[c]) {\n"
              "  a[c,k] = f[c] r[k]\n  t[c,m] = f[c] y[m]\n}\n")
    (h,) = checked_program(spread).diagrams
    hplan = plan_diagram(h)
    assert all(isinstance(c, Contraction) and c.broadcast for c in hplan.contractions)
    assert not hplan.prefer_unrolled and "the component formulas" not in explain(hplan)
    per_channel = "diagram k(v: vec[c]) -> S: cart2[c] {\n  S[c,i,j] = v[c,i] v[c,j]\n}\n"
    (k,) = checked_program(per_channel).diagrams
    assert plan_diagram(k).prefer_unrolled
    f, r, y = (np.random.default_rng(1).normal(size=s) for s in ((4, 5), (4, 3), (4, 5)))
    a, t = compiler.load_source(spread).h(f, r, y)
    np.testing.assert_allclose(a, f[:, :, None] * r[:, None, :], atol=1e-12)
    np.testing.assert_allclose(t, f[:, :, None] * y[:, None, :], atol=1e-12)


FACTORED = """group O3
diagram mixdiff(C: cart2[c], W: weight[c,d]) -> B: cart2[d] {
    B[d,i,j] = W[c,d] (C[c,i,j] - C[c,j,i])
}
diagram scaled_products(M: cart2[c], Y: cart2[c], g: scalar) -> Q: cart2[c] {
    Q[c,i,j] = g M[c,i,k] Y[c,k,j] + g Y[c,i,k] M[c,k,j]
}
diagram shared_scale(C: cart2[c], s: scalar[c], W0: weight[c,d], W1: weight[c,d]) -> (B: cart2[d], D: cart2[d]) {
    B[d,i,j] = W0[c,d] s[c] C[c,i,j]
    D[d,i,j] = W1[c,d] s[c] C[c,j,i]
}
diagram norms(X: cart2[c]) -> (nA: scalar[c], nS: scalar[c]) {
    nA[c] = 1/2 X[c,i,j] X[c,i,j] - 1/2 X[c,i,j] X[c,j,i]
    nS[c] = 1/2 X[c,i,j] X[c,i,j] + 1/2 X[c,i,j] X[c,j,i]
}
"""


def _kinds(plan):
    from compiler.planning.plan import Combination, FlatMatmul, Matmul

    count = lambda kind: sum(isinstance(c, kind) for c in plan.contractions)  # noqa: E731
    mixings = sum(isinstance(c, FlatMatmul) or (getattr(c, "blas", False) and len(c.operands) == 2
                                                 and "W" in "".join(c.operands)) for c in plan.contractions)
    return count(Combination), count(Matmul), mixings


def test_linear_maps_are_factored_and_broadcasts_shared():
    """W (C - Cᵀ) is one channel matmul after a transpose difference (the terms as written are two);
    g M Y + g Y M broadcasts g once, onto the sum; s[c] C used by two outputs (as C and its
    transpose) is one broadcast; terms another output shares (nA, nS) stay shared, not factored;
    every value equals the unplanned evaluation."""
    from compiler.planning.plan import Combination, Contraction

    plans = {d.name: plan_diagram(d) for d in checked_program(FACTORED).diagrams}
    combos, _, mixings = _kinds(plans["mixdiff"])
    assert (combos, mixings) == (1, 1)
    assert [type(c).__name__ for c in plans["mixdiff"].contractions][-2:] == ["Combination", "FlatMatmul"]
    sp = plans["scaled_products"]
    g_steps = [c for c in sp.contractions if "g" in c.operands]
    assert len(g_steps) == 1 and sp.contractions[-1] is g_steps[0]
    assert _kinds(sp)[:2] == (1, 2)
    shared = plans["shared_scale"]
    broadcasts = [c for c in shared.contractions if isinstance(c, Contraction) and c.broadcast]
    assert len(broadcasts) == 1 and len(shared.contractions) == 3
    norms = plans["norms"]
    assert not any(isinstance(c, Combination) for c in norms.contractions)
    assert sum(isinstance(c, Contraction) and len(c.operands) == 2 for c in norms.contractions) == 2
    module = compiler.load_source(FACTORED, "factored")
    rng = np.random.default_rng(5)
    from compiler.testing import random_input

    for d in checked_program(FACTORED).diagrams:
        args = [random_input(t.type, rng, (3,), {"c": 4, "d": 2}) for t in d.inputs]
        got = getattr(module, d.name)(*args)
        got = list(got) if isinstance(got, tuple) else [got]
        for g, w in zip(got, _naive(d, args)):
            np.testing.assert_allclose(g, np.broadcast_to(w, np.shape(g)), rtol=1e-12, atol=1e-12)


def test_explain_reports_bytes_and_temporaries():
    """--explain gives each step's bytes moved and whether it allocates a temporary, and totals: the
    factored W (C - Cᵀ) allocates one temporary (the difference; the transpose is a view), the
    matmul writes the output; the unfactored form would allocate two full-size products."""
    plans = {d.name: plan_diagram(d) for d in checked_program(FACTORED).diagrams}
    text = explain(plans["mixdiff"])
    assert "bytes at 4 per element" in text.splitlines()[0]
    assert text.count(", a view") == 2 and text.count("temporary (full size)") == 1
    total = next(line for line in text.splitlines() if line.strip().startswith("total"))
    # C read twice and the difference written (3 x 4096*16*9 floats), W and the difference read, B written
    n = 4096 * 16 * 9
    assert f"~{(3 * n + 256 + 2 * n) * 4:,} bytes moved" in total
    assert "1 temporaries allocated (1 of the outputs' size" in total
    r = __import__("subprocess").run(
        [__import__("sys").executable, "-m", "compiler", "compile", "--explain", "/dev/stdin"],
        input=FACTORED, capture_output=True, text=True)
    assert r.returncode == 0 and "bytes moved" in r.stdout and "temporaries allocated" in r.stdout


COMPLEMENT = """group O3
diagram pair_grad(d: vec[c], u: vec, x: scalar[c], y: scalar[c], w: scalar[c], p: scalar[c], q: scalar[c],
                  r: scalar[c], s: scalar[c])
    -> (g: scalar[c], h: scalar[c], k: scalar[c], m: scalar[c]) {
    g[c] = d[c,k] u[k] x[c] + d[c,k] u[k] y[c]
    h[c] = w[c] d[c,k] u[k]
    k[c] = 2 d[c,k] u[k] p[c] - 3 d[c,j] u[j] q[c]
    m[c] = d[c,k] u[k] r[c] + u[k] d[c,k] s[c]
}
"""


def test_terms_that_differ_in_one_input_are_one_product_with_the_inputs_sum():
    """d u x + d u y is (d u)(x + y): the shared product d u once (h needs it too), the inputs summed
    first, one product with the sum, where the terms as written make two products and a sum; other
    coefficients (2 x - 3 y) keep theirs; terms whose factors are written in another order
    (d u r + u d s) are found too; every value equals the unplanned evaluation."""
    from fractions import Fraction

    from compiler.planning.plan import Combination, Factored, _complement_groups, factor_linear

    (d,) = checked_program(COMPLEMENT).diagrams
    plan = plan_diagram(d)
    combos = [c for c in plan.contractions if isinstance(c, Combination)]
    assert len(combos) == 3  # x + y, p - 3/2 q (k's 2 outside) and r + s
    assert sorted(tuple(t.coefficient for t in c.terms) for c in combos) == [(1, Fraction(-3, 2)), (1, 1), (1, 1)]
    steps = {c.var: c for c in plan.contractions}
    last = {o.name: steps[o.terms[0].var] for o in plan.outputs}
    assert all(len(o.terms) == 1 for o in plan.outputs)
    assert [o.terms[0].coefficient for o in plan.outputs] == [1, 1, 2, 1]
    du = {v for c in last.values() for v in c.operands if v in steps and set(steps[v].operands) == {"d", "u"}}
    assert len(du) == 1  # one d u for g, h, k and m, each then one product over the channels
    summed = {tuple(steps[t.var].operands[0] for t in c.terms): c.var for c in combos}  # the inputs summed
    assert set(last["g"].operands) == du | {summed[("x", "y")]} and set(last["k"].operands) == du | {summed[("p", "q")]}
    assert set(last["m"].operands) == du | {summed[("r", "s")]}
    eq_m = next(eq for eq in d.equations if eq.target == "m")
    from compiler.planning.plan import combine, eliminate_deltas

    (group,) = _complement_groups(combine([eliminate_deltas(t) for t in eq_m.terms]))
    assert [n.name for n in group[0].nodes] == ["d", "u"] and group[1] == [0, 1]
    eq_g = next(eq for eq in d.equations if eq.target == "g")
    items = factor_linear(combine([eliminate_deltas(t) for t in eq_g.terms]))
    assert len(items) == 1 and isinstance(items[0], Factored) and len(items[0].nodes) == 2
    module = compiler.load_source(COMPLEMENT, "complement")
    rng = np.random.default_rng(3)
    from compiler.testing import random_input

    args = [random_input(t.type, rng, (5,), {"c": 4}) for t in d.inputs]
    for got, want in zip(module.pair_grad(*args), _naive(d, args)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


MIXED_EPS = """group SO3
diagram mixed_cross(W: weight[c,d], s: scalar[c], a: vec[d], X: cart2[c]) -> (A: cart2[c], r: scalar[c]) {
    A[c,i,j] = eps[i,j,k] W[c,d] s[c] a[d,k]
    r[c] = eps[k,i,j] X[c,i,j] W[c,d] a[d,k]
}
"""


def test_eps_is_not_unrolled_over_a_channel_mixing():
    """eps times arrays that contract among themselves (W[c,d] a[d,k]: a channel mixing) is not
    written as eps's six signed cells, each repeating the mixing over a slice of a: the mixing is
    one matmul (shared by both outputs), then eps; every value equals the unplanned evaluation."""
    from compiler.planning.plan import Unrolled

    (d,) = checked_program(MIXED_EPS).diagrams
    plan = plan_diagram(d)
    assert not any(isinstance(c, Unrolled) for c in plan.contractions)
    mixings = [c for c in plan.contractions if "W" in c.operands]
    assert len(mixings) == 1
    module = compiler.load_source(MIXED_EPS, "mixed_eps")
    rng = np.random.default_rng(4)
    from compiler.testing import random_input

    args = [random_input(t.type, rng, (5,), {"c": 4, "d": 3}) for t in d.inputs]
    for got, want in zip(module.mixed_cross(*args), _naive(d, args)):
        np.testing.assert_allclose(got, np.broadcast_to(want, np.shape(got)), rtol=1e-12, atol=1e-12)



SMALL = """diagram f(d: vec[c], u: vec, x: vec[c]) -> (s: scalar[c], w: scalar[c]) {
    s[c] = d[c,k] u[k]
    w[c] = d[c,k] x[c,k]
}
"""
GRAPH_SOURCE = """diagram g(v: vec[n,c], u: vec[e], src: edges[e,n], dst: edges[e,n]) -> m: scalar[n,c] {
    m[n,c] = dst[e,n] src[e,p] v[p,c,k] u[e,k]
}
"""


def test_a_diagram_run_in_runs_writes_small_geometric_sums_out():
    """A graph's per-edge part (Diagram.in_runs) runs on cache-sized runs of edges: there a sum over at
    most SMALL_SUM geometric components is written out as products of slices (plan.Unrolled), not an
    einsum; the same diagram run whole keeps einsum; the graph function keeps its value."""
    from dataclasses import replace

    from compiler.planning.plan import SMALL_SUM, Contraction, Unrolled

    (d,) = checked_program(SMALL).diagrams
    whole, runs = plan_diagram(d), plan_diagram(replace(d, in_runs=True))
    assert all(type(c) is Contraction for c in whole.contractions)
    assert [type(c) for c in runs.contractions] == [Unrolled, Unrolled]
    assert [len(c.cells[0]) for c in runs.contractions] == [3, 3] and SMALL_SUM >= 3
    text = compiler.compile_source(GRAPH_SOURCE)
    edge = text[text.index("def __g_edge_planned"):text.index("def _g_edge(")]
    assert "einsum" not in edge and "u[..., 2][..., None]" in edge
    rng = np.random.default_rng(1)
    v, u = rng.normal(size=(5, 4, 3)), rng.normal(size=(7, 3))
    src, dst = rng.integers(0, 5, 7), rng.integers(0, 5, 7)
    want = np.zeros((5, 4))
    for e in range(7):
        want[dst[e]] += v[src[e]] @ u[e]
    np.testing.assert_allclose(compiler.load_source(GRAPH_SOURCE).g(v, u, src, dst), want, rtol=1e-12)


def test_batched_dot_products_are_a_multiply_and_a_sum():
    """A pairwise contraction whose operands both carry every letter (``X[c,i,j] Y[c,j,i]``) is a
    batched dot product: the planner permutes the operands and calls the backend's sum_product
    (torch's einsum made it a batched gemv, one launch per 65,535 rows on a GPU). Values on numpy
    and torch, with broadcast batch axes, into ``out=``, and torch's gradients through the VJP."""
    import torch

    from compiler.planning.plan import Dot, dot_indexes

    assert dot_indexes("...ac,...ca->...a") == Dot((None, "...ca->...ac"), 1)
    assert dot_indexes("...abc,...acb->...a") == Dot((None, "...acb->...abc"), 2)
    assert dot_indexes("...ij,...ij->...") == Dot((None, None), 2)
    assert dot_indexes("...ba,...ab->...a") == Dot(("...ba->...ab", None), 1)
    for other in ("...ab,...ab->...ab", "...a,...ab->...b", "...aa,...aa->...", "ab,ab->", "...ab,...b->...a",
                  "...ab,...aab->...a"):
        assert dot_indexes(other) is None, other
    src = ("diagram g(X: cart2[c], Y: cart2[c]) -> s: scalar[c] {\n    s[c] = X[c,i,j] Y[c,j,i] + X[c,k,k]\n}\n"
           "diagram h(X: cart2[c], a: vec[c]) -> u: scalar[c] {\n    u[c] = 2 a[c,k] a[c,k] - X[c,i,j] X[c,i,j]\n}\n")
    plans = {d.name: plan_diagram(d) for d in checked_program(src).diagrams}
    assert "dot('...abc,...acb->...a', X, Y)" in explain(plans["g"])
    assert "dot('...ab,...ab->...a', a, a)" in explain(plans["h"])
    text = compiler.compile_source(src)
    assert '_b.copyto(s, _b.sum_product(X, _b.einsum("...acb->...abc", Y), 2))' in text  # straight into out=
    m = compiler.load_source(src)
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(5, 1, 4, 3, 3)), rng.normal(size=(3, 4, 3, 3))  # batch (5, 1) with (3,)
    a = rng.normal(size=(4, 3))
    want_s = np.einsum("...cij,...cji->...c", X, Y) + np.trace(X, axis1=-2, axis2=-1)
    want_u = 2 * np.einsum("ck,ck->c", a, a) - np.einsum("...cij,...cij->...c", X, X)
    for xp in (np.asarray, torch.from_numpy):
        s, u = m.g(xp(X), xp(Y)), m.h(xp(X), xp(a))
        np.testing.assert_allclose(np.asarray(s), want_s, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(u), want_u, rtol=1e-12, atol=1e-12)
    for xp in (np.asarray, torch.from_numpy):
        out = xp(np.full((5, 3, 4), np.nan))
        assert m.g(xp(X), xp(Y), out=out) is out
        np.testing.assert_allclose(np.asarray(out), want_s, rtol=1e-12, atol=1e-12)
    s32 = m.g(torch.from_numpy(X).float(), torch.from_numpy(Y).float())
    assert s32.dtype == torch.float32 and np.allclose(s32.numpy(), want_s, rtol=1e-5, atol=1e-5)
    import jax
    import jax.numpy as jnp

    sj = m.g(jnp.asarray(X), jnp.asarray(Y))  # jax: float32 unless x64 is on
    assert np.allclose(np.asarray(sj), want_s, rtol=1e-5, atol=1e-5)
    dj = jax.grad(lambda x: m.h(x, jnp.asarray(a)).sum())(jnp.asarray(X[0, 0]))  # through the generated VJP
    assert np.allclose(np.asarray(dj), -2 * X[0, 0], rtol=1e-5, atol=1e-5)
    exact = np.vectorize(lambda v: Fraction(round(v * 8), 8), otypes=[object])  # exact rationals: numpy's einsum
    Xq, Yq = exact(X[0, 0]), exact(Y[0])
    assert np.array_equal(m.g(Xq, Yq), np.einsum("cij,cji->c", Xq, Yq) + np.trace(Xq, axis1=-2, axis2=-1))
    Xt, Yt, at = (torch.tensor(v, requires_grad=True) for v in (X[0, 0], Y[0], a))
    for f, args in ((m.g, (Xt, Yt)), (m.h, (Xt, at))):
        assert torch.autograd.gradcheck(f, args)
        assert torch.autograd.gradgradcheck(f, args)


def test_fixed_size_channel_axes_are_costed_at_their_size():
    """The cost model sizes a channel axis written as a number (an irreps multiplicity, a weight's
    axis) at that number, not at the reference channel size: a multiplicity of 1 makes the
    contraction that carries it cheap, and --explain's element counts use the sizes too."""
    src = """group O3
diagram path(x: sph(1o)[16], y: sph(1o)[1], W: weight[16,1,16]) -> o: sph(1o)[16] {
    o[w,k] = W[u,v,w] x[u,k] y[v,j] x[u,j]
}
"""
    plan = plan_diagram(checked_program(src).diagrams[0])
    text = explain(plan)
    steps = [line for line in text.splitlines() if "multiply-adds" in line and "total" not in line]
    # the reference batch 4096; u = w = 16, v = 1, k = j = 3: y's contraction with x first (its v is 1)
    # or W with y (16 x 1 x 16): never a step that multiplies a 16 by a 16 by a 16
    costs = [int(line.split("~")[1].split(" ")[0].replace(",", "")) for line in steps]
    assert max(costs) <= 4096 * 16 * 16 * 3, text
    module = compiler.load_source(src, "fixed_size_path")
    rng = np.random.default_rng(0)
    x, y, W = rng.normal(size=(5, 16, 3)), rng.normal(size=(5, 1, 3)), rng.normal(size=(16, 1, 16))
    want = np.einsum("uvw,zuk,zvj,zuj->zwk", W, x, y, x)
    np.testing.assert_allclose(module.path(x, y, W), want, rtol=1e-12, atol=1e-12)


def test_a_weight_is_never_broadcast_over_the_batch_as_a_flat_matmul_and_unit_sums_are_products():
    """e3nn's uvw product (examples/e3nn_paths.py): a step contracting a batched input with a
    weight keeps the weight as the GEMM's matrix (a FlatMatmul with the batched operand as its
    matrix broadcasts the weight over the batch: one small product per row), and a step that sums
    only the harmonics' multiplicity of 1 is a broadcast product of slices, not a matrix product
    with an inner size of 1; values as e3nn's in tests/test_irreps.py."""
    import sys

    from compiler.planning.plan import FlatMatmul, Unrolled

    sys.path.insert(0, str(__import__("conftest").ROOT / "examples"))
    import e3nn_paths

    diagram = checked_program(e3nn_paths.source(4, "uvw")).diagrams[0]
    weights = {t.name for t in diagram.inputs if t.type.family == "weight"}
    plan = plan_diagram(diagram)
    steps = list(plan.contractions)
    flats = [c for c in steps if isinstance(c, FlatMatmul)]
    assert not [c for c in flats if c.operands[1] in weights and c.operands[0] not in weights]
    units = [c for c in steps if isinstance(c, Unrolled) and len(c.cells) == 1 and len(c.cells[0]) == 1
             and any(0 in idx for _, idx in c.cells[0][0].slices)]
    assert len(units) == 2  # the 0e x 1o -> 1o and 0e x 2e -> 2e paths: (x W)[w, v] y[v, m], v of size 1
