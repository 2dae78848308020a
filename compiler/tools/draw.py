"""Draw diagrams in symmetric tensor network notation, as SVG (``diagc draw``).

A tensor is a node and its rank is its number of legs; joining two legs is a contraction (Fig. 1 of
Zhang et al. 2025). Each equation of a diagram is one row ``OUT[...] =`` followed by its terms side by
side, each term a small box:

* input tensors are labelled circles (Cartesian) or rounded boxes (spherical), weights diamonds;
* ``delta`` is not a node: it is the line it makes between the two legs it joins (a delta with both
  legs open is a plain line between two open-leg labels);
* ``eps`` is a small filled three-leg vertex marked "ε";
* a contracted geometric index is a solid line, an open one runs to the border of the box where it is
  labelled; open legs leave the box from left, over the top, to right in output order and open channel
  legs leave through the bottom, left to right;
* channel indices are dashed; one shared by three or more ends (nodes and the output) meets at a
  small square hub;
* where the order of a node's geometric legs matters (not a symmetric rank-2 tensor) the legs carry
  small axis numbers 1, 2, ...; for ``eps`` these give the sign.

Output is deterministic: no set iteration, fixed seeds, coordinates rounded to 2 decimals.

    draw_network(term, output_name) -> Picture   # one term
    draw_diagram(diagram) -> str                 # SVG document for one diagram
    draw_program(program) -> str                 # SVG document for every diagram of a file
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import networkx as nx
import numpy as np

from ..ir.program import Diagram, Program, TensorNetwork

__all__ = ["Picture", "draw_network", "draw_diagram", "draw_program", "svg_document"]

SVG_NS = "http://www.w3.org/2000/svg"

TERM_W = 160  # the box of one term
TERM_H = 150
CAPTION_H = 16  # the formula under the box
MARGIN = 16
ROW_GAP = 12
TITLE_H = 30
FONT = 14  # coefficients and "OUT ="
LABEL_FONT = 11  # index labels
NODE_FONT = 12

INK = "#1d1d1f"
CHANNEL_INK = "#6b6b6b"


# -- small helpers ---------------------------------------------------------------------------------
def _esc(text: str) -> str:
    """Escape a string for SVG text or an attribute value."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def _num(x: float) -> str:
    """A coordinate rounded to 2 decimals, shortest spelling, never '-0'."""
    v = round(float(x), 2)
    if v == 0:
        v = 0.0
    s = f"{v:.2f}".rstrip("0").rstrip(".")
    return s if s not in ("-0", "") else "0"


def _show_index(name: str) -> str:
    """Internal renamed indices ``k~1`` are shown as ``k'``."""
    return name.split("~")[0] + "'" if "~" in name else name


def _text_width(text: str, size: float) -> float:
    """A conservative estimate of the rendered width of sans-serif text."""
    w = 0.0
    for ch in text:
        if ch in "ijl'|.,:;!()[] ":
            w += 0.34
        elif ch in "fIrt-":
            w += 0.44
        elif ch.isupper() or ch in "mw":
            w += 0.74
        else:
            w += 0.63
    return w * size


def _coef_text(c: Fraction, first: bool, has_factors: bool) -> str:
    """The text before a term: '', '−', '1/2', '−1/3' for the first; '+', '−', '+ 1/2', '− 1/3' after."""
    mag = abs(c)
    body = "" if (mag == 1 and has_factors) else str(mag)
    if first:
        sign = "\u2212" if c < 0 else ""
        return sign + body
    sign = "\u2212" if c < 0 else "+"
    return f"{sign} {body}" if body else sign


# -- the picture of one term -----------------------------------------------------------------------
@dataclass(frozen=True)
class Picture:
    """SVG fragments of one drawing, in local coordinates (0, 0) .. (width, height)."""

    body: str
    width: float
    height: float
    title: str = ""

    def placed(self, x: float, y: float) -> str:
        """The fragments translated to (x, y)."""
        return f'<g transform="translate({_num(x)},{_num(y)})">{self.body}</g>'

    def document(self) -> str:
        """A standalone SVG document holding only this picture."""
        w, h = self.width + 2 * MARGIN, self.height + 2 * MARGIN
        return svg_document([self.placed(MARGIN, MARGIN)], w, h, self.title)


@dataclass
class _Vertex:
    kind: str  # 'node' (an input or eps), 'anchor' (open leg end), 'hub', 'way' (invisible bend)
    x: float = 0.0
    y: float = 0.0
    node: int | None = None  # index into term.nodes for 'node' (and for a delta's 'way')
    shape: tuple = ("point",)
    label: str = ""
    side: str = ""  # anchors: 'left' | 'right' | 'top' | 'bottom'
    loop_of: int | None = None  # a 'way' that only shapes a self-loop of this vertex

    @property
    def fixed(self) -> bool:
        return self.kind == "anchor"

    @property
    def radius(self) -> float:
        """How much room the vertex needs around its centre (for spacing checks)."""
        s = self.shape
        if s[0] == "circle":
            return s[1]
        if s[0] in ("ellipse", "rrect", "diamond"):
            return max(s[1], s[2])
        if self.kind == "hub":
            return 5.0
        if self.kind == "anchor":
            return 6.0
        if self.kind == "way":
            return 4.0
        return 8.0  # eps: room for its label and axis numbers


@dataclass
class _Wire:
    """A drawn line: through ``path`` (vertex numbers); ``axes`` the node axis at each end (or None)."""

    channel: bool
    path: list[int]
    axes: tuple[int | None, int | None]
    index: str
    offset: float = 0.0  # bend of parallel wires


def _boundary(shape: tuple, angle: float) -> tuple[float, float]:
    """The point of ``shape`` (centred at 0) in direction ``angle``."""
    c, s = math.cos(angle), math.sin(angle)
    kind = shape[0]
    if kind == "circle":
        r = shape[1]
    elif kind == "ellipse":
        r = 1.0 / math.sqrt((c / shape[1]) ** 2 + (s / shape[2]) ** 2)
    elif kind == "rrect":
        r = min(shape[1] / abs(c) if abs(c) > 1e-9 else 1e9, shape[2] / abs(s) if abs(s) > 1e-9 else 1e9)
    elif kind == "diamond":
        r = 1.0 / (abs(c) / shape[1] + abs(s) / shape[2])
    else:
        r = 0.0
    return r * c, r * s


def _node_shape(node) -> tuple:
    if node.kind == "eps":
        return ("point",)
    w = _text_width(node.name, NODE_FONT)
    if node.type.family == "weight":
        return ("diamond", max(16.0, w / 2 + 11), 15.0)
    if node.type.family == "sph":
        return ("rrect", max(14.0, w / 2 + 7), 12.0)
    if w <= 18:
        return ("circle", 13.0)
    return ("ellipse", w / 2 + 8, 13.0)


def _ordered_legs(node) -> bool:
    """Whether the order of this node's geometric legs must be shown."""
    if node.kind == "eps":
        return True
    t = node.type
    if t.family != "cart" or t.rank < 2:
        return False
    return t.symmetry not in ("sym", "sym_traceless")


class _TermDrawing:
    """Builds the picture of one term: the graph, its layout, then the SVG."""

    def __init__(self, term: TensorNetwork, height: float | None = None):
        self.term = term
        self.verts: list[_Vertex] = []
        self.wires: list[_Wire] = []
        self.loops: list[int] = []  # 'way' vertices of closed delta loops (delta[i,i])
        self.node_vertex: dict[int, int] = {}
        geo_out = [k for k, i in enumerate(term.output) if term.kind(i).geometric]
        ch_out = [k for k, i in enumerate(term.output) if not term.kind(i).geometric]
        labels = [_show_index(i) for i in term.output]
        side_w = max([_text_width(labels[k], LABEL_FONT) for k in geo_out] + [0.0])
        self.caption = _caption(term)
        cap_w = _text_width(self.caption, 9.5) + 12
        self.width = max(float(TERM_W), cap_w, 46.0 * _crowd(term) + 30, 44.0 * len(ch_out) + 40)
        self.height = float(height) if height is not None else _term_height(term)
        self.inset_x = max(14.0, side_w + 7)
        self.inset_top = 18.0
        self.inset_bottom = 20.0
        self._build(geo_out, ch_out, labels)

    # -- graph --------------------------------------------------------------------------------
    def _add(self, v: _Vertex) -> int:
        self.verts.append(v)
        return len(self.verts) - 1

    def _build(self, geo_out, ch_out, labels) -> None:
        term = self.term
        W, H = self.width, self.height
        # anchors of open legs: geometric ones from left over the top to right, channels at the bottom
        x0, x1 = self.inset_x, W - self.inset_x
        y0, y1 = self.inset_top, H - self.inset_bottom
        cx, cy = W / 2, (y0 + y1) / 2
        anchor_of: dict[int, int] = {}
        n = len(geo_out)
        for j, k in enumerate(geo_out):
            ang = math.pi / 2 if n == 1 else math.pi - math.pi * j / (n - 1)
            dx, dy = math.cos(ang), -math.sin(ang)
            t = min((cx - x0) / abs(dx) if abs(dx) > 1e-9 else 1e9, (cy - y0) / abs(dy) if abs(dy) > 1e-9 else 1e9)
            ax, ay = cx + t * dx, cy + t * dy
            if abs(ax - x0) < 1e-6:
                side = "left"
            elif abs(ax - x1) < 1e-6:
                side = "right"
            else:
                side = "top"
            anchor_of[k] = self._add(_Vertex("anchor", ax, ay, label=labels[k], side=side))
        m = len(ch_out)
        for j, k in enumerate(ch_out):
            ax = W * (j + 1) / (m + 1)
            anchor_of[k] = self._add(_Vertex("anchor", ax, y1, label=labels[k], side="bottom"))
        # drawn nodes; deltas become invisible bend points
        for n_i, node in enumerate(term.nodes):
            if node.kind == "delta":
                self.node_vertex[n_i] = self._add(_Vertex("way", node=n_i))
            else:
                self.node_vertex[n_i] = self._add(_Vertex("node", node=n_i, shape=_node_shape(node), label=node.name))
        # edges: (end, end) with end = (vertex, axis or None); channel flag; index
        edges: list[tuple[tuple[int, int | None], tuple[int, int | None], bool, str]] = []
        for index in term.indices():
            ends: list[tuple[int, int | None]] = [(self.node_vertex[leg.node], leg.axis) for leg in term.legs(index)]
            ends += [(anchor_of[k], None) for k, i in enumerate(term.output) if i == index]
            channel = not term.kind(index).geometric
            if len(ends) == 2:
                edges.append((ends[0], ends[1], channel, index))
            elif len(ends) >= 3:
                hub = self._add(_Vertex("hub", label=index))
                for e in ends:
                    edges.append((e, (hub, None), channel, index))
            elif len(ends) == 1:  # a summed index on one leg only: a short stub
                stub = self._add(_Vertex("way"))
                edges.append((ends[0], (stub, None), channel, index))
        self._chain(edges)

    def _is_delta(self, v: int) -> bool:
        return self.verts[v].kind == "way" and self.verts[v].node is not None

    def _chain(self, edges) -> None:
        """Join edges through deltas into wires."""
        at: dict[tuple[int, int | None], int] = {}  # delta end -> edge number
        for e, (a, b, _, _) in enumerate(edges):
            for end in (a, b):
                if self._is_delta(end[0]):
                    at[end] = e
        used = [False] * len(edges)

        def walk(e: int, start: tuple[int, int | None]):
            path, axes_end = [start[0]], None
            cur, frm = e, start
            while True:
                used[cur] = True
                a, b, _, _ = edges[cur]
                to = b if a == frm else a
                if not self._is_delta(to[0]):
                    path.append(to[0])
                    axes_end = to[1]
                    return path, axes_end, False
                path.append(to[0])
                nxt_end = (to[0], 1 - to[1])
                nxt = at.get(nxt_end)
                if nxt is None or used[nxt]:
                    return path, None, True
                cur, frm = nxt, nxt_end

        for e, (a, b, channel, index) in enumerate(edges):
            if used[e]:
                continue
            if self._is_delta(a[0]) and self._is_delta(b[0]):
                continue  # reached from an end, or a closed delta loop (below)
            start, other = (a, b) if not self._is_delta(a[0]) else (b, a)
            path, end_axis, _ = walk(e, start)
            self.wires.append(_Wire(channel, path, (start[1], end_axis), index))
        for e, (a, b, channel, index) in enumerate(edges):
            if not used[e]:  # only deltas around: delta[i,j] delta[j,i], delta[i,i]
                path, _, _ = walk(e, a)
                self.loops.append(path[0])
        # a self-loop of a node gets a bend point that the layout places
        for w in self.wires:
            if len(w.path) == 2 and w.path[0] == w.path[1]:
                way = self._add(_Vertex("way", loop_of=w.path[0]))
                w.path = [w.path[0], way, w.path[1]]
            elif len(w.path) == 3 and w.path[0] == w.path[2]:
                self.verts[w.path[1]].loop_of = w.path[0]
        # parallel wires between the same two vertices bend apart
        groups: dict[tuple[int, int], list[_Wire]] = {}
        for w in self.wires:
            if len(w.path) == 2:
                groups.setdefault((min(w.path), max(w.path)), []).append(w)
        for ws in groups.values():
            for k, w in enumerate(ws):
                w.offset = (k - (len(ws) - 1) / 2) * 24.0

    # -- layout -------------------------------------------------------------------------------
    def _ideal(self, u: int, v: int) -> float:
        """The preferred length of a line between vertices u and v."""
        a, b = self.verts[u], self.verts[v]
        if a.loop_of is not None or b.loop_of is not None:
            return 40.0
        if a.kind == "way" or b.kind == "way":
            return 42.0 + (a.radius if b.kind == "way" else b.radius)
        if a.kind == "anchor" or b.kind == "anchor":
            return 40.0 + a.radius + b.radius
        return 42.0 + a.radius + b.radius

    def _layout_graph(self) -> nx.Graph:
        """The factor graph the layout works on; ``length`` is the preferred length of each line."""
        g = nx.Graph()
        g.add_nodes_from(range(len(self.verts)))
        for w in self.wires:
            for u, v in zip(w.path, w.path[1:]):
                if u == v:
                    continue
                if g.has_edge(u, v):
                    g[u][v]["weight"] += 1.0
                else:
                    g.add_edge(u, v, weight=1.0, length=self._ideal(u, v))
        return g

    def _targets(self, g: nx.Graph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Preferred distances between all vertex pairs (graph distances) and their stress weights."""
        n = len(self.verts)
        far = 0.38 * min(self.width, self.height)
        D = np.full((n, n), far)
        linked = np.zeros((n, n), dtype=bool)
        for i, row in nx.all_pairs_dijkstra_path_length(g, weight="length"):
            for j, d in row.items():
                D[i, j] = d
                linked[i, j] = True
        for i in range(n):  # never closer than the shapes allow
            for j in range(n):
                if i != j:
                    D[i, j] = max(D[i, j], self.verts[i].radius + self.verts[j].radius + 24.0)
        np.fill_diagonal(D, 1.0)
        Wt = D ** -2.0
        np.fill_diagonal(Wt, 0.0)
        np.fill_diagonal(D, 0.0)
        return D, Wt, linked

    def _bounds(self, v: _Vertex) -> tuple[float, float, float, float]:
        """Where the centre of a movable vertex may go: inside the box, clear of the open-leg labels."""
        r = v.radius
        pad = 8.0
        return (self.inset_x + r + pad, self.width - self.inset_x - r - pad,
                self.inset_top + r + pad + 4, self.height - self.inset_bottom - r - pad)

    def _free_lines(self) -> list[tuple[int, int, int]]:
        """(bend point, anchor, anchor) of each delta line between two open legs."""
        out = []
        for w in self.wires:
            if len(w.path) == 3 and self.verts[w.path[0]].fixed and self.verts[w.path[2]].fixed:
                out.append((w.path[1], w.path[0], w.path[2]))
        return out

    def _project(self, X: np.ndarray) -> None:
        """Keep the bend of a delta line between two open legs on the perpendicular bisector of its
        ends, so that the line is a symmetric arc (X: (..., vertices, 2), changed in place)."""
        for k, a, b in getattr(self, "free_lines", ()):
            A, B = X[..., a, :], X[..., b, :]
            m = (A + B) / 2
            t = B - A
            nrm = np.stack([-t[..., 1], t[..., 0]], axis=-1)
            nrm = nrm / np.maximum(np.sqrt((nrm ** 2).sum(axis=-1, keepdims=True)), 1e-9)
            off = ((X[..., k, :] - m) * nrm).sum(axis=-1, keepdims=True)
            X[..., k, :] = m + off * nrm

    def _stress(self, X: np.ndarray, movable: list[int], D: np.ndarray, Wt: np.ndarray, linked: np.ndarray,
                anchored: bool) -> None:
        """Stress majorization with the anchors held in place, clamped to the box every sweep.

        Pairs joined by a path keep their graph distance; unjoined pairs only keep apart."""
        mov = np.array(movable)
        lo = np.array([[self._bounds(self.verts[k])[0], self._bounds(self.verts[k])[2]] for k in movable])
        hi = np.array([[self._bounds(self.verts[k])[1], self._bounds(self.verts[k])[3]] for k in movable])
        W0, Dm, Lm = Wt[mov], D[mov], linked[mov]
        for _ in range(60):
            diff = X[mov][:, None, :] - X[None, :, :]
            dist = np.sqrt((diff ** 2).sum(axis=2))
            dist[dist < 1e-6] = 1e-6
            unit = diff / dist[:, :, None]
            Wm = np.where(Lm | (dist < Dm), W0, 0.0)
            den = Wm.sum(axis=1)[:, None]
            den[den == 0] = 1.0
            num = (Wm[:, :, None] * (X[None, :, :] + Dm[:, :, None] * unit)).sum(axis=1)
            new = num / den
            if anchored:
                new = np.minimum(np.maximum(new, lo), hi)
            step = np.abs(new - X[mov]).max()
            X[mov] = new
            self._project(X)
            if step < 0.3:
                break

    def layout(self) -> None:
        movable = [k for k, v in enumerate(self.verts) if not v.fixed]
        fixed = [k for k, v in enumerate(self.verts) if v.fixed]
        if not movable:
            return
        g = self._layout_graph()
        self.free_lines = self._free_lines()
        D, Wt, linked = self._targets(g)
        n = len(self.verts)
        cx, cy = self.width / 2, (self.inset_top + self.height - self.inset_bottom) / 2
        hx, hy = self.width / 2 - self.inset_x - 20, (self.height - self.inset_top - self.inset_bottom) / 2 - 20
        # starting points for stress majorization: near the open legs each vertex leads to, networkx
        # spring layouts of the factor graph, seeded random points
        inits = []
        anchors = list(fixed)
        if anchors:
            smart = {}
            for j, k in enumerate(movable):
                wsum, px, py = 0.0, 0.0, 0.0
                for a in anchors:
                    if linked[k, a]:
                        wgt = 1.0 / D[k, a] ** 2
                        wsum += wgt
                        px += wgt * self.verts[a].x
                        py += wgt * self.verts[a].y
                jit = 9.0 * math.cos(2.4 * j), 9.0 * math.sin(2.4 * j)
                if wsum:
                    smart[k] = (0.55 * px / wsum + 0.45 * cx + jit[0], 0.55 * py / wsum + 0.45 * cy + jit[1])
                else:
                    smart[k] = (cx + jit[0], cy + jit[1])
            inits.append(smart)
        for seed in range(1):
            sp = nx.spring_layout(g, seed=seed, iterations=50, weight=None)
            inits.append({k: (cx + sp[k][0] * hx, cy + sp[k][1] * hy) for k in movable})
        for cand in range(1, 4):
            rng = np.random.RandomState(cand)
            inits.append({k: (cx + rng.uniform(-1, 1) * hx, cy + rng.uniform(-1, 1) * hy) for k in movable})
        results = []
        for init in inits:
            X = np.zeros((n, 2))
            for k, v in enumerate(self.verts):
                X[k] = init[k] if k in init else (v.x, v.y)
            self._stress(X, movable, D, Wt, linked, bool(fixed))
            placed = {k: (float(X[k, 0]), float(X[k, 1])) for k in movable}
            self._fit(placed, bool(fixed))
            X = np.array([placed.get(k, (v.x, v.y)) for k, v in enumerate(self.verts)], dtype=float)
            self._project(X)
            placed = {k: (float(X[k, 0]), float(X[k, 1])) for k in movable}
            score = self._score(placed)
            results.append((score, len(results), placed))
        scorer = self._scorer()
        # and the best of many random placements, scored all at once
        rng = np.random.RandomState(12345)
        m = 1000
        Xb = np.zeros((m, n, 2))
        for k, v in enumerate(self.verts):
            if v.fixed:
                Xb[:, k] = (v.x, v.y)
            else:
                lo_x, hi_x, lo_y, hi_y = self._bounds(v)
                Xb[:, k, 0] = rng.uniform(lo_x, max(lo_x, hi_x), m)
                Xb[:, k, 1] = rng.uniform(lo_y, max(lo_y, hi_y), m)
        self._project(Xb)
        scores = scorer.batch(Xb)
        for j in np.argsort(scores, kind="stable")[:3]:
            results.append((float(scores[j]), len(results), {k: (float(Xb[j, k, 0]), float(Xb[j, k, 1])) for k in movable}))
        results.sort(key=lambda r: (round(r[0], 6), r[1]))
        best, best_score = None, None
        for score, _, placed in results[:3]:  # polish the three best by local search on the score
            X = np.array([placed.get(k, (v.x, v.y)) for k, v in enumerate(self.verts)], dtype=float)
            if score > 1.0:
                score = self._refine(X, movable, scorer)
            if best_score is None or score < best_score - 1e-6:
                best, best_score = {k: (float(X[k, 0]), float(X[k, 1])) for k in movable}, score
        for k, (x, y) in best.items():
            self.verts[k].x, self.verts[k].y = x, y
        # loop bend points sit at a fixed distance from their node
        for k, v in enumerate(self.verts):
            if v.loop_of is not None:
                o = self.verts[v.loop_of]
                dx, dy = v.x - o.x, v.y - o.y
                d = math.hypot(dx, dy)
                if d < 1e-6:
                    dx, dy, d = 0.0, -1.0, 1.0
                reach = o.radius + 20
                v.x, v.y = o.x + dx / d * reach, o.y + dy / d * reach

    def _fit(self, placed: dict[int, tuple[float, float]], anchored: bool) -> None:
        """Bring the movable vertices into the box (clamp; or centre and shrink when nothing is fixed)."""
        if not anchored and placed:
            xs = [p[0] for p in placed.values()]
            ys = [p[1] for p in placed.values()]
            mx, my = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
            bx = (self.width - 2 * self.inset_x - 40)
            by = (self.height - self.inset_top - self.inset_bottom - 40)
            span_x, span_y = max(xs) - min(xs), max(ys) - min(ys)
            s = min(1.0, bx / span_x if span_x > 1e-9 else 1.0, by / span_y if span_y > 1e-9 else 1.0)
            cx, cy = self.width / 2, (self.inset_top + self.height - self.inset_bottom) / 2
            for k, (x, y) in list(placed.items()):
                placed[k] = (cx + (x - mx) * s, cy + (y - my) * s)
        for _ in range(30):  # clamp, then push apart vertices that overlap
            for k, (x, y) in list(placed.items()):
                lo_x, hi_x, lo_y, hi_y = self._bounds(self.verts[k])
                placed[k] = (min(max(x, lo_x), hi_x), min(max(y, lo_y), hi_y))
            moved = False
            keys = list(placed)
            for a_i, a in enumerate(keys):
                for b in keys[a_i + 1:]:
                    (ax, ay), (bx_, by_) = placed[a], placed[b]
                    need = self.verts[a].radius + self.verts[b].radius + 10
                    d = math.hypot(bx_ - ax, by_ - ay)
                    if d < need:
                        if d < 1e-6:
                            ux, uy = 1.0, 0.0
                        else:
                            ux, uy = (bx_ - ax) / d, (by_ - ay) / d
                        push = (need - d) / 2
                        placed[a] = (ax - ux * push, ay - uy * push)
                        placed[b] = (bx_ + ux * push, by_ + uy * push)
                        moved = True
            if not moved:
                break

    def _scorer(self) -> "_Scorer":
        segs = []
        for w in self.wires:
            for u, v in zip(w.path, w.path[1:]):
                if u != v:
                    segs.append((u, v))
        return _Scorer(self, segs)

    def _score(self, placed: dict[int, tuple[float, float]]) -> float:
        X = np.array([placed.get(k, (v.x, v.y)) for k, v in enumerate(self.verts)], dtype=float)
        return self._scorer().score(X)

    def _refine(self, X: np.ndarray, movable: list[int], scorer: "_Scorer") -> float:
        """Local search on the score: move one vertex at a time a step in one of 8 directions."""
        best = scorer.score(X)
        for k in movable:  # a hub may do better at the centre of what it joins
            if self.verts[k].kind != "hub":
                continue
            ends = [w.path[0] for w in self.wires if w.path[-1] == k] + [w.path[-1] for w in self.wires if w.path[0] == k]
            if not ends:
                continue
            old = X[k].copy()
            X[k] = X[ends].mean(axis=0)
            sc = scorer.score(X)
            if sc < best - 1e-6:
                best = sc
            else:
                X[k] = old
        dirs = np.array([(math.cos(a * math.pi / 4), math.sin(a * math.pi / 4)) for a in range(8)])
        bounds = {k: self._bounds(self.verts[k]) for k in movable}
        for step in (24.0, 12.0, 6.0, 3.0):
            for _ in range(5):
                improved = False
                for k in movable:
                    lo_x, hi_x, lo_y, hi_y = bounds[k]
                    trial = np.repeat(X[None], 8, axis=0)
                    moved = X[k] + dirs * step
                    moved[:, 0] = np.clip(moved[:, 0], lo_x, max(lo_x, hi_x))
                    moved[:, 1] = np.clip(moved[:, 1], lo_y, max(lo_y, hi_y))
                    trial[:, k] = moved
                    self._project(trial)
                    scores = scorer.batch(trial)
                    j = int(np.argmin(scores))
                    if scores[j] < best - 1e-6:
                        best, improved = float(scores[j]), True
                        X[k] = trial[j, k]
                if not improved:
                    break
        return best

    # -- geometry and SVG ---------------------------------------------------------------------
    def _centre(self, k: int) -> tuple[float, float]:
        v = self.verts[k]
        return (v.x, v.y)

    def _control(self, w: _Wire, a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
        """The control point of an offset (bent) wire from a to b, bending consistently left/right."""
        u, v = w.path[0], w.path[-1]
        (sx, sy), (tx, ty) = (a, b) if u <= v else (b, a)
        dx, dy = tx - sx, ty - sy
        d = math.hypot(dx, dy) or 1.0
        nx_, ny_ = -dy / d, dx / d
        mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
        return (mx + 2 * w.offset * nx_, my + 2 * w.offset * ny_)

    def _attach(self) -> dict[tuple[int, int], tuple[float, float]]:
        """Where each wire end meets its node: spread around the node, ordered by direction.

        Also records ``self.leg_angle[(wire, side)]``, the direction of every leg at its node."""
        wants: dict[int, list[tuple[float, int, tuple[int, int]]]] = {}
        for wi, w in enumerate(self.wires):
            is_loop = len(w.path) == 3 and w.path[0] == w.path[-1]
            for side in (0, 1):
                k = w.path[0] if side == 0 else w.path[-1]
                v = self.verts[k]
                if v.kind != "node":
                    continue
                nxt = w.path[1] if side == 0 else w.path[-2]
                if len(w.path) == 2 and w.offset:
                    target = self._control(w, self._centre(w.path[0]), self._centre(w.path[-1]))
                else:
                    target = self._centre(nxt)
                ang = math.atan2(target[1] - v.y, target[0] - v.x)
                if is_loop:  # the two ends of a self-loop leave side by side
                    ang += -0.55 if side == 0 else 0.55
                wants.setdefault(k, []).append((ang, side, (wi, side)))
        result: dict[tuple[int, int], tuple[float, float]] = {}
        self.leg_angle: dict[tuple[int, int], float] = {}
        self.node_angles: dict[int, list[float]] = {}
        for k, legs in wants.items():
            v = self.verts[k]
            legs.sort(key=lambda t: (round(t[0], 9), t[1], t[2]))
            angs = [t[0] for t in legs] if v.shape[0] == "point" else _spread([t[0] for t in legs])
            self.node_angles[k] = angs
            for (_, _, key), ang in zip(legs, angs):
                self.leg_angle[key] = ang
                if v.shape[0] != "point":
                    bx, by = _boundary(v.shape, ang)
                    result[key] = (v.x + bx, v.y + by)
        return result

    def picture(self, output_name: str) -> Picture:
        att = self._attach()
        out: list[str] = []
        W, H = self.width, self.height
        out.append(f'<rect class="term-box" x="0.5" y="0.5" width="{_num(W - 1)}" height="{_num(H - 1)}" '
                   f'rx="8" fill="none" stroke="#e4e4e7"/>')
        numbers: list[str] = []
        # wires
        for wi, w in enumerate(self.wires):
            pts = [self._centre(k) for k in w.path]
            pts[0] = att.get((wi, 0), pts[0])
            pts[-1] = att.get((wi, 1), pts[-1])
            is_loop = w.path[0] == w.path[-1] and len(w.path) == 3
            if is_loop:
                curve = self._loop_curve(w, pts)
            elif len(pts) == 2 and w.offset:
                curve = [_quad(pts[0], self._control(w, pts[0], pts[1]), pts[1])]
            elif len(pts) == 2:
                curve = [_line(pts[0], pts[1])]
            else:
                curve = _catmull_rom(pts)
            d = _path_d(curve)
            shown = _show_index(w.index)
            if w.channel:
                out.append(f'<path class="channel" d="{d}" fill="none" stroke="{CHANNEL_INK}" stroke-width="1.3" '
                           f'stroke-dasharray="4 3"><title>{_esc(shown)}</title></path>')
            else:
                out.append(f'<path class="leg" d="{d}" fill="none" stroke="{INK}" stroke-width="1.5">'
                           f'<title>{_esc(shown)}</title></path>')
            # axis numbers near the node end
            for side in (0, 1):
                k = w.path[0] if side == 0 else w.path[-1]
                axis = w.axes[side]
                v = self.verts[k]
                if v.kind != "node" or axis is None or w.channel or is_loop:
                    continue
                node = self.term.nodes[v.node]
                if not _ordered_legs(node):
                    continue
                number = axis - node.n_channels + 1
                numbers.append(self._axis_number(v, curve, side, number))
        for k in self.loops:
            v = self.verts[k]
            out.append(f'<circle class="leg" cx="{_num(v.x)}" cy="{_num(v.y)}" r="9" fill="none" '
                       f'stroke="{INK}" stroke-width="1.5"/>')
        # hubs and nodes
        for k, v in enumerate(self.verts):
            if v.kind == "hub":
                out.append(f'<rect class="hub" x="{_num(v.x - 4)}" y="{_num(v.y - 4)}" width="8" height="8" '
                           f'fill="{CHANNEL_INK}"><title>{_esc(_show_index(v.label))}</title></rect>')
            elif v.kind == "node":
                out.append(self._node_svg(k, v))
        out.extend(numbers)
        # open-leg labels
        for v in self.verts:
            if v.kind != "anchor":
                continue
            text = _esc(v.label)
            if v.side == "left":
                x, y, anchor = v.x - 3, v.y + 4, "end"
            elif v.side == "right":
                x, y, anchor = v.x + 3, v.y + 4, "start"
            elif v.side == "top":
                x, y, anchor = v.x, v.y - 5, "middle"
            else:
                x, y, anchor = v.x, v.y + 13, "middle"
            out.append(f'<text class="index" x="{_num(x)}" y="{_num(y)}" font-size="{LABEL_FONT}" '
                       f'font-style="italic" text-anchor="{anchor}" fill="#333">{text}</text>')
        out.append(f'<text class="formula" x="{_num(W / 2)}" y="{_num(H + 12)}" font-size="9.5" '
                   f'text-anchor="middle" fill="#8a8a8e">{_esc(self.caption)}</text>')
        title = f"{output_name}: {self.caption}"
        body = f'<g class="term"><title>{_esc(title)}</title>' + "".join(out) + "</g>"
        return Picture(body, W, H + CAPTION_H, title)

    def _loop_curve(self, w: _Wire, pts) -> list:
        """A self-loop: one cubic leaving the node at both attachment points, bulging outwards."""
        o = self.verts[w.path[0]]
        way = self.verts[w.path[1]]
        a, b = pts[0], pts[-1]
        ux, uy = way.x - o.x, way.y - o.y
        d = math.hypot(ux, uy) or 1.0
        ux, uy = ux / d, uy / d
        L = 30.0

        def out_dir(p):
            dx, dy = p[0] - o.x, p[1] - o.y
            n = math.hypot(dx, dy) or 1.0
            return (0.7 * dx / n + 0.3 * ux, 0.7 * dy / n + 0.3 * uy)
        da, db = out_dir(a), out_dir(b)
        return [(a, (a[0] + da[0] * L, a[1] + da[1] * L), (b[0] + db[0] * L, b[1] + db[1] * L), b)]

    def _axis_number(self, v: _Vertex, curve: list, side: int, number: int) -> str:
        """A small axis number on the leg itself, a little way from the node, on a white bead."""
        dist = 15.0 if v.shape[0] == "point" else 9.0
        x, y = _point_along(curve, dist, from_end=side == 1)
        return (f'<g class="axis"><circle cx="{_num(x)}" cy="{_num(y)}" r="4.6" fill="#ffffff" '
                f'stroke="#c9a227" stroke-width="0.6"/><text x="{_num(x)}" y="{_num(y + 2.8)}" font-size="7.5" '
                f'text-anchor="middle" fill="#7a5c00">{number}</text></g>')

    def _node_svg(self, k: int, v: _Vertex) -> str:
        node = self.term.nodes[v.node]
        name = _esc(node.name)
        tip = _esc(f"{node.name}: {node.type}")
        x, y = v.x, v.y
        if node.kind == "eps":
            # the ε label goes into the widest gap between the legs
            gap = _widest_gap(self.node_angles.get(k, []))
            lx, ly = x + 12 * math.cos(gap), y + 12 * math.sin(gap) + 3.5
            return (f'<g class="eps"><title>eps</title><circle cx="{_num(x)}" cy="{_num(y)}" r="4.2" fill="{INK}"/>'
                    f'<text x="{_num(lx)}" y="{_num(ly)}" font-size="10" text-anchor="middle" '
                    f'fill="{INK}">\u03b5</text></g>')
        shape = v.shape
        if shape[0] == "diamond":
            hx, hy = shape[1], shape[2]
            pts = f"{_num(x - hx)},{_num(y)} {_num(x)},{_num(y - hy)} {_num(x + hx)},{_num(y)} {_num(x)},{_num(y + hy)}"
            fig = f'<polygon points="{pts}" fill="#fff3d1" stroke="#8a6d00" stroke-width="1.4"/>'
            cls = "weight"
        elif shape[0] == "rrect":
            hx, hy = shape[1], shape[2]
            fig = (f'<rect x="{_num(x - hx)}" y="{_num(y - hy)}" width="{_num(2 * hx)}" height="{_num(2 * hy)}" '
                   f'rx="6" fill="#e9f6ec" stroke="#22643a" stroke-width="1.4"/>')
            cls = "tensor sph"
        elif shape[0] == "ellipse":
            fig = (f'<ellipse cx="{_num(x)}" cy="{_num(y)}" rx="{_num(shape[1])}" ry="{_num(shape[2])}" '
                   f'fill="#eaf1fb" stroke="#1f3b63" stroke-width="1.4"/>')
            cls = "tensor"
        else:
            fig = (f'<circle cx="{_num(x)}" cy="{_num(y)}" r="{_num(shape[1])}" fill="#eaf1fb" '
                   f'stroke="#1f3b63" stroke-width="1.4"/>')
            cls = "tensor"
        return (f'<g class="{cls}"><title>{tip}</title>{fig}<text x="{_num(x)}" y="{_num(y + 4.2)}" '
                f'font-size="{NODE_FONT}" text-anchor="middle" fill="{INK}">{name}</text></g>')


class _Scorer:
    """How bad a placement looks: crossings, crowding, vertices on lines, uneven line lengths."""

    def __init__(self, td: "_TermDrawing", segs: list[tuple[int, int]]):
        verts = td.verts
        self.A = np.array([a for a, _ in segs], dtype=int)
        self.B = np.array([b for _, b in segs], dtype=int)
        self.ideal = np.array([td._ideal(a, b) for a, b in segs])
        pairs = [(i, j) for i in range(len(segs)) for j in range(i + 1, len(segs))
                 if len({segs[i][0], segs[i][1], segs[j][0], segs[j][1]}) == 4]
        self.S1 = np.array([p[0] for p in pairs], dtype=int)
        self.S2 = np.array([p[1] for p in pairs], dtype=int)
        adjacent = {(min(a, b), max(a, b)) for a, b in segs}
        n = len(verts)
        cp = [(i, j) for i in range(n) for j in range(i + 1, n)]
        self.I = np.array([i for i, _ in cp], dtype=int)
        self.J = np.array([j for _, j in cp], dtype=int)
        def gap(i, j):
            if (i, j) not in adjacent:
                return 30.0
            return 12.0 if verts[i].kind == "anchor" or verts[j].kind == "anchor" else 20.0
        self.need = np.array([verts[i].radius + verts[j].radius + gap(i, j) for i, j in cp])
        vs = [(k, s) for k, v in enumerate(verts)
              if not (v.kind == "anchor" or (v.kind == "way" and v.node is None and v.loop_of is None))
              for s, (a, b) in enumerate(segs) if k not in (a, b)]
        self.K = np.array([k for k, _ in vs], dtype=int)
        self.KS = np.array([s for _, s in vs], dtype=int)
        self.kneed = np.array([verts[k].radius + 13 for k, _ in vs])
        # pairs of lines leaving a node or hub towards two different places: keep them apart in angle
        nbrs: dict[int, list[int]] = {}
        for a, b in segs:
            for u, v in ((a, b), (b, a)):
                if verts[u].kind in ("node", "hub") and v not in nbrs.setdefault(u, []):
                    nbrs[u].append(v)
        tri = [(u, x, y) for u, ns in nbrs.items() for i, x in enumerate(ns) for y in ns[i + 1:]]
        self.TU = np.array([t[0] for t in tri], dtype=int)
        self.TA = np.array([t[1] for t in tri], dtype=int)
        self.TB = np.array([t[2] for t in tri], dtype=int)

    def score(self, X: np.ndarray) -> float:
        return float(self.batch(X[None])[0])

    def batch(self, X: np.ndarray) -> np.ndarray:
        """Scores of m placements at once: X has shape (m, vertices, 2)."""
        total = np.zeros(X.shape[0])
        if len(self.A):
            P, Q = X[:, self.A], X[:, self.B]
            if len(self.S1):
                p1, p2, p3, p4 = P[:, self.S1], Q[:, self.S1], P[:, self.S2], Q[:, self.S2]

                def orient(a, b, c):
                    return ((b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1])
                            - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0]))
                d1, d2, d3, d4 = orient(p3, p4, p1), orient(p3, p4, p2), orient(p1, p2, p3), orient(p1, p2, p4)
                e = 1e-9
                crossing = ((((d1 > e) & (d2 < -e)) | ((d1 < -e) & (d2 > e)))
                            & (((d3 > e) & (d4 < -e)) | ((d3 < -e) & (d4 > e))))
                total += 150.0 * crossing.sum(axis=1)
            lengths = np.sqrt(((P - Q) ** 2).sum(axis=2))
            total += 0.05 * np.abs(lengths - self.ideal).sum(axis=1)
            if len(self.K):
                pt, a, b = X[:, self.K], P[:, self.KS], Q[:, self.KS]
                ab = b - a
                L2 = (ab ** 2).sum(axis=2)
                safe = np.where(L2 > 1e-12, L2, 1.0)
                t = np.clip(((pt - a) * ab).sum(axis=2) / safe, 0.0, 1.0)
                d = np.sqrt(((pt - (a + t[..., None] * ab)) ** 2).sum(axis=2))
                total += 8.0 * np.maximum(self.kneed - d, 0.0).sum(axis=1)
        if len(self.I):
            d = np.sqrt(((X[:, self.I] - X[:, self.J]) ** 2).sum(axis=2))
            total += 6.0 * np.maximum(self.need - d, 0.0).sum(axis=1)
        if len(self.TU):
            u = X[:, self.TA] - X[:, self.TU]
            v = X[:, self.TB] - X[:, self.TU]
            nu = np.sqrt((u ** 2).sum(axis=2))
            nv = np.sqrt((v ** 2).sum(axis=2))
            cos = (u * v).sum(axis=2) / np.maximum(nu * nv, 1e-9)
            ang = np.arccos(np.clip(cos, -1.0, 1.0))
            total += 120.0 * np.maximum(0.7 - ang, 0.0).sum(axis=1)
        return total


# -- geometry helpers ------------------------------------------------------------------------------
def _pt(p) -> str:
    return f"{_num(p[0])},{_num(p[1])}"


def _line(a, b) -> tuple:
    """A straight segment as a cubic Bezier."""
    return (a, (a[0] + (b[0] - a[0]) / 3, a[1] + (b[1] - a[1]) / 3),
            (a[0] + 2 * (b[0] - a[0]) / 3, a[1] + 2 * (b[1] - a[1]) / 3), b)


def _quad(a, c, b) -> tuple:
    """A quadratic Bezier (control point c) as a cubic."""
    return (a, (a[0] + 2 * (c[0] - a[0]) / 3, a[1] + 2 * (c[1] - a[1]) / 3),
            (b[0] + 2 * (c[0] - b[0]) / 3, b[1] + 2 * (c[1] - b[1]) / 3), b)


def _catmull_rom(pts) -> list:
    """A smooth curve through the points, as cubic Bezier segments."""
    segs = []
    n = len(pts)
    for i in range(n - 1):
        p0 = pts[i - 1] if i > 0 else pts[i]
        p1, p2 = pts[i], pts[i + 1]
        p3 = pts[i + 2] if i + 2 < n else pts[i + 1]
        c1 = (p1[0] + (p2[0] - p0[0]) / 6, p1[1] + (p2[1] - p0[1]) / 6)
        c2 = (p2[0] - (p3[0] - p1[0]) / 6, p2[1] - (p3[1] - p1[1]) / 6)
        segs.append((p1, c1, c2, p2))
    return segs


def _path_d(curve: list) -> str:
    """The SVG path data of a chain of cubic Bezier segments (straight ones as lines)."""
    d = [f"M{_pt(curve[0][0])}"]
    for seg in curve:
        a, c1, c2, b = seg
        if seg == _line(a, b):
            d.append(f"L{_pt(b)}")
        else:
            d.append(f"C{_pt(c1)} {_pt(c2)} {_pt(b)}")
    return " ".join(d)


def _bezier(seg, t: float) -> tuple[float, float]:
    a, c1, c2, b = seg
    u = 1 - t
    return (u ** 3 * a[0] + 3 * u * u * t * c1[0] + 3 * u * t * t * c2[0] + t ** 3 * b[0],
            u ** 3 * a[1] + 3 * u * u * t * c1[1] + 3 * u * t * t * c2[1] + t ** 3 * b[1])


def _point_along(curve: list, dist: float, from_end: bool = False) -> tuple[float, float]:
    """The point at arc length ``dist`` from the start (or the end) of a chain of cubics."""
    samples = [curve[0][0]]
    for seg in curve:
        samples += [_bezier(seg, j / 24) for j in range(1, 25)]
    if from_end:
        samples = samples[::-1]
    walked = 0.0
    for p, q in zip(samples, samples[1:]):
        step = math.dist(p, q)
        if walked + step >= dist and step > 0:
            t = (dist - walked) / step
            return (p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]))
        walked += step
    return samples[len(samples) // 2]


def _spread(angles: list[float]) -> list[float]:
    """Angles in circular order, pushed apart to a minimum separation, order kept."""
    n = len(angles)
    if n < 2:
        return list(angles)
    sep = min(math.radians(38), 2 * math.pi / n * 0.85)
    a = list(angles)
    for _ in range(200):
        moved = False
        for i in range(n):
            j = (i + 1) % n
            gap = a[j] - a[i] if j else a[0] + 2 * math.pi - a[i]
            if gap < sep - 1e-9:
                push = (sep - gap) / 2
                a[i] -= push
                a[j] += push
                moved = True
        if not moved:
            break
    return a


def _widest_gap(angles: list[float]) -> float:
    """The direction in the middle of the widest gap between the given directions."""
    if not angles:
        return -math.pi / 4
    a = sorted(x % (2 * math.pi) for x in angles)
    best, best_gap = a[0] + math.pi, -1.0
    for i, x in enumerate(a):
        y = a[(i + 1) % len(a)] + (2 * math.pi if i + 1 == len(a) else 0.0)
        if y - x > best_gap + 1e-9:
            best, best_gap = (x + y) / 2, y - x
    return best


def _caption(term: TensorNetwork) -> str:
    """The term's factors in index notation (no coefficient), internal indices shown as k'."""
    if not term.nodes:
        return str(term.coefficient)
    parts = []
    for n in term.nodes:
        parts.append(f"{n.name}[{','.join(_show_index(i) for i in n.indices)}]" if n.indices else n.name)
    return " ".join(parts)


# -- public API ------------------------------------------------------------------------------------
def _term_height(term: TensorNetwork) -> float:
    """The height of a term's box: taller when it has many things to place."""
    return float(TERM_H) if _crowd(term) <= 3 else float(TERM_H) + 30.0


def _crowd(term: TensorNetwork) -> int:
    """How many things a term's layout has to place: nodes, free-standing delta lines, hubs."""
    crowd = sum(1 for n in term.nodes if n.kind != "delta")
    crowd += sum(1 for n in term.nodes if n.kind == "delta" and all(i in term.output for i in n.indices))
    crowd += sum(1 for i in term.indices() if not term.kind(i).geometric
                 and len(term.legs(i)) + term.output.count(i) >= 3)
    return crowd


def draw_network(term: TensorNetwork, output_name: str, height: float | None = None) -> Picture:
    """The picture of one term (without its coefficient): a box of about 160 x 140 px (wider or taller
    when the term is crowded; ``height`` forces the box height) with the term's formula under it."""
    return _laid_out(term, height).picture(output_name)


@lru_cache(maxsize=512)
def _laid_out(term: TensorNetwork, height: float | None) -> _TermDrawing:
    """A term's graph with its layout done (the slow part; terms repeat between rows and diagrams)."""
    drawing = _TermDrawing(term, height)
    drawing.layout()
    return drawing


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
                 f'{_esc(title)}</text>')
    width = _text_width(title, 15) * 1.12
    y = float(TITLE_H)
    labels = []
    for row, eq in enumerate(diagram.equations):
        lhs_idx = eq.terms[0].output if eq.terms else ()
        target = eq.target if diagram.basis is None else diagram.basis.output.name
        lhs = target + (f"[{','.join(_show_index(i) for i in lhs_idx)}]" if lhs_idx else "") + " ="
        if diagram.basis is not None:  # element k in words, then the declared output
            lhs = f"{row}. {diagram.basis.words[row]}:  {lhs}"
        labels.append((target, lhs))
    # a basis's elements start in one column
    lhs_width = max([_text_width(lhs, FONT) for _, lhs in labels] + [0.0])
    for eq, (target, lhs) in zip(diagram.equations, labels):
        terms = eq.terms
        box_h = max([_term_height(t) for t in terms] + [float(TERM_H)])
        row_h = box_h + CAPTION_H
        mid = y + box_h / 2 + 5
        x = 0.0
        parts.append(f'<text class="lhs" x="{_num(x)}" y="{_num(mid)}" font-size="{FONT}" fill="{INK}">'
                     f'{_esc(lhs)}</text>')
        x += (lhs_width if diagram.basis is not None else _text_width(lhs, FONT)) + 10
        for k, term in enumerate(terms):
            coef = _coef_text(term.coefficient, k == 0, bool(term.nodes))
            if coef:
                parts.append(f'<text class="coefficient" x="{_num(x)}" y="{_num(mid)}" font-size="{FONT}" '
                             f'fill="{INK}">{_esc(coef)}</text>')
                x += _text_width(coef, FONT) + 6
            if not term.nodes and not term.output:  # a constant: its number says it all
                continue
            pic = draw_network(term, target, box_h)
            parts.append(pic.placed(x, y))
            x += pic.width + 8
        width = max(width, x)
        y += row_h + ROW_GAP
    return "".join(parts), width, y - ROW_GAP


def svg_document(fragments: list[str], width: float, height: float, title: str = "") -> str:
    """A standalone SVG 1.1 document with a white background."""
    w, h = _num(math.ceil(width)), _num(math.ceil(height))
    head = (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<svg xmlns="{SVG_NS}" version="1.1" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            f'font-family="sans-serif">\n')
    parts = [head]
    if title:
        parts.append(f"<title>{_esc(title)}</title>\n")
    parts.append(f'<rect class="background" x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>\n')
    for f in fragments:
        parts.append(f + "\n")
    parts.append("</svg>\n")
    # pure ASCII (ε and − as character references): the file reads the same in any encoding
    return "".join(parts).encode("ascii", "xmlcharrefreplace").decode("ascii")


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
            frags.append(f'<line class="separator" x1="{MARGIN}" y1="{_num(y)}" x2="{_num(width + MARGIN)}" '
                         f'y2="{_num(y)}" stroke="#d4d4d8"/>')
            y += 16
        frags.append(f'<g class="diagram" transform="translate({MARGIN},{_num(y)})">{body}</g>')
        y += h + 16
    if not bodies:
        frags.append(f'<text x="{MARGIN}" y="{MARGIN + 14}" font-size="{FONT}" fill="{INK}">'
                     f'{_esc(program.filename)}: no diagrams</text>')
        y += 30
    return svg_document(frags, width + 2 * MARGIN, y, program.filename)
