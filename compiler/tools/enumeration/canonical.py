"""Canonical form and preference order of the candidates.

Two candidates that differ by renaming copies of an input, swapping the legs of a symmetric tensor or
permuting the legs of eps have the same canonical form (:func:`canonical`): one of them is kept. The
kept ones are ordered by :func:`preference`: fewest eps; then the fewest input factors on the part of
the network that carries the output legs (delta before X before X·X: the classical generators); then
the fewest scalar factors (traces, dot products); then the canonical form. Deterministic.
"""

from __future__ import annotations

import itertools

from ...ir.types import TensorType
from .candidates import Candidate, Setup


def _slot_class(t: TensorType, axis: int) -> int:
    return 0 if t.symmetry else axis


def canonical(setup: Setup, cand: Candidate) -> tuple:
    """The canonical form: by paths and cycles when every tensor has rank <= 2, else by search."""
    if setup.chains_only:
        return _canonical_chains(setup, cand)
    return _canonical_search(setup, cand)


def _canonical_chains(setup: Setup, cand: Candidate, output_axes: bool = False) -> tuple:
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


def _canonical_search(setup: Setup, cand: Candidate) -> tuple:
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


def _components(setup: Setup, cand: Candidate):
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


def preference(setup: Setup, cand: Candidate, key) -> tuple:
    comps = _components(setup, cand)
    out_nodes = 0
    scalars = 0
    for comp in comps:
        if -1 in comp:
            out_nodes += sum(1 for o in comp if o >= 0)
        else:
            scalars += 1
    return (1 if cand.eps else 0, out_nodes, scalars, key)


def swap_invariant(setup: Setup, cand: Candidate) -> bool:
    """True if exchanging the two output legs gives the same network (then it is already symmetric)."""
    if not setup.chains_only:
        return False
    swap = {(-1, 0): (-1, 1), (-1, 1): (-1, 0)}
    other = Candidate(tuple((swap.get(a, a), swap.get(b, b)) for a, b in cand.pairs),
                       tuple(swap.get(leg, leg) for leg in cand.eps) if cand.eps else None)
    return _canonical_chains(setup, cand, True) == _canonical_chains(setup, other, True)
