"""Planning: from checked networks to a sequence of contractions.

* ``delta`` elimination by index identification: delta[i,k] X[k,j] is X[i,j], delta[k,k] is 3;
  only a delta whose two legs are both open stays (it becomes a constant factor).
* like terms combine (same canonical network), zero coefficients vanish;
* each distinct contraction is computed once per function and reused by every term and output
  that needs it (common subexpressions, e.g. the trace in TensorNet's decomposition);
* a free delta is split off its term, so the remaining contraction can be shared;
* the constant subnetwork of a term (cg, P, eps) is folded at compile time into one table, computed
  exactly and rounded once to float64 (a lone eps stays the integer Levi-Civita table);
* a contraction of three or more operands is ordered at compile time (opt_einsum's optimal path at
  reference sizes: batch 4096, channel axes 16, geometric axes their size) and emitted as a fixed
  sequence of pairwise einsums; the emitted code never searches for a path at run time;
* a cost model picks, per contraction, an einsum, a batched ``x @ y`` (matrix-product shapes) or
  unrolled components (eps as its six signed terms, the cross-product form).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from functools import lru_cache
from fractions import Fraction

import numpy as np

from ..math.constants import EPS
from ..math.einsum import letters as index_letters, symbol
from .fuse import FusedPlan, fuse_diagram
from ..ir.program import CONSTANT_TYPE, Diagram, Node, TensorNetwork
from ..ir.types import FixedSize

MAX_LETTERS = 52  # numpy.einsum takes a-z, A-Z


def eliminate_deltas(term: TensorNetwork) -> TensorNetwork:
    """The same term with every delta that touches a contracted index removed by renaming."""
    nodes = list(term.nodes)
    output = list(term.output)
    coefficient = term.coefficient
    changed = True
    while changed:
        changed = False
        for k, node in enumerate(nodes):
            if node.kind != "delta":
                continue
            a, b = node.indices
            if a == b:  # delta[k,k] = 3
                coefficient *= 3
            elif b not in output:
                nodes = _rename(nodes, b, a)
            elif a not in output:
                nodes = _rename(nodes, a, b)
            else:
                continue
            del nodes[k]
            changed = True
            break
    used = {i for n in nodes for i in n.indices} | set(output)
    kinds = tuple((i, k) for i, k in term.kinds if i in used)
    return TensorNetwork(coefficient, tuple(nodes), tuple(output), kinds, term.pos)


def _rename(nodes: list[Node], old: str, new: str) -> list[Node]:
    return [replace(n, indices=tuple(new if i == old else i for i in n.indices)) for n in nodes]


def combine(terms) -> list[TensorNetwork]:
    """Sum the coefficients of terms with the same canonical network; drop those that cancel."""
    groups: dict[tuple, list[TensorNetwork]] = {}
    for t in terms:
        groups.setdefault(t.shape_key(), []).append(t)
    result = []
    for same in groups.values():
        total = sum((t.coefficient for t in same), Fraction(0))
        if total != 0:
            first = same[0]
            result.append(TensorNetwork(total, first.nodes, first.output, first.kinds, first.pos))
    return result


#: reference sizes for the compile-time cost estimate (flops of one call)
BATCH_SIZE = 4096
CHANNEL_SIZE = 16


@dataclass(frozen=True)
class Contraction:
    """``var = einsum(spec, *operands)``; operands are input names, earlier vars, or 'eps' / 'eye'."""

    var: str
    spec: str
    operands: tuple[str, ...]
    cost: int = 0  # estimated flops at the reference sizes

    @property
    def blas(self) -> bool:
        """A matrix product in disguise: numpy's optimize=True sends it to BLAS; so does a sum over
        the batch axes (a batch sum's last step: numpy's plain einsum refuses '...' summed)."""
        lhs, out = self.spec.split("->")
        return _gemm_like(self.spec) or ("..." in lhs and "..." not in out)

    @property
    def broadcast(self) -> bool:
        """Nothing summed: a broadcast multiply beats einsum's loops."""
        return len(self.operands) > 1 and broadcast_indexes(self.spec) is not None

    @property
    def dot(self) -> "Dot | None":
        """A batched dot product (``...ac,...ca->...a``): see ``dot_indexes``."""
        return dot_indexes(self.spec) if len(self.operands) == 2 else None


@dataclass(frozen=True)
class Matmul:
    """``var = x @ y`` over the last two axes (leading axes broadcast), either side transposed first:
    the cost model's choice for a pairwise contraction shaped like a batched matrix product."""

    var: str
    operands: tuple[str, str]
    transpose: tuple[bool, bool]
    cost: int = 0
    spec: str = ""


@dataclass(frozen=True)
class FlatMatmul:
    """``var = w @ x`` with x's last ``n`` axes flattened into one and restored after, w possibly
    transposed: channel mixing W[d,a] X[d,i,j] as one batched matrix product per row, which BLAS
    runs faster than einsum and which writes straight into an output buffer."""

    var: str
    operands: tuple[str, str]  # (w, x)
    transpose: bool  # w is stored [d, a]: multiply by its transpose
    n: int  # trailing axes of x kept (flattened for the product)
    cost: int = 0
    spec: str = ""


@dataclass(frozen=True)
class Product:
    """One product of operands sliced at fixed components: coefficient × einsum(spec, *slices)
    (the coefficient is ±1 for eps, a table entry for a folded constant)."""

    coefficient: int | float
    spec: str
    slices: tuple[tuple[str, tuple], ...]  # (operand, index per axis after '...': int or None)


@dataclass(frozen=True)
class Unrolled:
    """``var`` from its components: a constant (eps, or a folded table) written as its nonzero
    entries, one Product list per component of the constant's open legs; the components are stacked
    on trailing axes, then moved to ``destination``."""

    var: str
    operands: tuple[str, ...]
    cells: tuple[tuple[Product, ...], ...]  # row-major over the constant's open legs
    open_dims: tuple[int, ...]  # sizes of the constant's open legs (the stacked axes)
    source: tuple[int, ...]  # moveaxis source positions (negative) ...
    destination: tuple[int, ...]  # ... and destinations, empty when already in place
    #: per axis of the result after its batch axes: which of the constant's open legs it is (its
    #: place in ``open_dims``), None for an axis of the arrays (what a component's view fixes)
    open_at: tuple[int | None, ...]
    cost: int = 0
    spec: str = ""


@dataclass(frozen=True)
class Combination:
    """``var = Σ coefficient × term``: the sum of the other factors of terms that share a linear
    factor, taken before the one contraction with it (``W (C - Cᵀ)``: the transpose difference,
    then one channel matmul). ``terms`` are Scaled vars of earlier steps, of one shape."""

    var: str
    terms: tuple["Scaled", ...]
    cost: int = 0
    spec: str = ""

    @property
    def operands(self) -> tuple[str, ...]:
        return tuple(t.var for t in self.terms)


@dataclass(frozen=True)
class Scaled:
    """``coefficient × var``, optionally times delta on the axes named by ``eye_spec``."""

    coefficient: Fraction
    var: str | None  # None: the term is made of free deltas only
    eye_spec: str | None = None  # einsum spec multiplying var by free deltas, e.g. '...c,ij->...cij'


@dataclass(frozen=True)
class AxisSize:
    """The size of an output channel axis: axis ``axis`` (negative) of input ``input``."""

    input: str
    axis: int


@dataclass(frozen=True)
class OutputPlan:
    name: str
    terms: tuple[Scaled, ...]
    channels: tuple[AxisSize, ...] = ()  # where each channel axis's size comes from
    geometric: tuple[int, ...] = ()  # the geometric axes' sizes


@dataclass(frozen=True)
class Layout:
    """``var``: a contiguous copy of ``operand`` with its axes permuted by ``spec`` (channel axes
    last), so that a contraction over the batch and geometric axes reads it as one matrix."""

    var: str
    operand: str
    spec: str


@dataclass(frozen=True)
class BatchSum:
    """A derivative's output that is summed to an input without batch axes (a weight shared by the
    batch), planned as contractions over the batch axes too: W's cotangent ``A[c,i,j] d_B[d,i,j]``
    summed over the batch is one matrix product of (c, batch·9) by (batch·9, d), where the general
    path would build a (batch, c, d) temporary and sum it. ``output.terms`` refer to the vars of
    ``contractions`` (Layout copies of the operands with their channel axes last, then contractions
    whose specs have no '...' on their output); ``input`` is the input it is summed to.
    Used only when that input has no batch axes at run time (the planned code of the diagram runs
    otherwise); a target runs ``rest`` for the other outputs."""

    output: OutputPlan
    input: str
    contractions: tuple[Layout | Contraction, ...]


@dataclass(frozen=True)
class BatchRest:
    """A derivative's outputs not summed to a weight, computed in the function of its batch sums
    when each is channel mixing of an input (FlatMatmul steps, no fused form): each mixed input is
    read through a view (a permuting Contraction, no copy) of its channels-last copy (Layout), the
    one the batch sums made where they read it (d_B in ``d_A = W[c,d] d_B[d,i,j]`` and ``d_W =
    A[c,i,j] d_B[d,i,j]``), so each input is laid out once for all the outputs; the product then
    needs no copy of its own."""

    outputs: tuple[OutputPlan, ...]
    contractions: tuple[Layout | Contraction | FlatMatmul, ...]


@dataclass(frozen=True)
class FunctionPlan:
    """Everything code generation needs for one diagram."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[OutputPlan, ...]
    contractions: tuple[Contraction, ...]
    constants: tuple[str, ...]  # tables used: 'eps', 'eye', folded constants
    stack_axis: int | None = None  # stack the outputs on this (negative) axis
    tables: tuple[tuple[str, tuple], ...] = ()  # folded constant tables: (name, nested values)
    trailing: tuple[tuple[str, int], ...] = ()  # (input, its number of channel + geometric axes)
    fused: FusedPlan | None = None  # the opt-in fused form: every component as one formula
    prefer_unrolled: bool = False  # the cost model: fresh results from the fused formulas, run eagerly
    #: a derivative's outputs summed over the batch inside their contractions (see BatchSum), and
    #: the plan of the other outputs (None when every output is such a sum)
    batch_sums: tuple[BatchSum, ...] = ()
    rest: "FunctionPlan | None" = None
    #: elements of each input, step and output at the reference sizes (what --explain's bytes and
    #: temporaries are counted from)
    elements: tuple[tuple[str, int], ...] = ()
    #: the other outputs computed with the batch sums, from the same copies (then ``rest`` is None)
    batch_rest: BatchRest | None = None


def plan_diagram(diagram: Diagram) -> FunctionPlan:
    contractions: dict[tuple, list] = {}
    outputs = []
    folded: dict[str, tuple] = {}
    elements: dict[str, int] = {t.name: _type_elements(t.type) for t in diagram.inputs}
    channel_outer: set[str] = set()  # broadcast steps that spread an operand over a channel axis
    weights = frozenset(t.name for t in diagram.inputs if t.type.family == "weight")

    def plan_core(core: TensorNetwork) -> str:
        """The var of a delta-free network's contraction (shared with every equal one)."""
        core = _fold_constants(core, folded)
        spec, operands, sizes = _einsum(core)
        spec, operands = _shared_traces(spec, operands, sizes, contractions)
        key = (spec, operands)
        if key not in contractions:
            var = f"_t{len(contractions)}"
            unrolled = _unrolled(var, spec, operands, sizes, folded)
            if unrolled is not None:
                contractions[key] = [unrolled]
            else:
                letters = _letters(core)
                geometric = {letters[i] for i, k in core.kinds if i in letters and k.geometric}
                contractions[key] = shared_steps(_ordered(Contraction(var, spec, operands), sizes),
                                                 sizes, frozenset(geometric), diagram.in_runs)
                channels = {letters[i] for i, k in core.kinds if i in letters and k.kind == "channel"}
                channel_outer.update(c.var for c in contractions[key] if _spreads_channels(c, channels))
            for c in contractions[key]:
                if c.var not in elements:  # a shared step is counted where it was first planned (its letters)
                    elements[c.var] = _elements(c.spec, sizes)
        return contractions[key][-1].var

    steps_seen: dict[tuple, Contraction] = {}

    def shared_steps(chain: list[Contraction], sizes: dict, geometric: frozenset, in_runs: bool) -> list:
        """The chain's pairwise steps, each one equal to an earlier step up to its letters (the
        same broadcast s[c] C[c,i,j] that two terms need) replaced by that step; ``in_runs`` (a
        diagram run on cache-sized runs of edges) a small sum over ``geometric`` letters written out."""
        result, alias = [], {}
        for c in chain:
            c = replace(c, operands=tuple(alias.get(o, o) for o in c.operands))
            key = (_canonical_spec(c.spec), c.operands)
            if key in steps_seen:
                alias[c.var] = steps_seen[key].var
                result.append(steps_seen[key])
                continue
            step = _unit_sum(c, sizes) or _as_matmul(c, weights)
            if in_runs and step is c and not any(o in ("eps", "eye") or o in folded for o in c.operands):
                step = _small_sum(c, sizes, geometric) or c
            steps_seen[key] = step
            result.append(step)
        return result

    def plan_factored(item: Factored) -> tuple[Fraction, str]:
        """(coefficient, var) of node · Σ rests (item's own coefficient apart), the rests factored in
        turn (``w u a + w u b``: ``u (w (a + b))``, one full-size product where the terms as written
        make two and a sum)."""
        parts = []
        for rest in factor_linear(item.rests):
            if isinstance(rest, Factored):
                coefficient, var = plan_factored(rest)
                parts.append(Scaled(rest.coefficient * coefficient, var, None))
            else:
                parts.append(Scaled(rest.coefficient, plan_core(replace(rest, coefficient=Fraction(1))), None))
        parts = tuple(parts)
        if len(parts) == 1:  # the rests made one product: node · that product
            return parts[0].coefficient, plan_core(item.network(parts[0].var))
        if ("combination", parts) not in contractions:
            contractions[("combination", parts)] = [Combination(
                f"_t{len(contractions)}", parts, item.combination_cost, _combination_spec(item))]
            elements[contractions[("combination", parts)][0].var] = elements[parts[0].var]
        return Fraction(1), plan_core(item.network(contractions[("combination", parts)][0].var))

    reduced_eqs = [[eliminate_deltas(t) for t in eq.terms] for eq in diagram.equations]
    combined_eqs = [combine(r) for r in reduced_eqs]
    for k, (eq, reduced, terms) in enumerate(zip(diagram.equations, reduced_eqs, combined_eqs)):
        if not terms:  # everything cancels: zero, with the shape and dtype of a term
            first = reduced[0]
            terms = [TensorNetwork(Fraction(0), first.nodes, first.output, first.kinds, first.pos)]
        elsewhere = {t.shape_key() for j, other in enumerate(combined_eqs) if j != k for t in other}
        scaled = []
        for item in factor_linear(terms, elsewhere):
            if isinstance(item, Factored):
                coefficient, var = plan_factored(item)
                scaled.append(Scaled(item.coefficient * coefficient, var, None))
                continue
            term = item
            core, free_deltas = _split_free_deltas(term)
            if not term.nodes:  # a number alone
                scaled.append(Scaled(term.coefficient, None, None))
                continue
            if not core.nodes:  # a product of deltas alone: a constant
                letters = _letters(term)
                spec = ",".join(letters[a] + letters[b] for a, b in free_deltas) + "->" + "".join(
                    letters[i] for i in term.output)
                scaled.append(Scaled(term.coefficient, None, spec))
                continue
            var = plan_core(core)
            eye_spec = None
            if free_deltas:
                eye_spec = _eye_spec(core.output, free_deltas, term.output, term)
            scaled.append(Scaled(term.coefficient, var, eye_spec))
        out_type = next(t.type for t in diagram.outputs if t.name == eq.target)
        outputs.append(OutputPlan(eq.target, tuple(scaled), _channel_sizes(out_type, diagram.inputs),
                                  out_type.geometric_dims))
        elements[eq.target] = _type_elements(out_type)
    outputs = _fold_signs(outputs, contractions)
    steps = list({id(step): step for chain in contractions.values() for step in chain}.values())
    used = []
    for c in steps:
        used += [o for o in c.operands if o == "eps" or o in folded]
    if any(s.eye_spec for o in outputs for s in o.terms):
        used.append("eye")
    batch = _batch_sums(diagram, folded)
    used += [o for b in batch[0] for c in b.contractions if isinstance(c, Contraction)
             for o in c.operands if o == "eps" or o in folded]
    fused = fuse_diagram(diagram)
    stack_axis = None
    if diagram.stacked:
        stack_axis = -(diagram.outputs[0].type.n_geometric + len(diagram.outputs[0].type.channels)) - 1
    return FunctionPlan(
        diagram.name,
        tuple(t.name for t in diagram.inputs),
        tuple(outputs),
        tuple(steps),
        tuple(dict.fromkeys(sorted(used))),
        stack_axis,
        tuple(sorted(folded.items())),
        tuple((t.name, len(t.type.channels) + t.type.n_geometric) for t in diagram.inputs),
        fused,
        _prefer_unrolled([c for c in steps if c.var not in channel_outer], fused),
        *batch[:2],
        tuple(elements.items()),
        batch[2],
    )


@dataclass(frozen=True)
class Factored:
    """Terms of one output that share a linear factor: coefficient × nodes · Σ rests, where each
    rest is a term without those nodes (its coefficient kept), all with the open labels ``labels``
    (the nodes' labels they carry, then the output's). ``nodes`` is one input node the terms share
    (``W C - W Cᵀ``), or every node but one when the terms differ in one input alone (``d u x +
    d u y``: the rests are the inputs x, y, summed once before the shared product)."""

    coefficient: Fraction
    nodes: tuple[Node, ...]
    rests: tuple[TensorNetwork, ...]
    labels: tuple[str, ...]
    output: tuple[str, ...]
    kinds: tuple
    pos: object
    combination_cost: int
    #: the type of the node standing for the planned sum of the rests (planning reads its labels:
    #: the varying input's type for a complement group, the shared node's otherwise, as in the cost)
    rest_type: object

    def network(self, var: str) -> TensorNetwork:
        """nodes · var, var the planned sum of the rests."""
        summed = Node("input", var, self.rest_type, self.labels)
        return TensorNetwork(Fraction(1), self.nodes + (summed,), self.output, self.kinds, self.pos)


def _combination_spec(f: Factored) -> str:
    letters = index_letters(list(f.labels))
    return "..." + "".join(letters[i] for i in f.labels)


def _type_elements(typ) -> int:
    """Elements of a tensor of this type at the reference sizes (batch, channels)."""
    batch = 1 if typ.family == "weight" else BATCH_SIZE
    channels = int(np.prod([_channel_size(c) for c in typ.channels], dtype=int))
    return batch * channels * int(np.prod(typ.geometric_dims, dtype=int))


def _elements(spec: str, sizes: dict[str, int]) -> int:
    """Elements of a step's result at the reference sizes."""
    out = spec.split("->")[1]
    n = BATCH_SIZE if out.startswith("...") else 1
    for ch in out.replace("...", ""):
        n *= sizes[ch]
    return n


def _is_permutation(spec: str) -> bool:
    """A one-operand einsum that only reorders axes (a view)."""
    lhs, out = spec.split("->")
    return "," not in lhs and sorted(lhs) == sorted(out) and len(set(lhs.replace("...", ""))) == len(lhs.replace("...", ""))


def _canonical_spec(spec: str) -> str:
    """The einsum spec with its letters renamed by first appearance: equal for equal contractions."""
    names: dict[str, str] = {}
    out = []
    for ch in spec.replace("...", "\0"):
        if ch.isalpha():
            ch = names.setdefault(ch, symbol(len(names)))
        out.append(ch)
    return "".join(out).replace("\0", "...")


def _network_cost(term: TensorNetwork) -> int:
    """Multiply-adds of a delta-free network at the reference sizes, in opt_einsum's order; an
    input alone (its transpose, a view) costs nothing."""
    core, _ = _split_free_deltas(term)
    if not core.nodes:
        return 0
    spec, operands, sizes = _einsum(_fold_constants(core, {}))
    lhs, out = spec.split("->")
    if len(operands) == 1 and sorted(lhs) == sorted(out):
        return 0
    sizes = dict(sizes, Z=BATCH_SIZE)
    total = 0
    for step in _ordered(Contraction("_", spec, operands), sizes) if len(operands) > 2 else \
            [Contraction("_", spec, operands)]:
        step_lhs, step_out = step.spec.replace("...", "Z").split("->")
        total += int(_flops(step_lhs.split(","), step_out, sizes))
    return total


def factor_linear(terms, elsewhere=frozenset()) -> list:
    """The terms of one output with each group that shares a linear factor written as one
    :class:`Factored` (``W[c,d] C[c,i,j] - W[c,d] C[c,j,i]`` is ``W[c,d] (C - Cᵀ)[c,i,j]``: one
    channel matmul after a transpose difference, where the terms as written make two; ``g M Y +
    g Y M`` is ``g (M Y + Y M)``: one broadcast of g). A factor is an input node carried by two or
    more terms at the same output labels (its summed labels renamed alike); a group is factored
    only when its terms are computed for this output alone (``elsewhere``: the networks other
    outputs use, which stay shared) and the estimated multiply-adds drop; of the groups, the one whose
    multiply-adds drop most first (``u w a + u w b``: u taken out over a sum of ``w a`` and ``w b``
    of the channel axis alone, not w over a sum of full-size ``u a``). Terms with free deltas
    stay as they are."""
    terms = list(terms)
    result: list = []
    while True:
        best = None
        candidates: dict = {}
        for k, term in enumerate(terms):
            if len(term.nodes) < 2 or any(n.kind == "delta" for n in term.nodes) or term.shape_key() in elsewhere:
                continue
            for j, node in enumerate(term.nodes):
                if node.kind != "input":
                    continue
                seen: dict = {}
                pattern = tuple(i if i in term.output else ("summed", seen.setdefault(i, len(seen)))
                                for i in node.indices)
                key = (node.name, pattern)
                if k not in [m for m, _ in candidates.get(key, [])]:
                    candidates.setdefault(key, []).append((k, j))
        for key, members in candidates.items():
            if len(members) < 2:
                continue
            group = _factor_group(terms, members)
            if group is not None and (best is None or group[2] > best[2]):
                best = group
        for group in _complement_groups(terms, elsewhere):
            if best is None or group[2] > best[2]:
                best = group
        if best is None:
            break
        factored, used, _ = best
        result.append(factored)
        terms = [t for k, t in enumerate(terms) if k not in used]
    return result + terms


def _factor_group(terms, members):
    """(Factored, indices of its terms, multiply-adds saved) for terms sharing the node at ``members`` ((term, node)
    positions), or None when their rests do not have one set of open labels, a rest is empty or
    the estimated cost does not drop."""
    ref_term, ref_node = terms[members[0][0]], terms[members[0][0]].nodes[members[0][1]]
    kinds = dict(ref_term.kinds)
    rests, used, labels = [], [], None
    # fresh names: a rest factored in turn carries the names of the level above as open labels
    taken = {i for k, _ in members for i in terms[k].indices()} | {i for k, _ in members for i in terms[k].output}
    fresh = (name for name in (f"_f{m}" for m in itertools.count()) if name not in taken)
    for n, (k, j) in enumerate(members):
        term = terms[k]
        node = term.nodes[j]
        # rename the term's summed labels apart, then the node's summed labels to the reference's
        summed = [i for i in term.indices() if i not in term.output]
        mapping = {i: next(fresh) for i in summed}
        for mine, ref in zip(node.indices, ref_node.indices):
            if mine not in term.output:
                mapping[mine] = ref
        nodes = [replace(x, indices=tuple(mapping.get(i, i) for i in x.indices)) for x in term.nodes]
        for i, kind in term.kinds:
            kinds.setdefault(mapping.get(i, i), kind)
        rest = tuple(x for m, x in enumerate(nodes) if m != j)
        if not rest:
            return None
        rest_labels = {i for x in rest for i in x.indices}
        open_labels = tuple(dict.fromkeys([i for i in ref_node.indices if i in rest_labels]
                                          + [i for i in term.output if i in rest_labels]))
        if any(i not in term.output and i not in rest_labels for i in ref_node.indices):
            return None  # a label summed on the node alone (its own trace)
        if labels is None:
            labels = open_labels
        elif set(open_labels) != set(labels):
            return None
        rests.append((term.coefficient, rest))
        used.append(k)
    # the common coefficient magnitude of the group is taken out (one scale of the result)
    common = min(abs(c) for c, _ in rests)
    all_kinds = tuple(kinds.items())
    nets = tuple(TensorNetwork(c / common, rest, labels, tuple((i, kinds[i]) for i in dict.fromkeys(
        [i for x in rest for i in x.indices] + list(labels))), ref_term.pos) for c, rest in rests)
    size = BATCH_SIZE * int(np.prod([_reference_size(kinds[i]) for i in labels]))
    combination_cost = size * (len(nets) - 1)
    factored = Factored(common, (ref_node,), nets, labels, ref_term.output,
                        tuple((i, k) for i, k in all_kinds), ref_term.pos, combination_cost, ref_node.type)
    # as written: each term contracted, then the terms summed into the output
    out_size = BATCH_SIZE * int(np.prod([_reference_size(kinds[i]) for i in ref_term.output]))
    before = sum(_network_cost(terms[k]) for k in used) + out_size * (len(used) - 1)
    after = sum(_network_cost(r) for r in nets) + combination_cost + _network_cost(
        TensorNetwork(Fraction(1), (ref_node, Node("input", "_r", ref_node.type, labels)), ref_term.output,
                      factored.kinds, ref_term.pos))
    if after >= before:
        return None
    return factored, used, before - after


def _canonical_order(term: TensorNetwork, skip: int) -> list[int]:
    """The positions of the term's nodes but ``skip``, sorted by kind, name and type (ties in the
    order written): terms that list one product's factors in different orders list them alike."""
    return sorted((k for k in range(len(term.nodes)) if k != skip),
                  key=lambda k: (term.nodes[k].kind, term.nodes[k].name, str(term.nodes[k].type)))


def _canonical_labels(term: TensorNetwork, order: list[int], skip: int) -> dict:
    """The term's labels numbered by first appearance over its nodes in ``order``, node ``skip`` last
    (the output's labels keep their names): equal numbering, equal network up to that node."""
    names: dict = {i: i for i in term.output}
    for node in [term.nodes[k] for k in order] + [term.nodes[skip]]:
        for i in node.indices:
            if i not in names:
                names[i] = ("summed", len(names))
    return names


def _complement_groups(terms, elsewhere=frozenset()) -> list:
    """(Factored, indices of its terms, multiply-adds saved) for each set of terms that differ in one
    input node alone, with the same labels (``d[c,k] u[k] x[c] + u[k] d[c,k] y[c]``): the other
    nodes times the sum of those inputs (``(d u)[c] (x + y)[c]``: one product with the inputs' sum
    where the terms make one each and a sum), when the multiply-adds drop. The other nodes are
    compared in a canonical order (_canonical_order), so the factors may be written in any order;
    one input appearing twice in a term is compared in the order written."""
    groups: dict = {}
    for k, term in enumerate(terms):
        if len(term.nodes) < 2 or any(n.kind == "delta" for n in term.nodes) or term.shape_key() in elsewhere:
            continue
        for j, node in enumerate(term.nodes):
            if node.kind != "input" or len(set(node.indices)) != len(node.indices):
                continue
            order = _canonical_order(term, j)
            names = _canonical_labels(term, order, j)
            common = tuple((term.nodes[m].kind, term.nodes[m].name, str(term.nodes[m].type),
                            tuple(names[i] for i in term.nodes[m].indices)) for m in order)
            key = (common, str(node.type), tuple(names[i] for i in node.indices), term.output)
            groups.setdefault(key, []).append((k, j, order, names))
    found = []
    for key, members in groups.items():
        if len(members) < 2 or len({k for k, *_ in members}) < len(members) \
                or len({terms[k].nodes[j].name for k, j, *_ in members}) < len(members):
            continue
        k0, j0, order0, ref_names = members[0]
        ref = terms[k0]
        back = {v: i for i, v in ref_names.items()}
        kinds = dict(ref.kinds)
        labels = ref.nodes[j0].indices
        rests = []
        for k, j, _, names in members:
            node = terms[k].nodes[j]
            renamed = replace(node, indices=tuple(back[names[i]] for i in node.indices))
            rests.append((terms[k].coefficient, renamed))
        common_coefficient = min(abs(c) for c, _ in rests)
        label_kinds = tuple((i, kinds[i]) for i in labels)
        nets = tuple(TensorNetwork(c / common_coefficient, (node,), labels, label_kinds, ref.pos) for c, node in rests)
        shared = tuple(ref.nodes[m] for m in sorted(order0))
        size = BATCH_SIZE * int(np.prod([_reference_size(kinds[i]) for i in labels]))
        combination_cost = size * (len(nets) - 1)
        factored = Factored(common_coefficient, shared, nets, labels, ref.output, tuple(kinds.items()), ref.pos,
                            combination_cost, ref.nodes[j0].type)
        used = [k for k, *_ in members]
        out_size = BATCH_SIZE * int(np.prod([_reference_size(kinds[i]) for i in ref.output]))
        before = sum(_network_cost(terms[k]) for k in used) + out_size * (len(used) - 1)
        after = combination_cost + _network_cost(
            TensorNetwork(Fraction(1), shared + (Node("input", "_r", ref.nodes[j0].type, labels),), ref.output,
                          tuple(kinds.items()), ref.pos))
        if after < before:
            found.append((factored, used, before - after))
    return found


def _channel_size(channel) -> int:
    """The cost model's size of a channel axis: its own when it has one (an irreps multiplicity,
    ``weight[4,1,4]``), else CHANNEL_SIZE."""
    return channel.size if isinstance(channel, FixedSize) else CHANNEL_SIZE


def _reference_size(kind) -> int:
    """The cost model's size of an index: a channel axis's (:func:`_channel_size`), a Cartesian leg
    3, a spherical leg 2l + 1."""
    if kind.kind == "channel":
        return _channel_size(kind.dim)
    return 3 if kind.kind == "cart" else 2 * int(kind.dim) + 1


#: suffix of the plan of a derivative's other outputs (FunctionPlan.rest)
REST_SUFFIX = "_batchrest"


def _batch_sums(diagram: Diagram, folded: dict):
    """For a derivative diagram (``sum_to``): each output summed to a weight input as a BatchSum
    (its every term planned with the batch as one more summed index, see :func:`_batch_summed`;
    one channels-last copy per operand and layout for all of them); the plan of the remaining
    outputs, or those outputs as a BatchRest reading the same copies (see :func:`_batch_rest`).
    ((), None, None) when no output qualifies."""
    if not diagram.sum_to:
        return (), None, None
    types = {t.name: t.type for t in diagram.inputs}
    sums, kept = [], []
    layouts: dict = {}  # (scope, operand, permutation) -> Layout: an input's shared by every sum
    for k, (eq, target) in enumerate(zip(diagram.equations, diagram.sum_to)):
        terms = combine(eliminate_deltas(t) for t in eq.terms)
        planned = None
        if types[target].family == "weight" and terms:
            trial = dict(layouts)  # kept only when the whole sum is planned (its steps make them)
            planned = _batch_summed(terms, folded, trial, (k,), types)
            if planned is not None:
                layouts = trial
        if planned is None:
            kept.append(k)
            continue
        contractions, scaled = planned
        out_type = diagram.outputs[k].type
        output = OutputPlan(eq.target, tuple(scaled), _channel_sizes(out_type, diagram.inputs), out_type.geometric_dims)
        sums.append(BatchSum(output, target, tuple(contractions)))
    if not sums:
        return (), None, None
    rest = None
    if kept:
        rest = plan_diagram(replace(diagram, name=diagram.name + REST_SUFFIX,
                                    outputs=tuple(diagram.outputs[k] for k in kept),
                                    equations=tuple(diagram.equations[k] for k in kept),
                                    sum_to=()))
        shared = _batch_rest(rest, layouts)
        if shared is not None:
            return tuple(sums), None, shared
    return tuple(sums), rest, None


def _batch_rest(rest: "FunctionPlan", layouts: dict) -> BatchRest | None:
    """``rest`` (a derivative's outputs not summed to a weight) as a BatchRest when each of its
    steps is channel mixing ``w @ x`` of two inputs (a FlatMatmul: its x is copied channels-last
    to be one matrix) and it has no fused form: x read through a view of the Layout that
    ``layouts`` holds for it (the batch sums' copy; made here when they have none). None otherwise."""
    if rest.fused is not None and rest.fused.outputs or rest.stack_axis is not None or rest.batch_sums \
            or rest.constants or rest.prefer_unrolled or not rest.contractions:
        return None
    trailing = dict(rest.trailing)
    if not all(isinstance(c, FlatMatmul) and all(o in trailing for o in c.operands)
               and trailing[c.operands[1]] == c.n + 1 for c in rest.contractions):
        return None
    steps: list = []
    views: dict = {}
    for c in rest.contractions:
        x = c.operands[1]
        if x not in views:  # x[d, T...] viewed from its copy laid out as [T..., d]
            letters = "".join(chr(ord("a") + k) for k in range(c.n + 1))
            var = _layout(layouts, steps, x, "..." + letters, "..." + letters[1:] + letters[0])
            views[x] = Contraction(f"_v{len(views)}", f"...{letters[1:] + letters[0]}->...{letters}", (var,))
            steps.append(views[x])
        steps.append(replace(c, operands=(c.operands[0], views[x].var)))
    return BatchRest(rest.outputs, tuple(steps))


@dataclass(frozen=True)
class KeptCopy:
    """A contiguous copy of input ``input`` (its position) with its trailing axes (channel and
    geometric, after the batch axes) in the order ``axes``, which a function's planned code makes
    (the x of a FlatMatmul: channel mixing copies x channels-last) and its derivative's batch sums
    make again (a Layout of the same input and permutation). Where autograd records the function,
    the runtime makes the copy once before the forward and hands a view of it to both (the view is
    already in the copy's order, so neither copies it again)."""

    input: int
    axes: tuple[int, ...]


def kept_copies(forward: FunctionPlan, vjp: FunctionPlan) -> tuple[KeptCopy, ...]:
    """The channels-last copies that ``forward``'s planned code makes of its inputs (each FlatMatmul
    whose x is an input with the product's axis its first trailing axis, when no fused form runs)
    and that ``vjp`` (its derivative, whose first inputs are ``forward``'s) lays out the same way
    in its batch sums or BatchRest (Layout)."""
    if forward.fused is not None and forward.fused.outputs or forward.prefer_unrolled or not vjp.batch_sums:
        return ()
    trailing = dict(forward.trailing)
    made = {}
    for c in forward.contractions:
        x = c.operands[1] if isinstance(c, FlatMatmul) else None
        if x in forward.inputs and trailing.get(x) == c.n + 1:
            made[x] = tuple(range(1, c.n + 1)) + (0,)  # the channel axis moved last
    laid = set()
    steps = [m for s in vjp.batch_sums for m in s.contractions]
    steps += list(vjp.batch_rest.contractions) if vjp.batch_rest is not None else []
    for m in steps:
        if isinstance(m, Layout) and m.operand in made:
            part, target = m.spec.split("->")
            letters, moved = part[3:], target[3:]
            laid.add((m.operand, tuple(letters.index(ch) for ch in moved)))
    return tuple(KeptCopy(forward.inputs.index(x), axes) for x, axes in made.items() if (x, axes) in laid)


def _layout(layouts: dict, steps: list, operand: str, part: str, target: str, scope: tuple = ()) -> str:
    """The var of ``operand`` (axes ``part``) copied contiguous with its axes in ``target``'s order:
    the Layout in ``layouts`` with that permutation (and ``scope``), else a new one, appended to
    ``steps``."""
    letters, moved = part[3:], target[3:]
    key = (scope, operand, tuple(letters.index(ch) for ch in moved))
    if key not in layouts:
        layouts[key] = Layout(f"_l{len(layouts)}", operand, f"{part}->{target}")
        steps.append(layouts[key])
    return layouts[key].var


def _batch_summed(terms, folded: dict, layouts: dict, scope: tuple = (), inputs=()):
    """The terms of a weight's cotangent with the batch summed inside their contractions: per term,
    its constants folded, each input's own trace taken first, then the pairwise steps of
    opt_einsum's order with the batch as one more index (the batch survives every step but the
    last); the last step, which sums the batch, reads channels-last contiguous copies (Layout) of
    its two operands, so it is one matrix product of (channels, batch x geometric) by its transpose
    shape where the general path would build a (batch, c, d) temporary per product and sum it.
    ``layouts`` holds the copies made so far: an input's is shared with the other sums (each made
    once, where it is first read); the copy of a step of this sum is keyed by ``scope`` too (the
    sums' step names repeat). (contractions, Scaled terms), or None when a term has no input or no
    delta-free form."""
    steps: list = []
    scaled = []
    for k, term in enumerate(terms):
        if any(node.kind == "delta" for node in term.nodes) or not any(node.kind == "input" for node in term.nodes):
            return None
        core = _fold_constants(term, folded)
        spec, operands, sizes = _einsum(core)
        lhs, out = spec.split("->")
        parts, operands = lhs.split(","), list(operands)
        channel = {letter for index, letter in _letters(term).items() if not term.kind(index).geometric}
        for j, part in enumerate(parts):  # an input's own trace first
            letters = part.replace("...", "")
            own = [ch for ch in dict.fromkeys(letters) if letters.count(ch) > 1]
            if not own:
                continue
            if any(lhs.count(ch) != letters.count(ch) for ch in own) or not part.startswith("..."):
                return None
            kept_letters = "".join(ch for ch in dict.fromkeys(letters) if ch not in own)
            steps.append(Contraction(f"_s{k}_tr{j}", f"{part}->...{kept_letters}", (operands[j],)))
            operands[j], parts[j] = steps[-1].var, "..." + kept_letters
        spec = ",".join(parts) + "->" + out.replace("...", "")
        var = f"_s{k}"
        chain = _ordered(Contraction(var, spec, tuple(operands)), sizes) if len(operands) > 2 \
            else [Contraction(var, spec, tuple(operands))]
        *early, last = chain
        steps += early
        last_lhs, last_out = last.spec.split("->")
        moved, new_parts = [], []
        for part, operand in zip(last_lhs.split(","), last.operands):
            if not part.startswith("..."):  # a constant table
                moved.append(operand)
                new_parts.append(part)
                continue
            letters = part[3:]
            target = "..." + "".join(ch for ch in letters if ch not in channel) + \
                "".join(ch for ch in letters if ch in channel)
            moved.append(operand if target == part else
                         _layout(layouts, steps, operand, part, target, () if operand in inputs else scope))
            new_parts.append(target)
        steps.append(Contraction(var, ",".join(new_parts) + "->" + last_out.replace("...", ""), tuple(moved),
                                 last.cost))
        scaled.append(Scaled(term.coefficient, var, None))
    return steps, scaled


def _prefer_unrolled(steps, fused: FusedPlan) -> bool:
    """The cost model's whole-diagram choice: when the plan materialises an outer product of tiny
    vectors and has no matrix product, the component formulas run eagerly are
    faster (each component written once, on long contiguous rows, instead of passes over 3x3
    temporaries with inner loops of length 3): measured 2.5-4x on TensorNet's vector_to_sym and
    edge_tensor at 10^5-10^6 elements, numpy and torch alike."""
    return bool(fused.outputs) and any(_outer(c) for c in steps) and not any(isinstance(c, Matmul) for c in steps)


def _spreads_channels(c, channels: set) -> bool:
    """An outer-product step that spreads an operand over a channel axis it lacks (``f[c] r[k]``):
    its rows are long (the channels), so the one broadcast pass beats component formulas that write
    each geometric component on its own and stack them (measured: TensorNet's embedding as a graph
    diagram, forward + backward 110 ms planned against 240 ms as component formulas, 1,000 atoms)."""
    if not _outer(c):
        return False
    lhs, out = c.spec.split("->")
    return any(ch in channels and ch not in part for part in lhs.split(",") for ch in out.replace("...", ""))


def _outer(c) -> bool:
    """A broadcast step whose output is larger than each operand: an outer product."""
    if not (isinstance(c, Contraction) and c.broadcast):
        return False
    lhs, out = c.spec.split("->")
    return all(len(p.replace("...", "")) < len(out.replace("...", "")) for p in lhs.split(","))


def _channel_sizes(out_type, inputs) -> tuple[AxisSize, ...]:
    """For each channel axis of the output, the first input axis with the same channel name."""
    sizes = []
    for name in out_type.channels:
        for t in inputs:
            if name in t.type.channels:
                n = len(t.type.channels) + t.type.n_geometric
                sizes.append(AxisSize(t.name, t.type.channels.index(name) - n))
                break
        else:  # not reachable for checked diagrams: every output channel comes from an input
            raise ValueError(f"output channel axis '{name}' appears in no input")
    return tuple(sizes)


CONSTANT_KINDS = ("eps", "cg", "P")


def _fold_constants(core: TensorNetwork, tables: dict) -> TensorNetwork:
    """Replace the constant nodes of a term by one 'table' node, computed exactly then rounded once.
    A lone eps is left alone (the emitted module has its integer table)."""
    consts = [n for n in core.nodes if n.kind in CONSTANT_KINDS]
    if not consts or (len(consts) == 1 and consts[0].kind == "eps"):
        return core
    import hashlib

    from ..math.constants import constant_array

    labels = [i for n in consts for i in n.indices]
    open_labels = [i for i in dict.fromkeys(labels) if labels.count(i) == 1]
    letters = index_letters(labels)
    spec = ",".join("".join(letters[i] for i in n.indices) for n in consts) + "->" + "".join(
        letters[i] for i in open_labels)
    # pair by pair (greedy order): one einsum over every label at once loops over the product of all
    # index ranges, hopeless for a chain of several cg / P factors
    if len(consts) > 2:
        from ..math.einsum import pairwise

        exact = pairwise(spec, [constant_array(n) for n in consts], lambda v: np.asarray(v, dtype=object))
    elif len(consts) > 1 or labels != open_labels:
        exact = np.einsum(spec, *[constant_array(n) for n in consts])
    else:
        exact = constant_array(consts[0])
    values = _nested(np.asarray(exact, dtype=object))
    name = "c_" + hashlib.sha256(repr(values).encode()).hexdigest()[:12]
    tables[name] = values
    table = Node("table", name, CONSTANT_TYPE, tuple(open_labels))
    rest = tuple(n for n in core.nodes if n.kind not in CONSTANT_KINDS)
    return TensorNetwork(core.coefficient, (table,) + rest, core.output, core.kinds, core.pos)


def _nested(a) -> tuple:
    """A float64 nested tuple of an exact array (integers stay integers)."""
    if isinstance(a, np.ndarray) and a.ndim == 0:
        a = a.item()
    if not isinstance(a, np.ndarray):
        return _rounded(a)
    return tuple(_nested(x) for x in a)


@lru_cache(maxsize=4096, typed=True)
def _rounded(value):
    """An exact number (int, Fraction or sympy number) as an int if it is one, else rounded once to
    float64 from 30 digits (the tables repeat a few values: sqrt(2)/2, sqrt(6)/6, ...)."""
    import sympy

    v = sympy.sympify(value)
    return int(v) if v.is_Integer else float(sympy.N(v, 30))


def _split_free_deltas(term: TensorNetwork):
    """(term without its free deltas, the free deltas' index pairs)."""
    free = [n.indices for n in term.nodes if n.kind == "delta"]
    rest = tuple(n for n in term.nodes if n.kind != "delta")
    dropped = {i for pair in free for i in pair}
    core_output = tuple(i for i in term.output if i not in dropped)
    return TensorNetwork(Fraction(1), rest, core_output, term.kinds, term.pos), free


def _letters(term: TensorNetwork) -> dict[str, str]:
    letters: dict[str, str] = {}
    for index in list(term.output) + term.indices():
        if index not in letters:
            if len(letters) == MAX_LETTERS:
                raise ValueError("a term with more than 52 distinct indices")
            letters[index] = symbol(len(letters))
    return letters


def _ordered(c: Contraction, sizes: dict[str, int]) -> list[Contraction]:
    """The contraction as pairwise steps in opt_einsum's optimal order (one step if <= 2 operands)."""
    import opt_einsum

    lhs, out = c.spec.split("->")
    terms = [t.replace("...", "Z") for t in lhs.split(",")]
    sizes = dict(sizes, Z=BATCH_SIZE)
    shapes = [tuple(sizes[ch] for ch in t) for t in terms]
    spec = ",".join(terms) + "->" + out.replace("...", "Z")
    strategy = "optimal" if len(terms) <= 6 else "greedy"
    _, info = opt_einsum.contract_path(spec, *shapes, shapes=True, optimize=strategy)
    if len(terms) <= 2:
        return [Contraction(c.var, c.spec, c.operands, int(info.opt_cost))]
    names = list(c.operands)
    steps = []
    for k, (inds, _removed, step_spec, *_rest) in enumerate(info.contraction_list):
        picked = [names[i] for i in inds]  # opt_einsum writes a step's operands in this order
        for i in sorted(inds, reverse=True):
            del names[i]
        last = k == len(info.contraction_list) - 1
        var = c.var if last else f"{c.var}_{k}"
        step_lhs, step_out = step_spec.split("->")
        step_cost = int(_flops(step_lhs.split(","), step_out, sizes))
        steps.append(Contraction(var, step_spec.replace("Z", "..."), tuple(picked), step_cost))
        names.append(var)
    return steps


def broadcast_indexes(spec: str) -> list[tuple[str | None, tuple[bool, ...] | None]] | None:
    """For an einsum that sums nothing, each operand as (permutation spec or None, axes) such that
    the product of the operands, each given a new axis where ``axes`` says False, broadcasts to the
    output; ``axes`` is None when the operand has every output axis. '...ab,...ac->...abc' gives
    (True, True, False) and (True, False, True). None when something is summed, a letter repeats
    or an operand lacks '...'."""
    lhs, out = spec.split("->")
    parts = lhs.split(",")
    if not out.startswith("...") or not all(p.startswith("...") for p in parts):
        return None
    out = out[3:]
    letters = [p[3:] for p in parts]
    if set("".join(letters)) != set(out) or any(len(set(x)) < len(x) for x in letters):
        return None
    result = []
    for mine in letters:
        ordered = "".join(ch for ch in out if ch in mine)
        perm = f"...{mine}->...{ordered}" if ordered != mine else None
        axes = tuple(ch in mine for ch in out)
        result.append((perm, None if all(axes) else axes))
    return result


@dataclass(frozen=True)
class Dot:
    """A pairwise contraction whose operands both carry every letter, the output's and the summed
    ones (``...ac,...ca->...a``, ``...ij,...ij->...``): each operand permuted to the output's
    letters followed by the summed ones (``None``: already in that order), then the product summed
    over its last ``summed`` axes. torch's einsum runs it as a batched product of 1 x n and n x 1
    matrices, one per output element (cuBLAS: a batched gemv launched once per 65,535 of them); a
    multiply and a sum read each operand once."""

    permutations: tuple  # per operand: an einsum permutation spec, or None
    summed: int


@lru_cache(maxsize=None)  # (Contraction.dot asks again at every access: a pure function of the spec)
def dot_indexes(spec: str) -> Dot | None:
    """The batched-dot form of a pairwise einsum (``Dot``), or None when it is not one: an operand
    without '...', a repeated letter, a letter that one operand lacks, or nothing summed."""
    lhs, out = spec.split("->")
    parts = lhs.split(",")
    if len(parts) != 2 or not out.startswith("...") or not all(p.startswith("...") for p in parts):
        return None
    x, y, out = parts[0][3:], parts[1][3:], out[3:]
    if set(x) != set(y) or len(set(x)) < len(x) or len(set(y)) < len(y) or len(set(out)) < len(out) \
            or not set(out) < set(x):
        return None
    order = out + "".join(ch for ch in x if ch not in out)
    perms = tuple(None if mine == order else f"...{mine}->...{order}" for mine in (x, y))
    return Dot(perms, len(order) - len(out))


def _gemm_like(spec: str) -> bool:
    """A pairwise contraction with a summed letter and a free letter that only one side has: a
    matrix product or matrix-vector product, which numpy's optimize=True sends to BLAS when the
    arrays allow it (weights without batch axes). Everything else (elementwise, outer and dot
    products) runs faster in einsum's own loops, without optimize's per-call path search
    (10-20 us)."""
    lhs, out = spec.split("->")
    parts = lhs.split(",")
    if len(parts) != 2:
        return False
    a, b = (p.replace("...", "") for p in parts)
    summed = (set(a) | set(b)) - set(out.replace("...", ""))
    if not summed:
        return False
    free_a = (set(a) - set(b)) - summed
    free_b = (set(b) - set(a)) - summed
    return bool(free_a or free_b)


def _shared_traces(spec: str, operands: tuple[str, ...], sizes: dict[str, int], contractions: dict):
    """The contraction with each operand's own trace summed first, as a contraction of its own
    (shared with any other term that takes the same trace): W[b,a] X[b,c,c] becomes
    t = X[b,c,c], then the matrix-vector product W[b,a] t[b]."""
    if len(operands) < 2:
        return spec, operands
    lhs, out = spec.split("->")
    parts = lhs.split(",")
    operands = list(operands)
    for k, part in enumerate(parts):
        letters = part.replace("...", "")
        repeated = [ch for ch in dict.fromkeys(letters) if letters.count(ch) == 2 and lhs.count(ch) == 2]
        if not repeated:
            continue
        kept = "".join(ch for ch in letters if ch not in repeated)
        prefix = "..." if part.startswith("...") else ""
        rename = index_letters(letters)  # canonical letters
        trace_spec = prefix + "".join(rename[ch] for ch in letters) + "->" + prefix + "".join(
            rename[ch] for ch in kept)
        key = (trace_spec, (operands[k],))
        if key not in contractions:
            cost = BATCH_SIZE * int(np.prod([sizes[ch] for ch in letters]))
            contractions[key] = [Contraction(f"_t{len(contractions)}", trace_spec, (operands[k],), cost)]
        operands[k] = contractions[key][-1].var
        parts[k] = prefix + kept
    return ",".join(parts) + "->" + out, tuple(operands)


def _fold_signs(outputs, contractions):
    """An output that is minus an unrolled contraction used nowhere else takes the sign into the
    contraction's components (one pass over the output fewer)."""
    uses: dict[str, int] = {}
    for o in outputs:
        for t in o.terms:
            uses[t.var] = uses.get(t.var, 0) + 1
    result = []
    for o in outputs:
        if len(o.terms) == 1 and o.terms[0].coefficient == -1 and o.terms[0].eye_spec is None \
                and uses.get(o.terms[0].var) == 1:
            key = next((k for k, chain in contractions.items()
                        if len(chain) == 1 and chain[0].var == o.terms[0].var and isinstance(chain[0], Unrolled)),
                       None)
            if key is not None:
                u = contractions[key][0]
                cells = tuple(tuple(Product(-p.coefficient, p.spec, p.slices) for p in cell) for cell in u.cells)
                contractions[key] = [replace(u, cells=cells)]
                o = OutputPlan(o.name, (Scaled(Fraction(1), u.var, None),), o.channels, o.geometric)
        result.append(o)
    return result


def _as_flat_matmul(c: Contraction, unbatched: frozenset = frozenset()):
    """'...da,...dT->...aT' (either order of w's letters, T one or more trailing letters of x):
    a FlatMatmul; else None. Not with an ``unbatched`` operand (a weight) as x and a batched one as
    w: the product would be one small matrix product per row (the weight broadcast over the
    batch), where einsum folds the batch into one GEMM."""
    lhs, out = c.spec.split("->")
    parts = lhs.split(",")
    if len(parts) != 2 or not all(p.startswith("...") for p in parts) or not out.startswith("..."):
        return None
    o = out[3:]
    for w_at, x_at in ((0, 1), (1, 0)):
        w, x = parts[w_at][3:], parts[x_at][3:]
        if len(w) != 2 or len(x) < 2 or len(set(x)) < len(x):
            continue
        d, tail = x[0], x[1:]
        if d not in w or d in o:
            continue
        (a,) = set(w) - {d} or {d}
        if a == d or a in x or o != a + tail:
            continue
        if c.operands[x_at] in unbatched and c.operands[w_at] not in unbatched:
            continue
        return FlatMatmul(c.var, (c.operands[w_at], c.operands[x_at]), w == d + a, len(tail), c.cost, c.spec)
    return None


def _as_matmul(c: Contraction, unbatched: frozenset = frozenset()):
    """The cost model's matmul choice: '...Lik,...Lkj->...Lij' (L shared leading letters, either
    matrix possibly transposed) becomes x @ y, which beats einsum's loops on batched 3x3 products."""
    flat = _as_flat_matmul(c, unbatched)
    if flat is not None:
        return flat
    lhs, out = c.spec.split("->")
    parts = lhs.split(",")
    if len(parts) != 2 or not all(p.startswith("...") for p in parts) or not out.startswith("..."):
        return c
    x, y, o = parts[0][3:], parts[1][3:], out[3:]
    if len(x) < 2 or len(y) < 2 or len(o) < 2 or len(set(x)) < len(x) or len(set(y)) < len(y):
        return c
    lead = o[:-2]
    if x[:-2] != lead or y[:-2] != lead:
        return c
    i, j = o[-2:]
    shared = set(x[-2:]) & set(y[-2:])
    if len(shared) != 1:
        return c
    (k,) = shared
    if k in o or set(x[-2:]) != {i, k} or set(y[-2:]) != {k, j} or i == j:
        return c
    return Matmul(c.var, (c.operands[0], c.operands[1]), (x[-2:] == k + i, y[-2:] == j + k), c.cost, c.spec)


#: the most products a small sum over geometric components is written out as (``_small_sum``)
SMALL_SUM = 9


def _pairwise_sum(c: Contraction):
    """(x, y, out letters, summed letters) of a pairwise step on batched operands with no letter
    repeated within an operand and every output letter from an operand; None otherwise."""
    lhs, out = c.spec.split("->")
    specs = lhs.split(",")
    if len(specs) != 2 or not out.startswith("...") or not all(sp.startswith("...") for sp in specs):
        return None
    x, y, o = specs[0][3:], specs[1][3:], out[3:]
    if len(set(x)) < len(x) or len(set(y)) < len(y) or not set(o) <= set(x + y):
        return None
    return x, y, o, [ch for ch in dict.fromkeys(x + y) if ch not in o]


def _written_out(c: Contraction, x: str, y: str, o: str, summed: list, sizes: dict[str, int]) -> Unrolled:
    """The step as a sum of broadcast products of its operands sliced at every component of the
    ``summed`` letters."""
    products = []
    for values in itertools.product(*(range(sizes[ch]) for ch in summed)):
        assign = dict(zip(summed, values))
        slices = tuple((name, tuple(assign.get(ch) for ch in letters)) for name, letters in zip(c.operands, (x, y)))
        sub = ",".join("..." + "".join(ch for ch in letters if ch not in assign) for letters in (x, y))
        products.append(Product(1, sub + "->..." + o, slices))
    return Unrolled(c.var, c.operands, (tuple(products),), (), (), (), (None,) * len(o), c.cost, c.spec)


def _small_sum(c: Contraction, sizes: dict[str, int], geometric) -> Unrolled | None:
    """The cost model's choice for a diagram run on cache-sized runs of its batch (a graph's per-edge
    part): a pairwise contraction that sums geometric letters only (at most SMALL_SUM components),
    whose output one operand covers, written out as a sum of products of sliced operands
    (``d[c,k] u[k]``: three broadcast products). torch's einsum runs a batched product of tiny
    matrices there, about 2x slower on runs of 1,024 edges (numpy's 1.5-3x); on whole arrays that
    miss the cache the products' temporaries cost more, so other diagrams keep einsum. None when it
    does not apply."""
    parts = _pairwise_sum(c)
    if parts is None:
        return None
    x, y, o, summed = parts
    if not (set(o) <= set(x) or set(o) <= set(y)) or not summed or any(ch not in geometric for ch in summed):
        return None
    if int(np.prod([sizes[ch] for ch in summed])) > SMALL_SUM:
        return None
    return _written_out(c, x, y, o, summed, sizes)


def _unit_sum(c: Contraction, sizes: dict[str, int]) -> Unrolled | None:
    """A pairwise step that sums only axes of size 1 (an irreps multiplicity of 1: e3nn's ``v`` of
    the spherical harmonics, ``W[u,v,w] x[u,i] y[v,j]``) is a broadcast product of the operands
    read at component 0 of those axes, not a matrix product per row with an inner size of 1 (torch's
    bmm, several times slower); None when it does not apply."""
    parts = _pairwise_sum(c)
    if parts is None or not parts[3] or any(sizes[ch] != 1 for ch in parts[3]):
        return None
    return _written_out(c, *parts, sizes)


def _unrolled(var, spec, operands, sizes, tables):
    """The cost model's unrolled choice for a contraction of one constant with input operands: the
    constant written as its nonzero entries, each a product of operands sliced at fixed components.
    For eps (six signed terms, the cross-product form) it beats a dense 3x3x3 contraction several
    times over, unless its arrays contract among themselves (``W[c,d] a[d,k]``, a channel mixing, which
    each cell would repeat on a slice: contracted once, then eps as a table); for a folded table (cg, P) of at most three arrays whose every summed leg touches the
    table, it is chosen when the dense form would multiply two or more arrays (an outer-product
    temporary) or when at most a quarter of the table is nonzero.
    None when it does not apply."""
    constants = [k for k, o in enumerate(operands) if o == "eps" or o in tables]
    if len(constants) != 1 or len(operands) < 2:
        return None
    lhs, out = spec.split("->")
    specs = lhs.split(",")
    e = constants[0]
    if operands[e] == "eps":
        table = EPS.astype(int)
        array_letters = [ch for k, sp in enumerate(specs) if k != e for ch in sp.replace("...", "")]
        if any(ch not in specs[e] and ch not in out for ch in array_letters):
            return None  # the arrays contract among themselves (a channel mixing): once, not per cell
    else:
        table = np.array(tables[operands[e]], dtype=object)
        n_arrays = len(operands) - 1
        if n_arrays < 2 and 4 * np.count_nonzero(table != 0) > table.size:
            return None
        array_letters = [ch for k, sp in enumerate(specs) if k != e for ch in sp.replace("...", "")]
        if n_arrays > 3 or any(ch not in specs[e] and ch not in out for ch in array_letters):
            return None  # the products would still need contractions of their own
    const_letters = specs[e]
    if len(set(const_letters)) < len(const_letters):
        return None
    out_letters = out[3:] if out.startswith("...") else out
    others = [(operands[k], specs[k][3:] if specs[k].startswith("...") else specs[k])
              for k in range(len(operands)) if k != e]
    if not all(specs[k].startswith("...") for k in range(len(operands)) if k != e):
        return None
    open_legs = [ch for ch in const_letters if ch in out_letters]
    open_dims = tuple(table.shape[const_letters.index(ch)] for ch in open_legs)
    rest = [ch for ch in out_letters if ch not in open_legs]
    entries = [(idx, table[idx]) for idx in np.ndindex(*table.shape) if table[idx] != 0]
    cells = []
    for values in itertools.product(*(range(d) for d in open_dims)):
        fixed_open = dict(zip(open_legs, values))
        products = []
        for idx, value in entries:
            assign = dict(zip(const_letters, idx))
            if any(assign[ch] != v for ch, v in fixed_open.items()):
                continue
            slices, sub_specs = [], []
            for name, letters in others:
                sl = tuple(assign.get(ch) if ch in assign else None for ch in letters)
                slices.append((name, sl))
                sub_specs.append("..." + "".join(ch for ch in letters if ch not in assign))
            products.append(Product(value if isinstance(value, float) else int(value),
                                    ",".join(sub_specs) + "->..." + "".join(rest), tuple(slices)))
        cells.append(tuple(products))
    # stacked axes come last, in open_legs order; move each to its place in the output
    final = rest + open_legs
    source, destination = [], []
    if final != list(out_letters):
        for ch in open_legs:
            source.append(final.index(ch) - len(final))
            destination.append(out_letters.index(ch) - len(out_letters))
    per_component = BATCH_SIZE
    for ch in rest:
        per_component *= sizes[ch]
    cost = per_component * sum(len(c) for c in cells) * max(1, len(others) - 1)
    open_at = tuple(open_legs.index(ch) if ch in open_legs else None for ch in out_letters)
    return Unrolled(var, tuple(o for k, o in enumerate(operands) if k != e), tuple(cells), open_dims,
                    tuple(source), tuple(destination), open_at, cost, spec)


def _flops(operand_specs, out, sizes) -> float:
    """Multiply-adds of one pairwise einsum: the product of the sizes of every letter involved."""
    letters = set("".join(operand_specs)) | set(out)
    n = 1
    for ch in letters:
        n *= sizes[ch]
    return n * max(1, len(operand_specs) - 1)


def _einsum(core: TensorNetwork) -> tuple[str, tuple[str, ...], dict[str, int]]:
    """A canonical einsum for a delta-free network: letters by first appearance, '...' on inputs;
    and the reference size of each letter."""
    letters = _letters(core)
    sizes = {}
    for index, kind in core.kinds:
        if index in letters:
            sizes[letters[index]] = _reference_size(kind)
    specs, operands = [], []
    for node in core.nodes:
        sub = "".join(letters[i] for i in node.indices)
        if node.kind in ("eps", "table"):
            specs.append(sub)
            operands.append(node.name if node.kind == "table" else "eps")
        else:
            specs.append("..." + sub)
            operands.append(node.name)
    batch = "..." if any(n.kind not in ("eps", "table") for n in core.nodes) else ""
    out = batch + "".join(letters[i] for i in core.output)
    return ",".join(specs) + "->" + out, tuple(operands), sizes


def _eye_spec(core_output, pairs, full_output, term) -> str:
    letters = _letters(TensorNetwork(Fraction(1), (), tuple(full_output), term.kinds))
    core = "..." + "".join(letters[i] for i in core_output)
    eyes = ",".join(letters[a] + letters[b] for a, b in pairs)
    return f"{core},{eyes}->..." + "".join(letters[i] for i in full_output)


#: bytes of one element in --explain's byte counts (the float32 of the speed targets)
EXPLAIN_ITEMSIZE = 4


def explain(plan: FunctionPlan) -> str:
    """The plan as text: every contraction step with its estimated cost, the bytes it reads and
    writes and whether it allocates a temporary, then the output sums and the totals."""
    from .emit import direct_seeds

    lines = [f"{plan.name}({', '.join(plan.inputs)}):  estimated at batch {BATCH_SIZE}, channels {CHANNEL_SIZE}, "
             f"bytes at {EXPLAIN_ITEMSIZE} per element"]
    size = dict(plan.elements)
    table_size = {name: int(np.asarray(values, dtype=object).size) for name, values in plan.tables}
    table_size.update(eps=27, eye=9)
    seeds = direct_seeds(plan, list(plan.outputs)) if not plan.prefer_unrolled else {}
    full = max((size.get(o.name, 0) for o in plan.outputs), default=0)
    # a step that is an output as it stands (its one term, coefficient 1) is that output, no temporary
    results = {o.terms[0].var for o in plan.outputs
               if len(o.terms) == 1 and o.terms[0].coefficient == 1 and o.terms[0].eye_spec is None}
    total = moved = 0
    temporaries = []
    for c in plan.contractions:
        total += c.cost
        written = size.get(c.var, 0)
        read = sum(size.get(o, table_size.get(o, 0)) for o in c.operands)
        if isinstance(c, Unrolled):  # each product reads its slices: about a component each
            read = sum(len(cell) for cell in c.cells) * (written // max(1, int(np.prod(c.open_dims, dtype=int))))
        view = isinstance(c, Contraction) and len(c.operands) == 1 and _is_permutation(c.spec)
        if view:
            read = written = 0
        moved += (read + written) * EXPLAIN_ITEMSIZE
        note = ""
        if not view and c.var not in seeds and c.var not in results:
            temporaries.append(written)
            note = ", temporary" + (" (full size)" if written >= full else "")
        elif view:
            note = ", a view"
        traffic = f"{(read + written) * EXPLAIN_ITEMSIZE:,} bytes{note}"
        if isinstance(c, Combination):
            sum_text = " + ".join(f"{t.coefficient} * {t.var}" for t in c.terms)
            lines.append(f"  {c.var:<8} = sum({sum_text})   ~{c.cost:,} adds, {traffic}")
            continue
        how = {"Contraction": "einsum", "Matmul": "matmul", "FlatMatmul": "flat matmul",
               "Unrolled": "unrolled"}[type(c).__name__]
        if isinstance(c, Contraction) and c.blas:
            how = "einsum(BLAS)"
        elif isinstance(c, Contraction) and c.broadcast:
            how = "broadcast"
        elif isinstance(c, Contraction) and c.dot is not None:
            how = "dot"
        detail = f", {sum(len(cell) for cell in c.cells)} products" if isinstance(c, Unrolled) else ""
        lines.append(f"  {c.var:<8} = {how}({c.spec!r}, {', '.join(c.operands)}{detail})   ~{c.cost:,} multiply-adds, "
                     f"{traffic}")
    for o in plan.outputs:
        parts = []
        for s in o.terms:
            what = s.var or "constant"
            if s.eye_spec and s.var:
                what += " x delta"
            parts.append(f"{s.coefficient} * {what}")
        lines.append(f"  {o.name} = " + " + ".join(parts))
    for b in plan.batch_sums:
        steps = "; ".join(f"{c.var} = {'layout' if isinstance(c, Layout) else 'einsum'}({c.spec!r}, "
                          f"{c.operand if isinstance(c, Layout) else ', '.join(c.operands)})" for c in b.contractions)
        lines.append(f"  {b.output.name} when {b.input} has no batch axes: {steps}")
    if plan.batch_rest is not None:
        steps = "; ".join(f"{c.var} = layout({c.spec!r}, {c.operand})" if isinstance(c, Layout) else
                          f"{c.var} = matmul_flat({'swap(%s)' % c.operands[0] if c.transpose else c.operands[0]}, "
                          f"{c.operands[1]}, {c.n})" if isinstance(c, FlatMatmul) else
                          f"{c.var} = view({c.spec!r}, {c.operands[0]})" for c in plan.batch_rest.contractions)
        lines.append(f"  {', '.join(o.name for o in plan.batch_rest.outputs)} with them, from the same copies: {steps}")
    if plan.stack_axis is not None:
        lines.append(f"  stacked on axis {plan.stack_axis}")
    for o in plan.outputs:  # each output written once, each of its array terms read once
        if o.terms and o.terms[0].var in results and len(o.terms) == 1:
            continue
        n = size.get(o.name, 0)
        moved += n * (1 + sum(1 for t in o.terms if t.var is not None and t.var not in seeds)) * EXPLAIN_ITEMSIZE
    lines.append(f"  total ~{total:,} multiply-adds in contractions, ~{moved:,} bytes moved, "
                 f"{len(temporaries)} temporaries allocated ({sum(1 for n in temporaries if n >= full)} of the "
                 f"outputs' size, {sum(temporaries) * EXPLAIN_ITEMSIZE:,} bytes)")
    if plan.prefer_unrolled:
        lines.append(f"  fresh results: the component formulas ({plan.fused.products} products), run eagerly; "
                     "the steps above fill out= buffers")
    if plan.fused is not None and plan.fused.outputs:
        lines.append(f"  fused=True: every component as one formula, {plan.fused.products} products, compiled")
    elif plan.fused is not None:
        lines.append(f"  fused=True: no fused form ({plan.fused.reason})")
    return "\n".join(lines) + "\n"
