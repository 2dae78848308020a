"""The CUDA printer: a :class:`~.kernels.CudaProgram` in, the text of one ``.cu`` file out.

Only printing happens here: coefficients as literals of the kernel's scalar type ``T`` (a rational
p/q as ``(T(p) / T(q))``, folded by the compiler, correctly rounded in either precision),
components as sums of products, C index expressions from the views' channel places. The shape of
the file is the template ``templates/cuda/module.cu.j2``.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import jinja2

from ... import __version__
from ..python.codegen import template_text
from ...ir.program import Program
from .kernels import (GRAD_SPAN, GRAD_THREADS, PRECISIONS, Component, CudaProgram, ElementwiseKernel,
                      MixingKernel, MixingVjpKernel, View, host_symbol, kernel_symbol, launcher_symbol, lower_program)


def coefficient(c: Fraction | float) -> str:
    if isinstance(c, Fraction):
        if c.denominator == 1:
            return f"T({c.numerator})"
        return f"(T({c.numerator}) / T({c.denominator}))"
    return f"T({float(c)!r})"


def view_param(k: int, views: tuple[View, ...]) -> str:
    """The element function's parameter for view ``k``: ``in_X`` for an input's first view."""
    v = views[k]
    first = next(j for j, w in enumerate(views) if w.input == v.input)
    return f"in_{v.input}" if first == k else f"in_{v.input}_{k - first}"


def component(c: Component, views: tuple[View, ...]) -> str:
    text = ""
    for p in c.products:
        factors = [f"{view_param(f.view, views)}[{f.component}]" for f in p.factors]
        coef = p.coefficient
        negative = coef < 0
        magnitude = -coef if negative else coef
        parts = factors if (magnitude == 1 and factors) else [coefficient(magnitude)] + factors
        body = " * ".join(parts)
        if not text:
            text = ("-" if negative else "") + body
        else:
            text += (" - " if negative else " + ") + body
    return text or "T(0)"


def _product(names: list[str]) -> str:
    return " * ".join(names) if names else "1LL"


def _view_offset(v: View, channels: tuple) -> str:
    """The element offset of a view that is read per element (not staged)."""
    if v.dense:
        return "c"
    per_batch = _product([f"ch{p}" for p in v.places])
    inner = "0LL"
    for p in v.places:
        inner = f"{inner} * ch{p} + i{p}" if inner != "0LL" else f"i{p}"
    return f"(({v.input}_batched ? b * {per_batch} : 0LL) + {inner})"


def _row(kept: tuple[int, ...]) -> str:
    """The row of a summed output that element (b, i0, i1, ...) adds into: b, then its kept axes."""
    inner = "b"
    for p in kept:
        inner = f"({inner}) * ch{p} + i{p}"
    return inner


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    return _environment().from_string(template_text("cuda/module.cu.j2"))


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
                              lstrip_blocks=True, autoescape=False)


def _comment(text: str) -> str:
    """Text safe inside a // comment: printable ASCII, no backslash (no line splice)."""
    return "".join(ch if 32 <= ord(ch) < 127 and ch != "\\" else "?" for ch in text)


def print_program(program: CudaProgram) -> str:
    entries = {MixingVjpKernel: _mixing_vjp_entry, MixingKernel: _mixing_entry, ElementwiseKernel: _elementwise_entry}
    kernels = [entries[type(k)](k) for k in program.kernels]
    return _template().render(
        version=__version__,
        filename=_comment(program.filename),
        sha256=program.source_sha256,
        kernels=kernels,
        unexpressed=[(u.name, _comment(u.reason)) for u in program.unexpressed],
        precisions=PRECISIONS,
    )


def _kernel_entry(k) -> dict:
    """What the template reads of every elementwise or mixing kernel: its views' parameters and
    locals, its kernel's, launcher's and host loop's symbols."""
    views = k.views
    return {
        "k": k,
        "params": [view_param(j, views) for j in range(len(views))],
        "locals": [f"view{j}" for j in range(len(views))],
        "kernel": {s: kernel_symbol(k.name, s) for s, _ in PRECISIONS},
        "launcher": {s: launcher_symbol(k.name, s) for s, _ in PRECISIONS},
        "host": {s: host_symbol(k.name, s) for s, _ in PRECISIONS},
    }


def _elementwise_entry(k: ElementwiseKernel) -> dict:
    """The template's entry for an elementwise kernel: its results' component formulas, views'
    offsets, channel indexing, stored and summed results."""
    views = k.views
    n = len(k.channels)
    index = [f"(c / ({_product([f'ch{q}' for q in range(p + 1, n)])})) % ch{p}" for p in range(n)]
    summed = [r for r in k.results if r.kept is not None]
    axis_index = index if any(not v.dense and v.places for v in views) else []
    key_index = index if any(r.kept for r in summed) else []
    return dict(
        _kernel_entry(k),
        results=[(r, [component(c, views) for c in r.components]) for r in k.results],
        offsets=[_view_offset(v, k.channels) for v in views],
        chans=_product([f"ch{p}" for p in range(n)]),
        axis_index=axis_index,
        views=list(views),
        stored=[r for r in k.results if r.kept is None],
        summed=summed,
        key_index=key_index,
        row_key={r.name: _row(r.kept) for r in summed},
        row_count={r.name: _product(["batch"] + [f"ch{p}" for p in r.kept]) for r in summed},
        host_index=axis_index or key_index,
    )


def _mixing_entry(k: MixingKernel) -> dict:
    """The template's entry for a channel-mixing kernel (a diagram's, or a part of a derivative's)."""
    return dict(_kernel_entry(k), z=[component(c, k.views) for c in k.z_components],
                acc=sum(r.size for r in k.results), z_words=max(len(k.z_components), 1))


def _mixing_vjp_entry(k: MixingVjpKernel) -> dict:
    """The template's entry for the derivative of channel mixing: its mixing parts (each a mixing
    entry, with its sizes ``ca, cb`` in the order of its contracted and output axes) and its weight
    cotangents (both sides' components, their GPU kernels' symbols), the launchers' and the host
    loop's symbols."""
    parts = [dict(_mixing_entry(m), sizes="ca, cb" if m.channel_in == k.channels[0] else "cb, ca",
                  grid_cols="cb" if m.channel_in == k.channels[0] else "ca") for m in k.mixings]
    grads = [{"g": g, "x": [component(c, g.views_x) for c in g.x], "y": [component(c, g.views_y) for c in g.y],
              "params_x": [view_param(j, g.views_x) for j in range(len(g.views_x))],
              "params_y": [view_param(j, g.views_y) for j in range(len(g.views_y))],
              "stem": f"{k.name}_grad{j}",
              "kernel": {s: kernel_symbol(f"{k.name}_grad{j}", s) for s, _ in PRECISIONS}}
             for j, g in enumerate(k.grads)]
    return {"k": k, "params": [], "locals": [], "parts": parts, "grads": grads,
            "launcher": {s: launcher_symbol(k.name, s) for s, _ in PRECISIONS},
            "host": {s: host_symbol(k.name, s) for s, _ in PRECISIONS},
            "grad": {"threads": GRAD_THREADS, "span": GRAD_SPAN}}


def generate_cuda(program: Program) -> str:
    """The text of one standalone CUDA C++ source for a checked program: every diagram's kernels
    and after them those of its generated derivatives (``NAME_vjp``, ``NAME_vjp_vjp``) that the
    generator can express (the header lists the others, with the reason). A graph diagram gives the
    kernels of its per-edge and per-node work, ``_NAME_edge`` / ``_NAME_node``, and where the
    per-edge work is elementwise one fused gather - product - sum-over-edges kernel and one for its
    VJP (:mod:`.graph`)."""
    if program.composites:  # a function passed at call time has no CUDA form
        from ...errors import DiagError
        from ...frontend.functions import shown
        from ...ir.program import Apply

        c = program.composites[0]
        applied = sorted({shown(s.function) for s in c.steps if isinstance(s, Apply)})
        raise DiagError(f"diagram '{c.name}' applies functions of invariants ({', '.join(applied)}): the cuda "
                        "target prints pure diagrams only", c.pos,
                        "compile it for Python (the default target): its stages run the generated CUDA kernels "
                        "on the GPU where the kernel generator can express them")
    from ...frontend.graph import split_program
    from ...ir.grad import with_derivatives
    from .graph import graph_section

    parts, graphs = split_program(program)
    derived = with_derivatives(parts, checked=True)
    lowered = lower_program(parts, derived)
    return print_program(lowered) + graph_section(graphs, {d.name: d for d in derived.diagrams},
                                                  {k.name for k in lowered.kernels})
