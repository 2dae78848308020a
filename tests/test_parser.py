from fractions import Fraction

from compiler import ast
from compiler.lower import lower_source
from compiler.parser import parse

FULL = """\
# a comment
group SO3   # trailing comment

diagram f(a: vec, X: cart2[c],
          W: weight[c,d]) -> (s: scalar[d], v: vec) {
    s[d] = W[c,d] * X[c,i,i] + 0.5 W[c,d] X[c,k,l] X[c,l,k] ; v[i] = a[i] -
        2/4 (a[i] + eps[i,j,k] a[j] a[k])
}
diagram g(a: vec) -> s: scalar { s = a[i]a[i] }
"""


def test_all_core_forms_parse():
    m = parse(FULL, "full.diag")
    assert m.group == "SO3" and [d.name for d in m.diagrams] == ["f", "g"]
    f = m.diagrams[0]
    assert [p.name for p in f.inputs] == ["a", "X", "W"]
    assert [str(p.type) for p in f.outputs] == ["scalar[d]", "vec"]
    assert [e.target for e in f.equations] == ["s", "v"]
    assert (f.equations[1].pos.line, f.equations[1].pos.column) == (6, 63)


def test_positions_are_kept_on_every_node():
    m = parse("diagram g(a: vec) -> s: scalar {\n  s = 1/3 a[i] a[i]\n}\n", "p.diag")
    expr = m.diagrams[0].equations[0].expr
    assert isinstance(expr, ast.BinOp) and expr.op == "*"
    factor = expr.right
    assert factor.name == "a" and (factor.pos.line, factor.pos.column) == (2, 16)
    assert factor.indices[0].pos.column == 18


def test_expansion_distributes_and_keeps_rationals():
    p = lower_source(FULL)
    v = p.diagrams[0].equations[1]
    assert [t.formula() for t in v.terms] == ["a[i]", "-1/2 a[i]", "-1/2 eps[i,j,k] a[j] a[k]"]
    s = p.diagrams[0].equations[0]
    assert s.terms[1].coefficient == Fraction(1, 2)


def test_earlier_outputs_are_substituted_with_fresh_indices():
    src = ("diagram h(X: cart2) -> (T: scalar, Y: cart2) {\n  T = X[k,k]\n"
           "  Y[i,j] = T X[i,j] + T T delta[i,j]\n}\n")
    y = lower_source(src).diagrams[0].equations[1]
    assert [t.formula() for t in y.terms] == ["X[k~1,k~1] X[i,j]", "X[k~2,k~2] X[k~3,k~3] delta[i,j]"]


def test_empty_file_and_comments_only():
    assert parse("", "e.diag").diagrams == ()
    assert parse("# nothing\n\n   # here\n", "e.diag").group == "O3"
