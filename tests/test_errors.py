"""Every kind of bad input, its message, position and exit code (one table, one test; lark's test_errors style)."""

import pytest

from compiler.api import checked_program
from compiler.errors import DiagError

# (name, source, exit code, line, column, start of the message)
ERRORS = [
    ('syntax_missing_brace', 'diagram f(a: vec) -> s: scalar {\n    s = a[i] a[i]\n', 2, 2, 18, "unexpected end of file; expected '}', a name"),
    ('syntax_bad_char', 'diagram f(a: vec) -> s: scalar {\n    s = a[i] @ a[i]\n}\n', 2, 2, 14, "unexpected character '@'"),
    ('syntax_missing_arrow', 'diagram f(a: vec) s: scalar {\n    s = a[i] a[i]\n}\n', 2, 1, 19, "unexpected 's'; expected '->', end of line"),
    ('syntax_dangling_op', 'diagram f(a: vec) -> s: scalar {\n    s = a[i] a[i] +\n}\n', 2, 3, 1, "unexpected '}'; expected '(', '+', '-', a name, a number, cg"),
    ('syntax_group_unknown', 'group U1\n', 2, 1, 7, "unknown group 'U1' (known: O3, SO3)"),
    ('syntax_group_twice', 'group O3\ngroup SO3\n', 2, 2, 7, 'the group is declared twice'),
    ('syntax_div_zero', 'diagram f(a: vec) -> s: scalar {\n    s = a[i] a[i] / 0\n}\n', 2, 2, 21, 'division by zero'),
    ('syntax_div_tensor', 'diagram f(a: vec) -> s: scalar {\n    s = a[i] / a[i]\n}\n', 2, 2, 16, "unexpected 'a'; expected a number, end of line"),
    ('type_unknown', 'diagram f(a: vector) -> s: scalar {\n    s = a[i] a[i]\n}\n', 2, 1, 14, "unknown type 'vector' (known: scalar, pscalar, vec, axial, c"),
    ('type_bad_grading', 'diagram f(X: cart2(0e+1e)) -> s: scalar {\n    s = X[i,i]\n}\n', 2, 1, 14, "'cart2' has irreducible parts l = 0, 1, 2; write their parit"),
    ('type_weight_no_axes', 'diagram f(W: weight) -> s: scalar {\n    s = W\n}\n', 2, 1, 14, "'weight' needs at least one channel axis, e.g. weight[c,d]"),
    ('type_arity', 'diagram f(X: cart2) -> s: scalar {\n    s = X[i]\n}\n', 2, 2, 9, "'X' of type cart2 has 2 axes (2 geometric) but 1 index is gi"),
    ('type_lhs_arity', 'diagram f(a: vec) -> s: scalar {\n    s[i] = a[i]\n}\n', 2, 2, 5, "'s' of type scalar has 0 axes (0 geometric) but 1 index is g"),
    ('type_mixed_index', 'diagram f(a: vec[c], b: vec) -> s: scalar {\n    s = a[c,i] b[c]\n}\n', 2, 2, 18, "index 'c' is used for a Cartesian leg of b and for channel a"),
    ('type_channel_mismatch', 'diagram f(a: vec[c], b: vec[d]) -> s: scalar {\n    s = a[c,i] b[c,i]\n}\n', 2, 2, 18, "index 'c' joins channel axis 'd' of b with channel axis 'c' "),
    ('type_sph_cart', 'diagram f(a: vec, b: sph(2e)) -> s: scalar {\n    s = a[i] b[i]\n}\n', 2, 2, 16, "index 'i' joins a spherical l=2 leg of b with a Cartesian le"),
    ('type_output_weight', 'diagram f(a: vec) -> W: weight[c] {\n    W[c] = a[i] a[i]\n}\n', 2, 1, 25, "output 'W' cannot be a weight: weights are inputs only"),
    ('name_unknown_tensor', 'diagram f(a: vec) -> s: scalar {\n    s = a[i] b[i]\n}\n', 2, 2, 14, "unknown tensor 'b' in diagram 'f'"),
    ('name_keyword', 'diagram f(class: vec) -> s: scalar {\n    s = class[i] class[i]\n}\n', 2, 1, 11, "tensor 'class' is a reserved word (Python, C/CUDA or diagc)"),
    ('name_underscore', 'diagram _f(a: vec) -> s: scalar {\n    s = a[i] a[i]\n}\n', 2, 1, 9, "diagram '_f': names starting with '_' are reserved for gener"),
    ('name_c_keyword', 'diagram f(a: vec) -> int: scalar {\n    int = a[i] a[i]\n}\n', 2, 1, 22, "tensor 'int' is a reserved word (Python, C/CUDA or diagc)"),
    ('name_twice', 'diagram f(a: vec, a: vec) -> s: scalar {\n    s = a[i] a[i]\n}\n', 2, 1, 19, "'a' is declared twice in diagram 'f'"),
    ('name_not_assigned', 'diagram f(a: vec) -> (s: scalar, t: scalar) {\n    s = a[i] a[i]\n}\n', 2, 1, 34, "output 't' of diagram 'f' is never assigned"),
    ('name_assign_input', 'diagram f(a: vec) -> s: scalar {\n    a[i] = a[i]\n}\n', 2, 2, 5, "'a' is an input of diagram 'f'; only outputs are assigned"),
    ('name_used_before', 'diagram f(a: vec) -> (s: scalar, t: scalar) {\n    s = t a[i] a[i]\n    t = a[i] a[i]\n}\n', 2, 2, 9, "output 't' is used before it is assigned"),
    ('name_diagram_twice', 'diagram f(a: vec) -> s: scalar {\n    s = a[i] a[i]\n}\ndiagram f(a: vec) -> s: scalar {\n    s = a[i] a[i]\n}\n', 2, 4, 9, "diagram 'f' is defined twice (first at line 1)"),
    ('lhs_repeated', 'diagram f(X: cart2) -> Y: cart2 {\n    Y[i,i] = X[i,i]\n}\n', 2, 2, 9, "index 'i' appears twice on the left-hand side"),
    ('eq_hyperedge', 'diagram f(a: vec, b: vec, c: vec) -> s: scalar {\n    s = a[i] b[i] c[i]\n}\n', 1, 2, 19, "in 's' of diagram 'f', term 'a[i] b[i] c[i]': geometric inde"),
    ('eq_dangling', 'diagram f(a: vec, b: vec) -> s: scalar {\n    s = a[i] b[j]\n}\n', 1, 2, 9, "in 's' of diagram 'f', term 'a[i] b[j]': index 'i' is on one"),
    ('eq_missing_free', 'diagram f(a: vec) -> v: vec {\n    v[i] = a[j] a[j]\n}\n', 1, 2, 12, "in 'v' of diagram 'f', term 'a[j] a[j]': output index 'i' ap"),
    ('eq_free_mismatch', 'diagram f(a: vec, b: vec) -> v: vec {\n    v[i] = a[i] + b[j]\n}\n', 1, 2, 19, "in 'v' of diagram 'f', term 'b[j]': index 'j' is on one leg "),
    ('eq_parity', 'diagram f(a: vec, b: vec) -> c: vec {\n    c[i] = eps[i,j,k] a[j] b[k]\n}\n', 1, 2, 12, "in 'c' of diagram 'f', term 'eps[i,j,k] a[j] b[k]': the term"),
    ('eq_symmetry', 'diagram f(X: cart2) -> Y: sym2 {\n    Y[i,j] = X[i,j]\n}\n', 1, 2, 5, "output 'Y' of diagram 'f' is declared sym2 but its right-han"),
    ('eq_traceless', 'diagram f(X: sym2) -> Y: sym2t {\n    Y[i,j] = X[i,j]\n}\n', 1, 2, 5, "output 'Y' of diagram 'f' is declared sym2t but its right-ha"),
    ('eq_skew', 'diagram f(X: sym2) -> Y: skew2 {\n    Y[i,j] = X[i,k] X[k,j]\n}\n', 1, 2, 5, "output 'Y' of diagram 'f' is declared skew2 but its right-ha"),
    ('eq_graded', 'diagram f(M: cart2(0e+1o+2e), Y: cart2(0e+1o+2e)) -> C: cart2(0e+1o+2e) {\n    C[i,j] = Y[i,k] M[k,j]\n}\n', 1, 2, 14, "in diagram 'f': the antisymmetric (1o) part of 'C' does not "),
    ('eq_channel_missing', 'diagram f(a: vec[c]) -> s: scalar[c] {\n    s[c] = a[d,i] a[d,i]\n}\n', 1, 2, 12, "in 's' of diagram 'f', term 'a[d,i] a[d,i]': output channel "),
]


@pytest.mark.parametrize("name, source, code, line, column, message", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_input_gets_one_positioned_message(name, source, code, line, column, message):
    with pytest.raises(DiagError) as info:
        checked_program(source, "t.diag")
    err = info.value
    assert err.exit_code == code
    assert (err.position.line, err.position.column) == (line, column)
    assert err.message.startswith(message)
    text = str(err)
    assert text.startswith(f"t.diag:{line}:{column}: ")
    # the offending line is quoted with a caret under the column
    quoted, caret = text.splitlines()[1:3]
    assert quoted.strip() == source.splitlines()[line - 1].strip() or line > len(source.splitlines())
    assert caret.index("^") - 4 == column - 1


def test_every_kind_of_error_is_in_the_table():
    kinds = {name.split("_")[0] for name, *_ in ERRORS}
    assert {"syntax", "type", "name", "eq"} <= kinds
    assert {code for _, _, code, *_ in ERRORS} == {1, 2}
