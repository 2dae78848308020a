"""Step 3 of a picture: positioned shapes (:class:`~.layout.TermShapes`) -> SVG text, and the SVG
document around pictures. Only prints: every coordinate comes from the layout, rounded here to 2
decimals."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .layout import Line, NodeShape, TermShapes
from .style import CAPTION_FONT, CAPTION_H, CHANNEL_INK, INK, LABEL_FONT, MARGIN, NODE_FONT

SVG_NS = "http://www.w3.org/2000/svg"


def esc(text: str) -> str:
    """Escape a string for SVG text or an attribute value."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def num(x: float) -> str:
    """A coordinate rounded to 2 decimals, shortest spelling, never '-0'."""
    v = round(float(x), 2)
    if v == 0:
        v = 0.0
    s = f"{v:.2f}".rstrip("0").rstrip(".")
    return s if s not in ("-0", "") else "0"


@dataclass(frozen=True)
class Picture:
    """SVG fragments of one drawing, in local coordinates (0, 0) .. (width, height)."""

    body: str
    width: float
    height: float
    title: str = ""

    def placed(self, x: float, y: float) -> str:
        """The fragments translated to (x, y)."""
        return f'<g transform="translate({num(x)},{num(y)})">{self.body}</g>'

    def document(self) -> str:
        """A standalone SVG document holding only this picture."""
        w, h = self.width + 2 * MARGIN, self.height + 2 * MARGIN
        return svg_document([self.placed(MARGIN, MARGIN)], w, h, self.title)


def _pt(p) -> str:
    return f"{num(p[0])},{num(p[1])}"


def _path_d(line: Line) -> str:
    """The SVG path data of a line (straight segments as L, the others as C)."""
    d = [f"M{_pt(line.start)}"]
    for seg in line.segments:
        d.append(f"L{_pt(seg.end)}" if seg.straight else f"C{_pt(seg.c1)} {_pt(seg.c2)} {_pt(seg.end)}")
    return " ".join(d)


def _node_svg(n: NodeShape) -> str:
    name = esc(n.name)
    tip = esc(f"{n.name}: {n.type}")
    x, y = n.x, n.y
    if n.label_at is not None:  # eps: a small filled vertex, its ε in the widest gap between the legs
        lx, ly = n.label_at
        return (f'<g class="eps"><title>eps</title><circle cx="{num(x)}" cy="{num(y)}" r="4.2" fill="{INK}"/>'
                f'<text x="{num(lx)}" y="{num(ly)}" font-size="10" text-anchor="middle" '
                f'fill="{INK}">\u03b5</text></g>')
    shape = n.shape
    if shape[0] == "diamond":
        hx, hy = shape[1], shape[2]
        pts = f"{num(x - hx)},{num(y)} {num(x)},{num(y - hy)} {num(x + hx)},{num(y)} {num(x)},{num(y + hy)}"
        fig = f'<polygon points="{pts}" fill="#fff3d1" stroke="#8a6d00" stroke-width="1.4"/>'
        cls = "weight"
    elif shape[0] == "rrect":
        hx, hy = shape[1], shape[2]
        fig = (f'<rect x="{num(x - hx)}" y="{num(y - hy)}" width="{num(2 * hx)}" height="{num(2 * hy)}" '
               f'rx="6" fill="#e9f6ec" stroke="#22643a" stroke-width="1.4"/>')
        cls = "tensor sph"
    elif shape[0] == "ellipse":
        fig = (f'<ellipse cx="{num(x)}" cy="{num(y)}" rx="{num(shape[1])}" ry="{num(shape[2])}" '
               f'fill="#eaf1fb" stroke="#1f3b63" stroke-width="1.4"/>')
        cls = "tensor"
    else:
        fig = (f'<circle cx="{num(x)}" cy="{num(y)}" r="{num(shape[1])}" fill="#eaf1fb" '
               f'stroke="#1f3b63" stroke-width="1.4"/>')
        cls = "tensor"
    return (f'<g class="{cls}"><title>{tip}</title>{fig}<text x="{num(x)}" y="{num(y + 4.2)}" '
            f'font-size="{NODE_FONT}" text-anchor="middle" fill="{INK}">{name}</text></g>')


_LABEL_PLACE = {"left": (-3, 4, "end"), "right": (3, 4, "start"), "top": (0, -5, "middle")}


def term_svg(s: TermShapes, output_name: str) -> Picture:
    """The picture of one term: its box, lines, loops, hubs and nodes, axis numbers, open-leg labels
    and the caption under the box."""
    W, H = s.width, s.height
    out = [f'<rect class="term-box" x="0.5" y="0.5" width="{num(W - 1)}" height="{num(H - 1)}" '
           f'rx="8" fill="none" stroke="#e4e4e7"/>']
    for line in s.lines:
        d = _path_d(line)
        if line.channel:
            out.append(f'<path class="channel" d="{d}" fill="none" stroke="{CHANNEL_INK}" stroke-width="1.3" '
                       f'stroke-dasharray="4 3"><title>{esc(line.index)}</title></path>')
        else:
            out.append(f'<path class="leg" d="{d}" fill="none" stroke="{INK}" stroke-width="1.5">'
                       f'<title>{esc(line.index)}</title></path>')
    for x, y in s.loops:
        out.append(f'<circle class="leg" cx="{num(x)}" cy="{num(y)}" r="9" fill="none" '
                   f'stroke="{INK}" stroke-width="1.5"/>')
    for m in s.marks:
        if isinstance(m, NodeShape):
            out.append(_node_svg(m))
        else:
            out.append(f'<rect class="hub" x="{num(m.x - 4)}" y="{num(m.y - 4)}" width="8" height="8" '
                       f'fill="{CHANNEL_INK}"><title>{esc(m.index)}</title></rect>')
    for a in s.numbers:  # a small axis number on the leg, on a white bead
        out.append(f'<g class="axis"><circle cx="{num(a.x)}" cy="{num(a.y)}" r="4.6" fill="#ffffff" '
                   f'stroke="#c9a227" stroke-width="0.6"/><text x="{num(a.x)}" y="{num(a.y + 2.8)}" font-size="7.5" '
                   f'text-anchor="middle" fill="#7a5c00">{a.number}</text></g>')
    for lab in s.labels:
        if lab.side in _LABEL_PLACE:
            dx, dy, anchor = _LABEL_PLACE[lab.side]
            x, y = lab.x + dx, lab.y + dy
        else:
            x, y, anchor = lab.x, lab.y + 13, "middle"
        out.append(f'<text class="index" x="{num(x)}" y="{num(y)}" font-size="{LABEL_FONT}" '
                   f'font-style="italic" text-anchor="{anchor}" fill="#333">{esc(lab.text)}</text>')
    out.append(f'<text class="formula" x="{num(W / 2)}" y="{num(H + 12)}" font-size="{CAPTION_FONT}" '
               f'text-anchor="middle" fill="#8a8a8e">{esc(s.caption)}</text>')
    title = f"{output_name}: {s.caption}"
    body = f'<g class="term"><title>{esc(title)}</title>' + "".join(out) + "</g>"
    return Picture(body, W, H + CAPTION_H, title)


def svg_document(fragments: list[str], width: float, height: float, title: str = "") -> str:
    """A standalone SVG 1.1 document with a white background."""
    w, h = num(math.ceil(width)), num(math.ceil(height))
    head = (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<svg xmlns="{SVG_NS}" version="1.1" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            f'font-family="sans-serif">\n')
    parts = [head]
    if title:
        parts.append(f"<title>{esc(title)}</title>\n")
    parts.append(f'<rect class="background" x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>\n')
    for f in fragments:
        parts.append(f + "\n")
    parts.append("</svg>\n")
    # pure ASCII (ε and − as character references): the file reads the same in any encoding
    return "".join(parts).encode("ascii", "xmlcharrefreplace").decode("ascii")
