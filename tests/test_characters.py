"""Exact dimension counts from compiler.math.characters (expected values: SEEDS.md section 4)."""

import time
from math import comb

import pytest

from compiler.math.characters import Irrep, Rep, hom_dimension, invariant_dimension

GROUPS = ("SO3", "O3")

# named types of the language
SCALAR = Rep.parse("0e")
PSCALAR = Rep.parse("0o")
VEC = Rep.parse("1o")
AXIAL = Rep.parse("1e")
CART2 = Rep.cartesian2("")  # 0e+1e+2e
PCART2 = Rep.cartesian2("", (-1, -1, -1))  # 0o+1o+2o
SYM2 = Rep.cartesian2("sym")
SKEW2 = Rep.cartesian2("skew")
PSKEW2 = Rep.cartesian2("skew", (-1,))
SYM2T = Rep.cartesian2("sym_traceless")
TNET = Rep.cartesian2("", (1, -1, 1))  # TensorNet's graded feature 0e+1o+2e


def lin(*reps):
    """Each rep used once, linearly (distinct inputs)."""
    return [(r, 1) for r in reps]


def both(inputs, output, so3, o3):
    assert hom_dimension(inputs, output, "SO3") == so3
    assert hom_dimension(inputs, output, "O3") == o3


# ---------------------------------------------------------------- Irrep / Rep basics


def test_irrep_parse_str_roundtrip():
    assert Irrep.parse("1o") == Irrep(1, -1)
    assert Irrep.parse(" 12e ") == Irrep(12, 1)
    assert str(Irrep(1, -1)) == "1o"
    assert str(Irrep(0, 1)) == "0e"
    for t in ("0e", "0o", "1e", "1o", "2e", "7o"):
        assert str(Irrep.parse(t)) == t
    assert Irrep(3, 1).dim == 7


def test_rep_parse_str_roundtrip():
    r = Rep.parse("2x1o+0e")
    assert r.irreps == (Irrep(1, -1), Irrep(1, -1), Irrep(0, 1))
    assert str(r) == "2x1o+0e"
    assert r.dim == 7
    assert Rep.parse("1x0e") == Rep.parse("0e")
    assert str(Rep.parse("1x0e")) == "0e"
    for t in ("0e", "2x1o+0e", "0e+1o+2e", "3x2e+1o+1o+0o", "0o+3x1o+2x2o+3o", ""):
        r = Rep.parse(t)
        assert Rep.parse(str(r)) == r
    assert str(Rep.parse("1o+1o")) == "2x1o"
    assert Rep.parse("").dim == 0
    assert hash(Rep.parse("2x1o")) == hash(Rep.parse("1o+1o"))


def test_cartesian2_parts():
    assert str(CART2) == "0e+1e+2e"
    assert str(SYM2) == "0e+2e"
    assert str(SKEW2) == "1e"
    assert str(SYM2T) == "2e"
    assert str(TNET) == "0e+1o+2e"
    assert (CART2.dim, SYM2.dim, SKEW2.dim, SYM2T.dim) == (9, 6, 3, 5)


def test_cartesian_decomposition():
    assert Rep.cartesian(0) == SCALAR
    assert Rep.cartesian(0, pseudo=True) == PSCALAR
    assert Rep.cartesian(1) == VEC
    assert Rep.cartesian(1, pseudo=True) == AXIAL
    assert Rep.cartesian(2) == CART2
    assert Rep.cartesian(2, pseudo=True) == PCART2
    assert Rep.cartesian(3).multiplicities() == Rep.parse("0o+3x1o+2x2o+3o").multiplicities()
    for r in range(9):
        assert Rep.cartesian(r).dim == 3**r
        assert Rep.cartesian(r, pseudo=True).dim == 3**r


def test_power_decompositions():
    assert VEC.symmetric_power(2).multiplicities() == SYM2.multiplicities()
    assert VEC.exterior_power(2) == AXIAL
    assert VEC.exterior_power(3) == PSCALAR
    assert CART2.exterior_power(9) == SCALAR  # det(R ⊗ R) = 1
    assert VEC.tensor(VEC).multiplicities() == CART2.multiplicities()
    for d in range(6):
        assert VEC.symmetric_power(d).dim == comb(d + 2, 2)
        assert CART2.symmetric_power(d).dim == comb(9 + d - 1, d)
        assert CART2.exterior_power(d).dim == comb(9, d)
    # V ⊗ V = S^2 V ⊕ Λ^2 V
    for v in (VEC, CART2, TNET, Rep.parse("2x1o+3e")):
        s, e = v.symmetric_power(2), v.exterior_power(2)
        assert (s + e).multiplicities() == v.tensor(v).multiplicities()


# ---------------------------------------------------------------- SEEDS.md section 4


def test_T1_linear_cart2_to_cart2():
    both(lin(CART2), CART2, 3, 3)


def test_T3_vec_to_skew2():
    assert hom_dimension(lin(VEC), SKEW2, "SO3") == 1
    assert hom_dimension(lin(VEC), SKEW2, "O3") == 0
    assert hom_dimension(lin(VEC), PSKEW2, "O3") == 1
    assert hom_dimension(lin(AXIAL), SKEW2, "O3") == 1


def test_T4_cart2_to_vec():
    both(lin(CART2), VEC, 1, 0)
    both(lin(CART2), AXIAL, 1, 1)


def test_T5_vec_degree_d_to_cart2():
    assert [hom_dimension([(VEC, d)], CART2, "SO3") for d in range(4)] == [1, 1, 2, 1]
    assert [hom_dimension([(VEC, d)], CART2, "O3") for d in range(4)] == [1, 0, 2, 0]


def test_T6_vec_degree2_to_sym2t():
    both([(VEC, 2)], SYM2T, 1, 1)


def test_T7_bilinear_cart2():
    both(lin(CART2, CART2), CART2, 15, 15)


def test_T8_tensornet_graded_bilinear():
    both(lin(TNET, TNET), TNET, 15, 11)


def test_T10_cart2_cart2_to_scalar():
    both(lin(CART2, CART2), SCALAR, 3, 3)


def test_T11_cart2_vec():
    both(lin(CART2, VEC), VEC, 3, 3)
    both(lin(CART2, VEC), CART2, 6, 0)
    assert hom_dimension(lin(CART2, VEC), PCART2, "O3") == 6


def test_T12_invariants_of_k_legs():
    riordan = [1, 0, 1, 1, 3, 6, 15, 36, 91]
    for k, expect in enumerate(riordan):
        assert invariant_dimension([(Rep.cartesian(k), 1)], "SO3") == expect
        assert invariant_dimension([(Rep.cartesian(k), 1)], "O3") == (expect if k % 2 == 0 else 0)
        # k separate vectors, each linear: same count
        assert invariant_dimension(lin(*[VEC] * k), "SO3") == expect
        assert invariant_dimension(lin(*[VEC] * k), "O3") == (expect if k % 2 == 0 else 0)


def test_T14_vector_generators():
    both(lin(VEC, VEC), SCALAR, 1, 1)  # dot
    both(lin(VEC, VEC), VEC, 1, 0)  # cross is axial
    both(lin(VEC, VEC), AXIAL, 1, 1)
    both(lin(VEC, VEC, VEC), SCALAR, 1, 0)  # triple product is a pseudoscalar
    both(lin(VEC, VEC, VEC), PSCALAR, 1, 1)


def test_T15_two_vectors_bidegree_2_1():
    both([(VEC, 2), (VEC, 1)], CART2, 3, 0)
    assert hom_dimension([(VEC, 2), (VEC, 1)], PCART2, "O3") == 3


def test_T16_two_vectors_bidegree_1_1():
    both(lin(VEC, VEC), CART2, 3, 3)
    both(lin(VEC, VEC), VEC, 1, 0)
    both(lin(VEC, VEC), AXIAL, 1, 1)
    both(lin(VEC, VEC), SCALAR, 1, 1)


def test_T17_isotropic_elasticity():
    for g in GROUPS:
        assert hom_dimension(lin(SYM2), SYM2, g) == 2
        assert hom_dimension(lin(SYM2, SYM2), SYM2, g) == 5
        assert invariant_dimension(lin(SYM2, SYM2), g) == 2


def test_T18_polynomial_sym2():
    for g in GROUPS:
        assert [hom_dimension([(SYM2, d)], SYM2, g) for d in range(5)] == [1, 2, 4, 6, 9]
        assert [invariant_dimension([(SYM2, d)], g) for d in range(5)] == [1, 1, 2, 3, 4]


def test_T18_generating_function_further():
    # (1+t+t²)/((1-t)(1-t²)(1-t³)) and 1/((1-t)(1-t²)(1-t³)), checked to degree 10
    def series(num, n):
        c = [0] * (n + 1)
        for i, a in enumerate(num):
            if i <= n:
                c[i] = a
        for k in (1, 2, 3):
            for i in range(k, n + 1):
                c[i] += c[i - k]
        return c

    assert [hom_dimension([(SYM2, d)], SYM2) for d in range(11)] == series([1, 1, 1], 10)
    assert [invariant_dimension([(SYM2, d)]) for d in range(11)] == series([1], 10)


def test_T19_spherical():
    for out in ("0e", "1e", "2e"):
        both(lin(VEC, VEC), Rep.parse(out), 1, 1)
    e2 = Rep.parse("2e")
    both(lin(e2, e2), e2, 1, 1)
    both(lin(e2, e2), Rep.parse("1e"), 1, 1)
    both(lin(VEC, e2), VEC, 1, 1)
    both(lin(CART2), e2, 1, 1)
    both(lin(CART2), Rep.parse("1o"), 1, 0)
    both(lin(CART2), Rep.parse("1e"), 1, 1)


# ---------------------------------------------------------------- cross-checks


def test_degree_one_and_zero():
    reps = [VEC, CART2, TNET, SYM2, Rep.parse("2x1o+3e+0o")]
    for v in reps:
        for w in reps:
            for g in GROUPS:
                # S^1 V = V: Hom(V, W) is Σ over irreps of the product of multiplicities (SO3: by l)
                if g == "O3":
                    mv, mw = v.multiplicities(), w.multiplicities()
                    direct = sum(m * mw.get(ir, 0) for ir, m in mv.items())
                else:
                    lv, lw = {}, {}
                    for ir in v.irreps:
                        lv[ir.l] = lv.get(ir.l, 0) + 1
                    for ir in w.irreps:
                        lw[ir.l] = lw.get(ir.l, 0) + 1
                    direct = sum(m * lw.get(l, 0) for l, m in lv.items())
                assert hom_dimension([(v, 1)], w, g) == direct
                assert hom_dimension([(v, 1)], w, g) == hom_dimension([(w, 1)], v, g)
                # degree-0 inputs contribute the trivial rep
                assert hom_dimension([(v, 0), (w, 1)], SCALAR, g) == hom_dimension([(w, 1)], SCALAR, g)
    assert invariant_dimension([]) == 1
    assert hom_dimension([], CART2) == 1
    assert hom_dimension([], Rep.parse("")) == 0


def test_so3_splits_into_two_o3_parities():
    # dim_SO3(W) = dim_O3(W) + dim_O3(W ⊗ 0o)
    cases = [
        (lin(TNET, TNET), TNET),
        ([(VEC, 3), (CART2, 2)], CART2),
        ([(SYM2, 3), (VEC, 1)], Rep.parse("0e+1o+2e+3o")),
    ]
    for inputs, out in cases:
        flipped = Rep(tuple(Irrep(ir.l, -ir.p) for ir in out.irreps))
        assert hom_dimension(inputs, out, "SO3") == hom_dimension(inputs, out, "O3") + hom_dimension(
            inputs, flipped, "O3"
        )


def test_bilinear_same_rep_is_square_of_linear_space():
    # V × V (distinct inputs) = S^2 V ⊕ Λ^2 V, i.e. degree-2 count + exterior count
    for v in (CART2, TNET, SYM2):
        for g in GROUPS:
            sym = hom_dimension([(v, 2)], v, g)
            ext = hom_dimension([(v.exterior_power(2), 1)], v, g)
            assert hom_dimension(lin(v, v), v, g) == sym + ext


def test_fast_rank14():
    t = time.perf_counter()
    assert hom_dimension(lin(*[CART2] * 5), CART2, "SO3") == 4213  # Riordan(12)
    assert invariant_dimension([(Rep.cartesian(12), 1)], "SO3") == 4213
    assert hom_dimension(lin(*[CART2] * 5), CART2, "O3") == 4213
    assert hom_dimension([(SYM2, 6), (VEC, 4)], SYM2, "O3") > 0
    assert time.perf_counter() - t < 0.5


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("text", ["1x", "o", "1", "-1o", "1f", "", "1 o e", None, 3])
def test_bad_irrep(text):
    with pytest.raises(ValueError):
        Irrep.parse(text)


@pytest.mark.parametrize("text", ["2x", "x1o", "1o+", "1o++0e", "2y1o", "1o 0e", None])
def test_bad_rep(text):
    with pytest.raises(ValueError):
        Rep.parse(text)


def test_bad_constructor_arguments():
    for l, p in ((-1, 1), (1, 0), (1, 2), (1.0, 1), (True, 1), (1, "e")):
        with pytest.raises(ValueError):
            Irrep(l, p)
    with pytest.raises(ValueError):
        Rep(("1o",))
    with pytest.raises(ValueError):
        Rep("1o")
    for bad in (-1, 1.5, True, 10**6):
        with pytest.raises(ValueError):
            Rep.cartesian(bad)
    with pytest.raises(ValueError):
        Rep.cartesian(2, pseudo="yes")
    with pytest.raises(ValueError):
        Rep.cartesian2("symmetric")
    with pytest.raises(ValueError):
        Rep.cartesian2("sym", (1, 1, 1))
    with pytest.raises(ValueError):
        Rep.cartesian2("skew", (0,))
    with pytest.raises(ValueError):
        VEC.symmetric_power(-1)


def test_bad_hom_arguments():
    with pytest.raises(ValueError):
        hom_dimension(lin(VEC), VEC, "SU2")
    with pytest.raises(ValueError):
        invariant_dimension(lin(VEC), group="o3")
    with pytest.raises(ValueError):
        hom_dimension([(VEC, -1)], VEC)
    with pytest.raises(ValueError):
        hom_dimension([(VEC, 1.0)], VEC)
    with pytest.raises(ValueError):
        hom_dimension([(VEC,)], VEC)
    with pytest.raises(ValueError):
        hom_dimension([("1o", 1)], VEC)
    with pytest.raises(ValueError):
        hom_dimension(VEC, VEC)
    with pytest.raises(ValueError):
        hom_dimension(lin(VEC), "1o")
