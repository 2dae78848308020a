"""MACE's symmetric contraction (examples/mace_symmetric_contraction.py): the basis diagc builds from
its enumeration against character theory, and the compiled diagram against mace-torch's
SymmetricContraction (float64, 1e-10) after mapping the weights by the change of basis."""

import sys

import numpy as np
import pytest

import compiler
from compiler.tools.enumeration import InputSpec, Request, expected_dimension
from compiler.ir.types import TensorType
from conftest import ROOT

sys.path.insert(0, str(ROOT / "examples"))
import mace_symmetric_contraction as example  # noqa: E402

K, Z = 4, 3


@pytest.fixture(scope="module")
def built():
    source, bases = example.build_source(K)
    return compiler.load_source(source, "mace_sc_test"), bases


def character_count(out: str, correlation: int = 3) -> int:
    """dim of the equivariant polynomials of degree 1..correlation in (0e, 1o, 2e) to ``out``, from
    character theory, written with the Cartesian twins scalar, vec, sym2t of 0e, 1o, 2e."""
    total = 0
    for nu in range(1, correlation + 1):
        for a in range(nu + 1):
            for b in range(nu + 1 - a):
                degrees = (("s", "scalar", a), ("v", "vec", b), ("X", "sym2t", nu - a - b))
                ins = tuple(InputSpec(n, TensorType.parse(t), d) for n, t, d in degrees if d)
                total += expected_dimension(Request(ins, TensorType.parse(out)))
    return total


def test_basis_sizes_are_the_character_theory_dimensions(built):
    _, bases = built
    assert {L: len(t) for L, t in bases.items()} == {"0e": character_count("scalar"), "1o": character_count("vec")}
    assert character_count("scalar") == 9 and character_count("vec") == 8


def flat_D(irreps: str, g) -> np.ndarray:
    """The action of g in O(3) on a flat e3nn array of ``irreps`` (exact Wigner matrices rounded once,
    compiler.math.spherical: e3nn's own D^l are accurate to about 1e-7 for l >= 2)."""
    from scipy.linalg import block_diag

    from compiler.math.spherical import wigner_D_numeric
    from compiler.ir.types import Irrep

    blocks = []
    for term in irreps.split("+"):
        mul, ir = term.split("x")
        ir = Irrep.parse(ir)
        blocks += [wigner_D_numeric(ir.l, g, parity=ir.p)] * int(mul)
    return block_diag(*blocks)


def test_equivariant_on_the_flat_arrays(built):
    from compiler.testing import random_reflection, random_rotation

    module, bases = built
    n_weights = sum(len(t) for t in bases.values())
    rng = np.random.default_rng(0)
    A = rng.normal(size=(5, 9 * K))
    y = np.eye(Z)[rng.integers(0, Z, 5)]
    W = [rng.normal(size=(Z, K)) for _ in range(n_weights)]
    for g in (random_rotation(rng), random_reflection(rng)):
        Din, Dout = flat_D(f"{K}x0e+{K}x1o+{K}x2e", g), flat_D(f"{K}x0e+{K}x1o", g)
        assert np.abs(module.mace_sc(A @ Din.T, y, *W) - module.mace_sc(A, y, *W) @ Dout.T).max() < 1e-10


@pytest.fixture(scope="module")
def mace():
    if example.load_mace() is None:
        pytest.skip("mace-torch is not installed (pip install --no-deps mace-torch)")
    return example.mace_module(K, Z)


def test_spans_equal_mace(built, mace):
    """mace-torch's U-matrix polynomials span exactly our basis's space (their rank is our size: its
    generalized CG basis is overcomplete, 15 and 26 functions for 9 and 8 dimensions)."""
    import torch

    _, bases = built
    x = np.random.default_rng(2).normal(size=(128, 9))
    for contraction, L in zip(mace.contractions, example.OUTPUTS):
        M = example.mace_basis_values(contraction, torch.as_tensor(x)).detach().numpy()
        M = M.reshape(-1, M.shape[-1])
        E = example.basis_values(bases[L], L, x).reshape(-1, len(bases[L]))
        assert np.linalg.matrix_rank(M) == len(bases[L]) == np.linalg.matrix_rank(np.hstack([M, E]))
    assert [example.mace_weights(c).shape[1] for c in mace.contractions] == [15, 26]


def test_values_match_mace(built, mace):
    import torch

    module, bases = built
    rng = np.random.default_rng(3)
    weights, residual = example.diagc_weights(mace, bases, rng.normal(size=(256, 9)))
    assert residual < 1e-10
    A = rng.normal(size=(50, 9 * K))
    y = np.eye(Z)[rng.integers(0, Z, 50)]
    theirs = mace(example.mace_x(torch.as_tensor(A), K), torch.as_tensor(y)).detach().numpy()
    ours = module.mace_sc(A, y, *weights)
    assert ours.shape == theirs.shape == (50, 4 * K)
    assert np.abs(ours - theirs).max() < 1e-10 * max(1.0, np.abs(theirs).max())
    # torch in, torch out, the same values
    ours_t = module.mace_sc(torch.as_tensor(A), torch.as_tensor(y), *(torch.as_tensor(w) for w in weights))
    assert np.abs(ours_t.numpy() - theirs).max() < 1e-10 * max(1.0, np.abs(theirs).max())
