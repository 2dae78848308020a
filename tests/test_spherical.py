"""Exact spherical building blocks (compiler/math/spherical.py): exact properties and agreement with e3nn."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
import sympy

from compiler.math import spherical as sph

# ------------------------------------------------------------------------------------------------
# helpers


def cayley(w) -> sympy.Matrix:
    """Rational rotation R = I + 2 (K + K^2) / (1 + |w|^2), K the cross-product matrix of w."""
    a, b, c = (sympy.Rational(x) for x in w)
    K = sympy.Matrix([[0, -c, b], [c, 0, -a], [-b, a, 0]])
    return sympy.eye(3) + 2 * (K + K * K) / (1 + a * a + b * b + c * c)


ROTATIONS = [cayley(w) for w in [(1, 2, 3), (-1, 1, 2), (2, 0, -1), (Fraction(1, 2), -3, 1)]]


def is_zero(M) -> bool:
    return all(sympy.expand(x) == 0 for x in M)


def kron_power(R: sympy.Matrix, l: int) -> sympy.Matrix:
    out = sympy.eye(1)
    for _ in range(l):
        out = sympy.kronecker_product(out, R)
    return out


def cg_matrix(l1, l2, l3) -> sympy.Matrix:
    """C as a (d1*d2, d3) matrix, row index a*d2 + b."""
    C = sph.wigner_3j(l1, l2, l3)
    return sympy.Matrix([list(C[a][b]) for a in range(2 * l1 + 1) for b in range(2 * l2 + 1)])


def random_rotations(n, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q, Rm = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    Q = Q * np.sign(np.diagonal(Rm, axis1=-2, axis2=-1))[:, None, :]
    return Q * np.sign(np.linalg.det(Q))[:, None, None]


def triangle_triples(lmax):
    return [t for t in itertools.product(range(lmax + 1), repeat=3) if sph.triangle_ok(*t)]


# ------------------------------------------------------------------------------------------------
# exact properties


def test_cayley_rotations_are_rational_rotations():
    for R in ROTATIONS:
        assert R.T * R == sympy.eye(3) and R.det() == 1
        assert all(x.is_Rational for x in R)


@pytest.mark.parametrize("l", range(5))
def test_wigner_D_orthogonal_and_homomorphism_exact(l):
    R1, R2 = ROTATIONS[0], ROTATIONS[1]
    D1, D2 = sph.wigner_D(l, R1), sph.wigner_D(l, R2)
    assert D1.shape == (2 * l + 1, 2 * l + 1)
    assert is_zero(D1 * D1.T - sympy.eye(2 * l + 1))
    assert is_zero(sph.wigner_D(l, R1 * R2) - D1 * D2)
    assert is_zero(sph.wigner_D(l, R1.T) - D1.T)
    assert sph.wigner_D(l, sympy.eye(3)) == sympy.eye(2 * l + 1)


@pytest.mark.parametrize("l", range(4))
def test_wigner_D_intertwines_P_exact(l):
    R = ROTATIONS[2]
    P = sph.cartesian_to_spherical(l)
    assert is_zero(sph.wigner_D(l, R) * P - P * kron_power(R, l))


@pytest.mark.parametrize("l1,l2,l3", [(1, 1, 0), (1, 1, 1), (1, 1, 2), (1, 2, 2), (2, 2, 2), (1, 2, 3), (2, 2, 3), (3, 3, 2), (0, 3, 3), (3, 3, 3)])
def test_cg_intertwines_exact(l1, l2, l3):
    R = ROTATIONS[3]
    C = cg_matrix(l1, l2, l3)
    D1, D2, D3 = (sph.wigner_D(l, R) for l in (l1, l2, l3))
    assert is_zero(sympy.kronecker_product(D1, D2) * C - C * D3)
    assert sympy.expand(sum(x**2 for x in C)) == 1  # Frobenius norm 1


@pytest.mark.parametrize("l", range(5))
def test_P_isometry_projector_traceless_exact(l):
    P = sph.cartesian_to_spherical(l)
    d = 2 * l + 1
    assert P.shape == (d, 3**l)
    assert is_zero(P * P.T - sympy.eye(d))
    Pi = P.T * P
    assert Pi == Pi.T
    if l <= 3:
        assert is_zero(Pi * Pi - Pi)
        assert Pi.rank(simplify=True) == d
    # every row is a symmetric tensor and traceless over any two legs
    arr = np.array(P.tolist(), dtype=object).reshape((d,) + (3,) * l)
    for perm in itertools.permutations(range(l)):
        assert (arr.transpose((0,) + tuple(p + 1 for p in perm)) == arr).all()
    for s, t in itertools.combinations(range(l), 2):
        tr = np.trace(arr, axis1=s + 1, axis2=t + 1)
        assert all(sympy.expand(x) == 0 for x in np.ravel(tr))


@pytest.mark.parametrize("l", [5, 6])
def test_P_high_l_numeric(l):
    P = sph.cartesian_to_spherical_numeric(l)
    d = 2 * l + 1
    assert np.allclose(P @ P.T, np.eye(d), atol=1e-13)
    Pi = P.T @ P
    assert np.allclose(Pi @ Pi, Pi, atol=1e-13) and np.linalg.matrix_rank(Pi, tol=1e-8) == d
    arr = P.reshape((d,) + (3,) * l)
    assert np.allclose(np.trace(arr, axis1=1, axis2=2), 0, atol=1e-13)
    assert np.allclose(arr, np.swapaxes(arr, 1, l), atol=0)
    # exact and numeric agree; numeric D intertwines
    assert np.allclose(np.array(sph.cartesian_to_spherical(l).evalf(20).tolist(), dtype=float), P, atol=1e-15)
    R = random_rotations(1, seed=l)[0]
    Rl = np.eye(1)
    for _ in range(l):
        Rl = np.kron(Rl, R)
    D = sph.wigner_D_numeric(l, R)
    assert np.allclose(D @ P, P @ Rl, atol=1e-12)
    assert np.allclose(D @ D.T, np.eye(d), atol=1e-12)


def test_wigner_3j_336_and_666():
    for t in [(3, 3, 6), (6, 6, 6), (2, 4, 6)]:
        C = sph.wigner_3j_numeric(*t)
        assert abs(np.linalg.norm(C) - 1) < 1e-14
        R = random_rotations(1, seed=7)[0]
        D1, D2, D3 = (sph.wigner_D_numeric(l, R) for l in t)
        assert np.allclose(np.einsum("ia,jb,kc,abc->ijk", D1, D2, D3, C), C, atol=1e-12)


def test_exact_and_numeric_D_agree():
    for l in range(7):
        R = ROTATIONS[0]
        De = np.array(sph.wigner_D(l, R).evalf(20).tolist(), dtype=float)
        Dn = sph.wigner_D_numeric(l, np.array(R.tolist(), dtype=float))
        assert np.allclose(De, Dn, atol=1e-13)


def test_wigner_D_irrational_rotation():
    c = sympy.sqrt(2) / 2
    R = sympy.Matrix([[c, -c, 0], [c, c, 0], [0, 0, 1]])  # 45 degrees about z
    for l in range(4):
        D = sph.wigner_D(l, R)
        assert is_zero(D * D.T - sympy.eye(2 * l + 1))
        Dn = sph.wigner_D_numeric(l, np.array(R.evalf(20).tolist(), dtype=float))
        assert np.allclose(np.array(D.evalf(20).tolist(), dtype=float), Dn, atol=1e-13)


def test_improper_rotation_and_parity():
    R = ROTATIONS[1]
    for l in range(4):
        D = sph.wigner_D(l, R)
        assert sph.wigner_D(l, -R) == D  # rotation part
        assert sph.wigner_D(l, -R, parity=-1) == -D
        assert sph.wigner_D(l, -R, parity=1) == D
        assert sph.wigner_D(l, R, parity=-1) == D
        P = sph.cartesian_to_spherical(l)
        # natural Cartesian action of an improper R: (-1)^l times the rotation part
        assert is_zero(P * kron_power(-R, l) * P.T - (-1) ** l * D)
        Rn = -np.array(R.tolist(), dtype=float)
        assert np.allclose(sph.wigner_D_numeric(l, Rn, parity=-1), -np.array(D.evalf(20).tolist(), dtype=float))


def test_numeric_batched():
    Rs = random_rotations(6, seed=3).reshape(2, 3, 3, 3)
    D = sph.wigner_D_numeric(2, Rs)
    assert D.shape == (2, 3, 5, 5)
    assert np.allclose(D[1, 2], sph.wigner_D_numeric(2, Rs[1, 2]))
    assert np.allclose(sph.wigner_D_numeric(1, Rs), Rs)
    assert np.allclose(sph.wigner_D_numeric(0, Rs), 1)


def test_low_order_cg_are_delta_and_eps():
    C110 = np.array(sph.wigner_3j(1, 1, 0), dtype=object)[:, :, 0]
    assert (C110 == np.eye(3, dtype=int) / sympy.sqrt(3)).all()
    C111 = np.array(sph.wigner_3j(1, 1, 1), dtype=object)
    for i, j, k in itertools.product(range(3), repeat=3):
        eps = sympy.LeviCivita(i, j, k)
        assert C111[i, j, k] == eps / sympy.sqrt(6)
    # 1 (x) 1 -> 2 is P_2 applied to the symmetric part of x (x) y
    C112 = cg_matrix(1, 1, 2)
    P2 = sph.cartesian_to_spherical(2)
    assert is_zero(C112 - P2.T / sympy.sqrt(5))


def test_l1_is_cartesian_xyz():
    assert sph.cartesian_to_spherical(1) == sympy.eye(3)
    R = ROTATIONS[0]
    assert sph.wigner_D(1, R) == R


def test_seeds_identity_P2_exact():
    """SEEDS T20: P_2 vec(r r^T) = sqrt(2/15) Y2_component(r) for unit r (e3nn order, y polar)."""
    x, y, z = (sympy.Rational(v, 7) for v in (2, 3, 6))  # a rational unit vector
    r = sympy.Matrix([x, y, z])
    s15, s5 = sympy.sqrt(15), sympy.sqrt(5)
    Y2 = sympy.Matrix([s15 * x * z, s15 * x * y, s5 * (y**2 - (x**2 + z**2) / 2), s15 * y * z, s15 / 2 * (z**2 - x**2)])
    P2 = sph.cartesian_to_spherical(2)
    assert is_zero(P2 * sympy.kronecker_product(r, r) - sympy.sqrt(sympy.Rational(2, 15)) * Y2)
    assert sph.sh_component_constant(2) == sympy.sqrt(sympy.Rational(15, 2))
    assert sph.sh_component_constant(1) == sympy.sqrt(3)
    # explicit rows of P_2 (SEEDS 1.3), as 3x3 matrices
    E = lambda a, b: sympy.Matrix(3, 3, lambda i, j: int((i, j) == (a, b)))
    X, Yc, Z = 0, 1, 2
    rows = [
        (E(X, Z) + E(Z, X)) / sympy.sqrt(2),
        (E(X, Yc) + E(Yc, X)) / sympy.sqrt(2),
        (2 * E(Yc, Yc) - E(X, X) - E(Z, Z)) / sympy.sqrt(6),
        (E(Yc, Z) + E(Z, Yc)) / sympy.sqrt(2),
        (E(Z, Z) - E(X, X)) / sympy.sqrt(2),
    ]
    for m, M in enumerate(rows):
        assert is_zero(P2.row(m) - M.reshape(1, 9))


def test_bad_input():
    with pytest.raises(ValueError):
        sph.wigner_3j(1, 1, 3)
    with pytest.raises(ValueError):
        sph.wigner_3j(0, 2, 1)
    with pytest.raises(ValueError):
        sph.cartesian_to_spherical(-1)
    with pytest.raises(ValueError):
        sph.wigner_D(1, sympy.Matrix([[1, 1, 0], [0, 1, 0], [0, 0, 1]]))
    with pytest.raises(ValueError):
        sph.wigner_D(1, np.eye(3))  # floats: use wigner_D_numeric
    with pytest.raises(ValueError):
        sph.wigner_D(1, sympy.eye(3), parity=2)


def test_cached_results_are_immutable():
    P = sph.cartesian_to_spherical(2)
    with pytest.raises(TypeError):
        P[0, 0] = 5
    assert sph.wigner_3j(1, 1, 2) is sph.wigner_3j(1, 1, 2)


# ------------------------------------------------------------------------------------------------
# agreement with e3nn


@pytest.fixture(scope="module")
def e3nn_o3():
    """e3nn builds its Wigner D generators in torch's *default* dtype: run in float64 throughout."""
    pytest.importorskip("e3nn")
    import torch
    from e3nn import o3

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield torch, o3
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("l1,l2,l3", triangle_triples(3))
def test_wigner_3j_matches_e3nn(e3nn_o3, l1, l2, l3):
    torch, o3 = e3nn_o3
    ref = o3.wigner_3j(l1, l2, l3, dtype=torch.float64).numpy()
    mine = np.array(sph.wigner_3j(l1, l2, l3), dtype=float)
    np.testing.assert_allclose(mine, ref, atol=1e-12, rtol=0)
    np.testing.assert_allclose(sph.wigner_3j_numeric(l1, l2, l3), mine, atol=1e-15, rtol=0)


@pytest.mark.parametrize("l", range(4))
def test_change_of_basis_matches_e3nn(e3nn_o3, l):
    torch, _ = e3nn_o3
    from e3nn.o3._wigner import change_basis_real_to_complex

    ref = change_basis_real_to_complex(l, dtype=torch.float64).numpy()
    mine = np.array(sph.change_of_basis(l).evalf(20).tolist(), dtype=complex)
    np.testing.assert_allclose(mine, ref, atol=1e-14)


@pytest.mark.parametrize("l", range(7))
def test_spherical_harmonics_proportional_to_P(e3nn_o3, l):
    torch, o3 = e3nn_o3
    rng = np.random.default_rng(l)
    r = rng.normal(size=(8, 3)) * rng.uniform(0.3, 2.0, size=(8, 1))  # not unit: constant must not depend on r
    Y = o3.spherical_harmonics(l, torch.tensor(r), normalize=False, normalization="component").numpy()
    P = sph.cartesian_to_spherical_numeric(l)
    rl = np.ones((8, 1))
    for _ in range(l):
        rl = np.einsum("ni,nj->nij", rl, r).reshape(8, -1)
    mine = rl @ P.T
    c = float(sph.sh_component_constant(l))
    assert c > 0
    np.testing.assert_allclose(c * mine, Y, atol=1e-11, rtol=1e-11)


@pytest.mark.parametrize("l", range(5))
def test_D_from_matrix_matches_e3nn(e3nn_o3, l):
    torch, o3 = e3nn_o3
    Rs = random_rotations(5, seed=10 + l)
    for p in (1, -1):
        ref = o3.Irrep(l, p).D_from_matrix(torch.tensor(Rs)).numpy()
        np.testing.assert_allclose(sph.wigner_D_numeric(l, Rs), ref, atol=1e-12)
        # improper: e3nn applies p^k on top of D(-R)
        ref_i = o3.Irrep(l, p).D_from_matrix(torch.tensor(-Rs)).numpy()
        np.testing.assert_allclose(sph.wigner_D_numeric(l, -Rs, parity=p), ref_i, atol=1e-12)
    # exact D for a rational rotation agrees too
    R = ROTATIONS[3]
    ref = o3.Irrep(l, 1).D_from_matrix(torch.tensor(np.array(R.tolist(), dtype=float))).numpy()
    np.testing.assert_allclose(np.array(sph.wigner_D(l, R).evalf(20).tolist(), dtype=float), ref, atol=1e-12)


def test_e3nn_l1_order(e3nn_o3):
    """e3nn (>= 0.5, here 0.6.0) stores l = 1 in Cartesian order (x, y, z): Y_1 = sqrt(3) (x, y, z),
    D^1(R) = R.  (The (y, z, x) order of the textbook real basis, z polar, is relabelled by e3nn's
    y-polar convention.)"""
    torch, o3 = e3nn_o3
    r = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    Y1 = o3.spherical_harmonics(1, r, normalize=False, normalization="component").numpy()[0]
    np.testing.assert_allclose(Y1, np.sqrt(3) * np.array([0.1, 0.2, 0.3]), atol=1e-15)
    R = random_rotations(1, seed=99)[0]
    np.testing.assert_allclose(o3.Irrep(1, -1).D_from_matrix(torch.tensor(R)).numpy(), R, atol=1e-12)
    # P_1 = identity, D^1 = R
    np.testing.assert_allclose(sph.wigner_D_numeric(1, R), R, atol=1e-15)
    # e3nn's Y_2 in terms of x, y, z: y is the polar axis
    x, y, z = 0.1, 0.2, 0.3
    Y2 = o3.spherical_harmonics(2, r, normalize=False, normalization="component").numpy()[0]
    s15, s5 = np.sqrt(15), np.sqrt(5)
    np.testing.assert_allclose(Y2, [s15 * x * z, s15 * x * y, s5 * (y * y - (x * x + z * z) / 2), s15 * y * z, s15 / 2 * (z * z - x * x)], atol=1e-14)


def test_seeds_identity_against_e3nn(e3nn_o3):
    torch, o3 = e3nn_o3
    r = np.random.default_rng(5).normal(size=(4, 3))
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    Y2 = o3.spherical_harmonics(2, torch.tensor(r), normalize=False, normalization="component").numpy()
    P2 = sph.cartesian_to_spherical_numeric(2)
    lhs = np.einsum("mk,nk->nm", P2, np.einsum("ni,nj->nij", r, r).reshape(4, 9))
    np.testing.assert_allclose(lhs, np.sqrt(2 / 15) * Y2, atol=1e-14)


@pytest.mark.parametrize("l1,l2,l3", [(9, 9, 9), (5, 4, 9), (10, 2, 11), (6, 6, 12), (12, 12, 12)])
def test_wigner_3j_above_8_matches_e3nn(e3nn_o3, l1, l2, l3):
    """cg is supported up to l = 12 (MAX_CONSTANT_L): the exact tables there are e3nn's too."""
    from compiler.ir.program import MAX_CONSTANT_L

    assert MAX_CONSTANT_L["cg"] == 12 >= max(l1, l2, l3)
    torch, o3 = e3nn_o3
    ref = o3.wigner_3j(l1, l2, l3, dtype=torch.float64).numpy()
    mine = sph.wigner_3j_numeric(l1, l2, l3)
    np.testing.assert_allclose(mine, ref, atol=1e-13, rtol=0)
