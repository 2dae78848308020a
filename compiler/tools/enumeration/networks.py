"""A candidate as tensor networks: the matching written as a term, projected onto the output's
symmetry (sym/skew part, minus the trace part), and the basis element with its readable forms."""

from __future__ import annotations

from fractions import Fraction

from ...ir.program import DELTA_TYPE, EPS_TYPE, IndexKind, Node, TensorNetwork
from .candidates import Candidate, Setup
from .canonical import swap_invariant
from .rendering import words
from .request import LABELS, Element


def _network(setup: Setup, cand: Candidate, out_labels, output=None) -> TensorNetwork:
    """The candidate as one term; output leg k carries out_labels[k]; the output's axes are
    ``output`` (default: out_labels in order)."""
    label: dict[tuple[int, int], str] = {}
    for k in range(setup.request.output.rank):
        label[(-1, k)] = out_labels[k]
    taken = set(out_labels) | set(LABELS[:setup.request.output.rank])
    fresh = iter(l for l in list(LABELS) + [f"{c}{n}" for n in range(1, 9) for c in LABELS] if l not in taken)
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


def element_terms(setup: Setup, cand: Candidate) -> list[TensorNetwork]:
    """The candidate projected onto the output's symmetry: sym/skew part, minus the trace part."""
    out = setup.request.output
    labels = tuple(LABELS[:out.rank])
    base = _network(setup, cand, labels)
    if not out.symmetry:
        return [base]
    if out.symmetry != "skew" and swap_invariant(setup, cand):
        terms = [base]
        if out.symmetry == "sym_traceless":
            terms.append(_trace_part(setup, cand, labels))
        return _merge(terms)
    swapped = _network(setup, cand, (labels[1], labels[0]), labels)
    half = Fraction(1, 2)
    sign = -1 if out.symmetry == "skew" else 1
    terms = [_scaled(base, half), _scaled(swapped, sign * half)]
    if out.symmetry == "sym_traceless":
        terms.append(_trace_part(setup, cand, labels))
    return _merge(terms)


def _trace_part(setup: Setup, cand: Candidate, labels: tuple[str, ...]) -> TensorNetwork:
    """-1/3 delta times the trace over the two output legs: what makes a symmetric part traceless."""
    traced = _network(setup, cand, (LABELS[setup.request.output.rank],) * 2)
    nodes = traced.nodes + (Node("delta", "delta", DELTA_TYPE, labels),)
    kinds = traced.kinds + tuple((l, IndexKind("cart", 3)) for l in labels)
    return TensorNetwork(Fraction(-1, 3), nodes, labels, tuple(dict(kinds).items()))


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


def element_of(setup: Setup, cand: Candidate, terms) -> Element:
    base = _network(setup, cand, tuple(LABELS[:setup.request.output.rank]))
    degrees = tuple(spec.degree for spec in setup.request.inputs)
    return Element(tuple(terms), base.formula(), words(base), degrees)
