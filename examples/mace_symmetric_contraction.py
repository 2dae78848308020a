"""MACE's symmetric contraction, compiled by diagc from the enumerated coupling basis.

MACE (Batatia et al. 2022, eq. 10-11) turns the A-features of a node, one flat e3nn array of
``Irreps("Kx0e + Kx1o + Kx2e")``, into B-features: for each output irrep L and each channel c, a
polynomial of degree <= nu (the correlation order, 3 here) in the 9 numbers x_c = (A.0e[c], A.1o[c,:],
A.2e[c,:]), one weight per basis polynomial, channel and chemical element:

    B.L[c, m] = sum_nu sum_k  W[z(n), k, c] * M_k(x_c)[m]

diagc writes the same map from its own enumeration: for every multiset of input irreps (0e, 1o, 2e) of
size nu <= 3, ``compiler.tools.enumeration`` lists the coupling paths ((x1 (x) x2 -> k1) (x) x3 -> L), the
copies of an irrep are identified (x1 = x2 = A.1o), and the paths that become linearly dependent
(antisymmetric couplings of equal factors) are dropped, numerically on random points. What is left
is a basis of the equivariant polynomials: one ``.diag`` diagram, with the irreps input ``A``, the
one-hot element ``y: scalar[z]`` and one weight ``Wj: weight[z,K]`` per basis polynomial j, whose
output is the flat e3nn array ``irreps(Kx0e+Kx1o)``, MACE's layout.

A cg with an l = 0 leg is the identity of its other two legs up to 1/sqrt(2l+1), so a path through
a scalar is written without it (each basis polynomial has its own weight, so its scale is free).

Run ``python examples/mace_symmetric_contraction.py`` to build, compile and check it against
mace-torch's ``SymmetricContraction`` (when it imports; ``pip install --no-deps mace-torch``).
"""

from __future__ import annotations

import importlib
import itertools
import sys
import types
from pathlib import Path

import numpy as np

IRREPS_IN = ("0e", "1o", "2e")
OUTPUTS = ("0e", "1o")


def _terms(L: str, correlation: int):
    """(irreps of the factors, the coupling network) of every enumerated path of 1..correlation
    factors to L: the symmetric powers of (0e, 1o, 2e) when the enumerator has them (``total=``),
    else each multiset of factors enumerated as distinct inputs (its copies identified later)."""
    from compiler.tools.enumeration import enumerate_degrees
    from compiler.ir.types import TensorType

    out = TensorType.parse(L)
    ins = [(f"x{k}", TensorType.parse(ir), tuple(range(correlation + 1))) for k, ir in enumerate(IRREPS_IN)]
    try:
        found = enumerate_degrees(ins, out, "O3", "B", total=tuple(range(1, correlation + 1)))
    except TypeError:  # an enumerator without symmetric powers of spherical inputs
        found = None
    if found is not None:
        for element in found.elements:
            (term,) = element.terms  # a coupling path is one network
            yield IRREPS_IN, term
        return
    for nu in range(1, correlation + 1):
        for combo in itertools.combinations_with_replacement(IRREPS_IN, nu):
            specs = [(f"x{k}", TensorType.parse(ir), (1,)) for k, ir in enumerate(combo)]
            for element in enumerate_degrees(specs, out, "O3", "B").elements:
                (term,) = element.terms
                yield combo, term


def _text(combo, term, L: str) -> str:
    """The network over the A-feature blocks as .diag text: factor x_k is block combo[k] of A at
    channel c, a cg with an l = 0 leg is dropped (its other two legs joined), the output leg is m and
    the others g0, g1, ..."""
    parent = {}

    def find(a):
        while parent.get(a, a) != a:
            a = parent[a]
        return a

    kept = []
    for node in term.nodes:
        if node.kind == "cg":
            legs = [i for i, l in zip(node.indices, node.constant.params) if l != 0]
            if len(legs) < 3:  # the identity between its two legs of l > 0 (or nothing: cg(0,0,0))
                if len(legs) == 2:
                    parent[find(legs[0])] = find(legs[1])
                continue
        kept.append(node)
    names = {}
    if not L.startswith("0"):
        names[find(term.output[0])] = "m"

    def label(i):
        return names.setdefault(find(i), f"g{len(names)}")

    parts = []
    for node in kept:
        if node.kind == "input":
            ir = combo[int(node.name[1:])]
            parts.append(f"A.{ir}[c]" if ir.startswith("0") else f"A.{ir}[c,{label(node.indices[0])}]")
        else:
            parts.append(f"cg({','.join(map(str, node.constant.params))})[{','.join(label(i) for i in node.indices)}]")
    return " ".join(parts)


def _probe(texts, L: str):
    """The basis polynomials as one diagram on A: irreps(1x0e+1x1o+1x2e), one output each (lowered)."""
    from compiler.frontend.lower import lower_source

    typ, lhs = ("scalar[1]", "[c]") if L == "0e" else (f"sph({L})[1]", "[c,m]")
    source = ("diagram probe(A: irreps(1x0e+1x1o+1x2e)) -> (" + ", ".join(f"e{j}: {typ}" for j in range(len(texts)))
              + ") {\n" + "".join(f"    e{j}{lhs} = {text}\n" for j, text in enumerate(texts)) + "}\n")
    return lower_source(source).diagrams[0]


def basis_values(texts, L: str, x) -> np.ndarray:
    """The basis polynomials at points x (N, 9) = (0e, 1o, 2e) components: (N, 2L+1, n), by diagc's
    reference evaluator (compiler.math.einsum) on the lowered networks."""
    from compiler.math.einsum import Floats, evaluate_term

    x = np.asarray(x, dtype=np.float64)
    arrays = {"A_0e": x[:, None, 0], "A_1o": x[:, None, 1:4], "A_2e": x[:, None, 4:9]}
    diagram = _probe(texts, L)
    values = [evaluate_term(eq.terms[0], arrays, Floats()).reshape(len(x), -1) for eq in diagram.equations]
    return np.stack(values, axis=-1)


def coupling_basis(L: str, correlation: int = 3) -> list[str]:
    """The independent basis polynomials of degrees 1..correlation to L, as .diag networks over A:
    every enumerated path with copies identified, a path kept when it raises the rank of the values
    at random points (the copies make antisymmetric couplings vanish or repeat)."""
    texts = [_text(combo, term, L) for combo, term in _terms(L, correlation)]
    values = basis_values(texts, L, np.random.default_rng(0).normal(size=(64, 9)))
    values = values.reshape(-1, values.shape[-1])
    kept = []
    for j in range(len(texts)):
        trial = values[:, kept + [j]]
        if np.linalg.matrix_rank(trial, tol=1e-9 * np.abs(trial).max()) == len(kept) + 1:
            kept.append(j)
    return [texts[j] for j in kept]


def build_source(K: int, correlation: int = 3) -> tuple[str, dict[str, list[str]]]:
    """The .diag text of ``mace_sc(A, y, W0, W1, ...)`` (weight Wj[z,c] for basis polynomial j, the
    output irreps in order) and the basis polynomials of each output irrep."""
    equations, bases, offset = [], {}, 0
    for L in OUTPUTS:
        texts = bases[L] = coupling_basis(L, correlation)
        lhs = "B.0e[c]" if L == "0e" else f"B.{L}[c,m]"
        equations.append(f"    {lhs} = " + "\n        + ".join(f"W{offset + j}[z,c] y[z] {t}" for j, t in enumerate(texts)))
        offset += len(texts)
    weights = ", ".join(f"W{j}: weight[z,{K}]" for j in range(offset))
    outs = "+".join(f"{K}x{L}" for L in OUTPUTS)
    source = (f"# MACE's symmetric contraction, correlation {correlation} (examples/mace_symmetric_contraction.py)\n"
              f"diagram mace_sc(A: irreps({K}x0e+{K}x1o+{K}x2e), y: scalar[z],\n        {weights})\n"
              f"        -> B: irreps({outs}) {{\n" + "\n".join(equations) + "\n}\n")
    return source, bases


# -- the reference: mace-torch's SymmetricContraction -----------------------------------------------
def load_mace():
    """mace-torch's symmetric_contraction module, imported without mace.tools' training stack (its
    package __init__ imports optional dependencies the contraction does not use); None if absent."""
    try:
        import mace
    except ImportError:
        return None
    root = Path(mace.__file__).parent
    for name in ("tools", "modules"):
        full = f"mace.{name}"
        if full not in sys.modules:
            pkg = types.ModuleType(full)
            pkg.__path__ = [str(root / name)]
            sys.modules[full] = pkg
    return importlib.import_module("mace.modules.symmetric_contraction")


def mace_x(A, K: int):
    """MACE's input (N, K, 9) from the flat A-features (what its EquivariantProductBasisBlock does by hand)."""
    import torch

    n = A.shape[0]
    return torch.cat([A[:, :K].reshape(n, K, 1), A[:, K:4 * K].reshape(n, K, 3), A[:, 4 * K:].reshape(n, K, 5)], -1)


def mace_basis_values(contraction, x):
    """MACE's basis polynomials M_k(x) of one output irrep, every degree, on points x (N, 9):
    (N, 2L+1, n_k) with the degrees in MACE's weight order (weights_max = degree nu_max first)."""
    import torch

    values = []
    for nu in range(contraction.correlation, 0, -1):
        U = contraction.U_tensors(nu)
        if U.dim() == nu + 1:  # L = 0: no m axis
            U = U[None]
        v = torch.einsum("m...ik,ni->nm...k", U, x)
        for _ in range(nu - 1):
            v = torch.einsum("nm...ik,ni->nm...k", v, x)
        values.append(v)
    return torch.cat(values, dim=-1)


def mace_weights(contraction) -> np.ndarray:
    """One output irrep's weights (Z, n_k, K) in the order of :func:`mace_basis_values`."""
    import torch

    return torch.cat([contraction.weights_max] + list(contraction.weights), dim=1).detach().numpy()


def map_weights(contraction, texts, L: str, points) -> tuple[np.ndarray, float]:
    """diagc's weights of one output irrep from MACE's: the change of basis T with
    M_k = sum_j T[j, k] E_j, fitted by least squares at ``points`` (N, 9) (exact, the spans being
    equal), then V[z, j, c] = sum_k T[j, k] W[z, k, c]. Returns V and the fit's largest residual."""
    import torch

    M = mace_basis_values(contraction, torch.as_tensor(points)).detach().numpy()
    E = basis_values(texts, L, points)
    A, B = E.reshape(-1, E.shape[-1]), M.reshape(-1, M.shape[-1])
    T, *_ = np.linalg.lstsq(A, B, rcond=None)
    return np.einsum("jk,zkc->zjc", T, mace_weights(contraction)), float(np.abs(A @ T - B).max())


def diagc_weights(sc, bases, points) -> tuple[list[np.ndarray], float]:
    """The arguments W0, W1, ... of mace_sc equivalent to the weights of mace-torch's module ``sc``."""
    weights, worst = [], 0.0
    for contraction, L in zip(sc.contractions, OUTPUTS):
        V, residual = map_weights(contraction, bases[L], L, points)
        weights += [V[:, j, :] for j in range(V.shape[1])]
        worst = max(worst, residual)
    return weights, worst


def mace_module(K: int, Z: int, correlation: int = 3, seed: int = 0):
    """mace-torch's SymmetricContraction on Kx0e+Kx1o+Kx2e -> Kx0e+Kx1o, its weights random (float64)."""
    import torch
    from e3nn import o3

    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return load_mace().SymmetricContraction(o3.Irreps(f"{K}x0e+{K}x1o+{K}x2e"),
                                                o3.Irreps("+".join(f"{K}x{L}" for L in OUTPUTS)),
                                                correlation=correlation, num_elements=Z)
    finally:
        torch.set_default_dtype(old)


def main():
    import time

    import torch

    import compiler

    K, Z, N = 8, 3, 200
    start = time.perf_counter()
    source, bases = build_source(K)
    print(f"basis polynomials per output irrep: { {L: len(t) for L, t in bases.items()} } "
          f"(enumerated in {time.perf_counter() - start:.1f} s)")
    module = compiler.load_source(source, "mace_sc")
    if load_mace() is None:
        print("mace-torch is not installed: nothing to compare with")
        return
    sc = mace_module(K, Z)
    counts = {L: mace_weights(c).shape[1] for c, L in zip(sc.contractions, OUTPUTS)}
    print(f"mace-torch's basis sizes: {counts}")
    rng = np.random.default_rng(1)
    weights, residual = diagc_weights(sc, bases, rng.normal(size=(256, 9)))
    A = rng.normal(size=(N, 9 * K))
    y = np.eye(Z)[rng.integers(0, Z, N)]
    ours = module.mace_sc(A, y, *weights)
    theirs = sc(mace_x(torch.as_tensor(A), K), torch.as_tensor(y)).detach().numpy()
    print(f"basis change residual {residual:.1e}; largest difference from mace-torch {np.abs(ours - theirs).max():.1e}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
