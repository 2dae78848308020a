"""Step 2 of a picture: a drawing graph -> positioned shapes (:class:`TermShapes`).

:func:`layout` places the movable vertices (stress majorization from several starts, the best of many
random placements, local search on a score: crossings, crowding, vertices on lines, uneven lines);
:func:`shapes` turns the placed graph into what is drawn: wires as chains of cubic Bezier segments,
loops, hubs, nodes, axis numbers and open-leg labels, each with its coordinates. Nothing here writes
SVG (:mod:`.svg` does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx
import numpy as np

from .graph import DrawingGraph, Vertex, Wire, ordered_legs
from .style import show_index

Point = tuple[float, float]


@dataclass(frozen=True)
class Layout:
    """A drawing graph with a place for every vertex (``positions[k]`` is vertex k's centre)."""

    graph: DrawingGraph
    positions: tuple[Point, ...]


@dataclass(frozen=True)
class Segment:
    """One piece of a drawn line from the end of the previous one to ``end``: straight, or a cubic
    Bezier through the control points ``c1``, ``c2``."""

    straight: bool
    c1: Point
    c2: Point
    end: Point


@dataclass(frozen=True)
class Line:
    """A wire as drawn: from ``start`` through ``segments``; ``index`` is the index it carries (shown)."""

    channel: bool
    start: Point
    segments: tuple[Segment, ...]
    index: str


@dataclass(frozen=True)
class Hub:
    x: float
    y: float
    index: str  # shown


@dataclass(frozen=True)
class NodeShape:
    """A drawn node: ``shape`` ('point' for eps, 'circle', 'ellipse', 'rrect', 'diamond' with its
    half sizes) at (x, y); for eps, ``label_at`` is where its ε goes (the widest gap between its legs)."""

    shape: tuple
    x: float
    y: float
    name: str
    type: str
    label_at: Point | None = None


@dataclass(frozen=True)
class AxisNumber:
    x: float
    y: float
    number: int


@dataclass(frozen=True)
class IndexLabel:
    """An open leg's label at its anchor on ``side`` of the box."""

    x: float
    y: float
    side: str
    text: str


@dataclass(frozen=True)
class TermShapes:
    """Everything one term's picture draws, in drawing order: lines, closed delta loops (circles at
    ``loops``), hubs and nodes (``marks``, in vertex order), axis numbers, open-leg labels, and the
    caption under the box of ``width`` x ``height``."""

    width: float
    height: float
    lines: tuple[Line, ...]
    loops: tuple[Point, ...]
    marks: tuple[Hub | NodeShape, ...]
    numbers: tuple[AxisNumber, ...]
    labels: tuple[IndexLabel, ...]
    caption: str


# -- layout -------------------------------------------------------------------------------------
def _ideal(g: DrawingGraph, u: int, v: int) -> float:
    """The preferred length of a line between vertices u and v."""
    a, b = g.vertices[u], g.vertices[v]
    if a.loop_of is not None or b.loop_of is not None:
        return 40.0
    if a.kind == "way" or b.kind == "way":
        return 42.0 + (a.radius if b.kind == "way" else b.radius)
    if a.kind == "anchor" or b.kind == "anchor":
        return 40.0 + a.radius + b.radius
    return 42.0 + a.radius + b.radius


def _layout_graph(g: DrawingGraph) -> nx.Graph:
    """The factor graph the layout works on; ``length`` is the preferred length of each line."""
    fg = nx.Graph()
    fg.add_nodes_from(range(len(g.vertices)))
    for w in g.wires:
        for u, v in zip(w.path, w.path[1:]):
            if u == v:
                continue
            if fg.has_edge(u, v):
                fg[u][v]["weight"] += 1.0
            else:
                fg.add_edge(u, v, weight=1.0, length=_ideal(g, u, v))
    return fg


def _targets(g: DrawingGraph, fg: nx.Graph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Preferred distances between all vertex pairs (graph distances) and their stress weights."""
    verts = g.vertices
    n = len(verts)
    far = 0.38 * min(g.width, g.height)
    D = np.full((n, n), far)
    linked = np.zeros((n, n), dtype=bool)
    for i, row in nx.all_pairs_dijkstra_path_length(fg, weight="length"):
        for j, d in row.items():
            D[i, j] = d
            linked[i, j] = True
    for i in range(n):  # never closer than the shapes allow
        for j in range(n):
            if i != j:
                D[i, j] = max(D[i, j], verts[i].radius + verts[j].radius + 24.0)
    np.fill_diagonal(D, 1.0)
    Wt = D ** -2.0
    np.fill_diagonal(Wt, 0.0)
    np.fill_diagonal(D, 0.0)
    return D, Wt, linked


def _bounds(g: DrawingGraph, v: Vertex) -> tuple[float, float, float, float]:
    """Where the centre of a movable vertex may go: inside the box, clear of the open-leg labels."""
    r = v.radius
    pad = 8.0
    return (g.inset_x + r + pad, g.width - g.inset_x - r - pad,
            g.inset_top + r + pad + 4, g.height - g.inset_bottom - r - pad)


def _free_lines(g: DrawingGraph) -> list[tuple[int, int, int]]:
    """(bend point, anchor, anchor) of each delta line between two open legs."""
    out = []
    for w in g.wires:
        if len(w.path) == 3 and g.vertices[w.path[0]].fixed and g.vertices[w.path[2]].fixed:
            out.append((w.path[1], w.path[0], w.path[2]))
    return out


def _project(free_lines, X: np.ndarray) -> None:
    """Keep the bend of a delta line between two open legs on the perpendicular bisector of its
    ends, so that the line is a symmetric arc (X: (..., vertices, 2), changed in place)."""
    for k, a, b in free_lines:
        A, B = X[..., a, :], X[..., b, :]
        m = (A + B) / 2
        t = B - A
        nrm = np.stack([-t[..., 1], t[..., 0]], axis=-1)
        nrm = nrm / np.maximum(np.sqrt((nrm ** 2).sum(axis=-1, keepdims=True)), 1e-9)
        off = ((X[..., k, :] - m) * nrm).sum(axis=-1, keepdims=True)
        X[..., k, :] = m + off * nrm


def _stress(g: DrawingGraph, free_lines, X: np.ndarray, movable: list[int], D: np.ndarray, Wt: np.ndarray,
            linked: np.ndarray, anchored: bool) -> None:
    """Stress majorization with the anchors held in place, clamped to the box every sweep.

    Pairs joined by a path keep their graph distance; unjoined pairs only keep apart."""
    mov = np.array(movable)
    lo = np.array([[_bounds(g, g.vertices[k])[0], _bounds(g, g.vertices[k])[2]] for k in movable])
    hi = np.array([[_bounds(g, g.vertices[k])[1], _bounds(g, g.vertices[k])[3]] for k in movable])
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
        _project(free_lines, X)
        if step < 0.3:
            break


def layout(g: DrawingGraph) -> Layout:
    """A place for every movable vertex of ``g`` (deterministic: fixed seeds, stable sorts)."""
    verts = g.vertices
    movable = [k for k, v in enumerate(verts) if not v.fixed]
    fixed = [k for k, v in enumerate(verts) if v.fixed]
    if not movable:
        return Layout(g, tuple((v.x, v.y) for v in verts))
    fg = _layout_graph(g)
    free_lines = _free_lines(g)
    D, Wt, linked = _targets(g, fg)
    n = len(verts)
    cx, cy = g.width / 2, (g.inset_top + g.height - g.inset_bottom) / 2
    hx, hy = g.width / 2 - g.inset_x - 20, (g.height - g.inset_top - g.inset_bottom) / 2 - 20
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
                    px += wgt * verts[a].x
                    py += wgt * verts[a].y
            jit = 9.0 * math.cos(2.4 * j), 9.0 * math.sin(2.4 * j)
            if wsum:
                smart[k] = (0.55 * px / wsum + 0.45 * cx + jit[0], 0.55 * py / wsum + 0.45 * cy + jit[1])
            else:
                smart[k] = (cx + jit[0], cy + jit[1])
        inits.append(smart)
    for seed in range(1):
        sp = nx.spring_layout(fg, seed=seed, iterations=50, weight=None)
        inits.append({k: (cx + sp[k][0] * hx, cy + sp[k][1] * hy) for k in movable})
    for cand in range(1, 4):
        rng = np.random.RandomState(cand)
        inits.append({k: (cx + rng.uniform(-1, 1) * hx, cy + rng.uniform(-1, 1) * hy) for k in movable})
    scorer = _Scorer(g)
    results = []
    for init in inits:
        X = np.zeros((n, 2))
        for k, v in enumerate(verts):
            X[k] = init[k] if k in init else (v.x, v.y)
        _stress(g, free_lines, X, movable, D, Wt, linked, bool(fixed))
        placed = {k: (float(X[k, 0]), float(X[k, 1])) for k in movable}
        _fit(g, placed, bool(fixed))
        X = np.array([placed.get(k, (v.x, v.y)) for k, v in enumerate(verts)], dtype=float)
        _project(free_lines, X)
        placed = {k: (float(X[k, 0]), float(X[k, 1])) for k in movable}
        X = np.array([placed.get(k, (v.x, v.y)) for k, v in enumerate(verts)], dtype=float)
        results.append((scorer.score(X), len(results), placed))
    # and the best of many random placements, scored all at once
    rng = np.random.RandomState(12345)
    m = 1000
    Xb = np.zeros((m, n, 2))
    for k, v in enumerate(verts):
        if v.fixed:
            Xb[:, k] = (v.x, v.y)
        else:
            lo_x, hi_x, lo_y, hi_y = _bounds(g, v)
            Xb[:, k, 0] = rng.uniform(lo_x, max(lo_x, hi_x), m)
            Xb[:, k, 1] = rng.uniform(lo_y, max(lo_y, hi_y), m)
    _project(free_lines, Xb)
    scores = scorer.batch(Xb)
    for j in np.argsort(scores, kind="stable")[:3]:
        results.append((float(scores[j]), len(results), {k: (float(Xb[j, k, 0]), float(Xb[j, k, 1])) for k in movable}))
    results.sort(key=lambda r: (round(r[0], 6), r[1]))
    best, best_score = None, None
    for score, _, placed in results[:3]:  # polish the three best by local search on the score
        X = np.array([placed.get(k, (v.x, v.y)) for k, v in enumerate(verts)], dtype=float)
        if score > 1.0:
            score = _refine(g, free_lines, X, movable, scorer)
        if best_score is None or score < best_score - 1e-6:
            best, best_score = {k: (float(X[k, 0]), float(X[k, 1])) for k in movable}, score
    positions = [best.get(k, (v.x, v.y)) for k, v in enumerate(verts)]
    # loop bend points sit at a fixed distance from their node
    for k, v in enumerate(verts):
        if v.loop_of is not None:
            (x, y), (ox, oy) = positions[k], positions[v.loop_of]
            dx, dy = x - ox, y - oy
            d = math.hypot(dx, dy)
            if d < 1e-6:
                dx, dy, d = 0.0, -1.0, 1.0
            reach = verts[v.loop_of].radius + 20
            positions[k] = (ox + dx / d * reach, oy + dy / d * reach)
    return Layout(g, tuple(positions))


def _fit(g: DrawingGraph, placed: dict[int, tuple[float, float]], anchored: bool) -> None:
    """Bring the movable vertices into the box (clamp; or centre and shrink when nothing is fixed)."""
    if not anchored and placed:
        xs = [p[0] for p in placed.values()]
        ys = [p[1] for p in placed.values()]
        mx, my = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
        bx = (g.width - 2 * g.inset_x - 40)
        by = (g.height - g.inset_top - g.inset_bottom - 40)
        span_x, span_y = max(xs) - min(xs), max(ys) - min(ys)
        s = min(1.0, bx / span_x if span_x > 1e-9 else 1.0, by / span_y if span_y > 1e-9 else 1.0)
        cx, cy = g.width / 2, (g.inset_top + g.height - g.inset_bottom) / 2
        for k, (x, y) in list(placed.items()):
            placed[k] = (cx + (x - mx) * s, cy + (y - my) * s)
    for _ in range(30):  # clamp, then push apart vertices that overlap
        for k, (x, y) in list(placed.items()):
            lo_x, hi_x, lo_y, hi_y = _bounds(g, g.vertices[k])
            placed[k] = (min(max(x, lo_x), hi_x), min(max(y, lo_y), hi_y))
        moved = False
        keys = list(placed)
        for a_i, a in enumerate(keys):
            for b in keys[a_i + 1:]:
                (ax, ay), (bx_, by_) = placed[a], placed[b]
                need = g.vertices[a].radius + g.vertices[b].radius + 10
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


def _refine(g: DrawingGraph, free_lines, X: np.ndarray, movable: list[int], scorer: "_Scorer") -> float:
    """Local search on the score: move one vertex at a time a step in one of 8 directions."""
    best = scorer.score(X)
    for k in movable:  # a hub may do better at the centre of what it joins
        if g.vertices[k].kind != "hub":
            continue
        ends = [w.path[0] for w in g.wires if w.path[-1] == k] + [w.path[-1] for w in g.wires if w.path[0] == k]
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
    bounds = {k: _bounds(g, g.vertices[k]) for k in movable}
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
                _project(free_lines, trial)
                scores = scorer.batch(trial)
                j = int(np.argmin(scores))
                if scores[j] < best - 1e-6:
                    best, improved = float(scores[j]), True
                    X[k] = trial[j, k]
            if not improved:
                break
    return best


# -- positioned shapes --------------------------------------------------------------------------
def shapes(lay: Layout) -> TermShapes:
    """What the placed graph draws, with coordinates (the picture's geometry; :mod:`.svg` prints it)."""
    g, pos = lay.graph, lay.positions
    verts = g.vertices
    att, node_angles = _attach(lay)
    lines, numbers = [], []
    for wi, w in enumerate(g.wires):
        pts = [pos[k] for k in w.path]
        pts[0] = att.get((wi, 0), pts[0])
        pts[-1] = att.get((wi, 1), pts[-1])
        is_loop = w.path[0] == w.path[-1] and len(w.path) == 3
        if is_loop:
            curve = _loop_curve(lay, w, pts)
        elif len(pts) == 2 and w.offset:
            curve = [_quad(pts[0], _control(w, pts[0], pts[1]), pts[1])]
        elif len(pts) == 2:
            curve = [_line(pts[0], pts[1])]
        else:
            curve = _catmull_rom(pts)
        segments = tuple(Segment(seg == _line(seg[0], seg[3]), seg[1], seg[2], seg[3]) for seg in curve)
        lines.append(Line(w.channel, curve[0][0], segments, show_index(w.index)))
        # axis numbers near the node end
        for side in (0, 1):
            k = w.path[0] if side == 0 else w.path[-1]
            axis = w.axes[side]
            v = verts[k]
            if v.kind != "node" or axis is None or w.channel or is_loop:
                continue
            node = g.term.nodes[v.node]
            if not ordered_legs(node):
                continue
            dist = 15.0 if v.shape[0] == "point" else 9.0  # a little way from the node, on the leg itself
            x, y = _point_along(curve, dist, from_end=side == 1)
            numbers.append(AxisNumber(x, y, axis - node.n_channels + 1))
    marks: list[Hub | NodeShape] = []
    for k, v in enumerate(verts):
        x, y = pos[k]
        if v.kind == "hub":
            marks.append(Hub(x, y, show_index(v.label)))
        elif v.kind == "node":
            node = g.term.nodes[v.node]
            label_at = None
            if node.kind == "eps":  # the ε label goes into the widest gap between the legs
                gap = _widest_gap(node_angles.get(k, []))
                label_at = (x + 12 * math.cos(gap), y + 12 * math.sin(gap) + 3.5)
            marks.append(NodeShape(v.shape, x, y, node.name, str(node.type), label_at))
    labels = tuple(IndexLabel(pos[k][0], pos[k][1], v.side, v.label) for k, v in enumerate(verts)
                   if v.kind == "anchor")
    return TermShapes(g.width, g.height, tuple(lines), tuple(pos[k] for k in g.loops), tuple(marks),
                      tuple(numbers), labels, g.caption)


def _control(w: Wire, a: Point, b: Point) -> Point:
    """The control point of an offset (bent) wire from a to b, bending consistently left/right."""
    u, v = w.path[0], w.path[-1]
    (sx, sy), (tx, ty) = (a, b) if u <= v else (b, a)
    dx, dy = tx - sx, ty - sy
    d = math.hypot(dx, dy) or 1.0
    nx_, ny_ = -dy / d, dx / d
    mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
    return (mx + 2 * w.offset * nx_, my + 2 * w.offset * ny_)


def _attach(lay: Layout) -> tuple[dict[tuple[int, int], Point], dict[int, list[float]]]:
    """Where each wire end meets its node, spread around the node, ordered by direction; and the
    directions of the legs at each node."""
    g, pos = lay.graph, lay.positions
    wants: dict[int, list[tuple[float, int, tuple[int, int]]]] = {}
    for wi, w in enumerate(g.wires):
        is_loop = len(w.path) == 3 and w.path[0] == w.path[-1]
        for side in (0, 1):
            k = w.path[0] if side == 0 else w.path[-1]
            v = g.vertices[k]
            if v.kind != "node":
                continue
            nxt = w.path[1] if side == 0 else w.path[-2]
            if len(w.path) == 2 and w.offset:
                target = _control(w, pos[w.path[0]], pos[w.path[-1]])
            else:
                target = pos[nxt]
            ang = math.atan2(target[1] - pos[k][1], target[0] - pos[k][0])
            if is_loop:  # the two ends of a self-loop leave side by side
                ang += -0.55 if side == 0 else 0.55
            wants.setdefault(k, []).append((ang, side, (wi, side)))
    result: dict[tuple[int, int], Point] = {}
    node_angles: dict[int, list[float]] = {}
    for k, legs in wants.items():
        v = g.vertices[k]
        legs.sort(key=lambda t: (round(t[0], 9), t[1], t[2]))
        angs = [t[0] for t in legs] if v.shape[0] == "point" else _spread([t[0] for t in legs])
        node_angles[k] = angs
        for (_, _, key), ang in zip(legs, angs):
            if v.shape[0] != "point":
                bx, by = _boundary(v.shape, ang)
                result[key] = (pos[k][0] + bx, pos[k][1] + by)
    return result, node_angles


def _loop_curve(lay: Layout, w: Wire, pts) -> list:
    """A self-loop: one cubic leaving the node at both attachment points, bulging outwards."""
    (ox, oy), (wx, wy) = lay.positions[w.path[0]], lay.positions[w.path[1]]
    a, b = pts[0], pts[-1]
    ux, uy = wx - ox, wy - oy
    d = math.hypot(ux, uy) or 1.0
    ux, uy = ux / d, uy / d
    L = 30.0

    def out_dir(p):
        dx, dy = p[0] - ox, p[1] - oy
        n = math.hypot(dx, dy) or 1.0
        return (0.7 * dx / n + 0.3 * ux, 0.7 * dy / n + 0.3 * uy)
    da, db = out_dir(a), out_dir(b)
    return [(a, (a[0] + da[0] * L, a[1] + da[1] * L), (b[0] + db[0] * L, b[1] + db[1] * L), b)]


class _Scorer:
    """How bad a placement looks: crossings, crowding, vertices on lines, uneven line lengths."""

    def __init__(self, g: DrawingGraph):
        segs = [(u, v) for w in g.wires for u, v in zip(w.path, w.path[1:]) if u != v]
        verts = g.vertices
        self.A = np.array([a for a, _ in segs], dtype=int)
        self.B = np.array([b for _, b in segs], dtype=int)
        self.ideal = np.array([_ideal(g, a, b) for a, b in segs])
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
