"""Enumerate every independent equivariant contraction between given tensor types, and prove the
list complete.

For inputs V_1..V_n used with polynomial degrees d_1..d_n and an output W (Cartesian types):

1. **candidates**: the legs of all input copies and of the output are joined pairwise by deltas
   (a perfect matching), with one eps on three legs when the number of legs is odd (never two:
   eps eps is a determinant of deltas). Contractions that vanish by a declared symmetry are
   skipped (the trace of a skew or traceless tensor, eps on two legs of a symmetric one, ...).
2. **dedupe** by a canonical form of each network, which treats the copies of one input, the legs
   of a symmetric tensor and the legs of eps as interchangeable.
3. **order**: fewest eps; then the fewest input factors on the part of the network that carries the
   output legs (delta before X before X·X: the classical generators); then the fewest scalar
   factors (traces, dot products); then the canonical form. Deterministic.
4. **independence**: every candidate, projected onto the output's symmetry, is evaluated at random
   integer points modulo a prime p (distinct inputs without symmetry: at random product points, one
   vector per leg); the first candidates (in the order above) whose evaluation vectors are
   independent mod p are kept (:class:`RankProfile`, which stops at the character count).
   Independence mod p implies independence over Q. Above MAX_DIMENSION (``allow_large``) distinct
   inputs without symmetry take the coupling basis instead (:func:`_enumerate_coupled`), which
   needs no rank step (:func:`_distinct`).
5. **completeness**: the number kept must equal dim Hom_G(⊗ S^{d_i} V_i, W) from character theory
   (:mod:`compiler.math.characters`). Since the kept elements are independent over Q and the space has
   exactly that dimension, they are a basis. A shortfall is an error, never a silent result.

Requests with a spherical type or a ``symt(l)`` (symmetric powers of spherical inputs, mixed
Cartesian/spherical requests) are enumerated by coupling paths instead: see
:func:`_enumerate_coupled`. Spherical inputs of degree 1 into a spherical output keep the plain
list of coupling paths (:func:`_enumerate_spherical`), which needs no rank step.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ..math.characters import Rep, hom_dimension
from ..math.stf import is_stf, stf_from_array
from ..ir.types import Irrep
from ..math.constants import Constant
from ..errors import DiagError
from ..ir.program import (CONSTANT_TYPE, DELTA_TYPE, EPS_TYPE, MAX_CONSTANT_L, IndexKind, Node, TensorNetwork,
                          sum_formula)
from ..ir.types import TensorType

PRIME = 2097143  # the largest prime below 2**21: 4096 products of balanced residues sum below 2**53 (float64)
MAX_LEGS = 16  # requests with more legs in total are refused (15!! = 2 027 025 matchings)
MAX_LEGS_GENERAL = 12  # the same with an input of rank > 2 (slower canonical form by search)
MAX_DIMENSION = 5000  # larger spaces are refused, before any work: the exact rank step grows like
# candidates × dimension², and a spherical basis has one coupling path (and one compiled output) per dimension
_LABELS = "ijklmnpqrstuvwxyzabcdefgh"


class EnumerationError(DiagError):
    """A request that cannot be enumerated (unsupported type, too large, ...)."""


@dataclass(frozen=True)
class InputSpec:
    """An input tensor, used ``degree`` times (a homogeneous polynomial of that degree in it)."""

    name: str
    type: TensorType
    degree: int = 1


@dataclass(frozen=True)
class Request:
    inputs: tuple[InputSpec, ...]
    output: TensorType
    group: str = "O3"
    output_name: str = "Y"

    def __str__(self) -> str:
        ins = ", ".join(f"{i.name}: {i.type}" + (f"^{i.degree}" if i.degree != 1 else "") for i in self.inputs)
        return f"({ins}) -> {self.output_name}: {self.output} under {self.group}"


@dataclass(frozen=True)
class Element:
    """One basis element: the output as a sum of networks, with readable forms."""

    terms: tuple[TensorNetwork, ...]
    formula: str  # index notation of the generating contraction
    words: str  # e.g. "tr(X) X", "(v·v) delta"
    degrees: tuple[int, ...]


@dataclass(frozen=True)
class Basis:
    request: Request
    elements: tuple[Element, ...]
    expected: int  # dimension from character theory
    candidates: int  # contractions generated (after symmetry pruning)
    unique: int  # after canonical dedupe
    prime: int = PRIME
    timings: dict = field(default_factory=dict, compare=False)

    @property
    def dimension(self) -> int:
        return len(self.elements)


def rep_of(t: TensorType) -> Rep:
    """The O(3) representation carried by a type's geometric axes."""
    if t.family == "sph":
        return Rep((t.irrep,))
    if t.family != "cart":
        raise EnumerationError(f"type {t} carries no rotation")
    if t.rank == 2:
        return Rep.cartesian2(t.symmetry, t.parities)
    if t.symmetry == "sym_traceless":  # symt(l)
        return Rep(t.parts)
    return Rep.cartesian(t.rank, pseudo=t.parities == (-1,))


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------

def validate(request: Request) -> None:
    if request.group not in ("O3", "SO3"):
        raise EnumerationError(f"unknown group '{request.group}' (known: O3, SO3)")
    for t, what in [(i.type, f"input '{i.name}'") for i in request.inputs] + [(request.output, "the output")]:
        if t.family not in ("cart", "sph"):
            raise EnumerationError(f"{what} has type {t}: enumeration covers Cartesian and spherical types")
        if t.graded:
            raise EnumerationError(f"{what} has the graded type {t}; enumerate its parts separately")
    names = [i.name for i in request.inputs]
    if len(set(names)) != len(names):
        raise EnumerationError("an input name is given twice")
    for i in request.inputs:  # channel axes: the basis acts channel by channel (see _with_channels)
        missing = [str(c) for c in i.type.channels if c not in request.output.channels]
        if missing:
            raise EnumerationError(
                f"input '{i.name}' has the channel ax{'is' if len(missing) == 1 else 'es'} {', '.join(missing)} that "
                f"the output ({request.output}) lacks; a basis acts channel by channel: give the output every "
                "input's channel axes")
    for i in request.inputs:
        if i.degree < 0:
            raise EnumerationError(f"degree of '{i.name}' must be >= 0")
    if _coupled(request):
        return  # sized by character theory and by its number of coupling paths
    legs = sum(i.type.rank * i.degree for i in request.inputs) + request.output.rank
    limit = MAX_LEGS if all(i.type.rank <= 2 for i in request.inputs) else MAX_LEGS_GENERAL
    if legs > limit:
        raise EnumerationError(f"the request has {legs} legs in total; the limit is {limit} "
                               f"({_double_factorial(limit - 1):,} matchings)"
                               + ("" if limit == MAX_LEGS else " when an input has rank above 2"))


def _coupled(request: Request) -> bool:
    """True for a request with a spherical type or a symt(l): enumerated by coupling paths."""
    return any(t.family == "sph" or is_stf(t) for t in [i.type for i in request.inputs] + [request.output])


def _double_factorial(n: int) -> int:
    return math.prod(range(n, 0, -2)) if n > 0 else 1


def expected_dimension(request: Request) -> int:
    """dim Hom_G(⊗ S^{d_i} V_i, W) by character theory."""
    return hom_dimension([(rep_of(i.type), i.degree) for i in request.inputs], rep_of(request.output),
                         request.group)


def refuse_large(dimension: int, spherical: bool, parts: int = 1, allow_large: bool = False) -> None:
    """EnumerationError if a space (or the direct sum of ``parts`` spaces) has more than MAX_DIMENSION
    dimensions; called with the character-theory count, before any candidate is generated.
    ``allow_large`` (``diagc enumerate --allow-large``) lifts this limit; the leg limits stay."""
    if dimension <= MAX_DIMENSION or allow_large:
        return
    what = "the space has" if parts == 1 else f"the {parts} spaces (one per degree) have"
    hint = ("use fewer inputs or lower l" if spherical
            else "use symmetric inputs or polynomial degrees to shrink it")
    raise EnumerationError(f"{what} dimension {dimension:,} (character theory); listing more than "
                           f"{MAX_DIMENSION:,} elements is refused (the enumeration would take hours and "
                           f"gigabytes); {hint}, or pass --allow-large to go on anyway")


# ------------------------------------------------------------------------------------------------
# candidates
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Occ:
    name: str
    type: TensorType
    copy: int


@dataclass(frozen=True)
class _Candidate:
    pairs: tuple[tuple[tuple[int, int], tuple[int, int]], ...]  # ((occ, axis), (occ, axis)); occ -1 = output
    eps: tuple[tuple[int, int], ...] | None


class _Setup:
    def __init__(self, request: Request):
        self.request = request
        self.occs = [_Occ(i.name, i.type, c) for i in request.inputs for c in range(i.degree)]
        self.legs = [(-1, a) for a in range(request.output.rank)]
        self.legs += [(o, a) for o, occ in enumerate(self.occs) for a in range(occ.type.rank)]
        self.chains_only = all(i.type.rank <= 2 for i in request.inputs)

    def type_of(self, occ: int) -> TensorType:
        return self.request.output if occ == -1 else self.occs[occ].type

    def vanishes_pair(self, a, b) -> bool:
        """A delta between two legs of one symmetric-kind tensor that makes the term zero."""
        if a[0] != b[0]:
            return False
        sym = self.type_of(a[0]).symmetry
        return sym in ("skew", "sym_traceless")

    def vanishes_eps(self, legs) -> bool:
        for a, b in itertools.combinations(legs, 2):
            if a[0] == b[0] and self.type_of(a[0]).symmetry in ("sym", "sym_traceless"):
                return True
        return False

    def candidates(self):
        legs = self.legs
        if len(legs) % 2 == 0:
            for m in _matchings(legs, self.vanishes_pair):
                yield _Candidate(m, None)
        else:
            for triple in itertools.combinations(legs, 3):
                if self.vanishes_eps(triple):
                    continue
                rest = [leg for leg in legs if leg not in triple]
                for m in _matchings(rest, self.vanishes_pair):
                    yield _Candidate(m, triple)


def _matchings(legs, vanishes):
    if not legs:
        yield ()
        return
    first, rest = legs[0], legs[1:]
    for k, other in enumerate(rest):
        if vanishes(first, other):
            continue
        for m in _matchings(rest[:k] + rest[k + 1:], vanishes):
            yield ((first, other),) + m


# ------------------------------------------------------------------------------------------------
# canonical form and preference order
# ------------------------------------------------------------------------------------------------

def _slot_class(t: TensorType, axis: int) -> int:
    return 0 if t.symmetry else axis


def _canonical(setup: _Setup, cand: _Candidate) -> tuple:
    """The canonical form: by paths and cycles when every tensor has rank <= 2, else by search."""
    if setup.chains_only:
        return _canonical_chains(setup, cand)
    return _canonical_search(setup, cand)


def _canonical_chains(setup: _Setup, cand: _Candidate, output_axes: bool = False) -> tuple:
    """Canonical form of a network of vectors, rank-2 tensors and at most one eps.

    Such a network is a union of paths and cycles (plus the arms of eps). Each path or cycle is
    written as the sequence of tensors met along it, with the leg each is entered and left by
    (legs of a symmetric tensor are one class), read from both ends (and every rotation for a
    cycle) keeping the smallest; the sorted list of these strings is the canonical form.
    """
    partner: dict = {}
    for a, b in cand.pairs:
        partner[a] = b
        partner[b] = a
    eps_slots = set(cand.eps) if cand.eps else set()
    occs = setup.occs
    out = setup.request.output
    seen = set()

    def cls(o, a):
        if o == -1 and output_axes:
            return a
        return 0 if setup.type_of(o).symmetry else a

    def walk(leg, from_eps=False):
        """Follow the chain from ``leg`` (the leg by which a tensor is entered) to its end."""
        tokens = []
        while True:
            if leg in eps_slots and not from_eps:
                tokens.append(("E",))
                return tokens
            o, a = leg
            if o == -1:
                tokens.append(("o", cls(-1, a)))
                return tokens
            if o in seen:
                return tokens  # back at the start of a cycle
            seen.add(o)
            occ = occs[o]
            if occ.type.rank == 1:
                tokens.append((occ.name,))
                return tokens
            tokens.append((occ.name, cls(o, a), cls(o, 1 - a)))
            from_eps = False
            if (o, 1 - a) in eps_slots:
                tokens.append(("E",))
                return tokens
            leg = partner[(o, 1 - a)]

    def reverse(tokens):
        return [t if len(t) < 3 else (t[0], t[2], t[1]) for t in reversed(tokens)]

    parts = []
    if cand.eps:
        arms = []
        for slot in cand.eps:
            arm = [] if slot[0] >= 0 and slot[0] in seen else walk(slot, from_eps=True)
            if arm and arm[-1] == ("E",):
                arm = min(arm[:-1], reverse(arm[:-1])) + [("E",)]
            arms.append(tuple(arm))
        parts.append(("eps", tuple(sorted(arms))))
    # paths end at vectors or output legs: start from each such end
    starts = [((-1, a), None) for a in range(out.rank)]
    starts += [((o, 0), occ.name) for o, occ in enumerate(occs) if occ.type.rank == 1]
    for leg, vname in starts:
        if vname is not None:
            if leg[0] in seen:
                continue
            seen.add(leg[0])
            head = [(vname,)]
        else:
            head = [("o", cls(-1, leg[1]))]
        nxt = partner.get(leg)
        if nxt is None:  # joined to eps: already counted in its arm
            continue
        if nxt[0] == -1 and vname is None and nxt[1] < leg[1]:
            continue  # delta between two output legs: count it once
        if nxt[0] >= 0 and nxt[0] in seen and vname is None:
            continue
        tokens = head + walk(nxt)
        parts.append(("path", tuple(min(tokens, reverse(tokens)))))
    for o, occ in enumerate(occs):
        if occ.type.rank == 0:
            parts.append(("scalar", occ.name))
        elif o not in seen and occ.type.rank == 2:
            tokens = walk((o, 0))
            n = len(tokens)
            best = None
            for seq in (tokens, reverse(tokens)):
                for r in range(n):
                    rot = tuple(seq[r:] + seq[:r])
                    if best is None or rot < best:
                        best = rot
            parts.append(("cycle", best))
    return tuple(sorted(parts))


def _canonical_search(setup: _Setup, cand: _Candidate) -> tuple:
    """A key equal for candidates that differ by renaming copies of an input, swapping the legs of
    a symmetric-kind tensor, or permuting the legs of eps."""
    occs = setup.occs
    groups: dict[str, list[int]] = {}
    for o, occ in enumerate(occs):
        groups.setdefault(occ.name, []).append(o)

    def cls(leg):
        o, a = leg
        return _slot_class(setup.type_of(o), a)

    # neighbour signature for refinement
    nbrs: dict[int, list] = {o: [] for o in range(len(occs))}
    for a, b in cand.pairs:
        if a[0] >= 0:
            nbrs[a[0]].append((cls(a), "o" if b[0] == -1 else occs[b[0]].name, cls(b)))
        if b[0] >= 0:
            nbrs[b[0]].append((cls(b), "o" if a[0] == -1 else occs[a[0]].name, cls(a)))
    if cand.eps:
        for leg in cand.eps:
            if leg[0] >= 0:
                nbrs[leg[0]].append((cls(leg), "eps", 0))
    sig = {o: tuple(sorted(v)) for o, v in nbrs.items()}
    orders = []
    for name in sorted(groups):
        members = sorted(groups[name], key=lambda o: sig[o])
        tied = [list(g) for _, g in itertools.groupby(members, key=lambda o: sig[o])]
        orders.append(tied)
    best = None
    choices = [itertools.product(*[itertools.permutations(t) for t in tied]) for tied in orders]
    for count, combo in enumerate(itertools.product(*choices)):
        position = {-1: -1}
        k = 0
        for group in combo:
            for tie in group:
                for o in tie:
                    position[o] = k
                    k += 1
        key = _encode(cand, position, cls)
        if best is None or key < best:
            best = key
        if count >= 720:
            break
    return best


def _encode(cand, position, cls):
    edges = []
    for a, b in cand.pairs:
        ea, eb = (position[a[0]], cls(a)), (position[b[0]], cls(b))
        edges.append((min(ea, eb), max(ea, eb)))
    eps = tuple(sorted((position[leg[0]], cls(leg)) for leg in cand.eps)) if cand.eps else ()
    return (eps, tuple(sorted(edges)))


def _components(setup: _Setup, cand: _Candidate):
    """Union-find over occurrences (-1 is the output, -2 the eps node)."""
    parent = {o: o for o in range(-2, len(setup.occs))}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in cand.pairs:
        parent[find(a[0])] = find(b[0])
    if cand.eps:
        for leg in cand.eps:
            parent[find(leg[0])] = find(-2)
    comps: dict[int, list[int]] = {}
    for o in range(-2, len(setup.occs)):
        if o == -2 and not cand.eps:
            continue
        if o == -1 and setup.request.output.rank == 0:
            continue
        comps.setdefault(find(o), []).append(o)
    return list(comps.values())


def _preference(setup: _Setup, cand: _Candidate, key) -> tuple:
    comps = _components(setup, cand)
    out_nodes = 0
    scalars = 0
    for comp in comps:
        if -1 in comp:
            out_nodes += sum(1 for o in comp if o >= 0)
        else:
            scalars += 1
    return (1 if cand.eps else 0, out_nodes, scalars, key)


# ------------------------------------------------------------------------------------------------
# candidate -> networks (projected onto the output's symmetry)
# ------------------------------------------------------------------------------------------------

def _network(setup: _Setup, cand: _Candidate, out_labels, output=None) -> TensorNetwork:
    """The candidate as one term; output leg k carries out_labels[k]; the output's axes are
    ``output`` (default: out_labels in order)."""
    label: dict[tuple[int, int], str] = {}
    for k in range(setup.request.output.rank):
        label[(-1, k)] = out_labels[k]
    taken = set(out_labels) | set(_LABELS[:setup.request.output.rank])
    fresh = iter(l for l in list(_LABELS) + [f"{c}{n}" for n in range(1, 9) for c in _LABELS] if l not in taken)
    deltas = []
    for a, b in cand.pairs:
        if a[0] == -1 and b[0] == -1:
            deltas.append((label[a], label[b]))
        elif a[0] == -1:
            label[b] = label[a]
        elif b[0] == -1:
            label[a] = label[b]
        else:
            label[a] = label[b] = next(fresh)
    nodes = []
    if cand.eps:
        for leg in cand.eps:
            if leg not in label:
                label[leg] = next(fresh)
        nodes.append(Node("eps", "eps", EPS_TYPE, tuple(label[leg] for leg in cand.eps)))
    for o, occ in enumerate(setup.occs):
        nodes.append(Node("input", occ.name, occ.type, tuple(label[(o, a)] for a in range(occ.type.rank))))
    for a, b in deltas:
        nodes.append(Node("delta", "delta", DELTA_TYPE, (a, b)))
    used = [i for n in nodes for i in n.indices] + list(out_labels)
    kinds = tuple((i, IndexKind("cart", 3)) for i in dict.fromkeys(used))
    return TensorNetwork(Fraction(1), tuple(nodes), tuple(output or out_labels), kinds)


def _swap_invariant(setup: _Setup, cand: _Candidate) -> bool:
    """True if exchanging the two output legs gives the same network (then it is already symmetric)."""
    if not setup.chains_only:
        return False
    swap = {(-1, 0): (-1, 1), (-1, 1): (-1, 0)}
    other = _Candidate(tuple((swap.get(a, a), swap.get(b, b)) for a, b in cand.pairs),
                       tuple(swap.get(leg, leg) for leg in cand.eps) if cand.eps else None)
    return _canonical_chains(setup, cand, True) == _canonical_chains(setup, other, True)


def _element_terms(setup: _Setup, cand: _Candidate) -> list[TensorNetwork]:
    """The candidate projected onto the output's symmetry: sym/skew part, minus the trace part."""
    out = setup.request.output
    labels = tuple(_LABELS[:out.rank])
    base = _network(setup, cand, labels)
    if not out.symmetry:
        return [base]
    if out.symmetry != "skew" and _swap_invariant(setup, cand):
        terms = [base]
        if out.symmetry == "sym_traceless":
            traced = _network(setup, cand, (_LABELS[out.rank],) * 2)
            nodes = traced.nodes + (Node("delta", "delta", DELTA_TYPE, labels),)
            kinds = traced.kinds + tuple((l, IndexKind("cart", 3)) for l in labels)
            terms.append(TensorNetwork(Fraction(-1, 3), nodes, labels, tuple(dict(kinds).items())))
        return _merge(terms)
    swapped = _network(setup, cand, (labels[1], labels[0]), labels)
    half = Fraction(1, 2)
    sign = -1 if out.symmetry == "skew" else 1
    terms = [_scaled(base, half), _scaled(swapped, sign * half)]
    if out.symmetry == "sym_traceless":
        traced = _network(setup, cand, (_LABELS[out.rank],) * 2)
        nodes = traced.nodes + (Node("delta", "delta", DELTA_TYPE, labels),)
        kinds = traced.kinds + tuple((l, IndexKind("cart", 3)) for l in labels)
        terms.append(TensorNetwork(Fraction(-1, 3), nodes, labels, tuple(dict(kinds).items())))
    return _merge(terms)


def _scaled(t: TensorNetwork, c: Fraction) -> TensorNetwork:
    return TensorNetwork(t.coefficient * c, t.nodes, t.output, t.kinds, t.pos)


def _merge(terms):
    groups: dict = {}
    for t in terms:
        groups.setdefault(t.shape_key(), []).append(t)
    out = []
    for same in groups.values():
        c = sum((t.coefficient for t in same), Fraction(0))
        if c:
            out.append(_scaled(same[0], c / same[0].coefficient))
    return out


# ------------------------------------------------------------------------------------------------
# evaluation modulo a prime
# ------------------------------------------------------------------------------------------------

def random_points(request: Request, n: int, seed: int, p: int = PRIME) -> dict[str, np.ndarray]:
    """n random integer points per input (entries mod p), with the input's symmetry built in."""
    rng = np.random.default_rng(seed)
    points = {}
    for spec in request.inputs:
        t = spec.type
        x = rng.integers(0, p, size=(n,) + t.geometric_dims, dtype=np.int64)
        if t.rank == 2 and t.symmetry:
            xt = np.swapaxes(x, -1, -2)
            if t.symmetry == "skew":
                x = np.triu(x, 1)
                x = (x - np.swapaxes(x, -1, -2)) % p
            else:
                x = np.triu(x) + np.swapaxes(np.triu(x, 1), -1, -2)
                if t.symmetry == "sym_traceless":
                    x[..., 2, 2] = (-x[..., 0, 0] - x[..., 1, 1]) % p
            del xt
        if is_stf(t):
            x = stf_from_array(x, t.rank)
        points[spec.name] = x % p
    return points


def evaluate(terms, points, out_labels, n, p: int = PRIME, surds: bool = False) -> np.ndarray:
    """Σ coefficient × network at every point, mod p, as an (n, out_size) int64 array; ``surds``: cg
    and P take their images under the homomorphism of :func:`compiler.math.spherical.surd_prime`."""
    from ..math.einsum import ModP, evaluate_term, term_einsum

    domain = ModP(p, error=EnumerationError, surds=surds)
    total = None
    for t in terms:
        value = evaluate_term(term_einsum(t, output=out_labels), points, domain)
        if value.ndim == len(out_labels):  # no input: the same value at every point
            value = np.broadcast_to(value, (n,) + value.shape)
        term = value.reshape(n, -1)
        total = term if total is None else (total + term) % p
    return total


# ------------------------------------------------------------------------------------------------
# the enumeration
# ------------------------------------------------------------------------------------------------

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
    if expected > MAX_DIMENSION and not _coupled(request) and _multilinear(_Setup(request)):
        # only with allow_large: the coupling basis, which needs no rank step (see _distinct)
        return _enumerate_coupled(request, expected, seed)
    if _coupled(request):
        if request.output.family == "sph" and all(i.type.family == "sph" and i.degree == 1 for i in request.inputs):
            return _enumerate_spherical(request, expected)
        return _enumerate_coupled(request, expected, seed)
    setup = _Setup(request)
    parity_ok = True
    if request.group == "O3":
        prod = 1
        for spec in request.inputs:
            prod *= spec.type.inversion ** spec.degree
        parity_ok = prod == request.output.inversion

    t0 = time.perf_counter()
    unique: dict[tuple, _Candidate] = {}
    n_candidates = 0
    if parity_ok:
        for cand in setup.candidates():
            n_candidates += 1
            key = _canonical(setup, cand)
            if key not in unique:
                unique[key] = cand
    ordered = sorted(unique.items(), key=lambda kv: _preference(setup, kv[1], kv[0]))
    timings["candidates"] = time.perf_counter() - t0

    elements = []
    if expected and ordered:
        cands = [cand for _, cand in ordered]
        if _multilinear(setup):
            chosen = _rank_multilinear(setup, cands, expected, seed, timings)
            elements = [_element(setup, cands[k], _element_terms(setup, cands[k])) for k in chosen]
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


_BLOCK = 512  # candidates evaluated and offered to the rank profile at a time


def _profile(width: int, count: int, expected: int, rows_of, timings: dict) -> "RankProfile":
    """The rank profile of ``count`` candidates' coordinate rows (``width`` coordinates each),
    evaluated (``rows_of(first, last)``: the rows of candidates first..last-1) and offered to the
    profile in blocks of _BLOCK until it reaches ``expected``; the time of each step is added to
    ``timings`` ("evaluate", "rank")."""
    import time

    profile = RankProfile(width, expected)
    for first in range(0, count, _BLOCK):
        t0 = time.perf_counter()
        rows = rows_of(first, min(first + _BLOCK, count))
        t1 = time.perf_counter()
        with _one_blas_thread():
            profile.add(rows)
        timings["evaluate"] += t1 - t0
        timings["rank"] += time.perf_counter() - t1
        if profile.done:
            break
    return profile


def _rank_general(setup: _Setup, cands: list[_Candidate], expected: int, seed: int, timings: dict) -> list[Element]:
    """The first independent candidates (each projected onto the output's symmetry), by evaluation of
    their networks at random points of the inputs."""
    import time

    request = setup.request
    out_labels = list(_LABELS[:request.output.rank])
    out_size = 3 ** request.output.rank
    term_lists = [_element_terms(setup, cand) for cand in cands]
    # Each point gives several coordinates, though not always independent ones: start with a few
    # more coordinates than the dimension and add points until the rank is reached (at most one
    # point per dimension, where every coordinate set is generic enough).
    n_points = max(2, math.ceil((expected + 16) / _independent_size(request.output)) + 1)
    timings["evaluate"] = timings["rank"] = 0.0
    while True:
        t0 = time.perf_counter()
        points = random_points(request, n_points, seed)
        timings["evaluate"] += time.perf_counter() - t0
        profile = _profile(n_points * out_size, len(cands), expected, lambda first, last: [
            evaluate(terms, points, out_labels, n_points).reshape(-1) if terms
            else np.zeros(n_points * out_size, dtype=np.int64) for terms in term_lists[first:last]], timings)
        if profile.done or n_points >= expected + 8:
            break
        n_points = min(2 * n_points, expected + 8)
    return [_element(setup, cands[k], term_lists[k]) for k in profile.kept]


def _multilinear(setup: _Setup) -> bool:
    """Every input used once, no declared symmetry on any input or on the output, an even number of
    legs: the candidates are bare perfect matchings of the legs (no eps, no projection)."""
    request = setup.request
    return (all(i.degree <= 1 and not i.type.symmetry for i in request.inputs) and not request.output.symmetry
            and len(setup.legs) % 2 == 0 and len(setup.legs) > 0)


def _rank_multilinear(setup: _Setup, cands: list[_Candidate], expected: int, seed: int, timings: dict) -> list[int]:
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

        profile = _profile(n_points, len(cands), expected, rows_of, timings)
        if profile.done:
            return profile.kept
    return profile.kept


def _enumerate_spherical(request: Request, expected: int) -> Basis:
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
        term = _coupling_network(request, ks)
        words = _coupling_words(request, ks)
        elements.append(Element((term,), term.formula(), words, tuple(1 for _ in ins)))
    if len(elements) != expected:
        raise EnumerationError(
            f"internal error: {len(elements)} coupling paths for {request} but character theory counts {expected}; "
            "this is a bug in diagc, please report it")
    return Basis(request, tuple(elements), expected, len(chains), len(chains), PRIME, {})


def _coupling_network(request: Request, ks: list[int]) -> TensorNetwork:
    ins = request.inputs
    labels = iter(f"{c}{n}" if n else c for n in range(0, 9) for c in _LABELS[1:])
    out_label = _LABELS[0]
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
        from ..ir.types import RANK2_PARTS

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


_BUILDER_LABELS = tuple(_LABELS[1:]) + tuple(f"{c}{n}" for n in range(1, 99) for c in _LABELS)


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
    out_labels = (_LABELS[0],) if out.family == "sph" else tuple(_LABELS[:out.rank])
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


def _enumerate_coupled(request: Request, expected: int, seed: int = 0) -> Basis:
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

    from ..math.spherical import constant_primes, surd_prime

    in_parts = [_parts(spec.type) for spec in request.inputs]
    out_parts = _parts(request.output)
    out = request.output
    out_labels = [_LABELS[0]] if out.family == "sph" else list(_LABELS[:out.rank])
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


def _independent_size(t: TensorType) -> int:
    n = 3 ** t.rank
    if t.rank == 2 and t.symmetry:
        return {"sym": 6, "skew": 3, "sym_traceless": 5}[t.symmetry]
    return n


# ------------------------------------------------------------------------------------------------
# exact rank profile modulo a prime, in blocks (float64 BLAS, no rounding)
# ------------------------------------------------------------------------------------------------

_INNER = 4096  # the longest inner dimension of one product: 4096 products of balanced residues < 2**53
_LEAF = 16  # rows eliminated one by one; larger blocks are split in two


def _mod(x: np.ndarray, p: int) -> np.ndarray:
    """x reduced mod p in place to the balanced residue in [-p/2 - 1, p/2 + 1], for float64 integers
    |x| < 2**53: the quotient is rounded in floating point (exact up to one unit, hence the margin)
    and q * p, x - q * p are exact. Four passes over x; no correction step."""
    q = x * (1.0 / p)
    np.rint(q, out=q)
    q *= p
    x -= q
    return x


def _matmul_mod(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """a @ b mod p for balanced residues, exact: the inner dimension is cut into _INNER-long pieces."""
    n = a.shape[1]
    if n <= _INNER:
        return _mod(a @ b, p)
    out = np.zeros((a.shape[0], b.shape[1]))
    for k in range(0, n, _INNER):
        out += _mod(a[:, k:k + _INNER] @ b[k:k + _INNER], p)
    return _mod(out, p)


@contextlib.contextmanager
def _one_blas_thread():
    """Run numpy's OpenBLAS on one thread meanwhile, where it can be found (else change nothing).

    The rank profile makes many mid-sized products; on a shared, loaded machine the threads of one
    product wait for each other and two threads ran 5x slower than one (a 2,048-row profile, 20 s
    against 3.8 s on the project's 2-core box under load)."""
    setter = getter = None
    try:
        import ctypes

        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.split()[-1]})
        for path in paths:
            lib = ctypes.CDLL(path)
            for set_name, get_name in (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                                       ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
                                       ("openblas_set_num_threads", "openblas_get_num_threads")):
                if hasattr(lib, set_name) and hasattr(lib, get_name):
                    setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                    break
            if setter:
                break
    except OSError:
        setter = None
    if setter is None:
        yield
        return
    before = getter()
    setter(1)
    try:
        yield
    finally:
        setter(before)


class RankProfile:
    """The first rows, in the order given, that are independent of the rows before them, mod p.

    Rows come in blocks (``add``); the kept rows are held in reduced echelon form (each kept row is 1
    at its own pivot column and 0 at every other pivot column), so a new block is reduced against
    all of them with one matrix product, and the block itself is split in halves recursively (the
    second half reduced against the rows the first half kept, with one product). Every product has
    balanced residues (|x| <= p/2 + 1 with p < 2**21) and an inner dimension of at most 4096, so float64
    arithmetic is exact.
    ``target`` stops the work once that many rows are kept (the character count: no later row can be
    independent). Independence mod p implies independence over Q.
    """

    def __init__(self, width: int, target: int, p: int = PRIME):
        if p >= 2 ** 21:
            raise ValueError("RankProfile needs a prime below 2**21 (exact float64 products)")
        self.p = p
        self.target = target
        self.rows = np.zeros((max(target, 1), width))
        self.pivots: list[int] = []
        self.kept: list[int] = []  # the indices (in the order of all rows added) of the kept rows
        self.seen = 0

    @property
    def rank(self) -> int:
        return len(self.pivots)

    @property
    def done(self) -> bool:
        return self.rank >= self.target

    def add(self, block) -> None:
        """Offer the next rows (integers mod p); the independent ones are kept.

        With rows already kept, the block is first reduced on a sketch: len(block) + 16 columns
        that are not pivots (the residuals' values there are those of the block's residual span at
        that many more generic points, so the sketch's rank profile is the block's). Only the rows the
        sketch keeps are then reduced in full: the rejected ones never cost a full-width product.
        A row that the sketch keeps is independent for certain (its residual is non-zero there)."""
        p = self.p
        block = _mod(np.array(block, dtype=np.float64, ndmin=2), p)
        ids = np.arange(self.seen, self.seen + len(block))
        self.seen += len(block)
        if self.done or not len(block):
            return
        r0 = self.rank
        width = self.rows.shape[1]
        if r0 and 2 * (len(block) + 16) < width - r0:
            free = np.ones(width, dtype=bool)
            free[self.pivots] = False
            cols = np.flatnonzero(free)[:: max(1, (width - r0) // (len(block) + 16))][:len(block) + 16]
            sketch = _mod(block[:, cols] - _matmul_mod(block[:, self.pivots], self.rows[:r0, cols], p), p)
            profile = RankProfile(len(cols), min(len(block), self.target - r0), p)
            profile.add(sketch)
            if not profile.kept:
                return
            block, ids = block[profile.kept], ids[profile.kept]
        if r0:
            block = _mod(block - _matmul_mod(block[:, self.pivots], self.rows[:r0], p), p)
        self._absorb(block, ids)
        if self.rank > r0 and r0:  # keep the older rows reduced at the new pivots (in slices: bounded memory)
            new = self.rows[r0:self.rank]
            for k in range(0, r0, 2048):
                old = self.rows[k:min(k + 2048, r0)]
                old -= _matmul_mod(old[:, self.pivots[r0:]], new, p)
                _mod(old, p)

    def _absorb(self, block: np.ndarray, ids: np.ndarray) -> None:
        """``block`` is reduced against every kept row; its kept rows are reduced among themselves."""
        p = self.p
        start = self.rank
        if len(block) <= _LEAF:
            for k in range(len(block)):
                if self.done:
                    return
                row = block[k]
                r = self.rank
                if r > start:
                    row = _mod(row - _mod(row[self.pivots[start:r]] @ self.rows[start:r], p), p)
                nonzero = np.flatnonzero(row)
                if not len(nonzero):
                    continue
                c = int(nonzero[0])
                row = _mod(row * float(pow(int(row[c]) % p, p - 2, p)), p)
                if r > start:
                    lead = self.rows[start:r, c].copy()
                    self.rows[start:r] -= _mod(np.outer(lead, row), p)
                    _mod(self.rows[start:r], p)
                self.rows[r] = row
                self.pivots.append(c)
                self.kept.append(int(ids[k]))
            return
        half = len(block) // 2
        self._absorb(block[:half], ids[:half])
        if self.done:
            return
        mid = self.rank
        rest = block[half:]
        if mid > start:
            rest = _mod(rest - _matmul_mod(rest[:, self.pivots[start:mid]], self.rows[start:mid], p), p)
        self._absorb(rest, ids[half:])
        end = self.rank
        if end > mid > start:
            upper = self.rows[start:mid]
            upper -= _matmul_mod(upper[:, self.pivots[mid:end]], self.rows[mid:end], p)
            _mod(upper, p)


# ------------------------------------------------------------------------------------------------
# readable forms
# ------------------------------------------------------------------------------------------------

def _element(setup: _Setup, cand: _Candidate, terms) -> Element:
    base = _network(setup, cand, tuple(_LABELS[:setup.request.output.rank]))
    degrees = tuple(spec.degree for spec in setup.request.inputs)
    return Element(tuple(terms), base.formula(), words(base), degrees)


def words(t: TensorNetwork) -> str:
    """A readable form: traces and dot products of the scalar parts, times the part carrying the
    output: ``tr(X·X) X``, ``(v·v) delta``, ``X·v``; index notation where no such form fits."""
    nodes = list(t.nodes)
    if any(n.kind == "eps" for n in nodes) or any(n.type.rank > 2 for n in nodes if n.kind == "input"):
        return t.formula()
    # walk chains: each rank-1/rank-2 node is a link between its legs' labels
    links = []
    for n in nodes:
        if n.kind == "delta":
            continue
        links.append(n)
    used = [False] * len(links)
    label_nodes: dict[str, list[int]] = {}
    for k, n in enumerate(links):
        for l in n.indices:
            label_nodes.setdefault(l, []).append(k)
    scalars, main = [], []

    def walk(start_label, k):
        """Follow the chain from link k entered through start_label; return its text and end label."""
        parts = []
        label = start_label
        while k is not None:
            used[k] = True
            n = links[k]
            if len(n.indices) == 1:
                parts.append(n.name)
                return parts, None
            if len(n.indices) == 0:
                parts.append(n.name)
                return parts, None
            a, b = n.indices
            if a == label:
                parts.append(n.name)
                label = b
            else:
                parts.append(n.name + "ᵀ" if not n.type.symmetry else n.name)
                label = a
            nxt = [j for j in label_nodes.get(label, []) if not used[j]]
            k = nxt[0] if nxt else None
        return parts, label

    out = list(t.output)
    for o in out:
        ks = [j for j in label_nodes.get(o, []) if not used[j]]
        if ks:
            parts, end = walk(o, ks[0])
            main.append("·".join(parts))
    for k, n in enumerate(links):
        if used[k]:
            continue
        if len(n.indices) == 0:
            used[k] = True
            scalars.append(n.name)
            continue
        if len(n.indices) == 1:
            used[k] = True
            nxt = [j for j in label_nodes.get(n.indices[0], []) if not used[j]]
            parts = [n.name] + (walk(n.indices[0], nxt[0])[0] if nxt else [])
            scalars.append("(" + "·".join(parts) + ")")
            continue
        parts, _ = walk(n.indices[0], k)
        scalars.append("tr(" + "·".join(parts) + ")")
    deltas = [n for n in nodes if n.kind == "delta"]
    if deltas:
        main.append("delta")
    scalars = [f"{s}^{scalars.count(s)}" if scalars.count(s) > 1 else s for s in dict.fromkeys(sorted(scalars))]
    text = " ".join(scalars + ["⊗".join(main)] if main else scalars)
    return text or "1"


# ------------------------------------------------------------------------------------------------
# several degrees at once
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BasisSet:
    """The union over several multidegrees (``X<=3``): a direct sum, one :class:`Basis` per degree."""

    parts: tuple[Basis, ...]

    @property
    def elements(self) -> tuple[Element, ...]:
        return tuple(e for b in self.parts for e in b.elements)

    @property
    def dimension(self) -> int:
        return sum(b.dimension for b in self.parts)

    @property
    def expected(self) -> int:
        return sum(b.expected for b in self.parts)

    @property
    def candidates(self) -> int:
        return sum(b.candidates for b in self.parts)

    @property
    def unique(self) -> int:
        return sum(b.unique for b in self.parts)


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


# ------------------------------------------------------------------------------------------------
# output forms
# ------------------------------------------------------------------------------------------------

def describe(inputs, output: TensorType, group: str, output_name: str = "Y") -> str:
    """``Hom_O3(S^2(X: sym2) ⊗ v: vec, Y: sym2)`` for a listing's title."""
    parts = []
    for name, t, degrees in inputs:
        ds = sorted(set(degrees))
        if ds == [1]:
            parts.append(f"{name}: {t}")
        elif len(ds) == 1:
            parts.append(f"S^{ds[0]}({name}: {t})")
        else:
            parts.append(f"S^<={ds[-1]}({name}: {t})")
    return f"Hom_{group}({' ⊗ '.join(parts) or '1'}, {output_name}: {output})"


def element_formula(element: Element) -> str:
    """The element's equation right-hand side, in index notation that the parser reads back."""
    return sum_formula(element.terms)


def listing(found: BasisSet, inputs, output: TensorType, group: str, output_name: str = "Y") -> str:
    title = describe(inputs, output, group, output_name)
    lines = [f"{title}: dimension {found.dimension} (character theory: {found.expected}); "
             f"{found.candidates} candidate contractions, {found.unique} distinct"]
    if not found.elements:
        lines.append("The space is empty: no equivariant contraction maps these inputs to this output "
                     f"under {group}.")
    width = max([len(e.words) for e in found.elements] + [0])
    for k, e in enumerate(found.elements):
        lines.append(f"  {k:>3}. {e.words:<{width}}   {_lhs(output_name, e, output)} = {element_formula(e)}")
    return "\n".join(lines) + "\n"


def _lhs(name: str, element: Element, output: TensorType) -> str:
    """``Y[i,j]``: the output's labels as the element's terms write them (channel axes first)."""
    labels = element.terms[0].output if element.terms else tuple(_LABELS[:output.n_geometric])
    return f"{name}[{','.join(labels)}]" if labels else name


def to_json(found: BasisSet, inputs, output: TensorType, group: str, output_name: str = "Y") -> dict:
    return {
        "space": describe(inputs, output, group, output_name),
        "group": group,
        "inputs": [{"name": n, "type": str(t), "degrees": sorted(set(d))} for n, t, d in inputs],
        "output": {"name": output_name, "type": str(output)},
        "dimension": found.dimension,
        "expected": found.expected,
        "candidates": found.candidates,
        "distinct": found.unique,
        "prime": PRIME,
        "basis": [{"index": k, "words": e.words, "formula": element_formula(e), "generator": e.formula,
                   "degrees": dict(zip([n for n, _, _ in inputs], e.degrees))}
                  for k, e in enumerate(found.elements)],
    }


def to_diag(found: BasisSet, inputs, output: TensorType, group: str, output_name: str = "Y",
            name: str = "basis") -> str:
    """A .diag file: the basis as one ordinary diagram (one output per element) and as a ``basis``
    declaration (the same elements stacked on one axis)."""
    lines = [f"# {describe(inputs, output, group, output_name)}",
             f"# dimension {found.dimension} = character-theory count {found.expected}; written by diagc enumerate",
             f"group {group}", ""]
    if found.elements:
        taken = {n for n, _, _ in inputs}
        prefix = output_name
        while any(f"{prefix}{k}" in taken for k in range(len(found.elements))):
            prefix += "_"
        outs = [f"{prefix}{k}" for k in range(len(found.elements))]
        sig = ", ".join(f"{n}: {t}" for n, t, _ in inputs)
        lines.append(f"diagram {name}({sig}) -> ({', '.join(f'{o}: {output}' for o in outs)}) {{")
        for o, e in zip(outs, found.elements):
            lines.append(f"    # {e.words}")
            lines.append(f"    {_lhs(o, e, output)} = {element_formula(e)}")
        lines.append("}")
        lines.append("")
        decl = []
        for n, t, d in inputs:
            ds = sorted(set(d))
            deg = "" if ds == [1] else (f"^{ds[0]}" if len(ds) == 1 else f"^<={ds[-1]}")
            decl.append(f"{n}: {t}{deg}")
        lines.append(f"# the same elements stacked on one axis: shape (..., {found.dimension}, "
                     f"{', '.join([str(c) for c in output.channels] + [str(d) for d in output.geometric_dims])})"
                     .replace(", )", ")"))
        lines.append(f"basis {name}_stacked({', '.join(decl)}) -> {output_name}: {output}")
    else:
        lines.append("# the space is empty: there is nothing to compile")
    return "\n".join(lines) + "\n"
