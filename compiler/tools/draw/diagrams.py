"""A diagram, and a file of diagrams, as rows of term pictures: each term through the three steps
(:func:`~.graph.drawing_graph`, :func:`~.layout.layout` and :func:`~.layout.shapes`,
:func:`~.svg.term_svg`), each equation one row ``OUT[...] =`` followed by its terms side by side."""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

from ...ir.program import Diagram, Program, TensorNetwork
from .graph import drawing_graph, term_height
from .layout import TermShapes, layout, shapes
from .style import CAPTION_H, FONT, INK, MARGIN, ROW_GAP, TERM_H, TITLE_H, show_index, text_width
from .svg import Picture, esc, num, svg_document, term_svg


def _coef_text(c: Fraction, first: bool, has_factors: bool) -> str:
    """The text before a term: '', '−', '1/2', '−1/3' for the first; '+', '−', '+ 1/2', '− 1/3' after."""
    mag = abs(c)
    body = "" if (mag == 1 and has_factors) else str(mag)
    if first:
        sign = "\u2212" if c < 0 else ""
        return sign + body
    sign = "\u2212" if c < 0 else "+"
    return f"{sign} {body}" if body else sign


def draw_network(term: TensorNetwork, output_name: str, height: float | None = None) -> Picture:
    """The picture of one term (without its coefficient): a box of about 160 x 140 px (wider or taller
    when the term is crowded; ``height`` forces the box height) with the term's formula under it."""
    return term_svg(placed_shapes(term, height), output_name)


@lru_cache(maxsize=512)
def placed_shapes(term: TensorNetwork, height: float | None) -> TermShapes:
    """A term's graph, laid out, as positioned shapes (the slow part; terms repeat between rows and
    diagrams)."""
    return shapes(layout(drawing_graph(term, height)))


def _signature(diagram: Diagram) -> str:
    if diagram.basis is not None:  # as declared; the elements' internal names are not shown
        ins = ", ".join(f"{t.name}: {t.type}^{'<=' if up_to else ''}{degree}"
                        for t, (degree, up_to) in zip(diagram.inputs, diagram.basis.degrees))
        out = diagram.basis.output
        return f"basis {diagram.name}: ({ins}) -> {out.name}: {out.type}, {len(diagram.outputs)} elements stacked"
    ins = ", ".join(f"{t.name}: {t.type}" for t in diagram.inputs)
    outs = [f"{t.name}: {t.type}" for t in diagram.outputs]
    out = outs[0] if len(outs) == 1 else "(" + ", ".join(outs) + ")"
    return f"{diagram.name}: ({ins}) -> {out}"


def _diagram_body(diagram: Diagram) -> tuple[str, float, float]:
    """SVG fragments of one diagram at (0, 0): title line, then one row per equation."""
    parts = []
    title = _signature(diagram)
    parts.append(f'<text class="title" x="0" y="16" font-size="15" font-weight="bold" fill="{INK}">'
                 f'{esc(title)}</text>')
    width = text_width(title, 15) * 1.12
    y = float(TITLE_H)
    labels = []
    for row, eq in enumerate(diagram.equations):
        lhs_idx = eq.terms[0].output if eq.terms else ()
        target = eq.target if diagram.basis is None else diagram.basis.output.name
        lhs = target + (f"[{','.join(show_index(i) for i in lhs_idx)}]" if lhs_idx else "") + " ="
        if diagram.basis is not None:  # element k in words, then the declared output
            lhs = f"{row}. {diagram.basis.words[row]}:  {lhs}"
        labels.append((target, lhs))
    # a basis's elements start in one column
    lhs_width = max([text_width(lhs, FONT) for _, lhs in labels] + [0.0])
    for eq, (target, lhs) in zip(diagram.equations, labels):
        terms = eq.terms
        box_h = max([term_height(t) for t in terms] + [float(TERM_H)])
        row_h = box_h + CAPTION_H
        mid = y + box_h / 2 + 5
        x = 0.0
        parts.append(f'<text class="lhs" x="{num(x)}" y="{num(mid)}" font-size="{FONT}" fill="{INK}">'
                     f'{esc(lhs)}</text>')
        x += (lhs_width if diagram.basis is not None else text_width(lhs, FONT)) + 10
        for k, term in enumerate(terms):
            coef = _coef_text(term.coefficient, k == 0, bool(term.nodes))
            if coef:
                parts.append(f'<text class="coefficient" x="{num(x)}" y="{num(mid)}" font-size="{FONT}" '
                             f'fill="{INK}">{esc(coef)}</text>')
                x += text_width(coef, FONT) + 6
            if not term.nodes and not term.output:  # a constant: its number says it all
                continue
            pic = draw_network(term, target, box_h)
            parts.append(pic.placed(x, y))
            x += pic.width + 8
        width = max(width, x)
        y += row_h + ROW_GAP
    return "".join(parts), width, y - ROW_GAP


def draw_diagram(diagram: Diagram) -> str:
    """The SVG document for one diagram."""
    body, w, h = _diagram_body(diagram)
    frag = f'<g class="diagram" transform="translate({MARGIN},{MARGIN})">{body}</g>'
    return svg_document([frag], w + 2 * MARGIN, h + 2 * MARGIN, diagram.name)


def draw_program(program: Program) -> str:
    """The SVG document for every diagram of a file, stacked vertically."""
    bodies = [_diagram_body(d) for d in program.diagrams]
    width = max([200.0] + [w for _, w, _ in bodies])
    frags, y = [], float(MARGIN)
    for k, (body, _, h) in enumerate(bodies):
        if k:
            frags.append(f'<line class="separator" x1="{MARGIN}" y1="{num(y)}" x2="{num(width + MARGIN)}" '
                         f'y2="{num(y)}" stroke="#d4d4d8"/>')
            y += 16
        frags.append(f'<g class="diagram" transform="translate({MARGIN},{num(y)})">{body}</g>')
        y += h + 16
    if not bodies:
        frags.append(f'<text x="{MARGIN}" y="{MARGIN + 14}" font-size="{FONT}" fill="{INK}">'
                     f'{esc(program.filename)}: no diagrams</text>')
        y += 30
    return svg_document(frags, width + 2 * MARGIN, y, program.filename)
