"""The fused gather - per-edge product - sum-over-edges kernel of a graph diagram (CUDA target).

A graph diagram (:mod:`compiler.frontend.graph`) whose per-edge diagram ``_NAME_edge`` lowers to an
elementwise kernel gets, beside that diagram's own kernels, one kernel for the whole message-passing
step: a thread per channel element and run of ``EDGES_PER_THREAD`` consecutive edges reads each
gathered input at its edge list's node and each per-edge input at the edge, evaluates
``diagc__NAME_edge<T>`` in registers, adds up the messages of consecutive edges into one node there
and adds each sum into its node with ``atomicAdd`` (one per edge on an unsorted list, one per run
of up to ``EDGES_PER_THREAD`` edges into one node on a sorted one); a per-edge output is stored at
the edge. No per-edge intermediate goes through global memory. Module functions launch it
(``compiler.targets.python.graph``), forward and VJP.

A VJP kernel whose per-edge diagram has outputs summed over every channel axis (the cotangent of a
per-edge input without channel axes, such as a unit vector ``u[e,k]`` shared by the channels) takes
the *block* form instead: a block owns whole runs of consecutive edges, each of its threads one
channel element of a run at a time, and the channel elements' shares of a summed output are added
up in the block (shared memory, then warp shuffles) and stored once per edge, no atomics (added into
the node where that output is a gathered input's cotangent). Lowering (this module's dataclasses) and
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
#: block form: the words a thread holds for its run's summed outputs (edges of a run x words of the
#: summed outputs) at most; a run has fewer edges where the summed outputs have more words
SUM_REGISTERS = 32
#: block form: the shared memory the sums over channel elements take at most (bytes, in double)
SUM_SHARED_BYTES = 48 * 1024


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
    (``edge_list`` set: a sum over edges, atomicAdd), or stored at row b of a per-edge output.
    ``summed``: the result has no channel axis, each channel element's share is summed over them
    (the block form: in the block, then stored, or added into the node, once per edge)."""

    result: str
    output: str
    edge_list: str | None
    summed: bool = False


@dataclass(frozen=True)
class GraphKernel:
    name: str  # the graph diagram's
    edge: ElementwiseKernel
    rows: tuple[GraphRow, ...]  # one per edge.inputs
    outs: tuple[GraphOut, ...]  # one per edge.results
    lists: tuple[str, ...]  # the edge lists it reads, in the diagram's order
    #: consecutive edges a run (of one thread, for one channel element) covers
    edges_per_run: int = EDGES_PER_THREAD
    #: thread form: the edge list in whose sorted order the kernel visits the edges (its ``order``
    #: argument, a permutation of the edges; null: their own order), so that a run's edges add into
    #: one node: the list every message is added into, where that is not the one the forward adds
    #: into (a VJP adds into the nodes the forward gathered from, and an edge list sorted by its
    #: receivers is in no useful order for its senders: one atomicAdd per edge instead of per run)
    visit: str | None = None

    @property
    def block_form(self) -> bool:
        """Whether a block owns whole runs of edges (some result is summed over the channels)."""
        return any(o.summed for o in self.outs)

    @property
    def sum_words(self) -> int:
        """Words per edge of the results summed over the channels (block form)."""
        return sum(r.size for o, r in zip(self.outs, self.edge.results) if o.summed)

    @property
    def shared_words(self) -> int:
        """Shared memory of a block, in words (block form: the summed words, a row of
        ``THREADS + 1`` each; 0 otherwise)."""
        return self.sum_words * (THREADS + 1) if self.block_form else 0


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


def _edge_kernel(d, sums: bool = False) -> ElementwiseKernel | None:
    """The elementwise kernel of a per-edge diagram storing every output per element, else None;
    with ``sums``, also one whose other outputs are summed over every channel axis (kept ``()``)."""
    if d is None:
        return None
    try:
        k = lower_diagram(d)
    except DiagError:
        return None
    if not isinstance(k, ElementwiseKernel):
        return None
    if any(r.kept is not None and (not sums or r.kept != ()) for r in k.results):
        return None  # outputs keeping some channel axes but not all: the parts' kernels only
    return k


def _edges_per_run(sum_words: int) -> int:
    """Edges a run covers in the block form: EDGES_PER_THREAD, halved while the run's summed words
    exceed SUM_REGISTERS."""
    n = EDGES_PER_THREAD
    while n > 1 and n * sum_words > SUM_REGISTERS:
        n //= 2
    return n


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
    sum over edges), that of a per-edge input stored at the edge. A cotangent with no channel axis
    (of an input without them: ``u[e,k]``) is the sum of the channel elements' shares: the block
    form (see the module's docstring). None where the forward has no fused kernel, a shared input's
    cotangent would be a sum over every edge, or (:func:`graph_vjp_refusal`) the per-edge VJP has no
    such kernel."""
    if graph_vjp_refusal(g, vjp) is not None:
        return None
    p = g.edge_part
    k = _edge_kernel(vjp, sums=True)
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
    outs = tuple(GraphOut(r.name, *target[r.name], summed=r.kept is not None) for r in k.results)
    used = {r.edge_list for r in rows} | {o.edge_list for o in outs}
    words = sum(r.size for r in k.results if r.kept is not None)
    return GraphKernel(f"{g.diagram.name}_vjp", k, rows, outs, tuple(n for n in g.edge_lists if n in used),
                       _edges_per_run(words) if words else EDGES_PER_THREAD, _visit(g, outs))


def _visit(g: GraphDiagram, outs: tuple[GraphOut, ...]) -> str | None:
    """GraphKernel.visit of a VJP kernel with results ``outs``: the one edge list its messages are
    added into, when that is not one the forward adds into; None in the block form (its runs are a
    block's consecutive edges), or where the messages go into several lists or none."""
    if any(o.summed for o in outs):
        return None
    into = {o.edge_list for o in outs if o.edge_list is not None}
    if len(into) != 1 or into & {s.edges for s in g.scatters}:
        return None
    return into.pop()


def graph_vjp_refusal(g: GraphDiagram, vjp: Diagram | None) -> str | None:
    """Why a graph diagram's VJP has no fused kernel (None: it has one; ``vjp``: the generated VJP
    of its per-edge diagram)."""
    reason = graph_refusal(g)
    if reason is not None:
        return reason
    p = g.edge_part
    if vjp is None:
        return f"its per-edge diagram {p.name} has no generated VJP"
    if _edge_kernel(vjp, sums=True) is None:
        return (f"the VJP of its per-edge diagram, {vjp.name}, has no elementwise kernel storing each output per "
                "element or summed over every channel axis")
    if len(vjp.inputs) != len(p.inputs) + len(p.outputs) or len(vjp.outputs) != len(p.inputs):
        return f"{vjp.name} does not take one cotangent per output of {p.name}"
    gathers = {x.name for x in g.gathers}
    shared = [t.name for t in p.inputs if t.name not in gathers and t.name not in g.per_edge]
    if shared:
        return f"input {shared[0]} is shared by every edge (its cotangent is a sum over all edges)"
    words = sum(r.size for r in _edge_kernel(vjp, sums=True).results if r.kept is not None)
    if words * (THREADS + 1) * 8 > SUM_SHARED_BYTES:
        return (f"its cotangents summed over the channels have {words} words per edge, more than "
                f"{SUM_SHARED_BYTES // 8 // (THREADS + 1)} (the block's sums would not fit its shared memory)")
    return None


def graph_kernel_symbol(name: str, suffix: str) -> str:
    return f"diagc_{name}_graph_kernel_{suffix}"


def graph_host_symbol(name: str, suffix: str) -> str:
    return f"diagc_{name}_graph_host_{suffix}"


def graph_launcher_symbol(name: str, suffix: str) -> str:
    return f"diagc_{name}_graph_{suffix}"


def _outputs(gk: GraphKernel) -> list[str]:
    """The graph function's outputs the kernel writes, each once (two results may sum into one)."""
    return list(dict.fromkeys(o.output for o in gk.outs))


def _strided(gk: GraphKernel) -> list[str]:
    """The inputs with a row per edge or node (per-edge, or gathered at an edge list): each is read
    at ``row * stride_NAME``, its rows' distance in elements (a launch argument), so that rows of a
    wider array (a view of every third channel block, as unbind makes) need no copy. Each row's
    channel elements and components are contiguous."""
    return [r.input for r in gk.rows if r.batched]


def _params(gk: GraphKernel, head: list[str], results: bool) -> list[str]:
    """The parameters of a device function: ``head``, the edge lists, the inputs, then the result
    arrays (``results``) or the outputs, then the channel sizes and the rows' strides."""
    k = gk.edge
    n = len(k.channels)
    lines = list(head)
    lines += [f"    const long long* __restrict__ list_{name}," for name in gk.lists]
    lines += [f"    const T* __restrict__ in_{i.name}," for i in k.inputs]
    if results:
        lines += [f"    T* __restrict__ r_{res.name}," for res in k.results]
    else:
        lines += [f"    T* __restrict__ out_{o}," for o in _outputs(gk)]
    scalars = [f"ch{p}" for p in range(n)] or ["unused"]
    scalars += [f"stride_{name}" for name in _strided(gk)]
    lines.append("    const long long " + ", const long long ".join(scalars) + ")")
    return lines


def _call_args(gk: GraphKernel, head: str, results: bool) -> str:
    k = gk.edge
    args = [head] + [f"list_{name}" for name in gk.lists] + [f"in_{i.name}" for i in k.inputs]
    args += [f"r_{res.name}" for res in k.results] if results else [f"out_{o}" for o in _outputs(gk)]
    args += [f"ch{p}" for p in range(len(k.channels))] or ["0LL"]
    args += [f"stride_{name}" for name in _strided(gk)]
    return ", ".join(args)


def _element_function(gk: GraphKernel) -> list[str]:
    """Three device functions: ``_graph_compute`` (edge b's results for channel element c, read
    through the edge lists, in registers), ``_graph_element`` (those added into their nodes and
    stored per edge: one (edge, element)) and ``_graph_run`` (edges first..last-1 of element c, each
    message accumulated in registers while its node stays the same, added into the node when it
    changes: one atomicAdd per run of edges into one node of a sorted edge list; thread form only,
    the block form's is :func:`_block_function`)."""
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
        if r.edge_list is not None or r.batched:  # (a VJP may read no view of an input)
            row = f"list_{r.edge_list}[b]" if r.edge_list is not None else "b"
            lines.append(f"    const long long row_{r.input} = {row};")
            if all(v.input != r.input for v in k.views):
                lines.append(f"    (void)row_{r.input};")
                if r.batched:
                    lines.append(f"    (void)stride_{r.input};")
    for j, v in enumerate(k.views):
        r = rows[v.input]
        if v.dense:
            inner = "c"
        else:
            inner = "0LL"
            for p in v.places:
                inner = f"{inner} * ch{p} + i{p}" if inner != "0LL" else f"i{p}"
        row = f"row_{v.input} * stride_{v.input} + " if r.batched else ""
        lines.append(f"    const T* view{j} = in_{v.input} + {row}({inner}) * {v.size};")
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
        if o.summed:  # this element's share of a row summed over the channels (zeroed first)
            row = f"list_{o.edge_list}[b]" if o.edge_list is not None else "b"
            lines.append(f"    for (int g = 0; g < {res.size}; ++g) diagc_atomic_add(out_{o.output} + {row} * {res.size} + g, "
                         f"r_{res.name}[g]);")
        elif o.edge_list is not None:
            lines.append(f"    T* const to_{o.output}_{res.name} = out_{o.output} + (list_{o.edge_list}[b] * chans + c) * {res.size};")
            lines.append(f"    for (int g = 0; g < {res.size}; ++g) diagc_atomic_add(to_{o.output}_{res.name} + g, "
                         f"r_{res.name}[g]);")
        else:
            lines.append(store(o, res, "    "))
    lines += ["}", ""]

    if gk.block_form:
        return lines  # the block form's run is device code (_block_function)
    summed = [(o, res) for o, res in zip(gk.outs, k.results) if o.edge_list is not None]
    lines.append("template <typename T>")
    head = "    const long long first, const long long last, const long long c,"
    if gk.visit is not None:  # positions first..last-1 of the edges in list_<visit>'s sorted order
        head += " const long long* __restrict__ order,"
    lines += _params(gk, [f"__host__ __device__ __forceinline__ void diagc_{gk.name}_graph_run(", head], results=False)
    lines += ["{", f"    const long long chans = {chans};"]
    for o, res in summed:
        lines += [f"    T acc_{res.name}[{res.size}];", f"    long long at_{res.name} = -1;"]
    lines += [f"    T r_{res.name}[{res.size}];" for res in k.results]
    if gk.visit is not None:
        lines += ["    for (long long j = first; j < last; ++j) {",
                  "        const long long b = order ? order[j] : j;  // the edge at position j"]
    else:
        lines.append("    for (long long b = first; b < last; ++b) {")
    lines += [f"        diagc_{gk.name}_graph_compute<T>({_call_args(gk, 'b, c', results=True)});"]
    for o, res in summed:
        lines += _accumulate(o, res, "        ")
    lines += [store(o, res, "        ") for o, res in zip(gk.outs, k.results) if o.edge_list is None]
    lines.append("    }")
    for o, res in summed:
        lines += [f"    if (at_{res.name} >= 0)",
                  f"        for (int g = 0; g < {res.size}; ++g) diagc_atomic_add(out_{o.output} + "
                  f"(at_{res.name} * chans + c) * {res.size} + g, acc_{res.name}[g]);"]
    lines.append("}")
    return lines


def _accumulate(o, res, indent: str) -> list[str]:
    """One edge's message ``r_<res>`` into the run's accumulator: added while its node (the edge
    list's entry) stays the same; when the node changes, the finished run is added into its node
    (one atomicAdd per run of edges into one node) and a new run starts."""
    flush = (f"for (int g = 0; g < {res.size}; ++g) diagc_atomic_add(out_{o.output} + "
             f"(at_{res.name} * chans + c) * {res.size} + g, acc_{res.name}[g]);")
    return [f"{indent}const long long node_{res.name} = list_{o.edge_list}[b];",
            f"{indent}if (node_{res.name} != at_{res.name}) {{",
            f"{indent}    if (at_{res.name} >= 0)",
            f"{indent}        {flush}",
            f"{indent}    at_{res.name} = node_{res.name};",
            f"{indent}    for (int g = 0; g < {res.size}; ++g) acc_{res.name}[g] = r_{res.name}[g];",
            f"{indent}}} else {{",
            f"{indent}    for (int g = 0; g < {res.size}; ++g) acc_{res.name}[g] += r_{res.name}[g];",
            f"{indent}}}"]


def _block_function(gk: GraphKernel) -> list[str]:
    """The device function of the block form, ``_graph_block``: a block of THREADS threads owns
    ``slots`` runs of ``edges_per_run`` consecutive edges (slots = THREADS / width, width = the
    channel elements, at most THREADS); thread t takes channel elements t % width, + width, ... of
    run t / width, computes its edges' results in registers, adds messages into their nodes as
    ``_graph_run`` does (one atomicAdd per run of edges into one node), stores per-edge outputs, and
    keeps its share of each summed output per edge. Then, edge by edge, the shares go through shared
    memory (a row of THREADS + 1 words per summed word, no bank conflicts), a warp per (run, word)
    adds the width shares of its run (lanes, then shuffles) and lane 0 stores the sum at the edge
    (or adds it into its node): every edge is owned by one block, no atomics for it. Every thread of
    the block reaches every barrier."""
    k = gk.edge
    n = len(k.channels)
    ept = gk.edges_per_run
    pitch = THREADS + 1
    summed = [(o, res) for o, res in zip(gk.outs, k.results) if o.summed]
    nodes = [(o, res) for o, res in zip(gk.outs, k.results) if not o.summed and o.edge_list is not None]
    words = gk.sum_words
    lines = ["template <typename T>"]
    lines += _params(gk, [f"__device__ __forceinline__ void diagc_{gk.name}_graph_block(", "    const long long edges,"],
                     results=False)
    lines += ["{", f"    const long long chans = {_product([f'ch{p}' for p in range(n)])};",
              "    if (chans <= 0) return;  // the same for every thread of the block",
              "    const int t = threadIdx.x;",
              f"    const int width = chans < {THREADS} ? (int)chans : {THREADS};  // threads a run",
              f"    const int slots = {THREADS} / width;  // runs a block",
              "    const int slot = t / width;",
              f"    const long long first = ((long long)blockIdx.x * slots + slot) * {ept};",
              f"    const long long last = first + {ept} < edges ? first + {ept} : edges;",
              "    const bool active = slot < slots && first < edges;"]
    for o, res in summed:
        lines += [f"    T sum_{res.name}[{ept}][{res.size}];",
                  "#pragma unroll",
                  f"    for (int j = 0; j < {ept}; ++j)",
                  f"        for (int g = 0; g < {res.size}; ++g) sum_{res.name}[j][g] = T(0);"]
    lines += ["    if (active) {",
              "        for (long long c = t % width; c < chans; c += width) {"]
    for o, res in nodes:
        lines += [f"            T acc_{res.name}[{res.size}];", f"            long long at_{res.name} = -1;"]
    lines += [f"            T r_{res.name}[{res.size}];" for res in k.results]
    lines += ["#pragma unroll",
              f"            for (int j = 0; j < {ept}; ++j) {{",
              "                const long long b = first + j;",
              "                if (b >= last) break;",
              f"                diagc_{gk.name}_graph_compute<T>({_call_args(gk, 'b, c', results=True)});"]
    for o, res in nodes:
        lines += _accumulate(o, res, "                ")
    for o, res in zip(gk.outs, k.results):
        if o.summed:
            lines.append(f"                for (int g = 0; g < {res.size}; ++g) sum_{res.name}[j][g] += r_{res.name}[g];")
        elif o.edge_list is None:
            lines.append(f"                for (int g = 0; g < {res.size}; ++g) out_{o.output}[(b * chans + c) * "
                         f"{res.size} + g] = r_{res.name}[g];")
    lines.append("            }")
    for o, res in nodes:
        lines += [f"            if (at_{res.name} >= 0)",
                  f"                for (int g = 0; g < {res.size}; ++g) diagc_atomic_add(out_{o.output} + "
                  f"(at_{res.name} * chans + c) * {res.size} + g, acc_{res.name}[g]);"]
    lines += ["        }", "    }",
              f"    // the sums over the channel elements, edge by edge: {words} words a thread in shared memory",
              "    extern __shared__ __align__(16) unsigned char diagc_shared[];",
              "    T* const s = reinterpret_cast<T*>(diagc_shared);",
              "    const int lane = t & 31;",
              "#pragma unroll",
              f"    for (int j = 0; j < {ept}; ++j) {{"]
    offset = 0
    for o, res in summed:
        lines.append(f"        for (int g = 0; g < {res.size}; ++g) s[({offset} + g) * {pitch} + t] = sum_{res.name}[j][g];")
        offset += res.size
    lines += ["        __syncthreads();",
              f"        for (int q = t >> 5; q < slots * {words}; q += {THREADS // 32}) {{  // a warp per (run, word)",
              f"            const int k = q / {words}, w = q % {words};",
              "            T v = T(0);",
              f"            for (int i = lane; i < width; i += 32) v += s[w * {pitch} + k * width + i];",
              "            for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(0xffffffffu, v, d);",
              f"            const long long b = ((long long)blockIdx.x * slots + k) * {ept} + j;",
              "            if (lane == 0 && b < edges) {"]
    offset = 0
    for i, (o, res) in enumerate(summed):
        cond = "if" if i == 0 else "else if"
        row = f"list_{o.edge_list}[b]" if o.edge_list is not None else "b"
        at = f"out_{o.output} + {row} * {res.size} + (w - {offset})"
        act = f"diagc_atomic_add({at}, v);" if o.edge_list is not None else f"*({at}) = v;"
        lines.append(f"                {cond} (w < {offset + res.size}) {act}")
        offset += res.size
    lines += ["            }", "        }", "        __syncthreads();", "    }", "}", ""]
    return lines


def _host_function(gk: GraphKernel, suffix: str, ctype: str) -> list[str]:
    """The graph kernel's work as a host loop, ``diagc_NAME_graph_host_SUFFIX``: the kernel's arguments,
    then the threads to use; every (edge, channel element) through ``_graph_element``. Each thread
    owns a range of channel elements over every edge (a node's row of one channel element is written
    by one thread). Block form (outputs summed over the channel elements): where those are per-edge
    rows, every thread but the first adds its share into rows of its own, added into the outputs
    after; where one is a node's row, one thread does all."""
    k = gk.edge
    n = len(k.channels)
    outputs = _outputs(gk)
    summed = list(dict.fromkeys((o.output, r.size) for o, r in zip(gk.outs, k.results) if o.summed))
    shares = gk.block_form and all(o.edge_list is None for o in gk.outs if o.summed)

    def args(own: bool) -> str:
        names = [f"to_{o}" if own and any(o == s for s, _ in summed) else f"out_{o}" for o in outputs]
        return ", ".join([f"list_{name}" for name in gk.lists] + [f"in_{i.name}" for i in k.inputs] + names
                         + ([f"ch{p}" for p in range(n)] or ["0LL"]) + [f"stride_{x}" for x in _strided(gk)])

    symbol = graph_host_symbol(gk.name, suffix)
    lines = ["", f"#if !defined(DIAGC_HOST_ONLY) || defined(DIAGC_HOST_{symbol})", f'extern "C" void {symbol}(']
    lines += [f"    const long long* list_{name}," for name in gk.lists]
    lines += [f"    const {ctype}* in_{i.name}," for i in k.inputs]
    lines += [f"    {ctype}* out_{o}," for o in outputs]
    lines += [f"    const long long edges{''.join(f', const long long ch{p}' for p in range(n))}"
              f"{''.join(f', const long long stride_{x}' for x in _strided(gk))}, const int threads)",
              "{",
              f"    typedef {ctype} T;",
              f"    const long long chans = {_product([f'ch{p}' for p in range(n)])};",
              "    if (edges <= 0 || chans <= 0) return;"]
    if not shares:
        lines += [f"    diagc_host_parallel(chans, 1, edges * chans, {'1' if gk.block_form else 'threads'}, "
                  "[&](const long long first, const long long last) {",
                  "        for (long long b = 0; b < edges; ++b)",
                  "            for (long long c = first; c < last; ++c)",
                  f"                diagc_{gk.name}_graph_element<T>(b, c, {args(False)});",
                  "    });",
                  "}",
                  "#endif"]
        return lines
    words = " + ".join(str(size) for _, size in summed)
    lines += ["    int parts = threads < chans ? threads : (int)chans;",
              "    if (parts < 1 || edges * chans < DIAGC_HOST_SERIAL) parts = 1;",
              "    const long long per = (chans + parts - 1) / parts;",
              "    parts = (int)((chans + per - 1) / per);  // none of them empty",
              f"    // the other parts' shares of the sums over the channel elements: ({words}) words an edge each",
              f"    diagc_host_buffer<T> shares((long long)(parts - 1) * edges * ({words}), true);",
              "    auto part = [&](const int p) {",
              "        const long long first = p * per, last = first + per < chans ? first + per : chans;",
              f"        T* const own = p == 0 ? nullptr : shares.data() + (size_t)(p - 1) * edges * ({words});"]
    offset = "0"
    for o, size in summed:
        lines.append(f"        T* const to_{o} = p == 0 ? out_{o} : own + edges * ({offset});")
        offset = f"{offset} + {size}" if offset != "0" else str(size)
    lines += ["        for (long long b = 0; b < edges; ++b)",
              "            for (long long c = first; c < last; ++c)",
              f"                diagc_{gk.name}_graph_element<T>(b, c, {args(True)});",
              "    };",
              "    diagc_host_team(parts, part);",
              "    for (int p = 1; p < parts; ++p) {",
              f"        const T* own = shares.data() + (size_t)(p - 1) * edges * ({words});"]
    offset = "0"
    for o, size in summed:
        lines.append(f"        for (long long i = 0; i < edges * {size}; ++i) out_{o}[i] += own[edges * ({offset}) + i];")
        offset = f"{offset} + {size}" if offset != "0" else str(size)
    lines += ["    }", "}", "#endif"]
    return lines


def print_graph(gk: GraphKernel) -> str:
    """The text of one graph kernel: the element function (host and device), the float and double
    kernels and their host launchers (nvcc builds)."""
    k = gk.edge
    n = len(k.channels)
    strides = [f"stride_{x}" for x in _strided(gk)]
    ch_params = "".join(f", const long long ch{p}" for p in range(n)) + "".join(f", const long long {x}" for x in strides)
    ch_args = ", ".join([f"ch{p}" for p in range(n)] or ["0LL"]) + "".join(f", {x}" for x in strides)
    outs = _outputs(gk)
    lines = ["", f"// ---- {gk.name}: gather, per-edge product ({k.name}), sum over edges; one thread per channel "
             f"element and {EDGES_PER_THREAD} consecutive edges",
             "// Messages are added into the node outputs (atomicAdd): pass them zeroed, or holding the per-node",
             "// terms. Edge lists are int64 node numbers, checked by the caller (0 <= node < nodes). An input with",
             "// a row per edge or node is read at row * stride_NAME (elements; each row contiguous)."]
    for r in gk.rows:
        what = (f"the per-node input read at list_{r.edge_list}[edge]" if r.edge_list is not None
                else "per edge" if r.batched else "shared by every edge")
        lines.append(f"//   in_{r.input}: {what}")
    if gk.visit is not None:
        lines += [f"// Edges are visited in the order of order[], a permutation sorting list_{gk.visit} (the nodes the",
                  f"// messages are added into; null: the edges' own order), so that runs of edges into one node are",
                  "// consecutive: one atomicAdd per run."]
    if gk.block_form:
        words = ", ".join(f"{o.output}" for o in gk.outs if o.summed)
        lines += [f"// Block form ({words} summed over the channels): a block owns runs of {gk.edges_per_run} consecutive",
                  f"// edges, {THREADS} / width runs (width: the channel elements, at most {THREADS}); "
                  f"{gk.shared_words} words of shared memory a block."]
    lines.append("")
    lines += _element_function(gk)
    lines += ["", "#if defined(__CUDACC__) || defined(__CUDACC_RTC__)"]
    if gk.block_form:
        lines += [""] + _block_function(gk)
    for suffix, ctype in PRECISIONS:
        lines += [
            "",
            f'extern "C" __global__ void __launch_bounds__({THREADS}) {graph_kernel_symbol(gk.name, suffix)}(',
        ]
        lines += [f"    const long long* __restrict__ list_{name}," for name in gk.lists]
        if gk.visit is not None:
            lines.append("    const long long* __restrict__ order,")
        lines += [f"    const {ctype}* __restrict__ in_{i.name}," for i in k.inputs]
        lines += [f"    {ctype}* __restrict__ out_{o}," for o in outs]
        if gk.block_form:
            lines += [f"    const long long edges{ch_params})", "{",
                      f"    diagc_{gk.name}_graph_block<{ctype}>(edges, "
                      + "".join(f"list_{name}, " for name in gk.lists)
                      + "".join(f"in_{i.name}, " for i in k.inputs)
                      + "".join(f"out_{o}, " for o in outs) + f"{ch_args});", "}"]
            continue
        lines += [f"    const long long edges{ch_params})", "{",
                  f"    const long long chans = {_product([f'ch{p}' for p in range(n)])};",
                  f"    const long long el = (long long)blockIdx.x * {THREADS} + threadIdx.x;",
                  f"    if (el >= (edges + {EDGES_PER_THREAD - 1}) / {EDGES_PER_THREAD} * chans) return;",
                  f"    const long long first = el / chans * {EDGES_PER_THREAD};",
                  f"    const long long last = first + {EDGES_PER_THREAD} < edges ? first + {EDGES_PER_THREAD} : edges;",
                  f"    diagc_{gk.name}_graph_run<{ctype}>(first, last, el % chans, "
                  + ("order, " if gk.visit is not None else "")
                  + "".join(f"list_{name}, " for name in gk.lists)
                  + "".join(f"in_{i.name}, " for i in k.inputs)
                  + "".join(f"out_{o}, " for o in outs) + f"{ch_args});",
                  "}"]
    lines += ["#endif  // device code", "", "#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)"]
    for suffix, ctype in PRECISIONS:
        lines += _host_function(gk, suffix, ctype)
    lines += ["#endif  // host loops", "", "#if defined(__CUDACC__) && !defined(__CUDACC_RTC__)"]
    for suffix, ctype in PRECISIONS:
        pointers = [f"list_{name}" for name in gk.lists] + [f"in_{i.name}" for i in k.inputs] + [f"out_{o}" for o in outs]
        lines += [f'extern "C" int {graph_launcher_symbol(gk.name, suffix)}(']
        lines += [f"    const long long* list_{name}," for name in gk.lists]
        if gk.visit is not None:
            lines.append("    const long long* order,  // may be null")
        lines += [f"    const {ctype}* in_{i.name}," for i in k.inputs]
        lines += [f"    {ctype}* out_{o}," for o in outs]
        lines += [f"    long long edges{''.join(f', long long ch{p}' for p in range(n))}"
                  f"{''.join(f', long long {x}' for x in strides)}, cudaStream_t stream)", "{",
                  "    if (edges < 0" + "".join(f" || ch{p} < 0" for p in range(n)) + "".join(f" || {x} < 0" for x in strides)
                  + ") return (int)cudaErrorInvalidValue;",
                  f"    const long long runs = (edges + {gk.edges_per_run - 1}) / {gk.edges_per_run};",
                  f"    const long long chans = 1{''.join(f' * ch{p}' for p in range(n))};",
                  "    if (runs == 0 || chans == 0) return 0;",
                  "    if (" + " || ".join(f"!{p}" for p in pointers) + ") return (int)cudaErrorInvalidValue;"]
        if gk.block_form:
            lines += [f"    const long long slots = {THREADS} / (chans < {THREADS} ? chans : {THREADS});",
                      "    const long long blocks = (runs + slots - 1) / slots;"]
        else:
            lines += [f"    const long long blocks = (runs * chans + {THREADS - 1}) / {THREADS};"]
        shared = f"{gk.shared_words} * sizeof({ctype})" if gk.block_form else "0"
        lines += ["    if (blocks > 2147483647LL) return (int)cudaErrorInvalidValue;",
                  f"    {graph_kernel_symbol(gk.name, suffix)}<<<(unsigned)blocks, {THREADS}, {shared}, stream>>>("
                  + ", ".join(pointers[:len(gk.lists)] + (["order"] if gk.visit is not None else [])
                              + pointers[len(gk.lists):] + ["edges"] + [f"ch{p}" for p in range(n)] + strides) + ");",
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


def graph_section(graphs, diagrams=None, kernels=frozenset()) -> str:
    """The text every graph kernel of a program adds at the end of the .cu file ('' for none): per
    graph diagram with a fused kernel, that kernel, and its VJP's where ``diagrams`` (by name: the
    program's diagrams with their derivatives) has the per-edge diagram's VJP and ``kernels`` (names
    of the diagrams with a kernel) says the generator expressed it."""
    from ...ir.grad import vjp_name

    lowered = []
    for g in graphs.values():
        gk = lower_graph(g)
        if gk is None:
            continue
        lowered.append(gk)
        vjp = (diagrams or {}).get(vjp_name(g.edge_part.name))
        vk = lower_graph_vjp(g, vjp) if vjp is not None and vjp.name in kernels else None
        if vk is not None:
            lowered.append(vk)
    if not lowered:
        return ""
    return ATOMIC_ADD + "".join(print_graph(gk) for gk in lowered)


