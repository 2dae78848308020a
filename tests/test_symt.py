"""symt(l): rank-l symmetric traceless Cartesian tensors, the Cartesian twin of sph(l). Parsing and
printing, the exact declared-symmetry check, inputs built with the symmetry, enumeration counts
against character theory, and equivariance of compiled code."""

import numpy as np
import pytest

import compiler
from compiler.tools.enumeration import InputSpec, Request, enumerate_basis
from compiler.math.stf import free_monomials, stf_from_array
from compiler.testing import assert_equivariant, random_input
from compiler.ir.types import Irrep, TensorType as T


@pytest.mark.parametrize("text, printed, irrep", [
    ("symt(3)", "symt(3)", Irrep(3, -1)), ("sym3t", "symt(3)", Irrep(3, -1)), ("psymt(3)", "psymt(3)", Irrep(3, 1)),
    ("symt(4)[c]", "symt(4)[c]", Irrep(4, 1)), ("symt(2)", "sym2t", Irrep(2, 1)), ("psymt(2)", "sym2t(2o)", Irrep(2, -1)),
])
def test_parse_and_print(text, printed, irrep):
    t = T.parse(text)
    assert str(t) == printed and T.parse(printed) == t and t.parts == (irrep,)
    assert t.geometric_dims == (3,) * irrep.l and t.inversion == irrep.p


def test_free_entries_determine_a_symmetric_traceless_tensor():
    for l in range(2, 7):
        assert len(free_monomials(l)) == 2 * l + 1
        x = stf_from_array(np.random.default_rng(l).normal(size=(2,) + (3,) * l), l)
        for k in range(1, l + 1):
            assert np.allclose(x, np.swapaxes(x, k, k + 1 if k < l else 1))
        assert np.allclose(np.trace(x, axis1=1, axis2=2), 0)
        # the projection onto spherical l keeps it whole: P(l)^T P(l) x = x
        from compiler.math.spherical import cartesian_to_spherical_numeric

        if l <= 5:
            P = cartesian_to_spherical_numeric(l)
            flat = x.reshape(2, -1)
            assert np.allclose(flat @ P.T @ P, flat)


def test_declared_symmetry_is_decided_exactly():
    ok = """diagram f(S: sym3t, v: vec) -> (T: sym2t, U: symt(3), s: scalar) {
    T[i,j] = S[i,j,k] v[k]
    U[i,j,k] = v[i] v[j] v[k] - 1/5 v[l] v[l] (delta[i,j] v[k] + delta[i,k] v[j] + delta[j,k] v[i])
    s = S[i,j,k] S[i,j,k]
}
"""
    m = compiler.load_source(ok)
    assert_equivariant(m.f, ["sym3t", "vec"], ["sym2t", "symt(3)", "scalar"], "O3")
    S = random_input("sym3t", np.random.default_rng(0), (4,))
    assert np.allclose(np.einsum("...iik->...k", S), 0)
    with pytest.raises(compiler.DiagError, match="not traceless"):  # a 1/5 short of the trace
        compiler.compile_source(ok.replace("1/5", "1/3"))


@pytest.mark.parametrize("inputs, out, group, expected", [
    ([("S", "sym3t", 1)], "3o", "O3", 1),
    ([("S", "sym3t", 2)], "scalar", "O3", 1),
    ([("S", "sym3t", 1), ("v", "vec", 1)], "sym2t", "O3", 1),
    ([("S", "sym3t", 1), ("v", "vec", 1)], "sym2", "O3", 1),
    ([("v", "vec", 3)], "sym3t", "O3", 1),
    ([("S", "symt(4)", 2)], "symt(4)", "O3", 1),
    ([("S", "sym3t", 2)], "sym2t", "O3", 1),  # S^2(3) = 0 + 2 + 4 + 6
    ([("S", "sym3t", 3)], "scalar", "O3", 0),  # odd degree of an odd part
    ([("S", "sym3t", 4)], "scalar", "O3", 2),
    ([("S", "psymt(3)", 1), ("v", "vec", 1)], "pcart(2)", "O3", 1),
])
def test_enumeration_counts(inputs, out, group, expected):
    b = enumerate_basis(Request(tuple(InputSpec(n, T.parse(t), d) for n, t, d in inputs), T.parse(out), group))
    assert b.expected == expected == b.dimension


def test_twin_of_sph_gives_the_same_counts():
    for d in (2, 3):
        for L in range(0, 7):
            twin = [enumerate_basis(Request((InputSpec("S", T.parse(t), d),), T.parse(f"{L}{'e' if d % 2 == 0 else 'o'}")))
                    .dimension for t in ("sym3t", "3o")]
            assert twin[0] == twin[1]


def test_basis_with_symt_compiles_and_is_equivariant():
    m = compiler.load_source("basis b(S: sym3t^<=2, v: vec) -> Y: sym3t\n")
    rng = np.random.default_rng(1)
    y = m.b(random_input("sym3t", rng, (5,)), random_input("vec", rng, (5,)))
    assert y.shape == (5, 2, 3, 3, 3)
    assert np.allclose(y, np.swapaxes(y, -1, -2)) and np.allclose(np.trace(y, axis1=-2, axis2=-1), 0)
    assert_equivariant(m.b, ["sym3t", "vec"], ["sym3t"], "O3")


def test_certificate_of_a_symt_diagram_is_proved_and_verified(tmp_path, capsys):
    """The certifier's exact inputs carry the symt(3) symmetry (compiler.math.stf), so the proof holds."""
    from compiler import cli

    src = tmp_path / "s.diag"
    src.write_text("diagram f(S: sym3t, v: vec) -> T: sym2t {\n    T[i,j] = S[i,j,k] v[k]\n}\n")
    assert cli.main(["prove", str(src), "-o", str(tmp_path / "cert")]) == 0
    assert cli.main(["verify", str(tmp_path / "cert")]) == 0
    assert "exact identity checks passed" in capsys.readouterr().out
