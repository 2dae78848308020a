"""Python text of a graph diagram's public functions (``NAME`` and ``NAME_vjp``).

:func:`compiler.frontend.graph.split_graph` gives the recipe as data; the edge and node diagrams in it are
emitted as ordinary private functions (``_NAME_edge``, ``_NAME_node``, with their derivatives).
This module writes the two public functions around them: the argument checks (``_graph_args`` of the
module template: shapes, edge lists' dtype, length and range), the gathers (``_gather``: torch
``index_select``, array indexing elsewhere), the call of the edge and node functions, and the
scatter-sums (``_scatter``: torch ``index_add``, numpy ``add.at``, cupy ``scatter_add``, jax
``.at[].add``), in a loop over runs of edges (``_edge_chunks``: cache-sized runs on the CPU, else
one run of every edge) that adds each run's messages into per-node accumulators and stores per-edge
results in their rows; torch CPU arrays wanting a gradient go through one autograd function whose
backward is ``NAME_vjp``. Only names of the diagram (identifiers the lowering accepted) reach the text.
"""

from __future__ import annotations

from ...frontend.graph import GraphDiagram, edge_name, node_name
from ...ir.program import Diagram
from .printer import channel_literal


def _wrap(text: str) -> list[str]:
    """``text`` in lines of at most 100 characters, indented as the docstring's arguments."""
    import textwrap

    return textwrap.wrap(text, 96, initial_indent="", subsequent_indent="    ")


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


def _prologue(g: GraphDiagram, arrays, name: str | None) -> list[str]:
    """Lines that check the arguments and bind ``_b`` (the backend), the arrays (converted to one
    library and dtype), the edge lists (index arrays of that library) and ``_n`` (number of nodes).
    Messages name the function ``name`` (the user's, for a stage); None: the one the variable
    ``_caller`` holds (a stage's argument: the user's function that called it)."""
    lists = g.edge_lists
    return [
        f"    _b, {_tuple(t.name for t in arrays)}, {_tuple(lists)}, _n = _graph_args(",
        f"        {'_caller' if name is None else _py(name)}, {_signature(g, arrays)}, {_tuple(t.name for t in arrays)},",
        f"        {_tuple(_py(n) for n in lists)}, {_tuple(lists)}, num_nodes)",
    ]


def graph_doc(g: GraphDiagram, cuda: str = "") -> str:
    """The docstring of a graph diagram's function: arguments with their shapes (no batch axes;
    per-node and per-edge arrays lead with their graph axis, an edge list is (e,) integers), and
    ``cuda``: what it runs on CUDA arrays."""
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
    lines += [f"    num_nodes: the number of nodes {g.node_set}; "
              + ("required (no array argument is per node)" if not g.per_node else
                 "optional (taken from the per-node arrays; checked when given)"),
              "    out: optional preallocated result (a tuple for several), numpy or torch; the results are copied",
              "        into it",
              f"    fused, kernels: passed to the per-edge and per-node functions ({edge_name(d.name)},",
              f"        {node_name(d.name)}), as for any diagram",
              "Returns:" if len(d.outputs) == 1 else "Returns a tuple:"]
    if cuda:
        lines[-1:-1] = _wrap("On CUDA arrays (torch, cupy): " + cuda)
    lines += [f"    {t.name}: {t.type}, shape {shape(t)}" for t in d.outputs]
    lines.append("")
    lines += [f"    {eq.target} = " + sum_formula(eq.terms) for eq in d.equations]
    return py_string("\n".join(("    " + line).rstrip() for line in lines).lstrip() + "\n    ", triple=True)


def graph_function(g: GraphDiagram, kernel: bool = False, vjp: bool = False, vjp_kernel: bool = False) -> str:
    """``NAME(inputs..., *, num_nodes=None, out=None, fused=False, kernels=True)`` (a stage of a diagram
    with functions also takes ``_caller``, the user's function its messages name). With ``kernel`` (the module
    embeds the graph's fused CUDA kernel, ``_NAME_GRAPH``) CUDA arrays run that one kernel, torch
    autograd through ``NAME_vjp`` (``vjp``: it exists; otherwise only calls needing no gradient; ``vjp_kernel``:
    it has a fused kernel too, ``_NAME_vjp_GRAPH``, whose host loop's build starts with the forward's)."""
    from ..cuda.graph import graph_refusal

    d = g.diagram
    arrays = [t for t in d.inputs if t.type.family != "edges"]
    sig = ", ".join(t.name for t in d.inputs) + ", *, num_nodes=None, out=None, fused=False, kernels=True"
    if d.origin:  # a stage of a diagram with functions: its messages name the user's function that called it
        sig += f", _caller={_py(d.shown_name)}"
    if kernel:
        cuda = ("one fused gather - per-edge product - sum-over-edges kernel (no per-edge array in memory)"
                + ("; its gradient through " + d.name + "_vjp" if vjp else "") + "; kernels=False: the array code.")
    else:
        cuda = ("gathers, the per-edge and per-node functions' kernels, sums over edges (no fused kernel: "
                f"{graph_refusal(g) or 'the module has no CUDA kernel of its per-edge diagram'}).")
    lines = [f"def {d.name}({sig}):", "    " + graph_doc(g, cuda)]
    lines += _prologue(g, arrays, None if d.origin else d.shown_name)
    if kernel:
        names, lists = _tuple(t.name for t in arrays), _tuple(g.edge_lists)
        backward = f"{d.name}_vjp" if vjp else "None"
        later = f", _{d.name}_vjp_GRAPH" if vjp and vjp_kernel else ""
        lines += [f"    if kernels and _use_graph_kernel(_b, _{d.name}_GRAPH, {names}, {backward}, fused{later}):",
                  f"        return _graph_out(_b, _graph_kernel(_b, _{d.name}_GRAPH, {names}, {lists}, _n, {backward}, "
                  f"fused), out, {names})"]
    if vjp:  # torch CPU arrays wanting a gradient: the code below with none recorded, NAME_vjp its backward
        lines += _recorded(g, arrays, _cotangents(d))
    values: dict[str, list[str]] = {t.name: [] for t in d.outputs}
    part = g.edge_part
    if part is not None:
        scattered, summed = {s.message: s for s in g.scatters}, set()
        lines += _dense(x.source for x in g.gathers)
        lines += _chunk_loop(g, arrays, [f"_s_{s.output}" for s in g.scatters]
                             + [f"_p_{t.name}" for t in part.outputs if t.name not in scattered])
        results = [f"_r_{t.name}" for t in part.outputs]
        args = ", ".join(_edge_argument(g, t.name) for t in part.inputs)
        lines.append(f"        {_tuple(results)} = _as_tuple({part.name}({args}, fused=fused, kernels=kernels))")
        for t, r in zip(part.outputs, results):
            scatter = next((s for s in g.scatters if s.message == t.name), None)
            if scatter is not None:
                lines.append(f"        _s_{scatter.output} = _scatter(_b, {r}, {scatter.edges}[_e], _n, _s_{scatter.output})")
                if scatter.output not in summed:  # one accumulator an output, whichever lists feed it
                    summed.add(scatter.output)
                    values[scatter.output].append(f"_s_{scatter.output}")
            else:
                lines.append(f"        _p_{t.name} = _edge_rows(_b, _p_{t.name}, {r}, _e, {g.edge_lists[0]}.shape[0])")
                values[t.name].append(f"_p_{t.name}")
    part = g.node_part
    if part is not None:
        results = [f"_r_{t.name}" for t in part.outputs]
        args = ", ".join(t.name for t in part.inputs)
        lines.append(f"    {_tuple(results)} = _as_tuple({part.name}({args}, fused=fused, kernels=kernels))")
        for t, r in zip(part.outputs, results):
            values[t.name].append(r)
    for t in d.outputs:
        lines.append(f"    {t.name} = " + " + ".join(values[t.name]))
    outs = _tuple(t.name for t in d.outputs)
    lines.append(f"    return _graph_out(_b, {outs}, out, {_tuple(t.name for t in arrays)})")
    return "\n".join(lines)


def _edge_argument(g: GraphDiagram, name: str) -> str:
    """The edge diagram's argument ``name`` for the run of edges ``_e``: a per-node input read at its
    edge list, a per-edge input's rows, or a shared input (a weight) whole."""
    gather = next((x for x in g.gathers if x.name == name), None)
    if gather is not None:
        return f"_gather(_b, {gather.source}, {gather.edges}[_e])"
    return f"{name}[_e]" if name in g.per_edge else name


def _dense(names) -> list[str]:
    """The arrays read at an edge list made C-contiguous once (a channel mixing's result may be a
    channels-last view: gathering its rows element by element, run after run, costs far more)."""
    return [f"    {x} = _b.contiguous({x})" for x in dict.fromkeys(names)]


def _chunk_loop(g: GraphDiagram, arrays, accumulators: list[str]) -> list[str]:
    """The ``accumulators`` of a graph function's per-edge work set to None (before the first run of
    edges) and the loop over the runs (``_edge_chunks``: one run of every edge unless the host code
    takes them in cache-sized runs)."""
    names = list(dict.fromkeys(accumulators))
    return ([f"    {' = '.join(names)} = None"] if names else []) + [
        f"    for _e in _edge_chunks(_b, {_tuple(g.edge_lists)}, {_tuple(t.name for t in arrays)}, fused):"]


def _recorded(g: GraphDiagram, arrays, cot: dict[str, str]) -> list[str]:
    """The branch of a graph function taking torch CPU arrays that want a gradient: one autograd
    function whose forward calls the function again (no gradient recorded: the host code in runs of
    edges) and whose backward is NAME_vjp."""
    from ...ir.grad import vjp_name

    d = g.diagram
    names = [t.name for t in arrays]
    caller = ", _caller=_caller" if d.origin else ""
    run = f"lambda {', '.join(names)}: {d.name}({', '.join(t.name for t in d.inputs)}, num_nodes=_n, kernels=kernels{caller})"
    grads = [cot[t.name] for t in d.outputs]
    back = (f"lambda {', '.join(names + grads)}: _arrays_only({vjp_name(d.name)}("
            f"{', '.join([t.name for t in d.inputs] + grads)}, num_nodes=_n, kernels=kernels))")
    return [f"    if _graph_recorded(_b, {_tuple(names)}, fused):",
            f"        return _graph_out(_b, _as_tuple(_graph_autograd().apply(",
            f"            {run},",
            f"            {back},",
            f"            {', '.join(names)})), out, {_tuple(names)})"]


def _cotangents(d: Diagram) -> dict[str, str]:
    """The name of each output's cotangent argument of ``NAME_vjp``."""
    from ...ir.grad import cotangent_name

    taken = {t.name for t in d.inputs + d.outputs}
    cot = {}
    for t in d.outputs:
        cot[t.name] = cotangent_name(t.name, taken)
        taken.add(cot[t.name])
    return cot


def graph_vjp_function(g: GraphDiagram, diagrams: dict[str, Diagram], kernel: bool = False) -> str | None:
    """``NAME_vjp(inputs..., d_outputs..., *, num_nodes=None, fused=False, kernels=True)``: the cotangent of every
    input (None for an edge list): the output cotangents read at each scatter's edge list (the VJP
    of a sum over edges is a gather), the edge and node diagrams' generated VJPs, and the cotangent
    of a gathered input summed into its nodes (the VJP of a gather is a scatter-sum). None when an
    edge or node diagram has no generated VJP (then autograd of the planned code is the derivative)."""
    from ...ir.grad import vjp_name

    d = g.diagram
    parts = [p for p in (g.edge_part, g.node_part) if p is not None]
    if any(vjp_name(p.name) not in diagrams for p in parts):
        return None
    cot = _cotangents(d)
    from ...ir.program import Tensor

    arrays = [t for t in d.inputs if t.type.family != "edges"]
    arrays += [Tensor(cot[t.name], t.type) for t in d.outputs]
    sig = (", ".join([t.name for t in d.inputs] + [cot[t.name] for t in d.outputs])
           + ", *, num_nodes=None, fused=False, kernels=True")
    doc = (f"{d.name}_vjp: the vector-Jacobian product of {d.name} (its inputs, then one cotangent per output): "
           f"the cotangent of every input in declaration order, None for an edge list.")
    if kernel:
        doc += (" On CUDA arrays: one fused kernel (cotangents read at the scatter's edge list, the gathered "
                "inputs' added into their nodes, the per-edge ones stored, those without a channel axis summed "
                "over the channels in the block); kernels=False: the array code.")
    else:
        from ..cuda.graph import graph_vjp_refusal

        vjp = diagrams.get(vjp_name(g.edge_part.name)) if g.edge_part is not None else None
        reason = graph_vjp_refusal(g, vjp) or "the module has no CUDA kernel of its per-edge VJP"
        doc += f" On CUDA arrays: gathers, the parts' VJP kernels, sums over edges (no fused kernel: {reason})."
    lines = [f"def {vjp_name(d.name)}({sig}):", "    " + _py(doc)]
    lines += _prologue(g, arrays, vjp_name(d.shown_name))
    if kernel:  # the fused kernel when no gradient of this is wanted (else the differentiable code below)
        names = _tuple(t.name for t in arrays)
        results = [f"_d_{t.name}" for t in d.inputs if t.type.family != "edges"]
        lines += [f"    if kernels and _use_graph_kernel(_b, _{vjp_name(d.name)}_GRAPH, {names}, None, fused):",
                  f"        {_tuple(results)} = _graph_kernel(_b, _{vjp_name(d.name)}_GRAPH, {names}, "
                  f"{_tuple(g.edge_lists)}, _n, None)",
                  "        return " + _tuple("None" if t.type.family == "edges" else f"_d_{t.name}" for t in d.inputs)]
    grads: dict[str, list[str]] = {t.name: [] for t in d.inputs}
    for k, p in enumerate(parts):
        edge = p is g.edge_part
        cotangents = []
        for t in p.outputs:
            scatter = next((s for s in g.scatters if s.message == t.name), None)
            if scatter is not None:
                cotangents.append(f"_gather(_b, {cot[scatter.output]}, {scatter.edges}[_e])")
            else:
                cotangents.append(f"{cot[t.name]}[_e]" if edge else cot[t.name])
        results = [f"_g{k}_{t.name}" for t in p.inputs]
        args = ", ".join([_edge_argument(g, t.name) if edge else t.name for t in p.inputs] + cotangents)
        call = f"{_tuple(results)} = _as_tuple({vjp_name(p.name)}({args}, fused=fused, kernels=kernels))"
        if not edge:
            lines.append("    " + call)
            for t, r in zip(p.inputs, results):
                grads[t.name].append(r)
            continue
        gathers = {x.name: x for x in g.gathers}
        sums, accs = [], []
        for t, r in zip(p.inputs, results):
            if t.name in gathers:  # summed into its nodes
                x = gathers[t.name]
                source, acc = x.source, f"_s_{x.source}"
                sums.append(f"{acc} = _scatter(_b, {r}, {x.edges}[_e], _n, {acc})")
            elif t.name in g.per_edge:  # stored per edge
                source, acc = t.name, f"_p_{t.name}"
                sums.append(f"{acc} = _edge_rows(_b, {acc}, {r}, _e, {g.edge_lists[0]}.shape[0])")
            else:  # shared (a weight): summed over every edge
                source, acc = t.name, f"_t_{t.name}"
                sums.append(f"{acc} = _edge_total({acc}, {r})")
            accs.append(acc)
            if acc not in grads[source]:
                grads[source].append(acc)
        lines += _dense([x.source for x in g.gathers] + [cot[s.output] for s in g.scatters])
        lines += _chunk_loop(g, arrays, accs)
        lines += ["        " + call] + ["        " + s for s in sums]
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


def graph_kernel_configs(graphs: dict, diagrams: dict[str, Diagram], kernels) -> tuple[str, dict, dict]:
    """The fused graph kernels a module embeds (after the kernels of its diagrams, ``kernels``: the
    names of those), as CUDA text, and per graph diagram its launch configurations as plain data:
    ``{NAME: cfg}`` and ``{NAME_vjp: cfg}`` for the forward and VJP kernels it has, and the reason
    for every graph diagram without a forward kernel (``{NAME: reason}``)."""
    from ...ir.grad import vjp_name
    from ..cuda.graph import ATOMIC_ADD, graph_refusal, lower_graph, lower_graph_vjp, print_graph

    texts, configs, reasons = [], {}, {}
    for g in graphs.values():
        d = g.diagram
        reason = graph_refusal(g)
        if reason is None and g.edge_part.name not in kernels:
            reason = f"its per-edge diagram {g.edge_part.name} has no CUDA kernel"
        gk = lower_graph(g) if reason is None else None
        if gk is None:
            reasons[d.name] = reason or "its per-edge diagram has no elementwise kernel"
            continue
        texts.append(print_graph(gk))
        configs[d.name] = _launch_config(g, gk)
        vjp = diagrams.get(vjp_name(g.edge_part.name))
        vk = lower_graph_vjp(g, vjp) if vjp is not None and vjp.name in kernels else None
        if vk is not None:
            texts.append(print_graph(vk))
            configs[vjp_name(d.name)] = _launch_config(g, vk, vjp)
    return (ATOMIC_ADD + "".join(texts) if texts else ""), configs, reasons


def _launch_config(g: GraphDiagram, gk, vjp: Diagram | None = None) -> dict:
    """How the runtime launches graph kernel ``gk`` from ``NAME``, or from ``NAME_vjp`` (``vjp``: the
    generated VJP of the per-edge diagram, whose kernel ``gk`` runs):
    per edge-list parameter its position among the function's edge lists; per input parameter the
    function's array it reads (position), whether that array leads with a node or edge axis (1) or
    not (0), its channel axes and geometric dims; per output parameter 'n' (a sum over edges into
    nodes: zeroed first) or 'e' (per edge), channel axes, dims; per result of the function the
    output parameter it is, or ('zeros', k): zeros like array k; the kernel's channel axes; the
    consecutive edges a thread handles; the form ('thread': a thread per channel element and run
    of edges; 'block': a block owns whole runs, ``THREADS // min(channel elements, THREADS)`` of
    them, and takes ``shared_words`` words of shared memory); the
    function's declared inputs as ('a', array) or ('l', edge list)."""
    from ..cuda.graph import THREADS, _outputs, graph_host_symbol, graph_kernel_symbol
    from ..cuda.kernels import module_config

    d = g.diagram
    arrays = [t.name for t in d.inputs if t.type.family != "edges"]
    gathers = {x.name: x.source for x in g.gathers}
    source = dict(gathers)  # kernel input -> the function's array it reads
    if vjp is not None:  # its inputs: the edge diagram's, then one cotangent per output, in order
        cot = _cotangents(d)
        arrays += [cot[t.name] for t in d.outputs]
        scatters = {s.message: s.output for s in g.scatters}
        for t, c in zip(g.edge_part.outputs, vjp.inputs[len(g.edge_part.inputs):]):
            source[c.name] = cot[scatters[t.name]] if t.name in scatters else cot[t.name]
    cfg = module_config(gk.edge)
    rows = {r.input: r for r in gk.rows}
    inputs = tuple((arrays.index(source.get(name, name)), int(rows[name].batched), chans, dims)
                   for name, chans, dims in cfg["inputs"])
    results = {r: (chans, dims) for r, chans, dims in cfg["outputs"]}
    outs = _outputs(gk)
    out_cfg = []
    for o in outs:
        writers = [w for w in gk.outs if w.output == o]
        chans, dims = results[writers[0].result]
        out_cfg.append(("n" if writers[0].edge_list is not None else "e", chans, dims))
    if vjp is None:
        got = tuple(("out", outs.index(t.name)) for t in d.outputs)
    else:
        n_arrays = len([t for t in d.inputs if t.type.family != "edges"])
        got = tuple(("out", outs.index(f"d_{a}")) if f"d_{a}" in outs else ("zeros", k)
                    for k, a in enumerate(arrays[:n_arrays]))
    order, k_a, k_l = [], 0, 0
    for t in d.inputs:
        if t.type.family == "edges":
            order.append(("l", k_l))
            k_l += 1
        else:
            order.append(("a", k_a))
            k_a += 1
    return {"name": gk.name, "symbols": {"float32": graph_kernel_symbol(gk.name, "f32"),
                                         "float64": graph_kernel_symbol(gk.name, "f64")},
            "host": {"float32": graph_host_symbol(gk.name, "f32"), "float64": graph_host_symbol(gk.name, "f64")},
            "block": THREADS, "edges_per_thread": gk.edges_per_run, "form": "block" if gk.block_form else "thread",
            "shared_words": gk.shared_words, "lists": tuple(g.edge_lists.index(n) for n in gk.lists), "inputs": inputs,
            "outputs": tuple(out_cfg), "results": got, "channels": cfg["channels"], "order": tuple(order),
            "visit": None if gk.visit is None else g.edge_lists.index(gk.visit)}

