"""The enumerator: counts equal character theory, classical results, equivariance and independence
of every basis element, and the emitted .diag round-trips through the checker."""

import json
import subprocess
import sys

import numpy as np
import pytest

import compiler
from compiler.tools.enumeration import (MAX_LEGS, EnumerationError, InputSpec, Request, enumerate_basis,
                                        enumerate_degrees, to_diag)
from compiler.testing import assert_equivariant, random_input
from compiler.ir.types import TensorType as T
from conftest import ROOT


def request(inputs, out, group="O3"):
    return Request(tuple(InputSpec(n, T.parse(t), d) for n, t, d in inputs), T.parse(out), group)


# (inputs as (name, type, degree), output, group, expected dimension) -- expected values from
# /work/shared/SEEDS.md section 4 (computed there independently) and classical invariant theory
TABLE = [
    ([("X", "cart2", 1)], "cart2", "O3", 3),  # T1: id, transpose, tr delta
    ([("X", "cart2", 1)], "cart2", "SO3", 3),
    ([("v", "vec", 1)], "skew2", "SO3", 1),  # T3
    ([("v", "vec", 1)], "skew2", "O3", 0),
    ([("v", "vec", 1)], "skew2(1o)", "O3", 1),
    ([("w", "axial", 1)], "skew2", "O3", 1),
    ([("X", "cart2", 1)], "vec", "SO3", 1),  # T4
    ([("X", "cart2", 1)], "vec", "O3", 0),
    ([("X", "cart2", 1)], "axial", "O3", 1),
    *[([("r", "vec", d)], "cart2", "SO3", n) for d, n in enumerate([1, 1, 2, 1])],  # T5
    *[([("r", "vec", d)], "cart2", "O3", n) for d, n in enumerate([1, 0, 2, 0])],
    ([("r", "vec", 2)], "sym2t", "O3", 1),  # T6
    ([("r", "vec", 2)], "sym2t", "SO3", 1),
    ([("X", "cart2", 1), ("Y", "cart2", 1)], "cart2", "O3", 15),  # T7
    ([("X", "cart2", 1), ("Y", "cart2", 1)], "cart2", "SO3", 15),
    ([("X", "cart2", 1), ("Y", "cart2", 1)], "scalar", "O3", 3),  # T10
    ([("X", "cart2", 1), ("v", "vec", 1)], "vec", "O3", 3),  # T11
    ([("X", "cart2", 1), ("v", "vec", 1)], "vec", "SO3", 3),
    ([("X", "cart2", 1), ("v", "vec", 1)], "cart2", "SO3", 6),
    ([("X", "cart2", 1), ("v", "vec", 1)], "cart2", "O3", 0),
    ([("X", "cart2", 1), ("v", "vec", 1)], "pcart(2)", "O3", 6),
    *[([("T", f"cart({k})", 1)], "scalar", "SO3", n)  # T12: Riordan numbers
      for k, n in enumerate([1, 0, 1, 1, 3, 6, 15, 36, 91])],
    *[([("T", f"cart({k})", 1)], "scalar", "O3", n if k % 2 == 0 else 0)
      for k, n in enumerate([1, 0, 1, 1, 3, 6, 15, 36, 91])],
    ([("a", "vec", 1), ("b", "vec", 1)], "scalar", "O3", 1),  # T14
    ([("a", "vec", 1), ("b", "vec", 1)], "vec", "SO3", 1),
    ([("a", "vec", 1), ("b", "vec", 1)], "vec", "O3", 0),
    ([("a", "vec", 1), ("b", "vec", 1)], "axial", "O3", 1),
    ([("a", "vec", 1), ("b", "vec", 1), ("c", "vec", 1)], "pscalar", "O3", 1),
    ([("a", "vec", 1), ("b", "vec", 1), ("c", "vec", 1)], "scalar", "SO3", 1),
    ([("a", "vec", 1), ("b", "vec", 1), ("c", "vec", 1)], "scalar", "O3", 0),
    ([("a", "vec", 2), ("b", "vec", 1)], "cart2", "SO3", 3),  # T15
    ([("a", "vec", 2), ("b", "vec", 1)], "cart2", "O3", 0),
    ([("a", "vec", 2), ("b", "vec", 1)], "pcart(2)", "O3", 3),
    ([("a", "vec", 1), ("b", "vec", 1)], "cart2", "O3", 3),  # T16
    ([("E", "sym2", 1)], "sym2", "O3", 2),  # T17: isotropic elasticity
    ([("E", "sym2", 1), ("F", "sym2", 1)], "sym2", "O3", 5),
    ([("E", "sym2", 1), ("F", "sym2", 1)], "scalar", "O3", 2),
    *[([("E", "sym2", d)], "sym2", "O3", n) for d, n in enumerate([1, 2, 4, 6, 9])],  # T18
    *[([("E", "sym2", d)], "scalar", "O3", n) for d, n in enumerate([1, 1, 2, 3, 4])],
    ([("X", "cart2", 1)], "sym2t", "O3", 1),  # T19 (cart2 -> 2e)
    ([("X", "skew2", 1), ("Y", "skew2", 1)], "skew2", "SO3", 1),
    ([("X", "sym2t", 3)], "sym2t", "O3", 1),
    ([("X", "sym2", 2), ("v", "vec", 2)], "sym2", "O3", 11),
    ([("X", "cart2", 2), ("v", "vec", 1)], "vec", "SO3", 9),
    ([("a", "vec", 1), ("w", "axial", 1), ("X", "skew2", 1)], "pcart(2)", "O3", 6),
    ([("T", "cart(3)", 1)], "vec", "O3", 3),
    # four vector legs -> 0e+2e: multiplicities of l=0 (3) and l=2 (6) in 1o^{⊗4}
    ([("T", "cart(3)", 1), ("v", "vec", 1)], "sym2", "SO3", 9),
]


@pytest.mark.parametrize("inputs, out, group, expected", TABLE,
                         ids=[f"{'+'.join(f'{n}:{t}^{d}' for n, t, d in i)}->{o}:{g}" for i, o, g, _ in TABLE])
def test_dimension_equals_character_count_and_known_value(inputs, out, group, expected):
    b = enumerate_basis(request(inputs, out, group))
    assert b.expected == expected
    assert b.dimension == expected


def _evaluate(basis, args):
    """Stack the basis elements at numeric points via a compiled module."""
    from compiler.tools.enumeration import element_formula

    r = basis.request
    sig = ", ".join(f"{i.name}: {i.type}" for i in r.inputs)
    outs = [f"B{k}" for k in range(basis.dimension)]
    idx = ",".join("ijklmnpq"[: r.output.rank])
    body = "\n".join(f"  {o}{f'[{idx}]' if idx else ''} = {element_formula(e)}" for o, e in zip(outs, basis.elements))
    src = f"group {r.group}\ndiagram f({sig}) -> ({', '.join(f'{o}: {r.output}' for o in outs)}) {{\n{body}\n}}\n"
    return compiler.load_source(src).f


@pytest.mark.parametrize("inputs, out, group", [
    ([("X", "cart2", 1), ("v", "vec", 1)], "cart2", "SO3"),
    ([("E", "sym2", 3)], "sym2", "O3"),
    ([("a", "vec", 2), ("b", "vec", 1)], "pcart(2)", "O3"),
    ([("X", "sym2", 2), ("v", "vec", 2)], "sym2t", "O3"),
    ([("T", "cart(3)", 1), ("v", "vec", 1)], "sym2", "SO3"),
])
def test_every_element_is_equivariant_and_the_basis_is_independent(inputs, out, group):
    basis = enumerate_basis(request(inputs, out, group))
    f = _evaluate(basis, None)
    types = [t for _, t, _ in inputs]
    assert_equivariant(lambda *a: f(*a), types, [out] * basis.dimension, group)
    # independence: the elements evaluated at random points have full rank (float64, well conditioned)
    rng = np.random.default_rng(5)
    args = [random_input(t, rng, batch=(40,)) for t in types]
    values = np.stack([np.broadcast_to(np.asarray(v), (40,) + (3,) * T.parse(out).rank).reshape(-1)
                       for v in (f(*args) if basis.dimension > 1 else (f(*args),))])
    assert np.linalg.matrix_rank(values) == basis.dimension


def test_rivlin_ericksen_form():
    """Polynomial sym2 -> sym2: invariant coefficients times delta, E, E·E (no E^3: Cayley-Hamilton)."""
    for d in range(1, 5):
        words = [e.words for e in enumerate_basis(request([("E", "sym2", d)], "sym2")).elements]
        generators = {w.split()[-1] for w in words}
        assert generators <= {"delta", "E", "E·E"}
    words = [e.words for e in enumerate_basis(request([("E", "sym2", 3)], "sym2")).elements]
    assert words == ["tr(E·E·E) delta", "tr(E) tr(E·E) delta", "tr(E)^3 delta", "tr(E·E) E",
                     "tr(E)^2 E", "tr(E) E·E"]


def test_invariants_of_one_symmetric_tensor():
    words = {d: [e.words for e in enumerate_basis(request([("A", "sym2", d)], "scalar")).elements]
             for d in (1, 2, 3)}
    assert words == {1: ["tr(A)"], 2: ["tr(A·A)", "tr(A)^2"], 3: ["tr(A·A·A)", "tr(A) tr(A·A)", "tr(A)^3"]}


def test_dot_and_cross_are_the_single_generators():
    (dot,) = enumerate_basis(request([("a", "vec", 1), ("b", "vec", 1)], "scalar")).elements
    assert dot.words == "(a·b)"
    (cross,) = enumerate_basis(request([("a", "vec", 1), ("b", "vec", 1)], "vec", "SO3")).elements
    assert cross.formula == "eps[i,j,k] a[j] b[k]"


def test_union_over_degrees_is_the_direct_sum():
    found = enumerate_degrees([("E", T.parse("sym2"), (0, 1, 2, 3))], T.parse("sym2"))
    assert found.dimension == found.expected == 1 + 2 + 4 + 6


def test_symmetry_reduces_candidates_before_the_rank_step():
    b = enumerate_basis(request([("E", "sym2", 5)], "sym2"))  # 12 legs
    assert b.candidates == 10395 and b.unique < 30 and b.dimension == 12


def test_emitted_diag_round_trips_through_check(tmp_path):
    inputs = [("X", T.parse("sym2"), (0, 1, 2)), ("v", T.parse("vec"), (1,))]
    found = enumerate_degrees(inputs, T.parse("vec"), "O3")
    text = to_diag(found, inputs, T.parse("vec"), "O3", "Y", "maps")
    verdicts = compiler.check_source(text, "basis.diag")
    assert [v.diagram for v in verdicts] == ["maps", "maps_stacked"] and all(v.ok for v in verdicts)
    m = compiler.load_source(text)
    rng = np.random.default_rng(0)
    X, v = random_input("sym2", rng, (6,)), random_input("vec", rng, (6,))
    stacked = m.maps_stacked(X, v)
    assert stacked.shape == (6, found.dimension, 3)
    np.testing.assert_allclose(stacked, np.stack(m.maps(X, v), axis=-2), atol=1e-12)


def test_empty_space_is_a_plain_answer():
    b = enumerate_basis(request([("a", "vec", 1), ("b", "vec", 1)], "vec", "O3"))
    assert b.dimension == b.expected == 0


def test_refuses_absurd_sizes_and_unsupported_types():
    with pytest.raises(EnumerationError, match="limit"):
        enumerate_basis(request([("X", "cart2", 9)], "scalar"))
    assert MAX_LEGS == 16
    with pytest.raises(EnumerationError, match="dimension 30,537"):  # six distinct cart2 -> cart2: 14 legs
        enumerate_basis(request([(n, "cart2", 1) for n in "ABCDEF"], "cart2"))
    with pytest.raises(EnumerationError, match="graded"):
        enumerate_basis(request([("X", "cart2(0e+1o+2e)", 1)], "scalar"))
    with pytest.raises(EnumerationError, match="channel axis c that the output"):
        enumerate_basis(request([("X", "cart2[c]", 1)], "scalar"))


def test_basis_declaration_compiles_to_a_stacked_function():
    m = compiler.load_source("basis stress(E: sym2^<=2) -> S: sym2\n")
    E = random_input("sym2", np.random.default_rng(1), (5,))
    assert m.stress(E).shape == (5, 7, 3, 3)
    assert_equivariant(m.stress, ["sym2"], ["sym2"], "O3")
    with pytest.raises(compiler.DiagError, match="empty"):
        compiler.compile_source("basis f(a: vec, b: vec) -> c: vec\n")


def run(*args):
    return subprocess.run([sys.executable, "-m", "compiler", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_json_and_files(tmp_path):
    r = run("enumerate", "--in", "X=sym2", "--in", "v=vec", "--out", "sym2", "--degree", "X=1",
            "--degree", "v=2", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["dimension"] == data["expected"] == len(data["basis"]) == 5
    out = tmp_path / "b.diag"
    r = run("enumerate", "--in", "E=sym2", "--out", "S=sym2", "--degree", "E<=2", "-o", str(out),
            "--module", str(tmp_path / "b.py"))
    assert r.returncode == 0, r.stderr
    assert "dimension 7 (character theory: 7)" in r.stdout
    assert run("check", str(out)).returncode == 0
    assert (tmp_path / "b.py").is_file()


@pytest.mark.parametrize("args, message", [
    (["--in", "X=vector", "--out", "sym2"], "unknown type 'vector'"),
    (["--in", "X=sym2", "--out", "sym2", "--degree", "Y=2"], "no input named 'Y'"),
    (["--in", "X", "--out", "sym2"], "write NAME=TYPE"),
    (["--in", "X=cart2", "--out", "sym2", "--degree", "X=9"], "the limit is 16"),
    (["--in", "X=sph(1o)[c]", "--out", "vec"], "has the channel axis c that the output (vec) lacks"),
    (["--in", "class=vec", "--out", "vec"], "not a usable name"),
])
def test_cli_bad_requests(args, message):
    r = run("enumerate", *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_cli_empty_space(tmp_path):
    r = run("enumerate", "--in", "a=vec", "--in", "b=vec", "--out", "vec", "-o", str(tmp_path / "e.diag"))
    assert r.returncode == 0 and "dimension 0" in r.stdout and "The space is empty" in r.stdout


SPHERICAL = [
    ([("x", "1o"), ("y", "2e")], "1o", "O3", 1),
    ([("x", "1o"), ("y", "1o")], "1e", "O3", 1),
    ([("x", "1o"), ("y", "1o")], "1o", "O3", 0),
    ([("x", "1o"), ("y", "1o")], "1o", "SO3", 1),
    ([("x", "2e"), ("y", "2e")], "2e", "O3", 1),
    ([("x", "1o"), ("y", "1o"), ("z", "2e")], "1e", "SO3", 2),
    ([("x", "2e"), ("y", "2e"), ("z", "2e")], "2e", "O3", 5),
    ([("x", "1o"), ("y", "2e"), ("z", "3o"), ("w", "1o")], "2e", "O3", 0),  # parity -1 vs +1
    ([("x", "1o"), ("y", "2e"), ("z", "3o"), ("w", "1o")], "2o", "O3", 8),  # k1 in 1..3: 2 + 3 + 3 paths
    ([("x", "3o")], "3o", "O3", 1),
    ([], "0e", "O3", 1),
]


@pytest.mark.parametrize("inputs, out, group, expected", SPHERICAL,
                         ids=[f"{'x'.join(t for _, t in i) or '1'}->{o}:{g}" for i, o, g, _ in SPHERICAL])
def test_spherical_coupling_paths_match_character_theory(inputs, out, group, expected):
    b = enumerate_basis(request([(n, t, 1) for n, t in inputs], out, group))
    assert b.expected == expected == b.dimension


def test_spherical_basis_is_equivariant_and_independent():
    m = compiler.load_source("basis paths(x: 1o, y: 2e, z: 2e) -> w: 1o\n")
    assert_equivariant(m.paths, ["1o", "2e", "2e"], ["1o"], "O3")
    rng = np.random.default_rng(2)
    args = [random_input(t, rng, (30,)) for t in ("1o", "2e", "2e")]
    values = m.paths(*args)  # (30, k, 3)
    k = values.shape[1]
    assert k == 3 and np.linalg.matrix_rank(np.moveaxis(values, 1, 0).reshape(k, -1)) == k


def test_spherical_cli_listing():
    r = run("enumerate", "--in", "x=1o", "--in", "y=2e", "--out", "1o", "--json")
    data = json.loads(r.stdout)
    assert r.returncode == 0 and data["dimension"] == data["expected"] == 1
    assert data["basis"][0]["formula"] == "cg(1,2,1)[j,k,i] x[j] y[k]"
    r = run("enumerate", "--in", "x=1o", "--in", "X=cart2", "--out", "1o")  # mixed: x times each part of X
    assert r.returncode == 0 and "dimension 3 (character theory: 3)" in r.stdout and "(x ⊗ X(2e) -> 1)" in r.stdout


def test_spherical_request_over_the_dimension_limit_fails_before_any_work(monkeypatch, capsys):
    """Eight 4e inputs to 4e: 151,936 coupling paths (93 s and 1.5 GB before the guard covered spherical
    requests). Character theory sizes the space first; no coupling path is ever built."""
    from compiler import cli
    from compiler.tools.enumeration import coupling

    def no_work(*args, **kwargs):
        raise AssertionError("enumeration started for a request over the limit")

    monkeypatch.setattr(coupling, "enumerate_spherical", no_work)
    monkeypatch.setattr(coupling, "coupling_network", no_work)
    args = ["enumerate", *[a for k in range(8) for a in ("--in", f"x{k}=sph(4e)")], "--out", "sph(4e)"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "dimension 151,936 (character theory)" in err and "more than 5,000 elements is refused" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    with pytest.raises(EnumerationError, match="dimension 151,936"):
        enumerate_basis(request([(f"x{k}", "4e", 1) for k in range(8)], "4e"))


def test_the_limit_covers_the_sum_over_degrees_before_any_work(monkeypatch):
    from compiler.tools.enumeration import request as limits, search

    monkeypatch.setattr(limits, "MAX_DIMENSION", 5)  # E<=2 -> sym2: 1 + 2 + 4 = 7, each part at most 4
    monkeypatch.setattr(search, "enumerate_basis", lambda *a, **k: pytest.fail("enumeration started"))
    with pytest.raises(EnumerationError, match=r"the 3 spaces \(one per degree\) have dimension 7"):
        enumerate_degrees([("E", T.parse("sym2"), (0, 1, 2))], T.parse("sym2"))


def test_enumerate_help_states_the_limits():
    r = run("enumerate", "--help")
    text = " ".join(r.stdout.split())
    assert r.returncode == 0
    assert "more than 5,000 dimensions" in text and "more than 16 legs" in text and "l above 12" in text


def test_spherical_bases_with_cg_above_8_compile_and_are_equivariant(tmp_path, capsys):
    """cg up to l = 12 compiles (exact 3j symbols): what enumerate writes compiles, and is equivariant."""
    from compiler import cli

    out, mod = tmp_path / "b.diag", tmp_path / "b.py"
    assert cli.main(["enumerate", "--in", "a=sph(5e)", "--in", "b=sph(4e)", "--in", "c=sph(0e)", "--out", "sph(9e)",
                     "-o", str(out), "--module", str(mod)]) == 0
    assert "cg(5,4,9)[j,k,l] cg(9,0,9)[l,m,i]" in out.read_text()  # a chain through k = 9
    assert cli.main(["check", str(out)]) == 0
    ns = {}
    exec(mod.read_text(), ns)
    assert_equivariant(ns["maps"], ["5e", "4e", "0e"], ["9e"], "O3")
    rng = np.random.default_rng(3)
    values = ns["maps_stacked"](*[random_input(t, rng, (20,)) for t in ("5e", "4e", "0e")])
    assert values.shape == (20, 1, 19) and np.abs(values).max() > 0
    assert cli.main(["enumerate", "--in", "a=sph(6e)", "--in", "b=sph(6e)", "--out", "sph(12e)", "-o", str(out)]) == 0
    assert "cg(6,6,12)" in out.read_text()
    assert cli.main(["compile", str(out), "-o", str(mod)]) == 0
    capsys.readouterr()


def test_spherical_paths_above_the_cg_limit_are_refused_with_the_compilers_message(tmp_path, capsys):
    from compiler import cli

    # (a ⊗ b -> k1) ⊗ c -> 12 needs k1 in 10..14: cg(7,7,13) and cg(7,7,14) are above the maximum 12
    assert cli.main(["enumerate", "--in", "a=sph(7e)", "--in", "b=sph(7e)", "--in", "c=sph(2e)", "--out",
                     "sph(12e)", "-o", str(tmp_path / "b.diag")]) == 2
    refused = capsys.readouterr().err
    assert not (tmp_path / "b.diag").exists()
    src = tmp_path / "x.diag"
    src.write_text("diagram f(a: sph(7e), b: sph(7e), c: sph(2e)) -> t: sph(12e) {\n"
                   "    t[m] = cg(7,7,13)[i,j,k] cg(13,2,12)[k,n,m] a[i] b[j] c[n]\n}\n")  # as enumerate would write
    assert cli.main(["compile", str(src)]) == 2
    compiled = capsys.readouterr().err
    message = "l = 13 is above the supported maximum 12 for cg"
    assert message in compiled and message in refused and "((a ⊗ b -> 13) ⊗ c -> 12)" in refused


# ------------------------------------------------------------------------------------------------
# the rank profile and the multilinear (distinct inputs) path
# ------------------------------------------------------------------------------------------------

def _flint_profile(matrix, p):
    """Independent reference: the pivot columns of the rref of the transpose (python-flint)."""
    import flint

    n, m = matrix.shape
    r, rank = flint.nmod_mat(m, n, [int(v) for v in matrix.T.reshape(-1)], p).rref()
    pivots, col = [], 0
    for row in range(rank):
        while int(r[row, col]) == 0:
            col += 1
        pivots.append(col)
        col += 1
    return pivots


@pytest.mark.parametrize("rows, width, rank, block", [(60, 40, 25, 7), (300, 260, 200, 40), (120, 500, 90, 33),
                                                      (50, 30, 30, 50)])
def test_rank_profile_equals_flints_rref(rows, width, rank, block):
    """Planted dependencies (rows that are combinations of earlier rows, repeats, zero rows) offered in
    blocks, through the leaf, the recursive halves and the sketch (wide rows): the kept rows are the
    pivots of python-flint's rref of the transpose."""
    from compiler.tools.enumeration import PRIME, RankProfile

    rng = np.random.default_rng(rows + width)
    basis = rng.integers(0, PRIME, size=(rank, width))
    coeff = rng.integers(0, PRIME, size=(rows, rank)) * (rng.random((rows, rank)) < 0.3)
    coeff[rng.choice(rows, rank, replace=False)] = np.eye(rank, dtype=np.int64)[rng.permutation(rank)]
    coeff[rng.choice(rows, 3, replace=False)] = 0
    matrix = np.zeros((rows, width), dtype=np.int64)
    for k in range(rank):  # coeff @ basis mod p without overflow
        matrix = (matrix + (coeff[:, k:k + 1] % PRIME) * basis[k] % PRIME) % PRIME
    want = _flint_profile(matrix, PRIME)
    profile = RankProfile(width, rank)
    for first in range(0, rows, block):
        profile.add(matrix[first:first + block])
    assert profile.kept == want[:rank] and profile.rank == len(want)
    early = RankProfile(width, 5)  # the target stops the work: the first five independent rows
    early.add(matrix)
    assert early.kept == want[:5]


def test_multilinear_path_keeps_the_basis_of_the_network_evaluation():
    """Distinct inputs, no symmetry: matchings evaluated at product points keep the same candidates as
    the networks evaluated at random input points (einsum mod p)."""
    from compiler.tools.enumeration import canonical, element_formula, expected_dimension, networks, search
    from compiler.tools.enumeration.candidates import Setup

    for inputs, out, group in [([("A", "cart2", 1), ("B", "cart2", 1), ("C", "cart2", 1)], "cart2", "O3"),
                               ([("v", "vec", 1), ("X", "cart2", 1), ("T", "cart(3)", 1)], "cart2", "SO3")]:
        req = request(inputs, out, group)
        setup = Setup.of(req)
        assert search._multilinear(setup)
        cands = sorted(((canonical.canonical(setup, c), c) for c in setup.candidates()),
                       key=lambda kv: canonical.preference(setup, kv[1], kv[0]))
        cands = [c for _, c in cands]
        expected = expected_dimension(req)
        fast = search._rank_multilinear(setup, cands, expected, 0, {})
        slow = search._rank_general(setup, cands, expected, 0, {})
        assert len(fast) == expected == 91
        assert [element_formula(networks.element_of(setup, cands[k], networks.element_terms(setup, cands[k])))
                for k in fast] == [element_formula(e) for e in slow]


def test_coupling_basis_above_the_limit(monkeypatch):
    """With allow_large, distinct inputs without symmetry take the coupling basis (every input split
    into its parts, left-coupled cg paths, no rank step): exactly the character count of elements,
    every one equivariant, and independent (checked here by rank, which the enumeration skips)."""
    from compiler.tools.enumeration import request as limits

    monkeypatch.setattr(limits, "MAX_DIMENSION", 10)
    inputs = [("A", "cart2", 1), ("v", "vec", 1), ("w", "vec", 1)]
    with pytest.raises(EnumerationError, match="--allow-large"):
        enumerate_basis(request(inputs, "cart2"))
    basis = enumerate_basis(request(inputs, "cart2"), allow_large=True)
    assert basis.dimension == basis.expected == 15
    assert basis.timings["evaluate"] == basis.timings["rank"] == 0.0  # the structural proof: no rank step
    assert all(any(n.kind == "cg" for n in e.terms[0].nodes) for e in basis.elements if "⊗" in e.words)
    f = _evaluate(basis, None)
    assert_equivariant(lambda *a: f(*a), ["cart2", "vec", "vec"], ["cart2"] * 15, "O3")
    rng = np.random.default_rng(5)
    args = [random_input(t, rng, batch=(40,)) for t in ("cart2", "vec", "vec")]
    values = np.stack([np.asarray(v).reshape(-1) for v in f(*args)])
    assert np.linalg.matrix_rank(values) == 15


@pytest.mark.parametrize("names, count", [("ABC", 91), ("ABCD", 603)])
def test_coupling_basis_of_distinct_inputs_has_full_rank_mod_p(monkeypatch, names, count):
    """The claim that lets the coupling basis skip the rank step, checked the slow way: the elements
    evaluated mod a prime where every surd of cg/P has an image (a ring homomorphism) are independent,
    and in the order given."""
    import compiler.tools.enumeration as en
    from compiler.math.spherical import constant_primes, surd_prime
    from compiler.tools.enumeration import request as limits

    monkeypatch.setattr(limits, "MAX_DIMENSION", 10)
    req = request([(n, "cart2", 1) for n in names], "cart2")
    basis = enumerate_basis(req, allow_large=True)
    assert basis.dimension == en.expected_dimension(req) == count
    primes = set()
    for e in basis.elements:
        for n in e.terms[0].nodes:
            if n.constant is not None:
                primes |= constant_primes(n.kind, n.constant.params)
    p = surd_prime(primes, en.PRIME + 1)
    n = count // 4 + 16  # the invariants (output part 0e) give one coordinate per point: 15 and 91 of them
    points = en.random_points(req, n, 3, p)
    rows = [en.evaluate(e.terms, points, ["i", "j"], n, p, surds=True).reshape(-1) for e in basis.elements]
    profile = en.RankProfile(len(rows[0]), count, p)
    profile.add(np.array(rows))
    assert profile.kept == list(range(count))


def test_cli_allow_large(monkeypatch, capsys):
    from compiler import cli
    from compiler.tools.enumeration import request as limits

    monkeypatch.setattr(limits, "MAX_DIMENSION", 10)
    args = ["enumerate", "--in", "A=cart2", "--in", "v=vec", "--in", "w=vec", "--out", "cart2"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "dimension 15 (character theory)" in err and "--allow-large" in err and "Traceback" not in err
    assert cli.main(args + ["--allow-large", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dimension"] == data["expected"] == 15
