"""Graphs in the language: a message-passing step as one diagram, split into array-library work.

An input of type ``edges[e,n]`` is an edge list: for each edge of the edge set ``e`` one node of the
node set ``n``. In a formula it is the incidence matrix ``src[e,n]`` (1 where edge e starts at node
n), an invariant with two channel axes, so the checker proves a graph diagram like any other (the
incidence acts on non-geometric axes only). A tensor whose first channel axis is ``n`` is per node,
one whose first channel axis is ``e`` per edge; that axis is its leading array axis. A term such as

    M[n,c,i] = dst[e,n] src[e,m] f[e,c] v[m,c,i]

is a gather (``v`` read at each edge's source), a per-edge equivariant product, and a sum over the
edges arriving at each node. :func:`split_graph` turns a checked graph diagram into that recipe, as
data: the per-node inputs gathered at which edge list (:class:`Gather`), one ordinary diagram of
per-edge work (``_NAME_edge``, the edge axis as its batch axis) whose outputs are summed into
nodes (:class:`Scatter`), and one ordinary diagram of per-node terms (``_NAME_node``, the node axis
as its batch axis). Those two are planned, emitted, differentiated and given CUDA kernels like any
diagram; ``codegen`` writes the gather and scatter around them (:func:`compiler.targets.python.graph.graph_function`).

Terms it accepts (anything else is a positioned error when the file is lowered): per node, either
no edge index (every node index the output's), or one summed edge index, one edge list joining it to
the output's node (the scatter) and every other node index on exactly one edge list (a gather); per
edge, the output's edge index and every node index on exactly one edge list.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import DiagError, DiagTypeError
from ..ir.program import Diagram, Equation, Program, Tensor, TensorNetwork


@dataclass(frozen=True)
class Gather:
    """Argument ``name`` of the edge diagram: per-node input ``source`` read at edge list ``edges``."""

    name: str
    source: str
    edges: str


@dataclass(frozen=True)
class Scatter:
    """Output ``message`` of the edge diagram summed into per-node ``output`` at edge list ``edges``."""

    output: str
    message: str
    edges: str


@dataclass(frozen=True)
class GraphDiagram:
    """A graph diagram split into gathers, an edge diagram, scatters and a node diagram."""

    diagram: Diagram
    edge_set: str
    node_set: str
    edge_lists: tuple[str, ...]
    per_node: tuple[str, ...]
    per_edge: tuple[str, ...]
    shared: tuple[str, ...]
    gathers: tuple[Gather, ...]
    scatters: tuple[Scatter, ...]
    edge_part: Diagram | None  # outputs: the scatters' messages, then the per-edge outputs
    node_part: Diagram | None  # outputs: the per-node outputs that have per-node terms


def is_graph(diagram: Diagram) -> bool:
    return any(t.type.family == "edges" for t in diagram.inputs)


def edge_name(name: str) -> str:
    return f"_{name}_edge"


def node_name(name: str) -> str:
    return f"_{name}_node"


def _drop_first(typ):
    return typ.with_channels(typ.channels[1:])


def split_graph(d: Diagram) -> GraphDiagram:
    """The recipe of a graph diagram; DiagError (positioned) for what it cannot express."""
    lists = [t for t in d.inputs if t.type.family == "edges"]
    edge_set, node_set = lists[0].type.channels
    for t in lists[1:]:
        if t.type.channels != (edge_set, node_set):
            raise DiagTypeError(f"edge list '{t.name}' has axes {list(t.type.channels)} but '{lists[0].name}' has "
                                f"{[edge_set, node_set]}; a diagram has one edge set and one node set", t.pos)
    per_node, per_edge, shared = [], [], []
    for t in d.inputs + d.outputs:
        if t.type.family == "edges":
            if t in d.outputs:
                raise DiagTypeError(f"output '{t.name}' cannot be an edge list: edge lists are inputs only", t.pos)
            continue
        ch = t.type.channels
        for axis in (node_set, edge_set):
            if axis in ch[1:] and t.name != d.shown_tensor(t.name):  # a function's argument or result
                twice = "two graph axes" if ch[:1] in ((node_set,), (edge_set,)) else \
                    f"the graph axis '{axis}' after its first channel axis"
                raise DiagTypeError(
                    f"'{d.shown_tensor(t.name)}' has channel axes {list(ch)}: {twice}; a function applies per node "
                    "or per edge in a graph diagram (one node or edge index, written first in its argument)", t.pos)
            if axis in ch[1:]:
                raise DiagTypeError(
                    f"'{t.name}: {t.type}' has the graph axis '{axis}' after its first channel axis; a per-node or "
                    f"per-edge tensor has it first (it is the leading array axis)", t.pos,
                    f"declare it as {t.type.base_name()}[{', '.join((axis,) + tuple(c for c in ch if c != axis))}]")
        if ch[:1] == (node_set,):
            (per_node if t in d.inputs else []).append(t.name)
        elif ch[:1] == (edge_set,):
            (per_edge if t in d.inputs else []).append(t.name)
        elif t in d.outputs and t.name != d.shown_tensor(t.name):  # a function's argument
            raise DiagTypeError(
                f"'{d.shown_tensor(t.name)}' is neither per node nor per edge (channel axes {list(ch)}); in a graph "
                f"diagram a function applies per node or per edge", t.pos,
                "apply it in a separate diagram and pass its value as an input")
        elif t in d.outputs:
            raise DiagTypeError(
                f"output '{d.shown_tensor(t.name)}: {t.type}' of graph diagram '{d.shown_name}' has neither the node axis '{node_set}' "
                f"nor the edge axis '{edge_set}' first; outputs of a graph diagram are per node or per edge", t.pos)
        else:
            shared.append(t.name)
    if not per_node and not per_edge:
        raise DiagTypeError(f"graph diagram '{d.shown_name}' has no per-node or per-edge input", d.pos)

    taken = {t.name for t in d.inputs + d.outputs} | {d.name}
    gathers: dict[tuple[str, str], Gather] = {}
    scatters: dict[tuple[str, str], Scatter] = {}
    edge_eqs: dict[str, list[TensorNetwork]] = {}
    node_eqs: dict[str, list[TensorNetwork]] = {}
    edge_out_types: dict[str, object] = {}

    def fresh(base: str) -> str:
        name = base
        while name in taken:
            name += "_"
        taken.add(name)
        return name

    def gathered(source: str, edges: str) -> str:
        if (source, edges) not in gathers:
            gathers[(source, edges)] = Gather(fresh(f"{source}_{edges}"), source, edges)
        return gathers[(source, edges)].name

    for eq in d.equations:
        out = next(t for t in d.outputs if t.name == eq.target)
        per_node_out = out.type.channels[0] == node_set
        for term in eq.terms:
            kinds = dict(term.kinds)
            nodes_of = [i for i, k in kinds.items() if not k.geometric and k.dim == node_set]
            edges_of = [i for i, k in kinds.items() if not k.geometric and k.dim == edge_set]
            incidences = [n for n in term.nodes if n.type.family == "edges"]
            where = f"in '{d.shown_tensor(eq.target)}' of graph diagram '{d.shown_name}', term '{d.shown_formula(term)}'"
            if len(edges_of) > 1:
                raise DiagTypeError(f"{where}: it has {len(edges_of)} edge indices ({', '.join(edges_of)}); a term "
                                    "sums over one edge at a time", term.pos)
            if per_node_out and not edges_of:
                own = term.output[0]
                stray = [i for i in nodes_of if i != own]
                if stray:
                    raise DiagTypeError(f"{where}: node index '{stray[0]}' is summed over every node; a per-node term "
                                        f"uses the output's node index '{own}' only", term.pos)
                if own not in (i for n in term.nodes for i in n.indices):
                    raise DiagTypeError(f"{where}: a per-node term needs a per-node factor (its value would be the "
                                        "same at every node)", term.pos)
                node_eqs.setdefault(eq.target, []).append(_strip(term, {}, set(nodes_of)))
                continue
            if not edges_of:
                raise DiagTypeError(f"{where}: a per-edge output needs its edge index in every term", term.pos)
            e = edges_of[0]
            joined: dict[str, str] = {}  # node index -> edge list joining it to e
            for inc in incidences:
                m = inc.indices[1]
                if m in joined:
                    raise DiagTypeError(f"{where}: node index '{m}' is on two edge lists ({joined[m]}, {inc.name}); "
                                        "each node index meets one edge list", inc.pos or term.pos)
                joined[m] = inc.name
            scatter = None
            if per_node_out:
                own = term.output[0]
                if e in term.output:
                    raise DiagTypeError(f"{where}: the edge index '{e}' cannot be an output index of a per-node "
                                        "output", term.pos)
                if own not in joined:
                    raise DiagTypeError(
                        f"{where}: the sum over edges '{e}' has no edge list joining it to the output's node '{own}'",
                        term.pos, f"sum the edges arriving at each node: dst[{e},{own}] ..., with dst an edge list")
                scatter = joined[own]
            elif term.output[0] != e:
                raise DiagTypeError(f"{where}: a per-edge output's terms use its own edge index '{term.output[0]}'",
                                    term.pos)
            for m in nodes_of:
                if m not in joined:
                    raise DiagTypeError(f"{where}: node index '{m}' is on no edge list; read a per-node tensor at "
                                        f"an edge through one (src[{e},{m}] X[{m},...])", term.pos)
            names = {}
            for node in term.nodes:
                if node.kind == "input" and node.type.family != "edges" and node.indices[:1] and \
                        node.indices[0] in joined:
                    names[id(node)] = gathered(node.name, joined[node.indices[0]])
            stripped = _strip(term, names, set(nodes_of) | {e})
            if per_node_out:
                key = (eq.target, scatter)
                if key not in scatters:
                    scatters[key] = Scatter(eq.target, fresh(f"{eq.target}_{scatter}"), scatter)
                target = scatters[key].message
            else:
                target = eq.target
            edge_out_types[target] = _drop_first(out.type)
            edge_eqs.setdefault(target, []).append(stripped)

    gather_list = tuple(gathers.values())
    edge_part = node_part = None
    if edge_eqs:
        used = {n.name for terms in edge_eqs.values() for t in terms for n in t.nodes if n.kind == "input"}
        ins = []
        for t in d.inputs:  # declaration order; a gathered input where its source was declared
            if t.type.family == "edges":
                continue
            for g in gather_list:
                if g.source == t.name and g.name in used:
                    ins.append(Tensor(g.name, _drop_first(t.type), t.pos))
            if t.name in used:
                ins.append(Tensor(t.name, _drop_first(t.type) if t.name in per_edge else t.type, t.pos))
        order = [s.message for s in scatters.values()] + [t.name for t in d.outputs if t.name in edge_eqs]
        edge_part = Diagram(edge_name(d.name), d.group, tuple(ins),
                            tuple(Tensor(n, edge_out_types[n], d.pos) for n in order),
                            tuple(Equation(n, edge_out_types[n], tuple(edge_eqs[n]), d.pos) for n in order), d.pos,
                            origin=d.shown_name, in_runs=True)
    if node_eqs:
        used = {n.name for terms in node_eqs.values() for t in terms for n in t.nodes if n.kind == "input"}
        ins = tuple(Tensor(t.name, _drop_first(t.type) if t.name in per_node else t.type, t.pos)
                    for t in d.inputs if t.name in used)
        outs = [t for t in d.outputs if t.name in node_eqs]
        node_part = Diagram(node_name(d.name), d.group, ins,
                            tuple(Tensor(t.name, _drop_first(t.type), t.pos) for t in outs),
                            tuple(Equation(t.name, _drop_first(t.type), tuple(node_eqs[t.name]), d.pos)
                                  for t in outs), d.pos, origin=d.shown_name)
    return GraphDiagram(d, edge_set, node_set, tuple(t.name for t in lists), tuple(per_node), tuple(per_edge),
                        tuple(shared), gather_list, tuple(scatters.values()), edge_part, node_part)


def _strip(term: TensorNetwork, names: dict, graph_labels: set) -> TensorNetwork:
    """The term without its edge lists and graph indices: per-node factors renamed to their gathered
    argument (``names``, by node identity), graph axes dropped from every factor and the output."""
    nodes = []
    for node in term.nodes:
        if node.type.family == "edges":
            continue
        if node.kind == "input" and node.indices[:1] and node.indices[0] in graph_labels:
            nodes.append(replace(node, name=names.get(id(node), node.name), type=_drop_first(node.type),
                                 indices=node.indices[1:]))
        else:
            nodes.append(node)
    output = tuple(i for i in term.output if i not in graph_labels)
    kinds = tuple((i, k) for i, k in term.kinds if i not in graph_labels)
    return TensorNetwork(term.coefficient, tuple(nodes), output, kinds, term.pos)


def split_program(program: Program) -> tuple[Program, dict[str, GraphDiagram]]:
    """The program with every graph diagram replaced by its edge and node diagrams (in its place),
    and the recipe of each graph diagram by name."""
    diagrams, graphs = [], {}
    for d in program.diagrams:
        if not is_graph(d):
            diagrams.append(d)
            continue
        g = split_graph(d)
        graphs[d.name] = g
        diagrams.extend(p for p in (g.edge_part, g.node_part) if p is not None)
    return replace(program, diagrams=tuple(diagrams)), graphs


def graph_stages(d: Diagram, parts: list[Diagram]) -> list[Diagram]:
    """The stages of a graph diagram with functions of invariants (``functions.stages``): a stage
    with a per-node or per-edge tensor is a graph diagram too, so it takes the diagram's edge lists
    (those it does not use cost a range check) and its terms are held to the same rules."""
    lists = tuple(t for t in d.inputs if t.type.family == "edges")
    if not lists:
        return parts
    graph_axes = set(lists[0].type.channels)
    result = []
    for part in parts:
        if not is_graph(part) and any(graph_axes & set(t.type.channels) for t in part.inputs + part.outputs):
            part = replace(part, inputs=part.inputs + lists)
        result.append(part)
    return result


def validate(d: Diagram) -> list[DiagError]:
    """The errors of a graph diagram's shape (for the lowering to report), none for another."""
    if not is_graph(d):
        return []
    try:
        split_graph(d)
    except DiagError as err:
        return [err]
    return []
