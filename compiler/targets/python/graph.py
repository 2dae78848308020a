"""Python text of a graph diagram's public functions (``NAME`` and ``NAME_vjp``).

:func:`compiler.frontend.graph.split_graph` gives the recipe as data; the edge and node diagrams in it are
emitted as ordinary private functions (``_NAME_edge``, ``_NAME_node``, with their derivatives).
This module writes the two public functions around them: the argument checks (``_graph_args`` of the
module template: shapes, edge lists' dtype, length and range), the gathers (``_gather``: torch
``index_select``, array indexing elsewhere), the call of the edge and node functions, and the
scatter-sums (``_scatter``: torch ``index_add``, numpy ``add.at``, cupy ``scatter_add``, jax
``.at[].add``). Only names of the diagram (identifiers the lowering accepted) reach the text.
"""

from __future__ import annotations

from ...frontend.graph import GraphDiagram, edge_name, node_name
from ...ir.program import Diagram
from .printer import channel_literal


def _py(text: str) -> str:
    from .codegen import py_string

    return py_string(text)


def _signature(g: GraphDiagram, tensors) -> str:
    """(name, channel names, geometric sizes, role) per array argument, role 'n', 'e' or ''."""
    rows = []
    for t in tensors:
        ch = t.type.channels
        role = "n" if ch[:1] == (g.node_set,) else "e" if ch[:1] == (g.edge_set,) else ""
        rows.append(f"({_py(t.name)}, ({''.join(channel_literal(c) + ', ' for c in ch)}), "
                    f"({''.join(str(k) + ', ' for k in t.type.geometric_dims)}), {_py(role)})")
    return "(" + "".join(r + ", " for r in rows) + ")"


def _tuple(names) -> str:
    names = list(names)
    return "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"


def _prologue(g: GraphDiagram, arrays, name: str) -> list[str]:
    """Lines that check the arguments and bind ``_b`` (the backend), the arrays (converted to one
    library and dtype), the edge lists (index arrays of that library) and ``_n`` (number of nodes)."""
    lists = g.edge_lists
    return [
        f"    _b, {_tuple(t.name for t in arrays)}, {_tuple(lists)}, _n = _graph_args(",
        f"        {_py(name)}, {_signature(g, arrays)}, {_tuple(t.name for t in arrays)},",
        f"        {_tuple(_py(n) for n in lists)}, {_tuple(lists)})",
    ]


def graph_doc(g: GraphDiagram) -> str:
    """The docstring of a graph diagram's function: arguments with their shapes (no batch axes;
    per-node and per-edge arrays lead with their graph axis, an edge list is (e,) integers)."""
    from .codegen import py_string
    from ...ir.program import sum_formula

    d = g.diagram

    def shape(t) -> str:
        if t.type.family == "edges":
            return f"({g.edge_set},) integers in 0..{g.node_set}-1"
        return "(" + ", ".join([str(c) for c in t.type.channels] + [str(k) for k in t.type.geometric_dims]) + ")"

    lines = [f"{d.name}: equivariant under {d.group} (a graph diagram: gathers, per-edge work, sums over edges).",
             "", "Arguments:"]
    lines += [f"    {t.name}: {t.type}, shape {shape(t)}" for t in d.inputs]
    lines += ["    out: optional preallocated result (a tuple for several), numpy or torch; the results are copied",
              "        into it",
              f"    fused, kernels: passed to the per-edge and per-node functions ({edge_name(d.name)},",
              f"        {node_name(d.name)}), as for any diagram",
              "Returns:" if len(d.outputs) == 1 else "Returns a tuple:"]
    lines += [f"    {t.name}: {t.type}, shape {shape(t)}" for t in d.outputs]
    lines.append("")
    lines += [f"    {eq.target} = " + sum_formula(eq.terms) for eq in d.equations]
    return py_string("\n".join(("    " + line).rstrip() for line in lines).lstrip() + "\n    ", triple=True)


def graph_function(g: GraphDiagram) -> str:
    """``NAME(inputs..., *, out=None, fused=False, kernels=True)``."""
    d = g.diagram
    arrays = [t for t in d.inputs if t.type.family != "edges"]
    sig = ", ".join(t.name for t in d.inputs) + ", *, out=None, fused=False, kernels=True"
    lines = [f"def {d.name}({sig}):", "    " + graph_doc(g)]
    lines += _prologue(g, arrays, d.name)
    for x in g.gathers:
        lines.append(f"    {x.name} = _gather(_b, {x.source}, {x.edges})")
    values: dict[str, list[str]] = {t.name: [] for t in d.outputs}
    for part in (g.edge_part, g.node_part):
        if part is None:
            continue
        results = [f"_r_{t.name}" for t in part.outputs]
        args = ", ".join(t.name for t in part.inputs)
        lines.append(f"    {_tuple(results)} = _as_tuple({part.name}({args}, fused=fused, kernels=kernels))")
        for t, r in zip(part.outputs, results):
            scatter = next((s for s in g.scatters if s.message == t.name), None)
            if scatter is not None:
                values[scatter.output].append(f"_scatter(_b, {r}, {scatter.edges}, _n)")
            else:
                values[t.name].append(r)
    for t in d.outputs:
        lines.append(f"    {t.name} = " + " + ".join(values[t.name]))
    outs = _tuple(t.name for t in d.outputs)
    lines.append(f"    return _graph_out(_b, {outs}, out, {_tuple(t.name for t in arrays)})")
    return "\n".join(lines)


def graph_vjp_function(g: GraphDiagram, diagrams: dict[str, Diagram]) -> str | None:
    """``NAME_vjp(inputs..., d_outputs..., *, fused=False, kernels=True)``: the cotangent of every
    input (None for an edge list): the output cotangents read at each scatter's edge list (the VJP
    of a sum over edges is a gather), the edge and node diagrams' generated VJPs, and the cotangent
    of a gathered input summed into its nodes (the VJP of a gather is a scatter-sum). None when an
    edge or node diagram has no generated VJP (then autograd of the planned code is the derivative)."""
    from ...ir.grad import cotangent_name, vjp_name

    d = g.diagram
    parts = [p for p in (g.edge_part, g.node_part) if p is not None]
    if any(vjp_name(p.name) not in diagrams for p in parts):
        return None
    taken = {t.name for t in d.inputs + d.outputs}
    cot = {}
    for t in d.outputs:
        cot[t.name] = cotangent_name(t.name, taken)
        taken.add(cot[t.name])
    from ...ir.program import Tensor

    arrays = [t for t in d.inputs if t.type.family != "edges"]
    arrays += [Tensor(cot[t.name], t.type) for t in d.outputs]
    sig = ", ".join([t.name for t in d.inputs] + [cot[t.name] for t in d.outputs]) + ", *, fused=False, kernels=True"
    doc = (f"{d.name}_vjp: the vector-Jacobian product of {d.name} (its inputs, then one cotangent per output): "
           f"the cotangent of every input in declaration order, None for an edge list.")
    lines = [f"def {vjp_name(d.name)}({sig}):", "    " + _py(doc)]
    lines += _prologue(g, arrays, vjp_name(d.name))
    for x in g.gathers:
        lines.append(f"    {x.name} = _gather(_b, {x.source}, {x.edges})")
    grads: dict[str, list[str]] = {t.name: [] for t in d.inputs}
    for k, p in enumerate(parts):
        cotangents = []
        for t in p.outputs:
            scatter = next((s for s in g.scatters if s.message == t.name), None)
            if scatter is not None:
                cotangents.append(f"_gather(_b, {cot[scatter.output]}, {scatter.edges})")
            else:
                cotangents.append(cot[t.name])
        results = [f"_g{k}_{t.name}" for t in p.inputs]
        args = ", ".join([t.name for t in p.inputs] + cotangents)
        lines.append(f"    {_tuple(results)} = _as_tuple({vjp_name(p.name)}({args}, fused=fused, kernels=kernels))")
        for t, r in zip(p.inputs, results):
            gather = next((x for x in g.gathers if x.name == t.name), None)
            if gather is not None:
                grads[gather.source].append(f"_scatter(_b, {r}, {gather.edges}, _n)")
            else:
                grads[t.name].append(r)
    result = []
    for t in d.inputs:
        if t.type.family == "edges":
            result.append("None")
            continue
        value = " + ".join(grads[t.name]) or f"_b.zeros_like({t.name})"
        lines.append(f"    _d_{t.name} = {value}")
        result.append("_d_" + t.name)
    lines.append(f"    return {_tuple(result) if len(result) > 1 else result[0]}")
    return "\n".join(lines)


def private_names(g: GraphDiagram) -> list[str]:
    return [edge_name(g.diagram.name), node_name(g.diagram.name)]
