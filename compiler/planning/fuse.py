"""The fused plan: every output component as an explicit polynomial in input components.

For a term ``c × Π nodes`` the component of the output at geometric index values ``g`` is

    Σ_{values of the contracted geometric legs}  c × Π constants(values) × Π inputs[..., values]

Constants (delta, eps, cg, P) are evaluated exactly, so only nonzero products survive: TensorNet's
``M Y + Y M`` becomes 9 components of 51 products in all, the Levi-Civita symbol its six signed terms.
Channel axes stay array axes (each input's channels are broadcast to the output's), so the formulas
are elementwise over batch and channels: one pass over memory once a compiler fuses them
(``torch.compile``), which is the planner's opt-in fused output. A diagram whose terms contract or
reorder a channel axis (channel mixing) has no such form; :func:`fuse_diagram` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from ..ir.program import Diagram, TensorNetwork

#: the most products a fused function may hold (beyond this the planned path is the better code)
MAX_PRODUCTS = 4096
#: the most index assignments the derivation may visit
MAX_ASSIGNMENTS = 2_000_000


@dataclass(frozen=True, order=True)
class Entry:
    """``input[..., <channels>, *component]``: one component of an input, its channel axes placed
    at the output channel positions ``channels`` (the others broadcast)."""

    input: str
    channels: tuple[int, ...]
    component: tuple[int, ...]


@dataclass(frozen=True)
class Monomial:
    """coefficient × Π factors (an empty product is the constant itself)."""

    coefficient: Fraction | float
    factors: tuple[Entry, ...]


@dataclass(frozen=True)
class FusedOutput:
    name: str
    n_channels: int
    geometric: tuple[int, ...]  # sizes of the geometric axes
    spherical: bool  # one axis of 2l+1 (else Cartesian legs of 3)
    components: tuple[tuple[Monomial, ...], ...]  # row-major over the geometric axes


@dataclass(frozen=True)
class FusedPlan:
    """The planner's fused output for one diagram, or the reason there is none."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[FusedOutput, ...] = ()
    reason: str = ""  # why there is no fused form (outputs empty)

    @property
    def products(self) -> int:
        return sum(len(c) for o in self.outputs for c in o.components)


class _NoFusedForm(Exception):
    pass


def fuse_diagram(diagram: Diagram) -> FusedPlan:
    """Every output component of ``diagram`` as a sum of monomials in input components."""
    inputs = tuple(t.name for t in diagram.inputs)
    try:
        outputs = []
        total = 0
        for eq in diagram.equations:
            out_type = eq.type
            n_ch = len(out_type.channels)
            dims = out_type.geometric_dims
            sums: list[dict[tuple, object]] = [dict() for _ in range(_size(dims))]
            for term in eq.terms:
                _expand(term, n_ch, dims, sums)
            components = []
            for acc in sums:
                monomials = tuple(Monomial(_number(c), key) for key, c in sorted(acc.items()) if c != 0)
                components.append(monomials)
                total += len(monomials)
            if total > MAX_PRODUCTS:
                raise _NoFusedForm(f"more than {MAX_PRODUCTS} products")
            if all(all(not m.factors for m in c) for c in components):
                raise _NoFusedForm(f"output '{eq.target}' is a constant")
            outputs.append(FusedOutput(eq.target, n_ch, dims, out_type.family == "sph", tuple(components)))
    except _NoFusedForm as e:
        return FusedPlan(diagram.name, inputs, (), str(e))
    return FusedPlan(diagram.name, inputs, tuple(outputs))


def zero_outputs(diagram: Diagram) -> tuple[str, ...]:
    """The outputs of ``diagram`` that are zero in every component (as a second derivative of a
    linear map gives them: ``dd_X = 0 X``), in order; those of more than MAX_PRODUCTS products or
    with a term that has no component form are not counted."""
    zero = []
    for eq in diagram.equations:
        dims = eq.type.geometric_dims
        sums: list[dict[tuple, object]] = [dict() for _ in range(_size(dims))]
        try:
            for term in eq.terms:
                _expand(term, len(eq.type.channels), dims, sums)
        except _NoFusedForm:
            continue
        if sum(len(acc) for acc in sums) <= MAX_PRODUCTS and all(c == 0 for acc in sums for c in acc.values()):
            zero.append(eq.target)
    return tuple(zero)


def term_components(term: TensorNetwork, n_channels: int, dims: tuple[int, ...]) -> tuple[tuple[Monomial, ...], ...] | str:
    """One term alone as component formulas over ``term.output`` (its first ``n_channels`` labels
    channels, then geometric axes of sizes ``dims``), or the reason it has none."""
    sums: list[dict[tuple, object]] = [dict() for _ in range(_size(dims))]
    try:
        _expand(term, n_channels, dims, sums)
    except _NoFusedForm as e:
        return str(e)
    return tuple(tuple(Monomial(_number(c), key) for key, c in sorted(acc.items()) if c != 0) for acc in sums)


def _size(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def _number(c):
    """A Fraction when rational, else a float (cg and P carry square roots)."""
    if isinstance(c, (int, Fraction)):
        return Fraction(c)
    import sympy

    v = sympy.nsimplify(c) if not isinstance(c, sympy.Basic) else c
    if v.is_Rational:
        return Fraction(int(v.p), int(v.q))
    return float(sympy.N(v, 30))


def _expand(term: TensorNetwork, n_ch: int, dims: tuple[int, ...], sums: list[dict]) -> None:
    """Add the term's monomials to ``sums`` (one dict per output component, keyed by factors)."""
    from ..math.constants import constant_array

    out_channels = term.output[:n_ch]
    out_geometric = term.output[n_ch:]
    kinds = dict(term.kinds)
    constants, entries = [], []
    for node in term.nodes:
        if node.kind == "input":
            ch = node.indices[:node.n_channels]
            if any(i not in out_channels for i in ch):
                raise _NoFusedForm(f"channel axis '{kinds[next(i for i in ch if i not in out_channels)].dim}' "
                                   "is contracted")
            places = tuple(out_channels.index(i) for i in ch)
            if list(places) != sorted(set(places)):
                raise _NoFusedForm("channel axes are repeated or reordered")
            entries.append((node.name, places, node.indices[node.n_channels:]))
        else:
            constants.append((constant_array(node), node.indices))
    labels = [i for i in term.indices() if kinds[i].geometric]
    size = {i: (3 if kinds[i].kind == "cart" else 2 * int(kinds[i].dim) + 1) for i in labels}
    # assign the constants' labels first, so that a zero constant prunes early
    order = list(dict.fromkeys([i for _, idx in constants for i in idx] + labels))
    ready: dict[int, list] = {}  # depth at which all of a constant's labels are assigned
    for table, idx in constants:
        ready.setdefault(max(order.index(i) for i in idx), []).append((table, idx))
    strides = [_size(dims[k + 1:]) for k in range(len(dims))]
    visited = 0

    def visit(depth: int, values: dict, weight) -> None:
        nonlocal visited
        visited += 1
        if visited > MAX_ASSIGNMENTS:
            raise _NoFusedForm("too many index assignments")
        if depth == len(order):
            slot = sum(values[i] * s for i, s in zip(out_geometric, strides))
            key = tuple(sorted(Entry(name, places, tuple(values[i] for i in idx)) for name, places, idx in entries))
            sums[slot][key] = sums[slot].get(key, 0) + weight
            return
        label = order[depth]
        for v in range(size[label]):
            values[label] = v
            w = weight
            for table, idx in ready.get(depth, ()):
                w = w * table[tuple(values[i] for i in idx)]
            if w != 0:
                visit(depth + 1, values, w)
        del values[label]

    visit(0, {}, term.coefficient)
