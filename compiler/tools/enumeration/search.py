"""The search: the candidates deduplicated and ordered, then the first independent ones kept until
their number is the character count (the completeness proof); several multidegrees at once.

Every candidate, projected onto the output's symmetry, is evaluated at random integer points modulo a
prime p (distinct inputs without symmetry: at random product points, one vector per leg); the first
candidates (in the preference order) whose evaluation vectors are independent mod p are kept. The
number kept must equal dim Hom_G(⊗ S^{d_i} V_i, W) from character theory: since the kept elements
are independent over Q and the space has exactly that dimension, they are a basis. A shortfall is an
error, never a silent result. Requests with spherical types go to :mod:`.coupling`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ...ir.program import IndexKind, TensorNetwork
from ...ir.types import TensorType
from . import coupling
from .candidates import Candidate, Setup
from .canonical import canonical, preference
from .modular import block_profile, evaluate, random_points
from .networks import element_of, element_terms
from .request import (LABELS, PRIME, Basis, BasisSet, Element, EnumerationError, InputSpec, Request,
                      expected_dimension, is_coupled, is_large, refuse_large, validate)


def enumerate_basis(request: Request, seed: int = 0, allow_large: bool = False) -> Basis:
    """Every independent equivariant contraction for ``request``, with its completeness proof.
    ``allow_large`` lifts the MAX_DIMENSION limit (not the leg limits)."""
    import time

    validate(request)
    if any(t.channels for t in [i.type for i in request.inputs] + [request.output]):
        bare = Request(tuple(InputSpec(i.name, i.type.with_channels(()), i.degree) for i in request.inputs),
                       request.output.with_channels(()), request.group, request.output_name)
        carried = {c for i in request.inputs if i.degree for c in i.type.channels}
        missing = [str(c) for c in request.output.channels if c not in carried]
        if missing and expected_dimension(bare):
            raise EnumerationError(
                f"the output's channel ax{'is' if len(missing) == 1 else 'es'} {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} on no input of positive degree in {request}; its "
                "elements would be constant along it: give the output only the inputs' channel axes")
        found = enumerate_basis(bare, seed, allow_large)
        elements = tuple(_with_channels(request, e) for e in found.elements)
        return Basis(request, elements, found.expected, found.candidates, found.unique, found.prime, found.timings)
    timings = {}
    t0 = time.perf_counter()
    expected = expected_dimension(request)
    timings["characters"] = time.perf_counter() - t0
    refuse_large(expected, request.output.family == "sph", allow_large=allow_large)
    if is_large(expected) and not is_coupled(request) and _multilinear(Setup.of(request)):
        # only with allow_large: the coupling basis, which needs no rank step (see _distinct)
        return coupling.enumerate_coupled(request, expected, seed)
    if is_coupled(request):
        if request.output.family == "sph" and all(i.type.family == "sph" and i.degree == 1 for i in request.inputs):
            return coupling.enumerate_spherical(request, expected)
        return coupling.enumerate_coupled(request, expected, seed)
    setup = Setup.of(request)
    parity_ok = True
    if request.group == "O3":
        prod = 1
        for spec in request.inputs:
            prod *= spec.type.inversion ** spec.degree
        parity_ok = prod == request.output.inversion

    t0 = time.perf_counter()
    unique: dict[tuple, Candidate] = {}
    n_candidates = 0
    if parity_ok:
        for cand in setup.candidates():
            n_candidates += 1
            key = canonical(setup, cand)
            if key not in unique:
                unique[key] = cand
    ordered = sorted(unique.items(), key=lambda kv: preference(setup, kv[1], kv[0]))
    timings["candidates"] = time.perf_counter() - t0

    elements = []
    if expected and ordered:
        cands = [cand for _, cand in ordered]
        if _multilinear(setup):
            chosen = _rank_multilinear(setup, cands, expected, seed, timings)
            elements = [element_of(setup, cands[k], element_terms(setup, cands[k])) for k in chosen]
        else:
            elements = _rank_general(setup, cands, expected, seed, timings)
    if len(elements) != expected:
        raise EnumerationError(
            f"internal error: found {len(elements)} independent contractions for {request} but character "
            f"theory counts {expected}; this is a bug in diagc, please report it")
    return Basis(request, tuple(elements), expected, n_candidates, len(unique), PRIME, timings)


def _with_channels(request: Request, element: Element) -> Element:
    """A channel-free element given the channel axes of ``request``'s types: every input node and the
    output carry them, one label per channel name shared by all, so the element is applied channel
    by channel (elementwise over the channels; an input without an axis is broadcast along it)."""
    from dataclasses import replace

    types = {i.name: i.type for i in request.inputs}
    terms = []
    for t in element.terms:
        used = {label for label, _ in t.kinds}
        labels: dict = {}
        for c in request.output.channels:
            label = str(c) if isinstance(c, str) else f"u{len(labels)}"
            while label in used or label in labels.values():
                label += "_"
            labels[c] = label
        nodes = tuple(replace(n, type=types[n.name], indices=tuple(labels[c] for c in types[n.name].channels)
                              + n.indices) if n.kind == "input" else n for n in t.nodes)
        kinds = tuple((labels[c], IndexKind("channel", c)) for c in request.output.channels) + t.kinds
        terms.append(TensorNetwork(t.coefficient, nodes, tuple(labels.values()) + t.output, kinds, t.pos))
    return Element(tuple(terms), terms[0].formula(), element.words, element.degrees)


def _rank_general(setup: Setup, cands: list[Candidate], expected: int, seed: int, timings: dict) -> list[Element]:
    """The first independent candidates (each projected onto the output's symmetry), by evaluation of
    their networks at random points of the inputs."""
    import time

    request = setup.request
    out_labels = list(LABELS[:request.output.rank])
    out_size = 3 ** request.output.rank
    term_lists = [element_terms(setup, cand) for cand in cands]
    # Each point gives several coordinates, though not always independent ones: start with a few
    # more coordinates than the dimension and add points until the rank is reached (at most one
    # point per dimension, where every coordinate set is generic enough).
    n_points = max(2, math.ceil((expected + 16) / _independent_size(request.output)) + 1)
    timings["evaluate"] = timings["rank"] = 0.0
    while True:
        t0 = time.perf_counter()
        points = random_points(request, n_points, seed)
        timings["evaluate"] += time.perf_counter() - t0
        profile = block_profile(n_points * out_size, len(cands), expected, lambda first, last: [
            evaluate(terms, points, out_labels, n_points).reshape(-1) if terms
            else np.zeros(n_points * out_size, dtype=np.int64) for terms in term_lists[first:last]], timings)
        if profile.done or n_points >= expected + 8:
            break
        n_points = min(2 * n_points, expected + 8)
    return [element_of(setup, cands[k], term_lists[k]) for k in profile.kept]


def _multilinear(setup: Setup) -> bool:
    """Every input used once, no declared symmetry on any input or on the output, an even number of
    legs: the candidates are bare perfect matchings of the legs (no eps, no projection)."""
    request = setup.request
    return (all(i.degree <= 1 and not i.type.symmetry for i in request.inputs) and not request.output.symmetry
            and len(setup.legs) % 2 == 0 and len(setup.legs) > 0)


def _rank_multilinear(setup: Setup, cands: list[Candidate], expected: int, seed: int, timings: dict) -> list[int]:
    """The first independent matchings, by evaluation at random product points.

    A matching M of the legs is a multilinear form on V^{⊗legs}; at a product point u_1 ⊗ ... ⊗ u_n
    (one vector per leg: every input is the tensor product of its legs' vectors, the output is
    contracted with its legs' vectors) its value is ∏_{(a,b) in M} u_a·u_b. Product points span the
    tensor space, so the forms are independent iff their values at generic points are: one
    coordinate per point, a few more points than the dimension, n products per value.
    """
    import time

    position = {leg: k for k, leg in enumerate(setup.legs)}
    p = PRIME
    timings["evaluate"] = timings["rank"] = 0.0
    for attempt, extra in enumerate((16, 64)):
        t0 = time.perf_counter()
        n_points = expected + extra
        rng = np.random.default_rng(seed + attempt)
        u = rng.integers(0, p, size=(n_points, len(setup.legs), 3), dtype=np.int64)
        gram = np.einsum("nai,nbi->abn", u, u) % p  # (legs, legs, points): below 3 p**2 < 2**63
        timings["evaluate"] += time.perf_counter() - t0

        def rows_of(first, last, gram=gram):
            pairs = np.array([[(position[a], position[b]) for a, b in c.pairs] for c in cands[first:last]],
                             dtype=np.intp)
            rows = gram[pairs[:, 0, 0], pairs[:, 0, 1]]
            for j in range(1, pairs.shape[1]):
                rows = rows * gram[pairs[:, j, 0], pairs[:, j, 1]] % p
            return rows

        profile = block_profile(n_points, len(cands), expected, rows_of, timings)
        if profile.done:
            return profile.kept
    return profile.kept


def _independent_size(t: TensorType) -> int:
    n = 3 ** t.rank
    if t.rank == 2 and t.symmetry:
        return {"sym": 6, "skew": 3, "sym_traceless": 5}[t.symmetry]
    return n


def enumerate_degrees(inputs, output: TensorType, group: str = "O3", output_name: str = "Y",
                      allow_large: bool = False, total: tuple[int, ...] | None = None) -> BasisSet:
    """``inputs``: (name, type, degrees) with degrees a tuple of the degrees wanted for that input;
    every combination is enumerated, in increasing total degree. ``allow_large`` lifts the
    MAX_DIMENSION limit. ``total``: keep only the combinations whose total degree is one of these
    (MACE's correlation orders: inputs ``a0: 0e, a1: 1o, a2: 2e`` each with degrees 0..3 and
    ``total=(1, 2, 3)``)."""
    combos = list(itertools.product(*[sorted(set(d)) for _, _, d in inputs]))
    if total is not None:
        combos = [c for c in combos if sum(c) in set(total)]
    combos.sort(key=lambda c: (sum(c), c))
    requests = [Request(tuple(InputSpec(n, t, d) for (n, t, _), d in zip(inputs, combo)), output, group,
                        output_name) for combo in combos]
    size = 0
    for request in requests:  # the whole request is sized by character theory before any work
        validate(request)
        size += expected_dimension(request)
    refuse_large(size, output.family == "sph", len(requests), allow_large)
    return BasisSet(tuple(enumerate_basis(request, allow_large=allow_large) for request in requests))
