import networkx as nx

from compiler.frontend.lower import lower_source
from compiler.planning.plan import combine, eliminate_deltas


def terms(rhs, sig="X: cart2, Y: cart2, a: vec", out="Z: cart2", lhs="Z[i,j]"):
    src = f"diagram f({sig}) -> {out} {{\n  {lhs} = {rhs}\n}}\n"
    return lower_source(src).diagrams[0].equations[0].terms


def test_canonical_form_ignores_index_names_and_factor_order():
    a, b, c = terms("X[i,k] Y[k,j] + Y[m,j] X[i,m] + X[k,j] Y[i,k]")
    assert a.canonical() == b.canonical()
    assert a.canonical() != c.canonical()  # Y X is a different contraction


def test_canonical_form_sees_coefficients_and_output_order():
    a, b, c = terms("X[i,j] + 2 X[i,j] + X[j,i]")
    assert a.shape_key() == b.shape_key() and a.canonical() != b.canonical()
    assert a.shape_key() != c.shape_key()


def test_graph_has_one_edge_per_contraction():
    (t,) = terms("X[i,k] Y[k,l] X[l,j]")
    g = t.graph()
    factors = [n for n in g if isinstance(n, tuple) and n[0] == "f"]
    assert len(factors) == 3
    assert g.number_of_edges() == 4  # k, l contracted; i, j to the output
    assert nx.is_connected(g)


def test_delta_elimination_and_like_terms():
    ts = terms("delta[i,k] X[k,j] + X[i,j] - delta[k,k] X[i,j] / 3 + delta[i,j] X[k,k]")
    reduced = combine(eliminate_deltas(t) for t in ts)
    assert [t.formula() for t in reduced] == ["X[i,j]", "delta[i,j] X[k,k]"]
    # X + X - 3X/3 = X: the first three terms combined into one
    assert reduced[0].coefficient == 1


def test_cancelling_terms_vanish():
    ts = terms("X[i,j] - delta[j,l] X[i,l]")
    assert combine(eliminate_deltas(t) for t in ts) == []


def test_renamed_labels_are_typed():
    """An earlier output substituted into a term brings its summed indices in renamed apart: typed
    labels (base name, copy number), shown as k'N, equal to their identity text."""
    import copy
    import pickle

    import pytest

    from compiler.ir.program import Renamed, base_name, label_text, sum_formula
    from compiler.frontend.lower import lower_source

    src = ("group O3\ndiagram d(X: cart2) -> (I: sym2, S: sym2) {\n"
           "    I[i,j] = 1/3 X[k,k] delta[i,j]\n    S[i,j] = 1/2 (X[i,j] + X[j,i]) - I[i,j]\n}\n")
    eq = lower_source(src, "d.diag").diagrams[0].equations[1]
    renamed = [i for t in eq.terms for i in t.indices() if isinstance(i, Renamed)]
    assert renamed and all(r.base == "k" and isinstance(r.copy, int) and r == f"k~{r.copy}" for r in renamed)
    r = renamed[0]
    assert base_name(r) == "k" and base_name("k") == "k" and label_text(r) == f"k'{r.copy}"
    assert f"X[k'{r.copy},k'{r.copy}]" in sum_formula(eq.terms) and "~" not in sum_formula(eq.terms)
    for clone in (copy.deepcopy(r), pickle.loads(pickle.dumps(r))):
        assert type(clone) is Renamed and (clone.base, clone.copy) == (r.base, r.copy)
    with pytest.raises(AttributeError):
        r.copy = 5


def test_derivative_legs_are_typed():
    """A derivative taking out a node whose index is repeated (a trace, X[k,k]) opens a fresh leg
    joined by a delta: a typed label (base, number, leg=True), never text to be split again; the
    drawing shows renamed labels from those fields."""
    import pickle

    from compiler.frontend.lower import lower_source
    from compiler.ir.grad import _derivative
    from compiler.ir.program import Renamed, Tensor, label_text
    from compiler.tools.draw.style import show_index

    src = "group O3\ndiagram t(X: cart2) -> s: scalar {\n    s = X[k,k]\n}\n"
    d = lower_source(src, "t.diag").diagrams[0]
    term = d.equations[0].terms[0]
    cot = Tensor("d_s", d.outputs[0].type, None)
    net = _derivative(term, 0, cot, (), d)
    legs = [i for i in net.output if isinstance(i, Renamed)]
    assert len(legs) == 1 and (legs[0].base, legs[0].copy, legs[0].leg) == ("k", 1, True)
    assert label_text(legs[0]) == "k'd1" and show_index(legs[0]) == "k'" and show_index("k") == "k"
    assert Renamed("k", 1) != legs[0] and pickle.loads(pickle.dumps(legs[0])).leg is True
    assert [n.name for n in net.nodes].count("delta") == 1
