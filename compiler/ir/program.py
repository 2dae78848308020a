"""The tensor-network IR: one :class:`TensorNetwork` per term of an equation.

A network is a coefficient times a contraction of nodes (input occurrences, ``delta``, ``eps``).
Every axis of every node carries an index label; a label shared by two geometric legs is an edge
(a contraction), a label on an output axis is an open leg, and channel labels (non-geometric) may be
shared by any number of legs. :meth:`TensorNetwork.graph` gives the same thing as a networkx graph,
and :meth:`TensorNetwork.canonical` a form that does not depend on the index names.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import lru_cache

import networkx as nx

from ..math.constants import Constant
from ..errors import Position
from .types import Channel, TensorType

#: the constant nodes: delta (rank-2, proper) and eps (rank-3, pseudo: det R)
DELTA_TYPE = TensorType("cart", 2, "sym", (1, 1))
EPS_TYPE = TensorType("cart", 3, "", (-1,))


@dataclass(frozen=True)
class IndexKind:
    """What an index runs over: a Cartesian leg (dim 3), a spherical leg of degree l, or a channel."""

    kind: str  # 'cart' | 'sph' | 'channel'
    dim: "int | Channel"  # 3, l, or the channel axis (its name, or a FixedSize)

    @property
    def geometric(self) -> bool:
        return self.kind != "channel"

    def __str__(self) -> str:
        if self.kind == "cart":
            return "a Cartesian leg"
        if self.kind == "sph":
            return f"a spherical l={self.dim} leg"
        return f"channel axis '{self.dim}'"


#: the largest l of each built-in spherical constant: cg (exact 3j symbols, about a second to compile
#: at l = 12, the largest l of a spherical type) and P (a table of 3**l Cartesian columns)
MAX_CONSTANT_L = {"cg": 12, "P": 8}
#: the type carried by cg / P nodes (their legs come from :func:`constant_axes`)
CONSTANT_TYPE = TensorType("cart", 0, "", (1,))


def constant_axes(kind: str, params: tuple[int, ...]) -> tuple[IndexKind, ...]:
    """Legs of a built-in constant: cg(l1,l2,l3) has three spherical legs; P(l) one spherical leg of
    degree l then l Cartesian legs."""
    if kind == "cg":
        return tuple(IndexKind("sph", l) for l in params)
    return (IndexKind("sph", params[0]),) + (IndexKind("cart", 3),) * params[0]


def axis_kinds(typ: TensorType) -> tuple[IndexKind, ...]:
    """The kind of every axis of a tensor of type ``typ``: channels first, then geometric legs."""
    kinds = [IndexKind("channel", c) for c in typ.channels]
    if typ.family == "cart":
        kinds += [IndexKind("cart", 3)] * typ.rank
    elif typ.family == "sph":
        kinds.append(IndexKind("sph", typ.irrep.l))
    return tuple(kinds)


class Renamed(str):
    """An index label renamed apart, with where it came from as typed fields: the name as written
    (``base``) and which renaming made it (``copy``). Two kinds: substituting an earlier output's
    definition into a term (``S = ... - I`` brings I's summed index ``k`` in as a fresh label, copy 3),
    and a derivative opening a leg that its input repeated (``leg``: a trace ``X[c,k,k]`` taken out
    leaves two legs, ``k`` and a fresh one joined to it by a delta). Its text (``k~3``, ``k~d1``) is
    only its identity as a label (it hashes and compares as that string, so every label is a str);
    :func:`label_text` shows it to the user, ``k'3``, and nothing reads the text back."""

    def __new__(cls, base: str, copy: int, leg: bool = False):
        self = super().__new__(cls, f"{base}~{'d' if leg else ''}{copy}")
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "copy", copy)
        object.__setattr__(self, "leg", leg)
        return self

    def __getnewargs__(self):
        return (self.base, self.copy, self.leg)

    def __setattr__(self, name, value):
        raise AttributeError("a Renamed label is immutable")


def base_name(label: str) -> str:
    """The index name a label was written as (a renamed copy's ``base``)."""
    return label.base if isinstance(label, Renamed) else label


def label_text(label: str) -> str:
    """A label as shown in messages and docstrings: a renamed copy as ``k'3``."""
    if not isinstance(label, Renamed):
        return label
    return f"{label.base}'{'d' if label.leg else ''}{label.copy}"


@dataclass(frozen=True)
class Node:
    """One factor of a term: ``kind`` is 'input', 'delta', 'eps', 'cg', 'P' (or the planner's 'table');
    ``indices`` label its axes. A cg / P node carries its parameters as ``constant`` (its ``name`` is
    ``str(constant)``, for display only)."""

    kind: str
    name: str
    type: TensorType
    indices: tuple[str, ...]
    pos: Position | None = field(default=None, compare=False)
    constant: Constant | None = None

    @property
    def n_channels(self) -> int:
        return len(self.type.channels)

    def __str__(self) -> str:
        return f"{self.name}[{','.join(self.indices)}]" if self.indices else self.name

    def shown(self) -> str:
        """As :meth:`__str__`, with renamed labels as the user reads them (:func:`label_text`)."""
        return f"{self.name}[{','.join(map(label_text, self.indices))}]" if self.indices else self.name


@dataclass(frozen=True)
class Leg:
    """Axis ``axis`` of node number ``node`` of a network."""

    node: int
    axis: int


@dataclass(frozen=True)
class TensorNetwork:
    """``coefficient`` × the contraction of ``nodes``; ``output`` labels the output's axes."""

    coefficient: Fraction
    nodes: tuple[Node, ...]
    output: tuple[str, ...]
    kinds: tuple[tuple[str, IndexKind], ...]  # every index label and what it runs over
    pos: Position | None = field(default=None, compare=False)

    # -- views ---------------------------------------------------------------------------------
    def kind(self, index: str) -> IndexKind:
        return dict(self.kinds)[index]

    def legs(self, index: str) -> list[Leg]:
        """Every node axis carrying ``index``, in node order."""
        return [Leg(n, a) for n, node in enumerate(self.nodes) for a, i in enumerate(node.indices) if i == index]

    def indices(self) -> list[str]:
        """All index labels, in order of first appearance (nodes, then output)."""
        seen: dict[str, None] = {}
        for node in self.nodes:
            seen.update(dict.fromkeys(node.indices))
        seen.update(dict.fromkeys(self.output))
        return list(seen)

    def formula(self, shown: bool = False) -> str:
        """The term in index notation, e.g. ``-1/2 eps[i,j,k] A[c,j,k]``; with ``shown``, renamed
        labels as the user reads them (``k'3``)."""
        factors = " ".join(n.shown() if shown else str(n) for n in self.nodes)
        c = self.coefficient
        if c == 1 and factors:
            return factors
        if c == -1 and factors:
            return "-" + factors
        return f"{c} {factors}".strip()

    def __str__(self) -> str:
        return self.formula()

    # -- graph form ----------------------------------------------------------------------------
    def graph(self) -> nx.MultiGraph:
        """The network as a graph: factor nodes ``('f', n)``, the output ``'out'``, channel indices
        ``('c', name)``; an edge records its index and the (node, axis) ends it joins."""
        g = nx.MultiGraph()
        for n, node in enumerate(self.nodes):
            g.add_node(("f", n), label=(node.kind, node.name, str(node.type)))
        g.add_node("out", label=("output",))
        for index in self.indices():
            ends = [(("f", leg.node), leg.axis) for leg in self.legs(index)]
            ends += [("out", k) for k, i in enumerate(self.output) if i == index]
            if self.kind(index).geometric:
                if len(ends) == 2:
                    (u, a), (v, b) = ends
                    g.add_edge(u, v, index=index, axes=((u, a), (v, b)))
            else:
                g.add_node(("c", index), label=("channel", str(self.kind(index).dim)))
                for u, a in ends:
                    g.add_edge(u, ("c", index), index=index, axes=((u, a),))
        return g

    # -- canonical form ------------------------------------------------------------------------
    def canonical(self) -> tuple:
        """A form independent of index names and of the order of the factors.

        Two networks have the same canonical form iff they are the same contraction up to renaming
        indices and reordering factors (no symmetry of the factors is used). Factors are ordered by
        trying every order among nodes that a colour refinement cannot tell apart; small terms only.
        """
        return (self.coefficient, self.shape_key())

    def shape_key(self) -> tuple:
        """The canonical form without the coefficient (terms that differ only in it combine);
        memoised per (nodes, output, kinds): planning asks for the same networks many times."""
        return _shape_key(self.nodes, self.output, self.kinds)

    def _shape_key(self) -> tuple:
        n = len(self.nodes)
        base = [(node.kind, node.name, str(node.type)) for node in self.nodes]
        # colour refinement: a node's colour = its label + the sorted colours it touches
        colours = [repr(b) for b in base]
        for _ in range(n):
            new = []
            for k, node in enumerate(self.nodes):
                around = []
                for a, index in enumerate(node.indices):
                    for leg in self.legs(index):
                        if leg.node != k or leg.axis != a:
                            around.append((a, colours[leg.node], leg.axis))
                    around += [(a, "out", o) for o, i in enumerate(self.output) if i == index]
                new.append(repr((colours[k], sorted(around))))
            if len(set(new)) == len(set(colours)):
                colours = new
                break
            colours = new
        groups: dict[str, list[int]] = {}
        for k in sorted(range(n), key=lambda k: colours[k]):
            groups.setdefault(colours[k], []).append(k)
        ordered_groups = [groups[c] for c in sorted(groups)]
        best = None
        choices = [itertools.permutations(g) for g in ordered_groups]
        for count, combo in enumerate(itertools.product(*choices)):
            order = [k for part in combo for k in part]
            key = self._encode(order)
            if best is None or key < best:
                best = key
            if count > 5000:  # enormous symmetric terms: stay deterministic, not necessarily minimal
                break
        return best if best is not None else ()

    def _encode(self, order: list[int]) -> tuple:
        rename: dict[str, str] = {}
        for k, idx in enumerate(self.output):
            rename.setdefault(idx, f"o{k}")
        for k in order:
            for index in self.nodes[k].indices:
                rename.setdefault(index, f"x{len(rename)}")
        return (
            tuple((self.nodes[k].kind, self.nodes[k].name, str(self.nodes[k].type),
                   tuple(rename[i] for i in self.nodes[k].indices)) for k in order),
            tuple(rename[i] for i in self.output),
        )


@lru_cache(maxsize=65536)
def _shape_key(nodes, output, kinds) -> tuple:
    return TensorNetwork(Fraction(1), nodes, output, kinds)._shape_key()


def sum_formula(terms) -> str:
    """A sum of terms in index notation, as the parser reads it: ``a[i] b[j] - 1/3 a[k] b[k] delta[i,j]``
    (renamed internal indices ``k~1`` shown as ``k'1``)."""
    return signed_sum(t.formula(shown=True) for t in terms)


def signed_sum(formulas) -> str:
    """Formulas joined into one sum: ``a + b``, and ``a - b`` where ``b`` starts with a minus."""
    text = ""
    for k, f in enumerate(formulas):
        if k and f.startswith("-"):
            text += " - " + f[1:]
        elif k:
            text += " + " + f
        else:
            text = f
    return text


@dataclass(frozen=True)
class Equation:
    """``target = sum(terms)`` for one output of a diagram."""

    target: str
    type: TensorType
    terms: tuple[TensorNetwork, ...]
    pos: Position | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Tensor:
    """A declared input or output: name and type."""

    name: str
    type: TensorType
    pos: Position | None = field(default=None, compare=False)


@dataclass(frozen=True)
class BasisInfo:
    """What a ``basis`` declaration said, kept for documentation and pictures: the declared output
    (the elements are the diagram's outputs, under internal names), each input's degree and
    whether it is 'up to', and each element in words (``tr(E) delta``)."""

    output: Tensor
    degrees: tuple[tuple[int, bool], ...]
    words: tuple[str, ...]


@dataclass(frozen=True)
class IrrepsTensor:
    """An ``irreps(...)`` input or output of the source (e3nn's flat layout), which lowering split into
    the block tensors ``blocks`` (one ``sph(lp)[mul]`` each, in the type's order) that the diagram's
    inputs / outputs hold in its place; the emitted function takes and returns the flat array."""

    name: str
    type: TensorType
    blocks: tuple[str, ...]
    output: bool
    pos: Position | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Diagram:
    name: str
    group: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    equations: tuple[Equation, ...]  # one per output, in output order
    pos: Position | None = field(default=None, compare=False)
    stacked: bool = False  # return the outputs stacked on a new axis before their geometric axes
    basis: BasisInfo | None = None  # for a basis declaration (stacked): its output and words
    #: a derivative diagram (compiler.ir.grad): for each output, the input whose shape it is summed to
    #: (the batch axes that input was broadcast over are summed, as autograd does); empty otherwise
    sum_to: tuple[str, ...] = ()
    #: the irreps inputs and outputs of the source, each standing for its run of block tensors
    irreps: tuple[IrrepsTensor, ...] = ()
    #: the user's diagram this one computes part of (a stage of a diagram with functions of invariants,
    #: ``frontend.functions.stages``; a graph diagram's per-edge or per-node part): the name messages
    #: show; empty for a diagram the user wrote
    origin: str = ""
    #: a stage's internal tensors (a function's arguments, their parts, its results) -> the call as the
    #: user wrote it (``tanh(f[e,c])``, ``phi(x[n,c], y[n,c])[1]``), the text messages show for them
    shown_tensors: tuple[tuple[str, str], ...] = ()
    #: run on cache-sized runs of its batch (a graph diagram's per-edge part and its derivatives: the
    #: host code takes the edges in runs), so the planner may assume its operands in cache
    in_runs: bool = False

    @property
    def shown_name(self) -> str:
        """The name a message shows: the user's diagram (``origin``), never an internal stage name."""
        return self.origin or self.name

    def shown_tensor(self, name: str) -> str:
        """How a message names tensor ``name``: the call it stands for (a stage's internal tensor), else its name."""
        return dict(self.shown_tensors).get(name, name)

    def shown_formula(self, term: TensorNetwork) -> str:
        """``term.formula(shown=True)`` with each internal tensor written as the call it stands for."""
        texts = dict(self.shown_tensors)
        if not any(n.name in texts for n in term.nodes):
            return term.formula(shown=True)
        nodes = tuple(replace(n, name=texts[n.name], indices=()) if n.name in texts else n for n in term.nodes)
        return replace(term, nodes=nodes).formula(shown=True)


#: the built-in functions of invariants: name -> whether it is odd (f(-x) = -f(x)), so that it may take
#: an odd scalar (a pseudoscalar) and give one; ``recip`` is what ``a / (expr)`` becomes
BUILTIN_FUNCTIONS = {"silu": False, "sigmoid": False, "tanh": True, "exp": False, "sqrt": False,
                     "rsqrt": False, "recip": True}


@dataclass(frozen=True)
class FnInput:
    """A user function argument ``phi: fn(n_in -> n_out)``: a callable of the array library taking the
    n_in invariants stacked on a new last axis and giving n_out on a last axis."""

    name: str
    n_in: int
    n_out: int
    pos: Position | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Apply:
    """``results = function(arguments)``, elementwise over batch and channel axes. ``arguments`` are
    outputs of an earlier stage (invariants, proved by that stage's check), ``results`` inputs of a
    later one (invariant by type: the axiom of a function node). A user function's arguments are
    broadcast to the results' channel axes (``channels``: for each argument, the position of each of
    its channel axes among the results')."""

    function: str  # a key of BUILTIN_FUNCTIONS, or the name of an FnInput
    builtin: bool
    arguments: tuple[Tensor, ...]
    results: tuple[Tensor, ...]
    channels: tuple[tuple[int, ...], ...]
    pos: Position | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Sum:
    """``target = sum(parts)``, an argument whose terms carry different channel indices (``1 + v[c,k]
    v[c,k]``): each part is an output of a stage, with its channel axes at positions ``channels`` of
    the target's, broadcast over the others."""

    target: Tensor
    parts: tuple[Tensor, ...]
    channels: tuple[tuple[int, ...], ...]
    pos: Position | None = field(default=None, compare=False)


@dataclass(frozen=True)
class StageCall:
    """``results = stage(arguments)``: a stage diagram that several composites share (its inputs and
    outputs under names of its own), called with the composite's values named ``arguments`` (in the
    order of its inputs) and giving the values named ``results`` (in the order of its outputs)."""
    stage: str
    arguments: tuple[str, ...]
    results: tuple[str, ...]


@dataclass(frozen=True)
class Composite:
    """A diagram with function nodes: pure stages (diagrams of the program, by name) and function
    applications between them, run in order. ``inputs`` are the declared arguments in order (tensors
    and functions); the last stage gives ``outputs``."""

    name: str
    group: str
    inputs: tuple[Tensor | FnInput, ...]
    outputs: tuple[Tensor, ...]
    steps: tuple[str | Apply | Sum | StageCall, ...]
    pos: Position | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Program:
    """A lowered .diag file. A diagram with function nodes is a :class:`Composite` in ``composites``
    whose stages are diagrams of ``diagrams`` (named ``_NAME_s0``, ``_NAME_s1``, ...)."""

    filename: str
    source: str = field(repr=False)
    group: str
    diagrams: tuple[Diagram, ...]
    composites: tuple[Composite, ...] = ()

    def stage_of(self) -> dict[str, str]:
        """Each stage diagram's name -> the name of the composite it belongs to."""
        return {step: c.name for c in self.composites for step in c.steps if isinstance(step, str)}
