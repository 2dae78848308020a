"""The shared reference evaluator, its index letters, and the typed constants."""

from fractions import Fraction

import numpy as np
import pytest

from compiler.api import checked_program
from compiler.math.constants import EPS, Constant
from compiler.math.einsum import Exact, Floats, ModP, evaluate_sum, letters, symbol
from compiler.tools.enumeration import PRIME

SRC = """group SO3
diagram f(a: vec, X: cart2, b: vec) -> (s: scalar, w: vec) {
    s = a[i] X[i,j] b[j] - 2/3 X[k,k] + eps[i,j,k] a[i] b[j] a[k]
    w[i] = eps[i,j,k] X[j,k] / 2 + delta[i,j] b[j] X[k,k]
}
"""


def test_index_letters_continue_past_52_without_repeats():
    assert "".join(symbol(k) for k in range(52)) == "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    many = [symbol(k) for k in range(60000)]
    assert len(set(many)) == len(many) and all(len(ch) == 1 for ch in many)
    assert not any(0xD800 <= ord(ch) <= 0xDFFF for ch in many)  # no surrogates
    assert letters(["k", "i", "k", "j"]) == {"k": "a", "i": "b", "j": "c"}


def _integer_inputs(d, rng):
    return {t.name: rng.integers(-9, 10, size=(4,) + t.type.geometric_dims) for t in d.inputs}


def test_domains_agree_floats_exact_and_mod_p():
    (d,) = checked_program(SRC).diagrams
    ints = _integer_inputs(d, np.random.default_rng(3))
    exact_in = {k: np.vectorize(Fraction, otypes=[object])(v) for k, v in ints.items()}
    for eq in d.equations:
        exact = evaluate_sum(eq.terms, exact_in, Exact())
        floats = evaluate_sum(eq.terms, {k: v.astype(float) for k, v in ints.items()}, Floats())
        np.testing.assert_allclose(floats, exact.astype(float), rtol=1e-12, atol=1e-12)
        mod = evaluate_sum(eq.terms, {k: v % PRIME for k, v in ints.items()}, ModP(PRIME))
        want = np.vectorize(lambda x: x.numerator * pow(x.denominator, -1, PRIME) % PRIME, otypes=[np.int64])(exact)
        np.testing.assert_array_equal(np.broadcast_to(mod, want.shape), want)
    # the cross product: eps as the one Levi-Civita table
    assert EPS[0, 1, 2] == 1 and EPS[0, 2, 1] == -1 and EPS[0, 0, 1] == 0


def test_mod_p_refuses_irrational_constants():
    src = "diagram f(x: sph(1o), y: sph(1o)) -> z: sph(2e) {\n z[m] = cg(1,1,2)[a,b,m] x[a] y[b]\n}\n"
    (d,) = checked_program(src).diagrams
    points = {"x": np.ones((2, 3), np.int64), "y": np.ones((2, 3), np.int64)}
    with pytest.raises(ValueError, match="no value modulo p"):
        evaluate_sum(d.equations[0].terms, points, ModP(PRIME))


def test_constants_are_typed_fields_not_parsed_names():
    src = "diagram f(x: sph(1o), y: sph(1o)) -> z: sph(2e) {\n z[m] = cg(1,1,2)[a,b,m] x[a] y[b]\n}\n"
    (d,) = checked_program(src).diagrams
    (node,) = [n for n in d.equations[0].terms[0].nodes if n.kind == "cg"]
    assert node.constant == Constant("cg", (1, 1, 2)) and node.name == str(node.constant) == "cg(1,1,2)"


@pytest.mark.parametrize("spec, shapes", [
    ("cij->ij", [(2, 3, 3)]),                      # a label of one operand that no output keeps
    (",cij->ij", [(), (2, 3, 3)]),                 # a scalar times it (the property test's case)
    ("cij,j->i", [(2, 3, 3), (3,)]),
    ("cij,k->", [(2, 3, 3), (3,)]),                # each operand with a label summed alone
    ("...cij,...k->...ij", [(4, 2, 3, 3), (4, 3)]),
    ("ij,jk,kl->il", [(3, 3), (3, 3), (3, 3)]),
])
def test_pairwise_equals_numpy_einsum(spec, shapes):
    from compiler.math.einsum import pairwise

    rng = np.random.default_rng(3)
    ops = [rng.normal(size=s) for s in shapes]
    got = pairwise(spec, ops, lambda v: v)
    want = np.einsum(spec, *ops)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_exact_check_of_a_channel_summed_graded_input_gets_a_verdict():
    """Found by the property test: a graded input whose channel is summed alone made the exact
    evaluator keep the channel axis (an internal error in the parity check)."""
    from compiler.api import check_source

    src = ("group O3\ndiagram f(x0: scalar, x1: scalar, x2: sym2(0e+2o)[c]) -> y: cart2 {\n"
           "    y[i,j] = 2 x0 x1 x2[c,i,j]\n}\n")
    (verdict,) = check_source(src, "f.diag")
    assert verdict.error is not None and "mixes parities" in str(verdict.error)
