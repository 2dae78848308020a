"""Coupled enumeration: symmetric powers of spherical inputs (MACE's symmetric contraction) and mixed
Cartesian/spherical requests. Counts against character theory and independent values, the
homomorphism modulo p behind the rank step, and equivariance of the compiled bases."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import compiler
from compiler.tools.enumeration import (EnumerationError, InputSpec, Request, element_formula, enumerate_basis,
                                        enumerate_degrees)
from compiler.testing import assert_equivariant, random_input
from compiler.ir.types import TensorType as T
from conftest import ROOT


def request(inputs, out, group="O3"):
    return Request(tuple(InputSpec(n, T.parse(t), d) for n, t, d in inputs), T.parse(out), group)


# Symmetric powers with known decompositions (plethysm of SO(3), parity p^nu):
# S^2(V_l) = V_0 + V_2 + ... + V_2l; S^3(1) = 1 + 3; S^4(1) = 0 + 2 + 4; S^3(2) = 0 + 2 + 3 + 4 + 6;
# S^4(2) = V_0 + 2V_2 + 2V_4 + V_5 + V_6 + V_8 (dimension 70; one invariant: tr S^4 = (tr S^2)^2 / 2)
KNOWN = [
    *[("1o", 2, f"{L}e", n) for L, n in enumerate([1, 0, 1, 0])],
    ("1o", 2, "2o", 0),  # parity: (1o)^2 is even
    *[("3o", 2, f"{L}e", n) for L, n in enumerate([1, 0, 1, 0, 1, 0, 1, 0])],
    *[("1o", 3, f"{L}o", n) for L, n in enumerate([0, 1, 0, 1, 0])],
    ("1o", 3, "1e", 0),
    *[("1o", 4, f"{L}e", n) for L, n in enumerate([1, 0, 1, 0, 1, 0])],
    *[("2e", 3, f"{L}e", n) for L, n in enumerate([1, 0, 1, 1, 1, 0, 1, 0])],
    *[("2e", 4, f"{L}e", n) for L, n in enumerate([1, 0, 2, 0, 2, 1, 1, 0, 1, 0])],
    *[("2o", 3, f"{L}o", n) for L, n in enumerate([1, 0, 1, 1, 1, 0, 1])],
]


@pytest.mark.parametrize("x, nu, out, expected", KNOWN, ids=[f"S{n}({x})->{o}" for x, n, o, _ in KNOWN])
def test_symmetric_powers_known_decompositions(x, nu, out, expected):
    b = enumerate_basis(request([("x", x, nu)], out))
    assert b.expected == expected == b.dimension


@pytest.mark.parametrize("l, nu", [(l, nu) for l in range(5) for nu in range(2, 5) if l * nu <= 12])
def test_symmetric_power_dimensions_add_up(l, nu):
    """Σ_L dim Hom(S^ν(V_l), V_L)·(2L+1) = dim S^ν(V_l) = C(2l+ν, ν): every basis is found (its rank is
    checked against character theory inside) and the multiplicities fill the whole symmetric power."""
    total = 0
    for L in range(l * nu + 1):
        b = enumerate_basis(request([("x", f"{l}e", nu)], f"{L}e", "SO3"))
        assert b.dimension == b.expected
        total += b.dimension * (2 * L + 1)
    assert total == math.comb(2 * l + nu, nu)


@pytest.mark.parametrize("L", [0, 4, 8, 12])
def test_fourth_power_of_l4_count_only(L):
    """S^4(4e): the rank of the coupling paths (mod p) equals the character count (cg up to 12)."""
    b = enumerate_basis(request([("x", "4e", 4)], f"{L}e"))
    assert b.dimension == b.expected > 0


def test_several_inputs_with_degrees_and_total_degree():
    """MACE's A-features 0e + 1o + 2e as three inputs, correlation orders 1..3 (total degree)."""
    ins = [("a0", T.parse("0e"), (0, 1, 2, 3)), ("a1", T.parse("1o"), (0, 1, 2, 3)), ("a2", T.parse("2e"), (0, 1, 2, 3))]
    for out in ("0e", "1o", "2e"):
        found = enumerate_degrees(ins, T.parse(out), total=(1, 2, 3))
        assert found.dimension == found.expected > 0
        assert all(1 <= sum(e.degrees) <= 3 for e in found.elements)
    # 0e: a0, a0^2, a1·a1, a2·a2, a0^3, a0 a1·a1, a0 a2·a2, (a1 a1 -> 2)·a2, (a2 a2 -> 2)·a2
    assert enumerate_degrees(ins, T.parse("0e"), total=(1, 2, 3)).dimension == 9


def test_independence_mod_p_is_a_ring_homomorphism_of_the_constants():
    """The images of cg and P modulo the chosen prime satisfy their exact identities: P P^T = I and
    Σ_ab C[a,b,c] C[a,b,c'] = δ_cc' / (2 l3 + 1); a wrong root would break them."""
    from compiler.math.spherical import constant_mod_p, constant_primes, surd_prime

    primes = set()
    cases = [(1, 1, 2), (2, 2, 2), (2, 3, 4), (4, 4, 6), (3, 4, 5)]
    for c in cases:
        primes |= constant_primes("cg", c)
    for l in range(5):
        primes |= constant_primes("P", (l,))
    p = surd_prime(primes, 2**26)
    for l1, l2, l3 in cases:
        C = constant_mod_p("cg", (l1, l2, l3), p).reshape(-1, 2 * l3 + 1).astype(object)
        gram = (C.T.dot(C) * (2 * l3 + 1)) % p
        assert (gram == np.eye(2 * l3 + 1, dtype=int)).all()
    for l in range(5):
        P = constant_mod_p("P", (l,), p).reshape(2 * l + 1, -1).astype(object)
        assert ((P.dot(P.T)) % p == np.eye(2 * l + 1, dtype=int)).all()


MIXED = [
    ([("x", "1o", 1), ("X", "cart2", 1)], "1o", "O3", 3),  # x times each part of X
    ([("x", "1o", 1), ("v", "vec", 1)], "scalar", "O3", 1),
    ([("x", "1o", 1), ("v", "vec", 1)], "axial", "O3", 1),  # x × v
    ([("x", "1o", 1), ("v", "vec", 1)], "1e", "O3", 1),
    ([("x", "2e", 1)], "sym2t", "O3", 1),
    ([("x", "2e", 1)], "sym2", "O3", 1),
    ([("x", "2e", 1)], "cart2", "O3", 1),
    ([("x", "1o", 2)], "sym2", "O3", 2),  # |x|^2 delta, x x^T
    ([("x", "1o", 2)], "scalar", "O3", 1),
    ([("x", "1o", 1), ("y", "1o", 1)], "scalar", "O3", 1),
    ([("x", "0e", 1)], "scalar", "O3", 1),
    ([("x", "0o", 1)], "pscalar", "O3", 1),
    ([("X", "cart2", 1)], "2e", "O3", 1),
    ([("v", "vec", 2)], "2e", "O3", 1),
    ([("T", "cart(3)", 1)], "1o", "O3", 3),
    ([("x", "1o", 2), ("E", "sym2", 2)], "sym2", "O3", 11),  # the Cartesian table's (X: sym2^2, v: vec^2) -> sym2
    ([("x", "2e", 2), ("v", "vec", 1)], "cart(3)", "SO3", None),
]


@pytest.mark.parametrize("inputs, out, group, expected", MIXED,
                         ids=[f"{'+'.join(f'{n}:{t}^{d}' for n, t, d in i)}->{o}:{g}" for i, o, g, _ in MIXED])
def test_mixed_request_counts(inputs, out, group, expected):
    b = enumerate_basis(request(inputs, out, group))
    assert b.dimension == b.expected
    if expected is not None:
        assert b.expected == expected


def test_mixed_count_equals_the_cartesian_twin():
    """1o is vec (P(1) is the identity): swapping the types changes no count."""
    for ins, out in [([("x", "1o", 2), ("E", "sym2", 1)], "sym2"), ([("x", "1o", 1), ("X", "cart2", 2)], "vec")]:
        twin = [(n, "vec" if t == "1o" else t, d) for n, t, d in ins]
        assert enumerate_basis(request(ins, out)).dimension == enumerate_basis(request(twin, out)).dimension


def _stack(basis, args):
    """The basis elements evaluated by one compiled diagram (float64), shape (dimension, ...)."""
    r = basis.request
    sig = ", ".join(f"{i.name}: {i.type}" for i in r.inputs)
    outs = [f"B{k}" for k in range(basis.dimension)]
    n = r.output.n_geometric
    idx = ",".join("ijklmnpq"[:n])
    body = "\n".join(f"  {o}{f'[{idx}]' if idx else ''} = {element_formula(e)}" for o, e in zip(outs, basis.elements))
    src = f"group {r.group}\ndiagram f({sig}) -> ({', '.join(f'{o}: {r.output}' for o in outs)}) {{\n{body}\n}}\n"
    f = compiler.load_source(src).f
    values = f(*args) if basis.dimension > 1 else (f(*args),)
    return f, np.stack([np.asarray(v).reshape(len(args[0]), -1) for v in values])


def test_mixed_basis_spans_the_cartesian_basis():
    """(x: 1o, X: cart2) -> 1o and the Cartesian enumeration (v: vec, X: cart2) -> vec span the same
    3-dimensional space of functions (P(1) is the identity): equal ranks, and the union has rank 3."""
    rng = np.random.default_rng(4)
    args = [rng.normal(size=(20, 3)), rng.normal(size=(20, 3, 3))]
    _, mixed = _stack(enumerate_basis(request([("x", "1o", 1), ("X", "cart2", 1)], "1o")), args)
    _, cart = _stack(enumerate_basis(request([("x", "vec", 1), ("X", "cart2", 1)], "vec")), args)
    rank = np.linalg.matrix_rank
    assert rank(mixed.reshape(3, -1)) == rank(cart.reshape(3, -1)) == 3
    assert rank(np.concatenate([mixed, cart]).reshape(6, -1)) == 3


@pytest.mark.parametrize("inputs, out, group", [
    ([("x", "2e", 3)], "2e", "O3"),
    ([("x", "1o", 4)], "2e", "O3"),
    ([("x", "1o", 2), ("y", "2e", 1)], "1o", "SO3"),
    ([("x", "1o", 1), ("X", "cart2", 1)], "1o", "O3"),
    ([("x", "1o", 2)], "sym2", "O3"),
    ([("x", "1o", 2)], "scalar", "O3"),
])
def test_compiled_bases_are_equivariant_and_independent(inputs, out, group):
    basis = enumerate_basis(request(inputs, out, group))
    types = [t for _, t, _ in inputs]
    rng = np.random.default_rng(7)
    args = [random_input(t, rng, (30,)) for t in types]
    f, values = _stack(basis, args)
    assert_equivariant(f, types, [out] * basis.dimension, group)
    assert np.linalg.matrix_rank(values.reshape(basis.dimension, -1)) == basis.dimension


def test_basis_declaration_of_a_symmetric_power_compiles_to_a_stacked_function():
    m = compiler.load_source("basis b(x: 2e^<=3) -> y: 2e\n")
    x = random_input("2e", np.random.default_rng(1), (6,))
    found = enumerate_degrees([("x", T.parse("2e"), (0, 1, 2, 3))], T.parse("2e"))
    assert m.b(x).shape == (6, found.dimension, 5) and found.dimension == 3  # degrees 1, 2, 3: one each
    assert_equivariant(m.b, ["2e"], ["2e"], "O3")


def test_still_refused():
    with pytest.raises(EnumerationError, match="channel axis c that the output"):
        enumerate_basis(request([("x", "1o[c]", 2)], "0e"))
    with pytest.raises(EnumerationError, match="channel axis d is on no input of positive degree"):
        enumerate_basis(request([("x", "1o[c]", 2)], "0e[c,d]"))
    with pytest.raises(EnumerationError, match="graded"):
        enumerate_basis(request([("x", "1o", 1), ("X", "cart2(0e+1o+2e)", 1)], "1o"))


def run(*args):
    return subprocess.run([sys.executable, "-m", "compiler", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_symmetric_power(tmp_path):
    r = run("enumerate", "--in", "x=1o", "--out", "2e", "--degree", "x=2", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["dimension"] == data["expected"] == 1
    assert data["basis"][0]["formula"] == "x[j] x[k] cg(1,1,2)[j,k,i]"
    out = tmp_path / "b.diag"
    r = run("enumerate", "--in", "x=1o", "--in", "s=scalar", "--out", "Y=sym2", "--degree", "x=2", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert run("check", str(out)).returncode == 0


def test_readme_listing_is_what_the_cli_prints():
    readme = (ROOT / "README.md").read_text()
    r = run("enumerate", "--in", "x=2e", "--out", "Y=sym2", "--degree", "x<=2")
    assert r.returncode == 0, r.stderr
    assert "$ diagc enumerate --in x=2e --out Y=sym2 --degree 'x<=2'\n" + r.stdout in readme
    r = run("enumerate", "--in", "x=1o[c]", "--in", "v=vec", "--out", "Y=1o[c]", "--degree", "x=2")
    assert r.returncode == 0, r.stderr
    assert "$ diagc enumerate --in 'x=1o[c]' --in v=vec --out 'Y=1o[c]' --degree x=2\n" + r.stdout in readme


def test_a_basis_declaration_with_channels_skips_the_empty_constant_part():
    """x^0 into 1o is empty, so x: 1o[c]^<=3 -> 1o[c] is accepted (a constant along c would not be)."""
    m = compiler.load_source("group O3\nbasis bb(x: 1o[c]^<=3) -> y: 1o[c]\n", "bb_channels")
    x = np.random.default_rng(0).normal(size=(4, 5, 3))
    y = m.bb(x)
    assert y.shape == (4, 2, 5, 3)
    np.testing.assert_allclose(y[:, 0], x, atol=1e-12)  # the first element is x itself
    with pytest.raises(compiler.errors.DiagTypeError, match="channel axis c is on no input of positive degree"):
        compiler.load_source("group O3\nbasis bb(x: 1o[c]^<=2) -> y: 0e[c]\n", "bb_channels_refused")


def test_a_block_needing_cg_above_12_is_refused_with_its_name():
    # S^2(7e) ⊗ 2e -> 12e: paths through k1 = 10, 12 and 14; cg(7,7,14) is above the maximum 12
    with pytest.raises(EnumerationError, match=r"x ⊗ x ⊗ y with cg up to l = 12 span 2 of the 3 dimensions"):
        enumerate_basis(request([("x", "7e", 2), ("y", "2e", 1)], "12e"))


def test_too_many_coupling_paths_are_refused(monkeypatch):
    from compiler.tools.enumeration import coupling

    monkeypatch.setattr(coupling, "MAX_COUPLING_CANDIDATES", 10)
    with pytest.raises(EnumerationError, match="more than 10 coupling paths"):
        enumerate_basis(request([("x", "4e", 4)], "4e"))


def test_python_api_takes_type_text_and_total_degrees():
    found = compiler.enumerate_basis([("a0", "0e", range(4)), ("a1", "1o", range(4)), ("a2", "2e", range(4))], "1o",
                                     total=(1, 2, 3))
    assert found.dimension == found.expected == 8
    assert (found.elements[1].words, element_formula(found.elements[1])) == \
        ("(a1 ⊗ a2 -> 1)", "a1[j] a2[k] cg(1,2,1)[j,k,i]")
    assert compiler.enumerate_basis([("x", "1o", 2)], "2e").dimension == 1


@pytest.mark.parametrize("inputs, out, bare_inputs, bare_out", [
    ([("x", "1o[c]", (2,)), ("v", "vec", (1,))], "1o[c]", [("x", "1o", (2,)), ("v", "vec", (1,))], "1o"),
    ([("a", "0e[c]", (0, 1, 2)), ("b", "2e[c]", (1,))], "2e[c]",
     [("a", "0e", (0, 1, 2)), ("b", "2e", (1,))], "2e"),
    ([("a", "1o[d]", (1,)), ("b", "2e[c]", (1,))], "1o[c,d]", [("a", "1o", (1,)), ("b", "2e", (1,))], "1o"),
    ([("X", "sym2[c]", (2,))], "2e[c]", [("X", "sym2", (2,))], "2e"),
    ([("X", "cart2[c]", (1,)), ("v", "vec[c]", (1,))], "vec[c]", [("X", "cart2", (1,)), ("v", "vec", (1,))], "vec"),
])
def test_requests_with_channels_act_channel_by_channel(inputs, out, bare_inputs, bare_out):
    """Channel axes pass through: every element is the channel-free element applied channel by
    channel (an input without an axis broadcast along it); counts are the channel-free ones; the
    written .diag and its stacked basis compile, equal the channel-free basis per channel, and are
    equivariant."""
    from compiler.tools.enumeration import enumerate_degrees, to_diag

    ins = [(n, T.parse(t), d) for n, t, d in inputs]
    bare = [(n, T.parse(t), d) for n, t, d in bare_inputs]
    found = enumerate_degrees(ins, T.parse(out), "O3")
    plain = enumerate_degrees(bare, T.parse(bare_out), "O3")
    assert found.dimension == found.expected == plain.dimension > 0
    assert [e.words for e in found.elements] == [e.words for e in plain.elements]
    m = compiler.load_source(to_diag(found, ins, T.parse(out), "O3", name="chan"), "chan_mod")
    m0 = compiler.load_source(to_diag(plain, bare, T.parse(bare_out), "O3", name="chan"), "chan_bare")
    rng = np.random.default_rng(3)
    sizes = {"c": 4, "d": 2}
    args = [random_input(T.parse(t), rng, (5,), sizes) for _, t, _ in inputs]
    got = m.chan(*args)
    got = got if isinstance(got, tuple) else (got,)
    stacked = m.chan_stacked(*args)
    for k, g in enumerate(got):
        np.testing.assert_array_equal(stacked[:, k], g)
    for idx in np.ndindex(*[sizes[str(c)] for c in T.parse(out).channels]):
        per = []
        for (n, t, _), a in zip(inputs, args):
            chans = T.parse(t).channels
            sel = tuple(idx[T.parse(out).channels.index(c)] for c in chans)
            per.append(a[(slice(None),) + sel])
        want = m0.chan(*per)
        want = want if isinstance(want, tuple) else (want,)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g[(slice(None),) + idx], w, atol=1e-12)
    assert_equivariant(m.chan, [t for _, t, _ in inputs], [out] * found.dimension, "O3", channel_sizes=sizes)
