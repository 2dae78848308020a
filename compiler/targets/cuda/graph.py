"""The fused gather - per-edge product - sum-over-edges kernel of a graph diagram (CUDA target).

A graph diagram (:mod:`compiler.frontend.graph`) whose per-edge diagram ``_NAME_edge`` lowers to an
elementwise kernel gets, beside that diagram's own kernels, one kernel for the whole message-passing
step: a thread per channel element and run of ``EDGES_PER_THREAD`` consecutive edges reads each
gathered input at its edge list's node and each per-edge input at the edge, evaluates
``diagc__NAME_edge<T>`` in registers, adds up the messages of consecutive edges into one node there
and adds each sum into its node with ``atomicAdd`` (one per edge on an unsorted list, one per run
of up to ``EDGES_PER_THREAD`` edges into one node on a sorted one); a per-edge output is stored at
the edge. No per-edge intermediate goes through global memory. Module functions launch it
(``compiler.targets.python.graph``), forward and VJP. Lowering (this module's dataclasses) and
printing (:func:`print_graph`) are kept apart as in the rest of the target.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import DiagError
from ...frontend.graph import GraphDiagram
from ...ir.program import Diagram
from .kernels import PRECISIONS, ElementwiseKernel, lower_diagram
from .printer import _product

#: threads a block of the graph kernel
THREADS = 128
#: consecutive edges a thread handles (for one channel element): their messages into one node (a
#: sorted edge list) are added up in registers, one atomicAdd per such run instead of one per edge
EDGES_PER_THREAD = 8


@dataclass(frozen=True)
class GraphRow:
    """Where edge b finds input ``input`` of the per-edge kernel: row b (per edge), row ``list[b]``
    of the node array (a gather through ``edge_list``), or no row (shared by every edge)."""

    input: str
    edge_list: str | None
    batched: bool


@dataclass(frozen=True)
class GraphOut:
    """Result ``result`` of the per-edge kernel: added into row ``list[b]`` of output ``output``
    (``edge_list`` set: a sum over edges, atomicAdd), or stored at row b of a per-edge output."""

    result: str
    output: str
    edge_list: str | None


@dataclass(frozen=True)
class GraphKernel:
    name: str  # the graph diagram's
    edge: ElementwiseKernel
    rows: tuple[GraphRow, ...]  # one per edge.inputs
    outs: tuple[GraphOut, ...]  # one per edge.results
    lists: tuple[str, ...]  # the edge lists it reads, in the diagram's order


def lower_graph(g: GraphDiagram) -> GraphKernel | None:
    """The fused kernel of a graph diagram, or None when its per-edge diagram has no elementwise
    kernel storing every output per element (channel mixing, outputs with different channel axes):
    then its parts' kernels only."""
    k = _edge_kernel(g.edge_part)
    if k is None:
        return None
    gathers = {x.name: x for x in g.gathers}
    rows = tuple(GraphRow(i.name, gathers[i.name].edges if i.name in gathers else None,
                          i.name in gathers or i.name in g.per_edge) for i in k.inputs)
    scatters = {s.message: s for s in g.scatters}
    outs = tuple(GraphOut(r.name, scatters[r.name].output if r.name in scatters else r.name,
                          scatters[r.name].edges if r.name in scatters else None) for r in k.results)
    used = {r.edge_list for r in rows} | {o.edge_list for o in outs}
    return GraphKernel(g.diagram.name, k, rows, outs, tuple(n for n in g.edge_lists if n in used))


def _edge_kernel(d) -> ElementwiseKernel | None:
    """The elementwise kernel of a per-edge diagram storing every output per element, else None."""
    if d is None:
        return None
    try:
        k = lower_diagram(d)
    except DiagError:
        return None
    if not isinstance(k, ElementwiseKernel) or any(r.kept is not None for r in k.results):
        return None  # summed outputs (outputs with fewer channel axes): the parts' kernels only
    return k


def graph_refusal(g: GraphDiagram) -> str | None:
    """Why a graph diagram has no fused kernel (None: it has one); the module path says it."""
    if g.edge_part is None:
        return "it has no per-edge work"
    if g.node_part is not None:
        return "it has per-node terms (they run as the array code of its node diagram)"
    if _edge_kernel(g.edge_part) is None:
        return (f"its per-edge diagram {g.edge_part.name} has no elementwise kernel storing every output per "
                "element (channel mixing, or outputs with fewer channel axes)")
    return None


def lower_graph_vjp(g: GraphDiagram, vjp: Diagram) -> GraphKernel | None:
    """The fused kernel of a graph diagram's VJP (``vjp``: the generated VJP of its per-edge
    diagram, inputs: the edge diagram's, then one cotangent per output; outputs: one cotangent per
    input): the cotangent of a scattered message read at the scatter's edge list (the VJP of a sum
    over edges is a gather), that of a gathered input added into its node (the VJP of a gather is a
    sum over edges), that of a per-edge input stored at the edge. None where the forward has no
    fused kernel or a shared input's cotangent would be a sum over every edge."""
    p = g.edge_part
    if graph_refusal(g) is not None:
        return None
    k = _edge_kernel(vjp)
    if k is None or len(vjp.inputs) != len(p.inputs) + len(p.outputs) or len(vjp.outputs) != len(p.inputs):
        return None
    gathers = {x.name: x for x in g.gathers}
    scatters = {s.message: s for s in g.scatters}
    where = {}  # vjp input name -> (edge list or None, batched)
    for t in p.inputs:
        where[t.name] = (gathers[t.name].edges if t.name in gathers else None, t.name in gathers or t.name in g.per_edge)
    for t, c in zip(p.outputs, vjp.inputs[len(p.inputs):]):
        where[c.name] = (scatters[t.name].edges if t.name in scatters else None, True)
    rows = tuple(GraphRow(i.name, *where[i.name]) for i in k.inputs)
    target = {}
    for t, c in zip(p.inputs, vjp.outputs):
        if t.name in gathers:
            target[c.name] = (f"d_{gathers[t.name].source}", gathers[t.name].edges)
        elif t.name in g.per_edge:
            target[c.name] = (f"d_{t.name}", None)
        else:
            return None  # a shared input: its cotangent sums over every edge
    outs = tuple(GraphOut(r.name, *target[r.name]) for r in k.results)
    used = {r.edge_list for r in rows} | {o.edge_list for o in outs}
    return GraphKernel(f"{g.diagram.name}_vjp", k, rows, outs, tuple(n for n in g.edge_lists if n in used))


def graph_kernel_symbol(name: str, suffix: str) -> str:
    return f"diagc_{name}_graph_kernel_{suffix}"


def graph_launcher_symbol(name: str, suffix: str) -> str:
    return f"diagc_{name}_graph_{suffix}"


def _outputs(gk: GraphKernel) -> list[str]:
    """The graph function's outputs the kernel writes, each once (two results may sum into one)."""
    return list(dict.fromkeys(o.output for o in gk.outs))


def _params(gk: GraphKernel, head: list[str], results: bool) -> list[str]:
    """The parameters of a device function: ``head``, the edge lists, the inputs, then the result
    arrays (``results``) or the outputs, then the channel sizes."""
    k = gk.edge
    n = len(k.channels)
    lines = list(head)
    lines += [f"    const long long* __restrict__ list_{name}," for name in gk.lists]
    lines += [f"    const T* __restrict__ in_{i.name}," for i in k.inputs]
    if results:
        lines += [f"    T* __restrict__ r_{res.name}," for res in k.results]
    else:
        lines += [f"    T* __restrict__ out_{o}," for o in _outputs(gk)]
    lines.append("    const long long " + ", const long long ".join(f"ch{p}" for p in range(n)) + ")"
                 if n else "    const long long unused)")
    return lines


def _call_args(gk: GraphKernel, head: str, results: bool) -> str:
    k = gk.edge
    args = [head] + [f"list_{name}" for name in gk.lists] + [f"in_{i.name}" for i in k.inputs]
    args += [f"r_{res.name}" for res in k.results] if results else [f"out_{o}" for o in _outputs(gk)]
    args += [f"ch{p}" for p in range(len(k.channels))] or ["0LL"]
    return ", ".join(args)


def _element_function(gk: GraphKernel) -> list[str]:
    """Three device functions: ``_graph_compute`` (edge b's results for channel element c, read
    through the edge lists, in registers), ``_graph_element`` (those added into their nodes and
    stored per edge: one (edge, element)) and ``_graph_run`` (edges first..last-1 of element c, each
    message accumulated in registers while its node stays the same, added into the node when it
    changes: one atomicAdd per run of edges into one node of a sorted edge list)."""
    k = gk.edge
    n = len(k.channels)
    chans = _product([f"ch{p}" for p in range(n)])
    lines = ["template <typename T>"]
    lines += _params(gk, [f"__host__ __device__ __forceinline__ void diagc_{gk.name}_graph_compute(",
                          "    const long long b, const long long c,"], results=True)
    lines += ["{", f"    const long long chans = {chans};", "    (void)chans;"]
    lines += [f"    (void)list_{name};" for name in gk.lists if all(r.edge_list != name for r in gk.rows)]
    if any(not v.dense and v.places for v in k.views):
        for p in range(n):
            lines.append(f"    const long long i{p} = (c / ({_product([f'ch{q}' for q in range(p + 1, n)])})) % ch{p};")
    rows = {r.input: r for r in gk.rows}
    for r in gk.rows:
        if r.edge_list is not None:
            lines.append(f"    const long long row_{r.input} = list_{r.edge_list}[b];")
        elif r.batched:
            lines.append(f"    const long long row_{r.input} = b;")
    for j, v in enumerate(k.views):
        r = rows[v.input]
        if v.dense:
            at = f"row_{v.input} * chans + c" if r.batched else "c"
        else:
            inner = "0LL"
            for p in v.places:
                inner = f"{inner} * ch{p} + i{p}" if inner != "0LL" else f"i{p}"
            per_row = _product([f"ch{p}" for p in v.places])
            at = f"row_{v.input} * {per_row} + {inner}" if r.batched else inner
        lines.append(f"    const T* view{j} = in_{v.input} + ({at}) * {v.size};")
    args = [f"view{j}" for j in range(len(k.views))] + [f"r_{res.name}" for res in k.results]
    lines += [f"    diagc_{k.name}<T>({', '.join(args)});", "}", ""]

    def store(o, res, indent):
        return (f"{indent}for (int g = 0; g < {res.size}; ++g) out_{o.output}[(b * chans + c) * {res.size} + g] = "
                f"r_{res.name}[g];")

    lines.append("template <typename T>")
    lines += _params(gk, [f"__host__ __device__ __forceinline__ void diagc_{gk.name}_graph_element(",
                          "    const long long b, const long long c,"], results=False)
    lines += ["{", f"    const long long chans = {chans};"]
    lines += [f"    T r_{res.name}[{res.size}];" for res in k.results]
    lines.append(f"    diagc_{gk.name}_graph_compute<T>({_call_args(gk, 'b, c', results=True)});")
    for o, res in zip(gk.outs, k.results):
        if o.edge_list is not None:
            lines.append(f"    T* const to_{o.output}_{res.name} = out_{o.output} + (list_{o.edge_list}[b] * chans + c) * {res.size};")
            lines.append(f"    for (int g = 0; g < {res.size}; ++g) diagc_atomic_add(to_{o.output}_{res.name} + g, "
                         f"r_{res.name}[g]);")
        else:
            lines.append(store(o, res, "    "))
    lines += ["}", ""]

    summed = [(o, res) for o, res in zip(gk.outs, k.results) if o.edge_list is not None]
    lines.append("template <typename T>")
    lines += _params(gk, [f"__host__ __device__ __forceinline__ void diagc_{gk.name}_graph_run(",
                          "    const long long first, const long long last, const long long c,"], results=False)
    lines += ["{", f"    const long long chans = {chans};"]
    for o, res in summed:
        lines += [f"    T acc_{res.name}[{res.size}];", f"    long long at_{res.name} = -1;"]
    lines += [f"    T r_{res.name}[{res.size}];" for res in k.results]
    lines += ["    for (long long b = first; b < last; ++b) {",
              f"        diagc_{gk.name}_graph_compute<T>({_call_args(gk, 'b, c', results=True)});"]
    for o, res in summed:
        lines += [f"        const long long node_{res.name} = list_{o.edge_list}[b];",
                  f"        if (node_{res.name} != at_{res.name}) {{",
                  f"            if (at_{res.name} >= 0)",
                  f"                for (int g = 0; g < {res.size}; ++g) diagc_atomic_add(out_{o.output} + "
                  f"(at_{res.name} * chans + c) * {res.size} + g, acc_{res.name}[g]);",
                  f"            at_{res.name} = node_{res.name};",
                  f"            for (int g = 0; g < {res.size}; ++g) acc_{res.name}[g] = r_{res.name}[g];",
                  "        } else {",
                  f"            for (int g = 0; g < {res.size}; ++g) acc_{res.name}[g] += r_{res.name}[g];",
                  "        }"]
    lines += [store(o, res, "        ") for o, res in zip(gk.outs, k.results) if o.edge_list is None]
    lines.append("    }")
    for o, res in summed:
        lines += [f"    if (at_{res.name} >= 0)",
                  f"        for (int g = 0; g < {res.size}; ++g) diagc_atomic_add(out_{o.output} + "
                  f"(at_{res.name} * chans + c) * {res.size} + g, acc_{res.name}[g]);"]
    lines.append("}")
    return lines


def print_graph(gk: GraphKernel) -> str:
    """The text of one graph kernel: the element function (host and device), the float and double
    kernels and their host launchers (nvcc builds)."""
    k = gk.edge
    n = len(k.channels)
    ch_params = "".join(f", const long long ch{p}" for p in range(n))
    ch_args = ", ".join(f"ch{p}" for p in range(n)) or "0LL"
    outs = _outputs(gk)
    lines = ["", f"// ---- {gk.name}: gather, per-edge product ({k.name}), sum over edges; one thread per channel "
             f"element and {EDGES_PER_THREAD} consecutive edges",
             "// Messages are added into the node outputs (atomicAdd): pass them zeroed, or holding the per-node",
             "// terms. Edge lists are int64 node numbers, checked by the caller (0 <= node < nodes)."]
    for r in gk.rows:
        what = (f"the per-node input read at list_{r.edge_list}[edge]" if r.edge_list is not None
                else "per edge" if r.batched else "shared by every edge")
        lines.append(f"//   in_{r.input}: {what}")
    lines.append("")
    lines += _element_function(gk)
    lines += ["", "#if defined(__CUDACC__) || defined(__CUDACC_RTC__)"]
    for suffix, ctype in PRECISIONS:
        lines += [
            "",
            f'extern "C" __global__ void __launch_bounds__({THREADS}) {graph_kernel_symbol(gk.name, suffix)}(',
        ]
        lines += [f"    const long long* __restrict__ list_{name}," for name in gk.lists]
        lines += [f"    const {ctype}* __restrict__ in_{i.name}," for i in k.inputs]
        lines += [f"    {ctype}* __restrict__ out_{o}," for o in outs]
        lines += [f"    const long long edges{ch_params})", "{",
                  f"    const long long chans = {_product([f'ch{p}' for p in range(n)])};",
                  f"    const long long el = (long long)blockIdx.x * {THREADS} + threadIdx.x;",
                  f"    if (el >= (edges + {EDGES_PER_THREAD - 1}) / {EDGES_PER_THREAD} * chans) return;",
                  f"    const long long first = el / chans * {EDGES_PER_THREAD};",
                  f"    const long long last = first + {EDGES_PER_THREAD} < edges ? first + {EDGES_PER_THREAD} : edges;",
                  f"    diagc_{gk.name}_graph_run<{ctype}>(first, last, el % chans, "
                  + "".join(f"list_{name}, " for name in gk.lists)
                  + "".join(f"in_{i.name}, " for i in k.inputs)
                  + "".join(f"out_{o}, " for o in outs) + f"{ch_args});",
                  "}"]
    lines += ["#endif  // device code", "", "#if defined(__CUDACC__) && !defined(__CUDACC_RTC__)"]
    for suffix, ctype in PRECISIONS:
        pointers = [f"list_{name}" for name in gk.lists] + [f"in_{i.name}" for i in k.inputs] + [f"out_{o}" for o in outs]
        lines += [f'extern "C" int {graph_launcher_symbol(gk.name, suffix)}(']
        lines += [f"    const long long* list_{name}," for name in gk.lists]
        lines += [f"    const {ctype}* in_{i.name}," for i in k.inputs]
        lines += [f"    {ctype}* out_{o}," for o in outs]
        lines += [f"    long long edges{''.join(f', long long ch{p}' for p in range(n))}, cudaStream_t stream)", "{",
                  "    if (edges < 0" + "".join(f" || ch{p} < 0" for p in range(n)) + ") return (int)cudaErrorInvalidValue;",
                  f"    const long long total = (edges + {EDGES_PER_THREAD - 1}) / {EDGES_PER_THREAD}"
                  f"{''.join(f' * ch{p}' for p in range(n))};",
                  "    if (total == 0) return 0;",
                  "    if (" + " || ".join(f"!{p}" for p in pointers) + ") return (int)cudaErrorInvalidValue;",
                  f"    const long long blocks = (total + {THREADS - 1}) / {THREADS};",
                  "    if (blocks > 2147483647LL) return (int)cudaErrorInvalidValue;",
                  f"    {graph_kernel_symbol(gk.name, suffix)}<<<(unsigned)blocks, {THREADS}, 0, stream>>>("
                  + ", ".join(pointers + ["edges"] + [f"ch{p}" for p in range(n)]) + ");",
                  "    return (int)cudaGetLastError();", "}"]
    lines.append("#endif  // host launchers")
    return "\n".join(lines) + "\n"


ATOMIC_ADD = """
// add v into *p: atomicAdd on the device (float, and double from sm_60), a plain add on the host
template <typename T>
__host__ __device__ __forceinline__ void diagc_atomic_add(T* p, const T v)
{
#if defined(__CUDA_ARCH__)
    atomicAdd(p, v);
#else
    *p += v;
#endif
}
"""


def graph_section(graphs) -> str:
    """The text every graph kernel of a program adds at the end of the .cu file ('' for none)."""
    kernels = [gk for gk in (lower_graph(g) for g in graphs.values()) if gk is not None]
    if not kernels:
        return ""
    return ATOMIC_ADD + "".join(print_graph(gk) for gk in kernels)


