"""The checker: what it accepts (with the proof it gives) and how it decides the hard cases.
Every rejection kind, with its message and position, is in test_errors.py."""

import pytest

from compiler.api import check_source
from compiler.errors import EquivarianceError
from conftest import DIAGRAMS


def verdict(body, sig, out, group="O3"):
    (v,) = check_source(f"group {group}\ndiagram f({sig}) -> {out} {{\n  {body}\n}}\n", "c.diag")
    return v


@pytest.mark.parametrize("path", DIAGRAMS, ids=[p.stem for p in DIAGRAMS])
def test_every_example_checks(path):
    for v in check_source(path.read_text(), str(path)):
        assert v.ok, str(v.error)


def test_proof_records_lemmas_edges_and_parity():
    v = verdict("c[i] = eps[i,j,k] a[j] b[k]", "a: vec, b: vec", "c: axial")
    (proof,) = v.proofs
    assert proof.parity == 1
    assert any(l.startswith("eps: R⊗R⊗R eps = det(R) eps") for l in proof.lemmas)
    assert proof.edges == ("j: eps axis 1 -- a axis 0 (a Cartesian leg)", "k: eps axis 2 -- b axis 0 (a Cartesian leg)")


def test_cross_product_is_axial_under_o3_but_fine_as_vec_under_so3():
    assert not verdict("c[i] = eps[i,j,k] a[j] b[k]", "a: vec, b: vec", "c: vec").ok
    assert verdict("c[i] = eps[i,j,k] a[j] b[k]", "a: vec, b: vec", "c: vec", group="SO3").ok


def test_pseudo_inputs_count_in_the_parity_product():
    assert verdict("c[i] = eps[i,j,k] a[j] w[k]", "a: vec, w: axial", "c: vec").ok
    assert verdict("t = eps[i,j,k] X[i,j,k]", "X: pcart(3)", "t: scalar").ok
    assert not verdict("t = eps[i,j,k] X[i,j,k]", "X: cart(3)", "t: scalar").ok


def test_input_symmetries_are_used_to_decide_output_symmetry():
    # X X^T is symmetric for any X; X X is symmetric only because X is declared sym2
    assert verdict("Y[i,j] = X[i,k] X[j,k]", "X: cart2", "Y: sym2").ok
    assert not verdict("Y[i,j] = X[i,k] X[k,j]", "X: cart2", "Y: sym2").ok
    assert verdict("Y[i,j] = X[i,k] X[k,j]", "X: sym2", "Y: sym2").ok
    assert verdict("Y[i,j] = X[i,j]", "X: sym2t", "Y: sym2t").ok
    # the commutator of two symmetric matrices is antisymmetric
    assert verdict("Y[i,j] = S[i,k] T[k,j] - T[i,k] S[k,j]", "S: sym2, T: sym2", "Y: skew2").ok


def test_symmetry_with_channels_uses_every_channel_pattern():
    """With one channel X[c] g[d] - X[d] g[c] vanishes, so a one-channel check would wrongly pass."""
    v = verdict("Y[c,i,j] = X[c,i,j] g[d] - X[d,i,j] g[c]", "X: sym2[c], g: scalar[c]", "Y: skew2[c]")
    assert not v.ok and "not antisymmetric" in v.error.message


def test_graded_parity_is_decided_on_the_whole_equation():
    t = "cart2(0e+1o+2e)"
    assert verdict("C[i,j] = M[i,k] Y[k,j] + Y[i,k] M[k,j]", f"M: {t}, Y: {t}", f"C: {t}").ok
    v = verdict("C[i,j] = Y[i,k] M[k,j]", f"M: {t}, Y: {t}", f"C: {t}")
    assert isinstance(v.error, EquivarianceError) and "antisymmetric (1o) part" in v.error.message
    assert verdict("C[i,j] = Y[i,k] M[k,j]", f"M: {t}, Y: {t}", f"C: {t}", group="SO3").ok
    # the norm of a graded tensor is an invariant; its trace part alone too
    assert verdict("n = X[i,j] X[i,j]", f"X: {t}", "n: scalar").ok
    assert not verdict("v[i] = eps[i,j,k] X[j,k]", f"X: {t}", "v: axial").ok
    assert verdict("v[i] = eps[i,j,k] X[j,k]", f"X: {t}", "v: vec").ok


def test_verdict_summary_names_diagram_group_and_signature():
    v = verdict("s = a[i] a[i]", "a: vec", "s: scalar")
    assert v.summary() == "f: equivariant under O3  (a: vec) -> s: scalar  (1 term)"
