"""Coupling paths: the enumeration of requests with a spherical type or a ``symt(l)``.

Spherical inputs of degree 1 into a spherical output take the plain list of left-coupled
Clebsch-Gordan chains (:func:`enumerate_spherical`), which needs no rank step. Other such requests
(symmetric powers of spherical inputs, mixed Cartesian/spherical requests), and distinct Cartesian
inputs above MAX_DIMENSION, split every input and the output into irreducible parts and enumerate
the coupling paths block by block (:func:`enumerate_coupled`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ...ir.program import CONSTANT_TYPE, DELTA_TYPE, EPS_TYPE, MAX_CONSTANT_L, IndexKind, Node, TensorNetwork
from ...ir.types import Irrep, TensorType
from ...math.characters import Rep, hom_dimension
from ...math.constants import Constant
from ...math.stf import is_stf
from .modular import RankProfile, evaluate, random_points
from .request import LABELS, PRIME, Basis, Element, EnumerationError, Request


def enumerate_spherical(request: Request, expected: int) -> Basis:
    """Spherical inputs x_1..x_n (degree 1) to a spherical output: the left-coupled Clebsch-Gordan
    chains ((x1 ⊗ x2 -> k1) ⊗ x3 -> k2) ... -> L over every admissible k. They are an orthonormal
    basis of the space (the coupling basis), so their number must equal the character count.
    A chain whose cg needs an l above the compiler's maximum is refused (its .diag would not compile)."""
    ins = request.inputs
    out = request.output
    L = out.irrep.l
    parity_ok = request.group == "SO3" or math.prod(i.type.irrep.p for i in ins) == out.irrep.p
    chains: list[list[int]] = []
    if parity_ok and ins:
        def extend(k_prev: int, position: int, acc: list[int]) -> None:
            if position == len(ins):
                if k_prev == L:
                    chains.append(acc)
                return
            l = ins[position].type.irrep.l
            last = position == len(ins) - 1
            for k in range(abs(k_prev - l), k_prev + l + 1):
                if last and k != L:
                    continue
                extend(k, position + 1, acc + [k])

        extend(ins[0].type.irrep.l, 1, [])
    elif parity_ok and L == 0:
        chains.append([])
    limit = MAX_CONSTANT_L["cg"]
    for ks in chains:
        if ks and max(ks) > limit:
            raise EnumerationError(
                f"the coupling path {_coupling_words(request, ks)} needs cg with l = {max(ks)}: l = {max(ks)} is "
                f"above the supported maximum {limit} for cg; the basis would not compile (use lower l or fewer "
                "inputs)")
    elements = []
    for ks in chains:
        term = coupling_network(request, ks)
        words = _coupling_words(request, ks)
        elements.append(Element((term,), term.formula(), words, tuple(1 for _ in ins)))
    if len(elements) != expected:
        raise EnumerationError(
            f"internal error: {len(elements)} coupling paths for {request} but character theory counts {expected}; "
            "this is a bug in diagc, please report it")
    return Basis(request, tuple(elements), expected, len(chains), len(chains), PRIME, {})


def coupling_network(request: Request, ks: list[int]) -> TensorNetwork:
    ins = request.inputs
    labels = iter(f"{c}{n}" if n else c for n in range(0, 9) for c in LABELS[1:])
    out_label = LABELS[0]
    kinds: dict[str, IndexKind] = {out_label: IndexKind("sph", request.output.irrep.l)}
    nodes = []
    if not ins:  # the constant 1 of 0e
        p0 = Constant("P", (0,))
        nodes.append(Node("P", str(p0), CONSTANT_TYPE, (out_label,), constant=p0))
        return TensorNetwork(Fraction(1), tuple(nodes), (out_label,), tuple(kinds.items()))
    current = next(labels)
    kinds[current] = IndexKind("sph", ins[0].type.irrep.l)
    input_labels = [current]
    if len(ins) == 1:
        current = out_label
        input_labels = [out_label]
    for n, k in enumerate(ks):
        x = ins[n + 1]
        lx = next(labels)
        kinds[lx] = IndexKind("sph", x.type.irrep.l)
        input_labels.append(lx)
        last = n == len(ks) - 1
        new = out_label if last else next(labels)
        if not last:
            kinds[new] = IndexKind("sph", k)
        prev_l = ins[0].type.irrep.l if n == 0 else ks[n - 1]
        cg = Constant("cg", (prev_l, x.type.irrep.l, k))
        nodes.append(Node("cg", str(cg), CONSTANT_TYPE, (current, lx, new), constant=cg))
        current = new
    for spec, label in zip(ins, input_labels):
        nodes.append(Node("input", spec.name, spec.type, (label,)))
    return TensorNetwork(Fraction(1), tuple(nodes), (out_label,), tuple(kinds.items()))


def _coupling_words(request: Request, ks: list[int]) -> str:
    ins = request.inputs
    if not ins:
        return "1"
    text = ins[0].name
    for n, k in enumerate(ks):
        text = f"({text} ⊗ {ins[n + 1].name} -> {k})"
    return text


# ------------------------------------------------------------------------------------------------
# coupled enumeration: symmetric powers of spherical inputs, mixed Cartesian/spherical requests
# ------------------------------------------------------------------------------------------------

MAX_COUPLING_CANDIDATES = 50_000  # coupling paths generated (before the rank step) for one request


@dataclass(frozen=True)
class _Part:
    """One irreducible part of a channel-free type: its irrep and the coupling path that extracts it.

    A spherical type is its own single part (``path`` empty). A Cartesian tensor of rank n is
    (1o)^{⊗n}: its parts are the left-coupled paths ``((leg1 ⊗ leg2 -> k1) ⊗ leg3 -> k2) ...``, with
    ``path = (k1, ..., k_{n-1})`` (rank 2 with a symmetry keeps the k1 of its parts: 0, 2 for sym,
    1 for skew, 2 for sym2t; rank 2 is written with its shortest constants, the trace, eps and
    P(2)); rank 0 and 1 have one part each. These maps are equivariant and their
    images are mutually orthogonal, so the parts of a type are independent coordinates of it."""

    irrep: Irrep
    path: tuple[int, ...]


def _parts(t: TensorType) -> tuple[_Part, ...]:
    if t.family == "sph" or is_stf(t):
        return (_Part(t.parts[0], ()),)
    if t.rank == 2 and t.symmetry:
        from ...ir.types import RANK2_PARTS

        return tuple(_Part(Irrep(l, p), (l,)) for l, p in zip(RANK2_PARTS[t.symmetry], t.parities))
    parity = t.parities[0] * (-1) ** t.rank
    if t.rank == 0:
        return (_Part(Irrep(0, parity), ()),)
    paths: list[tuple[int, ...]] = [()]
    for _ in range(t.rank - 1):
        paths = [p + (k,) for p in paths for k in range(abs((p[-1] if p else 1) - 1), (p[-1] if p else 1) + 2)]
    return tuple(_Part(Irrep(p[-1] if p else 1, parity), p) for p in paths)


def _part_words(name: str, t: TensorType, part: _Part) -> str:
    if t.family == "sph" or t.rank <= 1 or is_stf(t):
        return name
    return f"{name}({','.join(map(str, part.path[:-1]))}{',' if len(part.path) > 1 else ''}{part.irrep})"


_BUILDER_LABELS = tuple(LABELS[1:]) + tuple(f"{c}{n}" for n in range(1, 99) for c in LABELS)


class _Builder:
    """Nodes, labels and label kinds of one network under construction."""

    def __init__(self, taken):
        self.nodes: list[Node] = []
        self.kinds: dict[str, IndexKind] = {}
        self._fresh = (l for l in _BUILDER_LABELS if l not in taken)

    def label(self, kind: IndexKind) -> str:
        name = next(self._fresh)
        self.kinds[name] = kind
        return name

    def constant(self, kind: str, params: tuple[int, ...], labels) -> None:
        c = Constant(kind, params)
        self.nodes.append(Node(kind, str(c), CONSTANT_TYPE, tuple(labels), constant=c))

    def fragment(self, t: TensorType, part: _Part, sph: str, cart) -> None:
        """The constant nodes joining the Cartesian legs ``cart`` of a tensor of type ``t`` to the
        spherical leg ``sph`` that carries ``part`` (see :class:`_Part`)."""
        if t.rank == 0:
            self.constant("P", (0,), (sph,))
            return
        if t.rank == 1:
            self.constant("P", (1,), (sph, cart[0]))
            return
        if is_stf(t):  # symt(l): P(l) is the isometry onto spherical l
            self.constant("P", (t.rank,), (sph,) + tuple(cart))
            return
        if t.rank == 2:  # the same parts, by their shortest constants: trace, eps, P(2)
            l = part.irrep.l
            if l == 0:
                self.nodes.append(Node("delta", "delta", DELTA_TYPE, tuple(cart)))
                self.constant("P", (0,), (sph,))
            elif l == 1:
                c = self.label(IndexKind("cart", 3))
                self.nodes.append(Node("eps", "eps", EPS_TYPE, (cart[0], cart[1], c)))
                self.constant("P", (1,), (sph, c))
            else:
                self.constant("P", (2,), (sph, cart[0], cart[1]))
            return
        legs = []
        for c in cart:
            a = self.label(IndexKind("sph", 1))
            self.constant("P", (1,), (a, c))
            legs.append(a)
        current, l_prev = legs[0], 1
        for k, (leg, l) in enumerate(zip(legs[1:], part.path)):
            last = k == len(part.path) - 1
            new = sph if last else self.label(IndexKind("sph", l))
            self.constant("cg", (l_prev, 1, l), (current, leg, new))
            current, l_prev = new, l


def _sph_leg(b: _Builder, name: str, t: TensorType, part: _Part) -> str:
    """Add the input ``name`` (its part ``part``) to the network; return the spherical leg carrying it."""
    if t.family == "sph":
        leg = b.label(IndexKind("sph", t.irrep.l))
        b.nodes.append(Node("input", name, t, (leg,)))
        return leg
    sph = b.label(IndexKind("sph", part.irrep.l))
    cart = [b.label(IndexKind("cart", 3)) for _ in range(t.rank)]
    b.fragment(t, part, sph, cart)
    b.nodes.append(Node("input", name, t, tuple(cart)))
    return sph


@dataclass(frozen=True)
class _Block:
    """The polynomials of a given degree in every part of every input, into one part of the output:
    ``occurrences`` lists (input index, part index) in order, repeated by degree."""

    occurrences: tuple[tuple[int, int], ...]
    out_part: int


def _coupled_blocks(request: Request, in_parts, out_parts):
    """Every block with a nonzero space, in order: by the parts used, then the output part. The
    space is the direct sum of the blocks (the parts are independent coordinates of each input and
    the output parts are orthogonal), so each block is enumerated and counted on its own."""
    per_input = []
    for k, spec in enumerate(request.inputs):
        per_input.append([tuple((k, j) for j in combo)
                          for combo in itertools.combinations_with_replacement(range(len(in_parts[k])), spec.degree)])
    for combo in itertools.product(*per_input):
        occurrences = tuple(o for chunk in combo for o in chunk)
        counts: dict[tuple[int, int], int] = {}
        for o in occurrences:
            counts[o] = counts.get(o, 0) + 1
        reps = [(Rep((in_parts[k][j].irrep,)), d) for (k, j), d in counts.items()]
        for q, part in enumerate(out_parts):
            expected = hom_dimension(reps, Rep((part.irrep,)), request.group)
            if expected:
                yield _Block(occurrences, q), expected


def _coupled_paths(request: Request, in_parts, block: _Block, L: int):
    """The left-coupled paths (k1, ..., k_{m-1} = L) over the block's occurrences, skipping those
    that vanish identically (two copies of one part coupled first to an odd k: cg(l,l,k) is
    antisymmetric then) and those whose cg would need l above the compiler's maximum."""
    ls = [in_parts[k][j].irrep.l for k, j in block.occurrences]
    limit = MAX_CONSTANT_L["cg"]
    if not ls:
        return [()] if L == 0 else []
    paths: list[tuple[int, ...]] = []
    same = len(ls) > 1 and block.occurrences[0] == block.occurrences[1]

    def extend(k_prev, position, acc):
        if position == len(ls):
            if k_prev == L:
                paths.append(tuple(acc))
            return
        l = ls[position]
        remaining = sum(ls[position + 1:])
        for k in range(abs(k_prev - l), min(k_prev + l, limit) + 1):
            if position == 1 and same and k % 2:
                continue
            if abs(k - L) > remaining:
                continue
            extend(k, position + 1, acc + [k])

    extend(ls[0], 1, [])
    return paths


def _coupled_element(request: Request, in_parts, out_parts, block: _Block, ks) -> Element:
    out = request.output
    out_labels = (LABELS[0],) if out.family == "sph" else tuple(LABELS[:out.rank])
    b = _Builder(set(out_labels))
    for l in out_labels:
        b.kinds[l] = IndexKind("sph", out.irrep.l) if out.family == "sph" else IndexKind("cart", 3)
    part = out_parts[block.out_part]
    top = (out_labels[0] if out.family == "sph" else b.label(IndexKind("sph", part.irrep.l)))
    legs = [_sph_leg(b, request.inputs[k].name, request.inputs[k].type, in_parts[k][j])
            for k, j in block.occurrences]
    if not legs:
        b.constant("P", (0,), (top,))
    elif len(legs) == 1:
        # one occurrence: its leg is the result; rename it to ``top``
        old = legs[0]
        b.nodes = [_replace_indices(n, {old: top}) for n in b.nodes]
        del b.kinds[old]
    else:
        current, l_prev = legs[0], in_parts[block.occurrences[0][0]][block.occurrences[0][1]].irrep.l
        for n, (leg, k) in enumerate(zip(legs[1:], ks)):
            occ = block.occurrences[n + 1]
            l = in_parts[occ[0]][occ[1]].irrep.l
            new = top if n == len(ks) - 1 else b.label(IndexKind("sph", k))
            b.constant("cg", (l_prev, l, k), (current, leg, new))
            current, l_prev = new, k
    if out.family != "sph":
        b.fragment(out, part, top, out_labels)
    names = [_part_words(request.inputs[k].name, request.inputs[k].type, in_parts[k][j]) for k, j in block.occurrences]
    text = names[0] if names else "1"
    for name, k in zip(names[1:], ks):
        text = f"({text} ⊗ {name} -> {k})"
    if out.family != "sph" and (len(out_parts) > 1 or out.rank > 1):
        text = f"{_part_words(request.output_name, out, part)} <- {text}"
    used = [i for n in b.nodes for i in n.indices] + list(out_labels)
    kinds = tuple((i, b.kinds[i]) for i in dict.fromkeys(used))
    term = TensorNetwork(Fraction(1), tuple(b.nodes), out_labels, kinds)
    degrees = tuple(spec.degree for spec in request.inputs)
    return Element((term,), term.formula(), text, degrees)


def _replace_indices(node: Node, mapping: dict[str, str]) -> Node:
    from dataclasses import replace

    return replace(node, indices=tuple(mapping.get(i, i) for i in node.indices))


def _distinct(block: _Block) -> bool:
    """True when no (input, part) occurs twice in the block: its left-coupled paths are then the
    coupling basis of Hom(V_l1 ⊗ ... ⊗ V_lm, V_L), orthonormal (the recoupling theorem), hence
    independent with no evaluation; composed with the parts' maps (onto, and onto different parts of
    the inputs' tensor product for different blocks) they stay independent."""
    return len(set(block.occurrences)) == len(block.occurrences)


def enumerate_coupled(request: Request, expected: int, seed: int = 0) -> Basis:
    """Requests with spherical types beyond degree-1 spherical-only ones: symmetric powers of
    spherical inputs, Cartesian and spherical inputs together, spherical inputs to a Cartesian
    output. Every input is split into its irreducible parts (:class:`_Part`) and the output into
    its parts; the space is the direct sum of blocks (a monomial in the parts, into one output
    part). In each block the candidates are the left-coupled cg paths over the occurrences, and the
    first independent ones are kept: their values at random points are computed modulo a prime p
    modulo which every square root in cg and P has an image (a ring homomorphism), so independence
    mod p implies independence over the reals. A block with no (input, part) used twice skips
    that step: its paths are independent by construction (:func:`_distinct`). Each block's count
    must equal its own character-theory dimension, and the blocks' sum the request's. Also the route
    of distinct Cartesian inputs above MAX_DIMENSION (``allow_large``), where every block is such a
    block: no rank step at all."""
    import time

    from ...math.spherical import constant_primes, surd_prime

    in_parts = [_parts(spec.type) for spec in request.inputs]
    out_parts = _parts(request.output)
    out = request.output
    out_labels = [LABELS[0]] if out.family == "sph" else list(LABELS[:out.rank])
    timings = {"candidates": 0.0, "evaluate": 0.0, "rank": 0.0}
    t0 = time.perf_counter()
    blocks = []
    n_candidates = 0
    for block, block_expected in _coupled_blocks(request, in_parts, out_parts):
        paths = _coupled_paths(request, in_parts, block, out_parts[block.out_part].irrep.l)
        n_candidates += len(paths)
        if n_candidates > MAX_COUPLING_CANDIDATES:
            raise EnumerationError(f"the request has more than {MAX_COUPLING_CANDIDATES:,} coupling paths; use fewer "
                                   "inputs, lower degrees or lower l")
        blocks.append((block, block_expected, paths))
    primes: set[int] = set()
    elements_by_block = []
    for block, block_expected, paths in blocks:
        elems = [_coupled_element(request, in_parts, out_parts, block, ks) for ks in paths]
        if not _distinct(block):
            for e in elems:
                for n in e.terms[0].nodes:
                    if n.constant is not None:
                        primes |= constant_primes(n.kind, n.constant.params)
        elements_by_block.append((block, block_expected, elems))
    timings["candidates"] = time.perf_counter() - t0
    p = surd_prime(primes, PRIME + 1)
    elements = []
    for block, block_expected, elems in elements_by_block:
        if _distinct(block) and len(elems) == block_expected:
            elements.extend(elems)  # an orthonormal coupling basis: independent without a rank step
            continue
        width = out_parts[block.out_part].irrep.dim
        n_points = max(2, math.ceil((block_expected + 8) / width) + 1)
        chosen: list[int] = []
        while elems:
            t0 = time.perf_counter()
            points = random_points(request, n_points, seed, p)
            rows = [evaluate(e.terms, points, out_labels, n_points, p, surds=True).reshape(-1) for e in elems]
            timings["evaluate"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            profile = RankProfile(len(rows[0]), block_expected, p)
            profile.add(np.array(rows))
            chosen = profile.kept
            timings["rank"] += time.perf_counter() - t0
            if len(chosen) >= block_expected or n_points >= block_expected + 8:
                break
            n_points = min(2 * n_points, block_expected + 8)
        if len(chosen) != block_expected:
            words = " ⊗ ".join(_part_words(request.inputs[k].name, request.inputs[k].type, in_parts[k][j])
                               for k, j in block.occurrences) or "1"
            raise EnumerationError(
                f"the coupling paths of {words} with cg up to l = {MAX_CONSTANT_L['cg']} span {len(chosen)} of the "
                f"{block_expected} dimensions character theory counts for {request}; the rest needs cg above the "
                "supported maximum (use lower l or degrees)")
        elements.extend(elems[k] for k in chosen)
    if len(elements) != expected:
        raise EnumerationError(
            f"internal error: {len(elements)} coupling paths for {request} but character theory counts {expected}; "
            "this is a bug in diagc, please report it")
    return Basis(request, tuple(elements), expected, n_candidates, n_candidates, p, timings)
