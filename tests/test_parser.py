from fractions import Fraction

import numpy as np
import pytest

from compiler.frontend import ast
from compiler.api import load_source
from compiler.errors import DiagSyntaxError
from compiler.frontend.lower import lower_source
from compiler.frontend.parser import parse

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


def test_an_output_reusing_an_earlier_one_twice_can_be_reused_again():
    """u = t with t = s s: t's two copies of s's summed index (i~1, i~2) stay apart when t itself is
    substituted (they once both became i~3: a label on four legs, the diagram refused)."""
    src = ("diagram f(a: vec, b: vec) -> (s: scalar, t: scalar, u: scalar, w: vec) {\n  s = a[i] b[i]\n"
           "  t = s s\n  u = t\n  w[i] = t a[i]\n}\n")
    d = lower_source(src).diagrams[0]
    for eq in d.equations[2:]:
        (term,) = eq.terms
        labels = [i for n in term.nodes for i in n.indices]
        assert sorted(labels.count(i) for i in set(labels) if i not in term.output) == [2, 2]
    m = load_source(src, "reuse_twice")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    s, t, u, w = m.f(a, b)
    dot = (a * b).sum(-1)
    assert np.allclose(u, dot ** 2) and np.allclose(w, dot[:, None] ** 2 * a)


def test_empty_file_and_comments_only():
    assert parse("", "e.diag").diagrams == ()
    assert parse("# nothing\n\n   # here\n", "e.diag").group == "O3"


# -- numbers ---------------------------------------------------------------------------------------

NUMBERS = [("3", Fraction(3)), ("007", Fraction(7)), ("0.5", Fraction(1, 2)), (".5", Fraction(1, 2)),
           ("1.", Fraction(1)), ("1e-3", Fraction(1, 1000)), ("2.5E+2", Fraction(250)), ("3e2", Fraction(300)),
           (".5e1", Fraction(5)), ("1.e3", Fraction(1000)), ("2.5e-30", Fraction(25, 10**31))]


@pytest.mark.parametrize("text, value", NUMBERS, ids=[t for t, _ in NUMBERS])
def test_numbers_in_every_notation_are_exact_rationals(text, value):
    m = parse(f"diagram g(a: vec) -> s: scalar {{\n  s = {text} a[i] a[i]\n}}\n", "n.diag")
    number = m.diagrams[0].equations[0].expr.left.left
    assert isinstance(number, ast.Number) and number.value == value and number.pos.column == 7


def test_scientific_notation_is_a_number_even_beside_a_tensor_named_e():
    """``1e-3 * a[i] b[i]`` with an input ``e`` was read as ``1 e - 3 a[i] b[i]``: it is 1/1000 a[i] b[i]."""
    src = "diagram f(e: scalar, a: vec, b: vec) -> s: scalar {\n  s = 1e-3 * a[i] b[i]\n}\n"
    (term,) = lower_source(src).diagrams[0].equations[0].terms
    assert term.coefficient == Fraction(1, 1000) and term.formula() == "1/1000 a[i] b[i]"
    # a space makes it a product with e again, as written
    (term,) = lower_source(src.replace("1e-3 *", "1 e *")).diagrams[0].equations[0].terms
    assert term.formula() == "e a[i] b[i]"


def test_scientific_notation_end_to_end_through_the_compiled_module():
    src = "diagram f(e: scalar, a: vec, b: vec) -> s: scalar {\n  s = 1e-3 * a[i] b[i] + 2.5E+2 e - 3e2 e\n}\n"
    module = load_source(src, "sci")
    a, b = np.array([1.0, 1.0, 0.0]), np.array([1.0, 1.0, 5.0])
    assert module.f(np.array(0.0), a, b) == pytest.approx(0.002, rel=1e-15)
    assert module.f(np.array(2.0), a, b) == pytest.approx(0.002 - 100.0, rel=1e-15)
    exact = module.f(np.array(Fraction(0), dtype=object), np.array([Fraction(1)] * 3, dtype=object),
                     np.array([Fraction(1), Fraction(1), Fraction(0)], dtype=object))
    assert exact == Fraction(2, 1000)


@pytest.mark.parametrize("text", ["2x", "1e", "2.5x", "1e3e", "1.e2cg", "3e2_a", "7P"])
def test_a_number_directly_before_a_name_is_an_error_not_a_product(text):
    src = f"diagram f(e: scalar, x: scalar, a: vec) -> s: scalar {{\n  s = {text} a[i] a[i]\n}}\n"
    with pytest.raises(DiagSyntaxError, match="a number written directly before a name") as info:
        parse(src, "n.diag")
    assert (info.value.position.line, info.value.position.column) == (2, 7)


# -- line breaks -----------------------------------------------------------------------------------

ONE_LINE = "diagram f(a: vec, b: vec) -> s: scalar {\n  s = a[i] b[i] + 2 a[i] a[i] - b[i] b[i]\n}\n"


@pytest.mark.parametrize("src", [
    "diagram f(a: vec, b: vec) -> s: scalar {\n  s = a[i] b[i]\n    + 2 a[i] a[i]\n    - b[i] b[i]\n}\n",
    "diagram f(a: vec, b: vec) -> s: scalar {\n  s = a[i] b[i]  # first\n\n    # the rest\n    + 2 a[i] a[i]\n"
    "    - b[i] b[i]\n}\n",
    "diagram f(a: vec, b: vec) -> s: scalar {\r\n  s = a[i] b[i]\r\n    + 2 a[i] a[i]\r\n    - b[i] b[i]\r\n}\r\n",
    "diagram f(a: vec, b: vec)\n    -> s: scalar {\n  s = a[i] b[i] + 2 a[i] a[i]\n  - b[i] b[i]\n}\n",
    "diagram f(a: vec,\n          b: vec)\n  # the output\n  -> s: scalar {\n  s = a[i] b[i] +\n  2 a[i] a[i]\n"
    "  -\n  b[i] b[i]\n}\n",
], ids=["leading-ops", "comments-between", "crlf", "signature-arrow", "mixed"])
def test_a_line_starting_with_plus_minus_or_arrow_continues(src):
    assert [t.formula() for t in lower_source(src).diagrams[0].equations[0].terms] == \
        [t.formula() for t in lower_source(ONE_LINE).diagrams[0].equations[0].terms]


def test_a_comment_with_an_arrow_does_not_join_lines():
    src = "# maps cart2 -> cart2\n# - and more\ndiagram f(a: vec) -> s: scalar {\n  s = a[i] a[i]\n  # - x\n}\n"
    assert [d.name for d in parse(src, "c.diag").diagrams] == ["f"]
