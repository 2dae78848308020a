"""Lowering for the CUDA target: a diagram's fused plan as a kernel program (data, no text).

Every decision the CUDA printer needs is made here and recorded in frozen dataclasses:

* :class:`ElementwiseKernel` (a diagram with a fused form): every output component of one
  (batch, channel) element as a sum of :class:`Product` s of input components, read through
  :class:`View` s (one per placement of an input's channel axes among the output's), the tile of
  elements a block handles and where each staged input and each result lives in shared memory.
  A view whose input has all of the output's channel axes is *dense*: for a batched input, a
  block's elements are one contiguous run of memory, loaded and stored coalesced through shared
  memory; any other view is read per element (a broadcast input: small, cached).
* :class:`MixingKernel` (channel mixing, ``Y[d,...] = Σ_t Σ_c W_t[c,d] P_t(inputs[c])``): the
  per-channel polynomials ``P_t`` as components (the same :class:`Component` form), the weight of
  each term and how it is indexed; the printer emits a tiled batched GEMM over ``c``.
* :class:`MixingVjpKernel` (a derivative of channel mixing: mixing parts and weight cotangents
  summed over the batch, :class:`WeightGrad`): host loops, and where every part fits a GPU block
  GPU kernels too (each part's GEMM, a tiled sum over the batch per weight cotangent).

Anything else (a contraction over a channel axis of another form, outputs with different channel
axes of no form above, more components than shared memory can stage) is a
:class:`~compiler.errors.DiagError` naming the construct: the CUDA target never emits code that
computes something else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from fractions import Fraction

from ...errors import DiagError
from ...planning.fuse import Entry, Monomial, fuse_diagram, term_components, zero_outputs
from ...ir.program import Diagram, Program
from ...ir.types import Channel, FixedSize

#: threads (and elements) of an elementwise block, tried in order until the staged tile fits
TILES = (128, 64, 32)
#: static shared memory a block may use without opting in (bytes), sized for double
SHARED_BYTES = 48 * 1024
#: the widest scalar type a kernel is instantiated for (double)
WORD_BYTES = 8
#: float32 elementwise kernels of at most this many staged words per element take two elements a
#: thread (a block moves as many bytes as in float64: small rows need more bytes in flight; on an
#: H200 the batched 3x3 product, 18 words, ran 0.116 ms at 2 a thread against 0.130 at 1)
SMALL_ROW_WORDS = 18
#: and of at most this many, four elements a thread (a cross product: 6 words in, 3 out)
TINY_ROW_WORDS = 6
#: a kernel that sums into rows (a warp's shuffle tree and an atomicAdd per element) takes twice as
#: many, up to 4: independent elements overlap the shuffles' latency (edge_tensor_vjp, 11 words:
#: 0.085 ms at 4 a thread against 0.096 at 2 on an H200)
MAX_PER_THREAD = 4
#: elementwise kernels of at most this many staged words per element that sum into no row read and
#: write a thread's consecutive elements as runs from registers (``ElementwiseKernel.direct``); 0
#: (none) until a GPU run of benchmarks/cuda_variants.py (variant ``direct``) shows it faster
DIRECT_ROW_WORDS = 0
#: the mixing kernel (a register-tiled SIMT GEMM): MIX_WARPS warps; a thread accumulates
#: ``per_thread`` output channels (lanes along the output channel) times ``rows_per_warp`` batch
#: rows, at most MIX_REGISTERS accumulators; a block stages the polynomials and the weights of
#: ``chunk`` input channels at a time (the first of MIX_CHUNKS that fits shared memory)
MIX_WARPS = 4
MIX_REGISTERS = 72
MIX_SHAPES = ((4, 2), (2, 2), (4, 1), (2, 1), (1, 2), (1, 1))  # (per_thread, rows_per_warp), best first
MIX_CHUNKS = (16, 8, 4, 2, 1)
#: blocks an SM must hold at once (``__launch_bounds__``): float32 threads get at most 128 registers
#: (72 accumulators fit without spilling; 4 blocks of 4 warps an SM), float64 ones up to 255
MIX_MIN_BLOCKS = {"f32": 4, "f64": 2}
#: channel mixing on CUDA arrays in the Python module: the array library's GEMM (cuBLAS) instead of
#: the generated kernel (MixingKernel.library_gemm). On an H200 (N x C = 32768 x 128) cuBLAS took
#: 0.380 ms (float32) and 0.406 (float64) against the first generated GEMM's 0.567 and 1.31; the
#: present GEMM (weights staged) is timed against it by benchmarks/cuda_variants.py
MIX_LIBRARY_GEMM = True

#: a weight's cotangent on the GPU (WeightGrad's kernel): a block of GRAD_THREADS threads sums a
#: tile x tile block of [a, b] (the first of GRAD_TILES whose staged rows fit) over GRAD_SPAN batch
#: rows at a time (grid z: the spans, strided), staging the polynomials of ``rows_step`` rows in
#: shared memory (the most of GRAD_ROW_STEPS that fits), each thread a register tile of the sums
#: (tile / 16 a side: 4 x 4 in a tile of 64), then adds them into the zeroed output with atomicAdd.
#: (Session 12's tile of 32 with one sum per product read from shared memory lost to cuBLAS 2-2.7x
#: on the H200.)
GRAD_TILES = (64, 32)
GRAD_THREADS = 256
GRAD_SPAN = 128
GRAD_ROW_STEPS = (8, 4, 2, 1)

#: a leading underscore only on generated diagrams (a graph diagram's _NAME_edge / _NAME_node)
_IDENTIFIER = re.compile(r"_?[A-Za-z][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class View:
    """Input ``input`` (its ``position`` among the diagram's inputs) read at the output's channel
    axes ``places``; ``size`` geometric components per element, ``dims`` their shape."""

    input: str
    position: int
    places: tuple[int, ...]
    dims: tuple[int, ...]
    size: int
    dense: bool  # it has every output channel axis, in order: batched, a block's tile is contiguous
    shared_offset: int  # where its tile starts in shared memory, in words per element (dense only)


@dataclass(frozen=True)
class Factor:
    view: int  # index into the kernel's views
    component: int  # row-major over the view's geometric axes


@dataclass(frozen=True)
class Product:
    """coefficient × Π factors (the coefficient alone when there are none)."""

    coefficient: Fraction | float
    factors: tuple[Factor, ...]


@dataclass(frozen=True)
class Component:
    products: tuple[Product, ...]  # summed; empty means 0


@dataclass(frozen=True)
class Result:
    name: str
    dims: tuple[int, ...]
    size: int
    components: tuple[Component, ...]  # row-major over ``dims`` (elementwise kernels)
    shared_offset: int  # where its staged tile starts, in words per element / per thread (-1: summed)
    #: None: one row per element, stored. Else the places (among the kernel's channel axes) of the
    #: channel axes it keeps: each element's value is summed over the others into its row (a
    #: warp's run of elements sharing a row added by shuffles, then one atomicAdd; zeroed first)
    kept: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Input:
    name: str
    channels: tuple[Channel, ...]  # its channel axes (names or fixed sizes), in its storage order
    size: int  # geometric components per element
    dims: tuple[int, ...] = ()  # its geometric axes


@dataclass(frozen=True)
class ElementwiseKernel:
    """``tile`` threads a block, each one (batch, channel) element at a time: ``tile`` elements a
    block in float64, ``tile * per_thread_f32`` in float32."""

    name: str
    inputs: tuple[Input, ...]
    channels: tuple[Channel, ...]  # the outputs' channel axes (sizes are launch arguments)
    views: tuple[View, ...]
    results: tuple[Result, ...]
    tile: int
    shared_words: int  # per element: max(staged inputs, staged results)
    products: int
    per_thread_f32: int = 1
    #: a thread's elements are consecutive and read and written as runs from registers (16-byte
    #: loads where whole and aligned), without shared memory (no summed results); else staged
    direct: bool = False

    def elements(self, suffix: str) -> int:
        """Elements a block handles in precision ``suffix`` (f32, f64)."""
        return self.tile * (self.per_thread_f32 if suffix == "f32" else 1)

    def shared(self, suffix: str) -> int:
        """Words of shared memory a block takes in precision ``suffix``."""
        return 0 if self.direct else self.elements(suffix) * self.shared_words

    @property
    def kind(self) -> str:
        return "elementwise"


@dataclass(frozen=True)
class MixTerm:
    """Σ_c W[c,d] z[c, offset : offset + size]: one term's weight and its polynomials in ``z``."""

    weight: int  # position of the weight among the inputs
    contracted_first: bool  # W stored [..., c, d] (else [..., d, c])
    z_offset: int
    slot: int = 0  # its weight's place among the kernel's staged weights (MixingKernel.weights)


@dataclass(frozen=True)
class MixResult:
    name: str
    dims: tuple[int, ...]
    size: int
    terms: tuple[MixTerm, ...]
    acc_offset: int  # its components among a thread's accumulators (and the staged output row)


@dataclass(frozen=True)
class MixingKernel:
    """Channel mixing: per (batch row, output channel d), Σ over the contracted channel c.

    ``z`` holds, per (batch, c), every term's polynomial components (``z_components``, computed by
    the element function from the views at channel c), each row padded to ``z_pad`` words (16-byte
    loads). A block of ``threads`` (MIX_WARPS warps) computes ``cols`` = 32 × ``per_thread`` output
    channels of ``rows`` = warps × ``rows_per_warp`` batch rows: lane l of warp w accumulates
    channels d0 + l + 32 j (j < per_thread) of rows w × rows_per_warp + r in registers, reading each
    staged z row once per channel c for all its output channels and each staged weight once for all
    its rows (a register-tiled SIMT GEMM, outer products of a weight column and a z row). ``z`` and
    the distinct ``weights`` (input position, stored [c, d]) are staged ``chunk`` channels at a
    time, zero past the edges (so the unrolled inner loop has no branch); when a weight has a batch
    axis (one per batch row) each row's weights are staged, ``batched_step`` channels at a time.
    The results leave through shared memory, coalesced.
    """

    name: str
    inputs: tuple[Input, ...]
    channel_in: Channel  # the contracted axis (size C)
    channel_out: Channel  # the output axis (size D)
    views: tuple[View, ...]  # places () or (0,): the contracted channel
    z_components: tuple[Component, ...]
    results: tuple[MixResult, ...]
    threads: int
    rows: int
    chunk: int
    shared_words: int  # total, not per element
    per_thread: int = 1
    rows_per_warp: int = 1
    z_pad: int = 4
    weights: tuple[tuple[int, bool], ...] = ()  # staged weights: (input position, contracted_first)
    #: the Python module runs the array library's GEMM (cuBLAS) on CUDA arrays, not this kernel
    library_gemm: bool = MIX_LIBRARY_GEMM
    #: (precision suffix, blocks an SM must hold at once): the launch bounds
    blocks_per_sm: tuple[tuple[str, int], ...] = (("f32", 4), ("f64", 2))

    def min_blocks(self, suffix: str) -> int:
        """Blocks an SM must hold at once in precision ``suffix`` (the kernel's launch bounds)."""
        return dict(self.blocks_per_sm)[suffix]

    @property
    def batched_step(self) -> int:
        """Channels a step takes when a weight has a batch axis: every row's weights of the step
        are staged, in the space of ``chunk`` channels of one weight."""
        return max(self.chunk // self.rows, 1)

    @property
    def weight_words(self) -> int:
        """Where the staged z rows start in shared memory (the weights' chunk comes first)."""
        return len(self.weights) * self.cols * max(self.chunk, self.rows * self.batched_step)

    @property
    def cols(self) -> int:
        return 32 * self.per_thread

    @property
    def acc_words(self) -> int:
        return sum(r.size for r in self.results)

    @property
    def kind(self) -> str:
        return "mixing"


@dataclass(frozen=True)
class WeightGrad:
    """``name[a, b] = Σ over the batch rows of Σ_k x_k · y_k``: the cotangent of a weight without batch
    axes, as the derivative of channel mixing gives it. ``x`` are polynomials in the inputs read at
    channel a (``views_x``, places () or (0,)), ``y`` at channel b (``views_y``); pair k is
    ``(x[k], y[k])``. A register-tiled rank-K update of an (A, B) accumulator per thread."""

    name: str
    views_x: tuple[View, ...]
    x: tuple[Component, ...]
    views_y: tuple[View, ...]
    y: tuple[Component, ...]
    #: the GPU kernel's rows staged at a time (GRAD_ROW_STEPS); 0: none fits shared memory (host only)
    rows_step: int = 0
    #: the GPU kernel's block covers tile x tile channels [a, b] (GRAD_TILES)
    tile: int = GRAD_TILES[0]

    @property
    def shared_words(self) -> int:
        """Words of shared memory the GPU kernel's block takes: the x and y values of its staged rows."""
        return 2 * self.rows_step * self.tile * max(len(self.x), 1)


@dataclass(frozen=True)
class MixingVjpKernel:
    """The derivative of channel mixing (``NAME_vjp``, ``NAME_vjp_vjp``). Its outputs (``outputs``, in
    the diagram's order) are either channel mixings over one of ``channels`` (``mixings``: the
    cotangents of the mixed inputs, each a :class:`MixingKernel` of its own, named ``NAME_partK``)
    or weight cotangents (``grads``, carrying both ``channels`` in that order, totalled over the
    batch). The inputs at ``unbatched`` (weight-shaped: two channel axes, no geometric axis) must
    have no batch axes. Host loops always; GPU kernels too (each part's GEMM kernel and one per
    weight cotangent, launched in turn by one host launcher) unless ``host_only`` says why not:
    the cotangents' staged rows or the parts do not fit a GPU block."""

    name: str
    inputs: tuple[Input, ...]
    channels: tuple[Channel, Channel]
    outputs: tuple[str, ...]
    mixings: tuple[MixingKernel, ...]
    grads: tuple[WeightGrad, ...]
    unbatched: tuple[int, ...]
    host_only: str = ""  # why it has no GPU kernels ('': it has them)

    @property
    def kind(self) -> str:
        return "mixing_vjp"

    @property
    def device(self) -> bool:
        return not self.host_only


@dataclass(frozen=True)
class Unexpressed:
    """A generated derivative (``NAME_vjp``, ``NAME_vjp_vjp``) the kernel generator cannot express:
    it has no kernel (its refusal's words in ``reason``); the Python module runs its array code."""

    name: str
    reason: str


@dataclass(frozen=True)
class CudaProgram:
    filename: str
    source_sha256: str
    kernels: tuple[ElementwiseKernel | MixingKernel | MixingVjpKernel, ...]
    #: derivatives without a kernel (the file's header lists them)
    unexpressed: tuple[Unexpressed, ...] = ()


def _size(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def _flat(component: tuple[int, ...], dims: tuple[int, ...]) -> int:
    k = 0
    for v, d in zip(component, dims):
        k = k * d + v
    return k


def _refuse(diagram: Diagram, what: str) -> DiagError:
    return DiagError(f"diagram '{diagram.name}': the cuda target cannot express it: {what}", diagram.pos)


def _check_names(diagram: Diagram) -> None:
    for name in [diagram.name] + [t.name for t in diagram.inputs + diagram.outputs]:
        if not _IDENTIFIER.match(name):
            raise _refuse(diagram, f"'{name}' is not a plain ASCII identifier")


def _inputs(diagram: Diagram) -> tuple[Input, ...]:
    return tuple(Input(t.name, tuple(t.type.channels), _size(t.type.geometric_dims), tuple(t.type.geometric_dims))
                 for t in diagram.inputs)


class _Views:
    """Collects the views the components read, in order of first use."""

    def __init__(self, diagram: Diagram, n_channels: int):
        self.diagram = diagram
        self.n_channels = n_channels
        self.position = {t.name: k for k, t in enumerate(diagram.inputs)}
        self.dims = {t.name: tuple(t.type.geometric_dims) for t in diagram.inputs}
        self.keys: list[tuple[str, tuple[int, ...]]] = []

    def factor(self, entry: Entry) -> Factor:
        key = (entry.input, entry.channels)
        if key not in self.keys:
            self.keys.append(key)
        return Factor(self.keys.index(key), _flat(entry.component, self.dims[entry.input]))

    def component(self, monomials: tuple[Monomial, ...]) -> Component:
        return Component(tuple(Product(m.coefficient, tuple(self.factor(e) for e in m.factors)) for m in monomials))

    def views(self, stage_dense: bool) -> tuple[View, ...]:
        out, offset = [], 0
        for name, places in sorted(self.keys, key=lambda k: (self.position[k[0]], k[1])):
            dims = self.dims[name]
            dense = stage_dense and places == tuple(range(self.n_channels))
            out.append(View(name, self.position[name], places, dims, _size(dims), dense, offset if dense else -1))
            offset += _size(dims) if dense else 0
        return tuple(out)

    def renumber(self, views: tuple[View, ...]):
        """Factor view indices follow ``views``' (sorted) order."""
        new = {(v.input, v.places): k for k, v in enumerate(views)}
        old_to_new = {k: new[key] for k, key in enumerate(self.keys)}

        def fix(c: Component) -> Component:
            return Component(tuple(Product(p.coefficient, tuple(Factor(old_to_new[f.view], f.component)
                                                               for f in p.factors)) for p in c.products))
        return fix


def lower_diagram(diagram: Diagram, fused=None) -> ElementwiseKernel | MixingKernel | MixingVjpKernel:
    """The kernel program of one diagram (``fused``: its fused plan when already made), or a
    DiagError naming what the target cannot express."""
    _check_names(diagram)
    channels = {tuple(eq.type.channels) for eq in diagram.equations}
    if len(channels) != 1:
        try:
            return _summing(diagram)
        except DiagError as refusal:
            try:
                return _mixing_vjp(diagram)
            except DiagError:
                raise refusal from None
    fused = fused if fused is not None else fuse_diagram(diagram)
    if fused.outputs:
        return _elementwise(diagram, fused)
    zero = zero_outputs(diagram)
    if zero and len(zero) < len(diagram.equations):  # the others may have a fused form
        keep = [k for k, eq in enumerate(diagram.equations) if eq.target not in zero]
        rest = fuse_diagram(replace(diagram, equations=tuple(diagram.equations[k] for k in keep),
                                    outputs=tuple(diagram.outputs[k] for k in keep)))
        if rest.outputs:
            return _elementwise(diagram, rest)
    return _mixing(diagram, fused.reason)


def _elementwise(diagram: Diagram, fused) -> ElementwiseKernel:
    """The kernel of ``fused`` (the diagram's fused plan, or that of its outputs other than the ones
    zero in every component: those are stored as zeros)."""
    out_channels = tuple(diagram.equations[0].type.channels)
    views = _Views(diagram, len(out_channels))
    formed = {out.name: out for out in fused.outputs}
    results = []
    for eq in diagram.equations:
        dims = tuple(eq.type.geometric_dims)
        out = formed.get(eq.target)
        comps = tuple(views.component(c) for c in out.components) if out else (Component(()),) * _size(dims)
        results.append((eq.target, dims, comps, None))
    return _tiled(diagram, out_channels, views, results, fused.products)


def _tiled(diagram: Diagram, out_channels, views: _Views, results, products: int) -> ElementwiseKernel:
    """The elementwise kernel of ``results`` (name, dims, components, kept channel places or None):
    the tile a block handles and where staged inputs and stored results live in shared memory."""
    staged = views.views(stage_dense=True)
    fix = views.renumber(staged)
    in_words = sum(v.size for v in staged if v.dense)
    out_words = sum(_size(dims) for _, dims, _, kept in results if kept is None)
    words = max(in_words, out_words, 1)
    tile = next((t for t in TILES if t * words * WORD_BYTES <= SHARED_BYTES), None)
    if tile is None:
        raise _refuse(diagram, f"{words} components per element do not fit a tile of {TILES[-1]} elements "
                      f"in {SHARED_BYTES // 1024} KiB of shared memory")
    lowered, offset = [], 0
    for name, dims, comps, kept in results:
        lowered.append(Result(name, dims, _size(dims), tuple(fix(c) for c in comps),
                              offset if kept is None else -1, kept))
        offset += _size(dims) if kept is None else 0
    per_thread = _per_thread_f32(words, any(kept is not None for _, _, _, kept in results))
    while per_thread > 1 and tile * per_thread * words * 4 > SHARED_BYTES:  # float32 words
        per_thread //= 2
    sums = any(kept is not None for _, _, _, kept in results)
    return ElementwiseKernel(diagram.name, _inputs(diagram), out_channels, staged, tuple(lowered), tile, words,
                             products, per_thread, not sums and words <= DIRECT_ROW_WORDS)


def _per_thread_f32(words: int, sums: bool = False) -> int:
    """Elements a float32 thread handles, from the staged row (``words`` per element) and whether
    the kernel sums into rows: small rows need more bytes in flight per block, and a reduction more
    independent elements to overlap its shuffles (measured on an H200: benchmarks/cuda_variants.py)."""
    n = 4 if words <= TINY_ROW_WORDS else 2 if words <= SMALL_ROW_WORDS else 1
    return min(2 * n, MAX_PER_THREAD) if sums else n


def _subsequence(part: tuple[Channel, ...], whole: tuple[Channel, ...]) -> tuple[int, ...] | None:
    """The places of ``part``'s axes in ``whole``, in order, or None when it is not a subsequence."""
    places, k = [], 0
    for axis in part:
        while k < len(whole) and whole[k] != axis:
            k += 1
        if k == len(whole):
            return None
        places.append(k)
        k += 1
    return tuple(places)


def _summing(diagram: Diagram) -> ElementwiseKernel:
    """Outputs with different channel axes, as a VJP gives them (the cotangent of an input with
    fewer channel axes is summed over the others: ``d_r[i] = Σ_c fA[c] ... d_X[c,...]``): one
    elementwise kernel over the widest output's channel axes, each narrower output the sum of its
    per-element terms over the axes it lacks. Every input must carry all of those channel axes or
    none (else the sum is a contraction such as channel mixing's, which this kernel would do
    element by element), and every term of a narrower output must carry each axis it is summed over."""
    what = "its outputs have different channel axes"
    axes = [tuple(eq.type.channels) for eq in diagram.equations]
    full = max(axes, key=len)
    kept = [_subsequence(a, full) for a in axes]
    if any(k is None for k in kept):
        raise _refuse(diagram, f"{what} and no output carries all of them (one kernel needs one index space: "
                      "put them in separate diagrams)")
    for t in diagram.inputs:
        if tuple(t.type.channels) not in ((), full):
            raise _refuse(diagram, f"{what}, and input '{t.name}' carries some of the channel axes "
                          f"({', '.join(map(str, full))}) but not all: the sum over the others is a contraction, not an "
                          "elementwise sum (put the outputs in separate diagrams)")
    views = _Views(diagram, len(full))
    results, products = [], 0
    for eq, places in zip(diagram.equations, kept):
        dims = tuple(eq.type.geometric_dims)
        own = len(places)
        sums: list[dict] = [dict() for _ in range(_size(dims))]
        for term in eq.terms:
            kinds = dict(term.kinds)
            labels = {}
            for n in term.nodes:
                if n.kind == "input":
                    for i in n.indices[:n.n_channels]:
                        if i not in term.output[:own]:
                            labels.setdefault(str(kinds[i].dim), set()).add(i)
            output = []
            for p, axis in enumerate(full):
                if p in places:
                    output.append(term.output[places.index(p)])
                elif len(labels.get(axis, ())) != 1:
                    raise _refuse(diagram, f"{what}; term '{term.formula()}' of '{eq.target}' does not carry channel "
                                  f"axis '{axis}' once, which '{eq.target}' is summed over")
                else:
                    output.append(next(iter(labels[axis])))
            comps = term_components(replace(term, output=tuple(output) + tuple(term.output[own:])), len(full), dims)
            if isinstance(comps, str):
                raise _refuse(diagram, f"{what}; term '{term.formula()}': {comps}")
            for acc, monomials in zip(sums, comps):
                for m in monomials:
                    acc[m.factors] = acc.get(m.factors, 0) + m.coefficient
        components = tuple(Component(tuple(Product(c, tuple(views.factor(e) for e in key))
                                           for key, c in sorted(acc.items()) if c != 0)) for acc in sums)
        products += sum(len(c.products) for c in components)
        results.append((eq.target, dims, components, None if places == tuple(range(len(full))) else places))
    if all(not p.factors for _, _, comps, _ in results for c in comps for p in c.products):
        raise _refuse(diagram, f"{what} and every output is a constant")
    # the views were numbered as first used; _tiled renumbers them in the kernel's order
    return _tiled(diagram, full, views, results, products)


def _mixing(diagram: Diagram, reason: str, device: bool = True) -> MixingKernel:
    """Channel mixing: every term one weight W[c,d] (or W[d,c]) times a fused polynomial in inputs
    that carry the contracted channel c (or none). ``device=False``: a host loop's part only (a
    derivative's), not limited by the GPU kernel's shared memory and registers."""
    expected = ("of the form Y[d,...] = sum of W[c,d] times a product of inputs carrying channel c or "
                "no channel (a weight with two channel axes and no geometric axis per term)")
    out_channels = tuple(diagram.equations[0].type.channels)
    if len(out_channels) != 1:
        raise _refuse(diagram, f"{reason}, and the contraction is not channel mixing {expected}")
    position = {t.name: k for k, t in enumerate(diagram.inputs)}
    views = _Views(diagram, 1)
    z: list[Component] = []
    results = []
    contracted_axis = None
    acc = 0
    weights: list[tuple[int, bool]] = []
    for eq in diagram.equations:
        dims = tuple(eq.type.geometric_dims)
        terms = []
        for term in eq.terms:
            d = term.output[0]
            kinds = dict(term.kinds)
            carriers = [n for n in term.nodes if n.kind == "input" and d in n.indices]
            if len(carriers) != 1:
                raise _refuse(diagram, f"{reason}; term '{term.formula()}' is not channel mixing {expected}")
            w = carriers[0]
            ch = w.indices[:w.n_channels]
            if w.n_channels != 2 or len(w.indices) != 2 or ch[0] == ch[1]:
                raise _refuse(diagram, f"{reason}; in term '{term.formula()}', '{w.name}' is not a weight "
                              f"[c,d] {expected}")
            c = ch[0] if ch[1] == d else ch[1]
            if c in term.output:
                raise _refuse(diagram, f"{reason}; term '{term.formula()}' is not channel mixing {expected}")
            axis = kinds[c].dim
            if contracted_axis not in (None, axis):
                raise _refuse(diagram, f"{reason}; its terms contract different channel axes "
                              f"('{contracted_axis}', '{axis}')")
            contracted_axis = axis
            rest = tuple(n for n in term.nodes if n is not w)
            for n in rest:
                if n.kind == "input" and any(i != c for i in n.indices[:n.n_channels]):
                    raise _refuse(diagram, f"{reason}; in term '{term.formula()}', '{n.name}' carries a channel "
                                  f"axis other than the contracted one {expected}")
            reduced = replace(term, nodes=rest, output=(c,) + tuple(term.output[1:]))
            comps = term_components(reduced, 1, dims)
            if isinstance(comps, str):
                raise _refuse(diagram, f"{reason}; term '{term.formula()}': {comps}")
            key = (position[w.name], ch[0] == c)
            if key not in weights:
                weights.append(key)
            terms.append(MixTerm(key[0], key[1], len(z), weights.index(key)))
            z.extend(views.component(cm) for cm in comps)
        results.append((eq.target, dims, tuple(terms), acc))
        acc += _size(dims)
    staged = views.views(stage_dense=False)
    fix = views.renumber(staged)
    z_pad = -(-max(len(z), 1) // 4) * 4
    per_thread, rows_per_warp = next(
        ((p, r) for p, r in MIX_SHAPES if p * r * acc <= MIX_REGISTERS), MIX_SHAPES[-1])
    rows = MIX_WARPS * rows_per_warp
    out_words = MIX_WARPS * 32 * per_thread * acc  # one staged output row per warp

    def words(chunk: int) -> int:  # the staged weights and z rows of a chunk, or the staged results
        staged = len(weights) * 32 * per_thread * max(chunk, rows * max(chunk // rows, 1))
        return max(staged + rows * chunk * z_pad, out_words)
    chunk = next((k for k in MIX_CHUNKS if words(k) * WORD_BYTES <= SHARED_BYTES), None if device else 1)
    if device and (chunk is None or acc > 4 * MIX_REGISTERS):
        raise _refuse(diagram, f"{len(z)} polynomial components per channel or {acc} output components do not "
                      f"fit in {SHARED_BYTES // 1024} KiB of shared memory and the registers of one thread")
    return MixingKernel(
        diagram.name, _inputs(diagram), contracted_axis, out_channels[0], staged, tuple(fix(c) for c in z),
        tuple(MixResult(n, dims, _size(dims), terms, off) for n, dims, terms, off in results),
        MIX_WARPS * 32, rows, chunk, words(chunk), per_thread, rows_per_warp, z_pad, tuple(weights), MIX_LIBRARY_GEMM,
        tuple(sorted(MIX_MIN_BLOCKS.items())))


def _mixing_vjp(diagram: Diagram) -> MixingVjpKernel:
    """The derivative of channel mixing: outputs that are channel mixings (one MixingKernel each) and
    weight cotangents [a, b] without geometric axes (WeightGrad), over two channel axes a, b."""
    what = "a derivative of channel mixing"
    grads_eq = [eq for eq in diagram.equations if len(eq.type.channels) == 2 and not eq.type.geometric_dims]
    if diagram.stacked or not grads_eq:
        raise _refuse(diagram, f"not {what}")
    axes = tuple(grads_eq[0].type.channels)
    if any(tuple(eq.type.channels) != axes for eq in grads_eq) or axes[0] == axes[1]:
        raise _refuse(diagram, f"not {what}: its weight cotangents carry different channel axes")
    mixings, grads, parts_fit = [], [], True
    for k, (eq, out) in enumerate(zip(diagram.equations, diagram.outputs)):
        if eq in grads_eq:
            grads.append(_weight_grad(diagram, eq))
            continue
        if len(eq.type.channels) != 1 or eq.type.channels[0] not in axes:
            raise _refuse(diagram, f"not {what}: output '{eq.target}' is neither a mixing over "
                          f"'{axes[0]}' or '{axes[1]}' nor a weight cotangent")
        alone = replace(diagram, equations=(eq,), outputs=(out,))
        try:
            part = _mixing(alone, what)
        except DiagError:  # beyond a GPU block: a host loop's part only
            part = _mixing(alone, what, device=False)
            parts_fit = False
        mixings.append(replace(part, name=f"{diagram.name}_part{k}"))
    unbatched = tuple(k for k, t in enumerate(diagram.inputs)
                      if len(t.type.channels) == 2 and not t.type.geometric_dims)
    host_only = ("its weight cotangents' staged rows do not fit a GPU block" if not all(g.rows_step for g in grads)
                 else "" if parts_fit else "its mixing parts do not fit a GPU block")
    return MixingVjpKernel(diagram.name, _inputs(diagram), axes, tuple(eq.target for eq in diagram.equations),
                           tuple(mixings), tuple(grads), unbatched, host_only)


def _weight_grad(diagram: Diagram, eq) -> WeightGrad:
    """Each term of ``eq`` (a scalar [a, b]) split into the factors read at channel a (with the
    constants and the inputs without channels) and those read at channel b; the geometric legs
    joining the two sides are expanded, each value a pair of components."""
    xs, ys = [], []
    vx, vy = _Views(diagram, 1), _Views(diagram, 1)
    for term in eq.terms:
        la, lb = term.output[0], term.output[1]
        kinds = dict(term.kinds)
        side_x, side_y = [], []
        for n in term.nodes:
            ch = set(n.indices[:n.n_channels]) if n.kind == "input" else set()
            if ch <= {la}:
                side_x.append(n)
            elif ch == {lb}:
                side_y.append(n)
            else:
                raise _refuse(diagram, f"term '{term.formula()}' of '{eq.target}' is not a product of factors "
                              "read at one of its channel axes each")
        gx = [i for n in side_x for i in n.indices if kinds[i].geometric]
        gy = {i for n in side_y for i in n.indices if kinds[i].geometric}
        legs = tuple(dict.fromkeys(i for i in gx if i in gy))
        dims = tuple(3 if kinds[i].kind == "cart" else 2 * int(kinds[i].dim) + 1 for i in legs)
        cx = term_components(replace(term, nodes=tuple(side_x), output=(la,) + legs), 1, dims)
        cy = term_components(replace(term, nodes=tuple(side_y), output=(lb,) + legs, coefficient=Fraction(1)),
                             1, dims)
        for c in (cx, cy):
            if isinstance(c, str):
                raise _refuse(diagram, f"term '{term.formula()}' of '{eq.target}': {c}")
        for mx, my in zip(cx, cy):
            if mx and my:
                xs.append(vx.component(mx))
                ys.append(vy.component(my))
    views_x, views_y = vx.views(stage_dense=False), vy.views(stage_dense=False)
    fx, fy = vx.renumber(views_x), vy.renumber(views_y)
    # the first tile (largest first) with the most rows staged that fit; (0, ...): none fits, host only
    step, tile = next(((r, tile) for tile in GRAD_TILES for r in GRAD_ROW_STEPS
                       if xs and 2 * r * tile * len(xs) * WORD_BYTES <= SHARED_BYTES), (0, GRAD_TILES[0]))
    return WeightGrad(eq.target, views_x, tuple(fx(c) for c in xs), views_y, tuple(fy(c) for c in ys), step, tile)


def lower_program(program: Program, derived: Program | None = None) -> CudaProgram:
    """The kernels of every diagram of a checked program (a refusal is a DiagError), and given
    ``derived``, the program with its generated derivatives after each diagram (``NAME_vjp``,
    ``NAME_vjp_vjp``: :func:`~compiler.ir.grad.with_derivatives` of it), those of the derivatives
    too where the generator can express them; the others are listed as :class:`Unexpressed`."""
    from ..python.codegen import source_sha256

    if derived is None:
        return CudaProgram(program.filename, source_sha256(program.source),
                           tuple(lower_diagram(d) for d in program.diagrams))
    own = {d.name for d in program.diagrams}
    kernels, unexpressed = [], []
    for d in derived.diagrams:
        if d.name in own:
            kernels.append(lower_diagram(d))
            continue
        try:
            kernels.append(lower_diagram(d))
        except DiagError as refusal:
            unexpressed.append(Unexpressed(d.name, refusal.message))
    return CudaProgram(program.filename, source_sha256(program.source), tuple(kernels), tuple(unexpressed))


#: the scalar types every kernel is instantiated for: suffix of its symbols, C type
PRECISIONS = (("f32", "float"), ("f64", "double"))


def kernel_symbol(name: str, suffix: str) -> str:
    """The extern "C" __global__ kernel of diagram ``name`` (what NVRTC users look up)."""
    return f"diagc_{name}_kernel_{suffix}"


def host_symbol(name: str, suffix: str) -> str:
    """The extern "C" host loop of diagram ``name`` (plain C++ builds only)."""
    return f"diagc_{name}_host_{suffix}"


def launcher_symbol(name: str, suffix: str) -> str:
    """The extern "C" host launcher of diagram ``name`` (nvcc builds only)."""
    return f"diagc_{name}_{suffix}"


def module_config(kernel: ElementwiseKernel | MixingKernel | MixingVjpKernel) -> dict:
    """How to check arguments for and launch ``kernel`` without the host launcher (through NVRTC),
    as plain data (a literal in the emitted Python module, JSON in gpu_bench's manifest): per input
    and output its name, channel axis names and geometric dims; per dtype the kernel symbol, the
    elements (elementwise) a block handles and its shared memory in words, the outputs it sums into
    (``summed``: their positions; zero them before the launch); the block size and, for
    channel mixing, the batch rows and output channels a block covers and whether the Python module
    runs the array library's GEMM instead (``library_gemm``); per dtype the host loop (``host``)
    and the inputs it takes without batch axes only (``unbatched``: the weights). The derivative of
    channel mixing has host loops only (no ``symbols``): its weight cotangents (``totalled``) are
    summed over the batch by the loop."""
    host = {dtype: host_symbol(kernel.name, s) for s, dtype in _DTYPES}
    inputs = tuple((i.name, _axes(i.channels), i.dims) for i in kernel.inputs)
    if isinstance(kernel, MixingVjpKernel):
        grads = {g.name for g in kernel.grads}
        parts = {m.results[0].name: m for m in kernel.mixings}
        config = {
            "name": kernel.name,
            "kind": kernel.kind,
            "inputs": inputs,
            "outputs": tuple((n, _axes(kernel.channels), ()) if n in grads else
                             (n, _axes((parts[n].channel_out,)), parts[n].results[0].dims) for n in kernel.outputs),
            "host": host,
            "channels": _axes(kernel.channels),
            "totalled": tuple(k for k, n in enumerate(kernel.outputs) if n in grads),
            "unbatched": kernel.unbatched,
        }
        if kernel.device:
            config["library_gemm"] = all(m.library_gemm for m in kernel.mixings)
            config["launches"] = _mixing_vjp_launches(kernel)
        return config
    common = {
        "name": kernel.name,
        "kind": kernel.kind,
        "symbols": {dtype: kernel_symbol(kernel.name, s) for s, dtype in _DTYPES},
        "inputs": inputs,
        "block": kernel.threads if isinstance(kernel, MixingKernel) else kernel.tile,
        "host": host,
    }
    if isinstance(kernel, ElementwiseKernel):
        return dict(common, outputs=tuple((r.name, _axes(kernel.channels if r.kept is None else
                                                 tuple(kernel.channels[p] for p in r.kept)), r.dims)
                                          for r in kernel.results),
                    summed=tuple(k for k, r in enumerate(kernel.results) if r.kept is not None),
                    channels=_axes(kernel.channels),
                    per_block={dtype: kernel.elements(s) for s, dtype in _DTYPES},
                    shared_words={dtype: kernel.shared(s) for s, dtype in _DTYPES})
    return dict(common, outputs=tuple((r.name, _axes((kernel.channel_out,)), r.dims) for r in kernel.results),
                channels=_axes((kernel.channel_in, kernel.channel_out)), rows=kernel.rows, cols=kernel.cols,
                library_gemm=kernel.library_gemm, unbatched=tuple(sorted({p for p, _ in kernel.weights})),
                shared_words={dtype: kernel.shared_words for _, dtype in _DTYPES})


def _mixing_vjp_launches(kernel: MixingVjpKernel) -> tuple:
    """The GPU kernels of a derivative of channel mixing, launched in turn (as its host launcher
    does), as plain data: per kernel its symbols, the output it writes (position), its two channel
    axes (contracted and output for a part; [a, b] for a weight cotangent, added into: zeroed
    first), the block size, shared memory in words, and how the grid is made: a part's batch rows
    and output channels a block covers (``rows``, ``cols``), a cotangent's tile (``tile``) and the
    batch rows a block takes at a time (``span``; grid z is the spans, at most 65535, strided)."""
    out = []
    for m in kernel.mixings:
        out.append({"symbols": {dtype: kernel_symbol(m.name, s) for s, dtype in _DTYPES},
                    "output": kernel.outputs.index(m.results[0].name),
                    "channels": _axes((m.channel_in, m.channel_out)), "block": m.threads, "rows": m.rows,
                    "cols": m.cols, "shared_words": {dtype: m.shared_words for _, dtype in _DTYPES}})
    for j, g in enumerate(kernel.grads):
        out.append({"symbols": {dtype: kernel_symbol(f"{kernel.name}_grad{j}", s) for s, dtype in _DTYPES},
                    "output": kernel.outputs.index(g.name), "channels": _axes(kernel.channels),
                    "block": GRAD_THREADS, "tile": g.tile, "span": GRAD_SPAN,
                    "shared_words": {dtype: g.shared_words for _, dtype in _DTYPES}})
    return tuple(out)


def _axes(channels) -> tuple:
    """Channel axes as plain data: a name (str) or a fixed size (int), the runtime's keys for sizes."""
    return tuple(c.size if isinstance(c, FixedSize) else c for c in channels)


_DTYPES = (("f32", "float32"), ("f64", "float64"))
