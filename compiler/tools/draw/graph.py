"""Step 1 of a picture: a term -> its drawing graph (:class:`DrawingGraph`).

Drawn nodes (inputs, eps) are vertices; a ``delta`` is no vertex but the bend of the line it makes;
open legs end at anchors on the border of the term's box (geometric ones from left over the top to
right, channels at the bottom); an index shared by three or more ends meets at a hub. Lines through
deltas are joined into wires. Only anchors have positions here: the layout (:mod:`.layout`) places
the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ...ir.program import TensorNetwork
from .style import CAPTION_FONT, LABEL_FONT, NODE_FONT, TERM_H, TERM_W, show_index, text_width


@dataclass(frozen=True)
class Vertex:
    kind: str  # 'node' (an input or eps), 'anchor' (open leg end), 'hub', 'way' (invisible bend)
    x: float = 0.0  # anchors only: their fixed place
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


@dataclass(frozen=True)
class Wire:
    """A drawn line: through ``path`` (vertex numbers); ``axes`` the node axis at each end (or None)."""

    channel: bool
    path: tuple[int, ...]
    axes: tuple[int | None, int | None]
    index: str
    offset: float = 0.0  # bend of parallel wires


@dataclass(frozen=True)
class DrawingGraph:
    """One term's vertices and wires, in a box of ``width`` x ``height`` with open-leg labels inside the
    insets; ``loops`` are the bend vertices of closed delta loops (delta[i,i])."""

    term: TensorNetwork
    vertices: tuple[Vertex, ...]
    wires: tuple[Wire, ...]
    loops: tuple[int, ...]
    width: float
    height: float
    inset_x: float
    inset_top: float
    inset_bottom: float
    caption: str


def node_shape(node) -> tuple:
    if node.kind == "eps":
        return ("point",)
    w = text_width(node.name, NODE_FONT)
    if node.type.family == "weight":
        return ("diamond", max(16.0, w / 2 + 11), 15.0)
    if node.type.family == "sph":
        return ("rrect", max(14.0, w / 2 + 7), 12.0)
    if w <= 18:
        return ("circle", 13.0)
    return ("ellipse", w / 2 + 8, 13.0)


def ordered_legs(node) -> bool:
    """Whether the order of this node's geometric legs must be shown."""
    if node.kind == "eps":
        return True
    t = node.type
    if t.family != "cart" or t.rank < 2:
        return False
    return t.symmetry not in ("sym", "sym_traceless")


def caption(term: TensorNetwork) -> str:
    """The term's factors in index notation (no coefficient), internal indices shown as k'."""
    if not term.nodes:
        return str(term.coefficient)
    parts = []
    for n in term.nodes:
        parts.append(f"{n.name}[{','.join(show_index(i) for i in n.indices)}]" if n.indices else n.name)
    return " ".join(parts)


def term_height(term: TensorNetwork) -> float:
    """The height of a term's box: taller when it has many things to place."""
    return float(TERM_H) if _crowd(term) <= 3 else float(TERM_H) + 30.0


def _crowd(term: TensorNetwork) -> int:
    """How many things a term's layout has to place: nodes, free-standing delta lines, hubs."""
    crowd = sum(1 for n in term.nodes if n.kind != "delta")
    crowd += sum(1 for n in term.nodes if n.kind == "delta" and all(i in term.output for i in n.indices))
    crowd += sum(1 for i in term.indices() if not term.kind(i).geometric
                 and len(term.legs(i)) + term.output.count(i) >= 3)
    return crowd


def drawing_graph(term: TensorNetwork, height: float | None = None) -> DrawingGraph:
    """The drawing graph of one term; ``height`` forces the box height."""
    geo_out = [k for k, i in enumerate(term.output) if term.kind(i).geometric]
    ch_out = [k for k, i in enumerate(term.output) if not term.kind(i).geometric]
    labels = [show_index(i) for i in term.output]
    side_w = max([text_width(labels[k], LABEL_FONT) for k in geo_out] + [0.0])
    cap = caption(term)
    cap_w = text_width(cap, CAPTION_FONT) + 12
    W = max(float(TERM_W), cap_w, 46.0 * _crowd(term) + 30, 44.0 * len(ch_out) + 40)
    H = float(height) if height is not None else term_height(term)
    inset_x, inset_top, inset_bottom = max(14.0, side_w + 7), 18.0, 20.0
    verts: list[Vertex] = []

    def add(v: Vertex) -> int:
        verts.append(v)
        return len(verts) - 1

    # anchors of open legs: geometric ones from left over the top to right, channels at the bottom
    x0, x1 = inset_x, W - inset_x
    y0, y1 = inset_top, H - inset_bottom
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
        anchor_of[k] = add(Vertex("anchor", ax, ay, label=labels[k], side=side))
    m = len(ch_out)
    for j, k in enumerate(ch_out):
        ax = W * (j + 1) / (m + 1)
        anchor_of[k] = add(Vertex("anchor", ax, y1, label=labels[k], side="bottom"))
    # drawn nodes; deltas become invisible bend points
    node_vertex: dict[int, int] = {}
    for n_i, node in enumerate(term.nodes):
        if node.kind == "delta":
            node_vertex[n_i] = add(Vertex("way", node=n_i))
        else:
            node_vertex[n_i] = add(Vertex("node", node=n_i, shape=node_shape(node), label=node.name))
    # edges: (end, end) with end = (vertex, axis or None); channel flag; index
    edges: list[tuple[tuple[int, int | None], tuple[int, int | None], bool, str]] = []
    for index in term.indices():
        ends: list[tuple[int, int | None]] = [(node_vertex[leg.node], leg.axis) for leg in term.legs(index)]
        ends += [(anchor_of[k], None) for k, i in enumerate(term.output) if i == index]
        channel = not term.kind(index).geometric
        if len(ends) == 2:
            edges.append((ends[0], ends[1], channel, index))
        elif len(ends) >= 3:
            hub = add(Vertex("hub", label=index))
            for e in ends:
                edges.append((e, (hub, None), channel, index))
        elif len(ends) == 1:  # a summed index on one leg only: a short stub
            stub = add(Vertex("way"))
            edges.append((ends[0], (stub, None), channel, index))
    wires, loops = _chain(verts, edges)
    return DrawingGraph(term, tuple(verts), wires, loops, W, H, inset_x, inset_top, inset_bottom, cap)


def _chain(verts: list[Vertex], edges) -> tuple[tuple[Wire, ...], tuple[int, ...]]:
    """Join edges through deltas into wires; closed delta loops give their first bend vertex. Adds the
    bend vertex of each self-loop to ``verts``."""

    def is_delta(v: int) -> bool:
        return verts[v].kind == "way" and verts[v].node is not None

    at: dict[tuple[int, int | None], int] = {}  # delta end -> edge number
    for e, (a, b, _, _) in enumerate(edges):
        for end in (a, b):
            if is_delta(end[0]):
                at[end] = e
    used = [False] * len(edges)

    def walk(e: int, start: tuple[int, int | None]):
        path, axes_end = [start[0]], None
        cur, frm = e, start
        while True:
            used[cur] = True
            a, b, _, _ = edges[cur]
            to = b if a == frm else a
            if not is_delta(to[0]):
                path.append(to[0])
                axes_end = to[1]
                return path, axes_end, False
            path.append(to[0])
            nxt_end = (to[0], 1 - to[1])
            nxt = at.get(nxt_end)
            if nxt is None or used[nxt]:
                return path, None, True
            cur, frm = nxt, nxt_end

    found: list[tuple[bool, list[int], tuple, str]] = []  # channel, path, axes, index
    for e, (a, b, channel, index) in enumerate(edges):
        if used[e]:
            continue
        if is_delta(a[0]) and is_delta(b[0]):
            continue  # reached from an end, or a closed delta loop (below)
        start, other = (a, b) if not is_delta(a[0]) else (b, a)
        path, end_axis, _ = walk(e, start)
        found.append((channel, path, (start[1], end_axis), index))
    loops = []
    for e, (a, b, channel, index) in enumerate(edges):
        if not used[e]:  # only deltas around: delta[i,j] delta[j,i], delta[i,i]
            path, _, _ = walk(e, a)
            loops.append(path[0])
    # a self-loop of a node gets a bend point that the layout places
    for channel, path, axes, index in found:
        if len(path) == 2 and path[0] == path[1]:
            verts.append(Vertex("way", loop_of=path[0]))
            path[1:1] = [len(verts) - 1]
        elif len(path) == 3 and path[0] == path[2]:
            verts[path[1]] = replace(verts[path[1]], loop_of=path[0])
    # parallel wires between the same two vertices bend apart
    groups: dict[tuple[int, int], list[int]] = {}
    for w, (_, path, _, _) in enumerate(found):
        if len(path) == 2:
            groups.setdefault((min(path), max(path)), []).append(w)
    offsets = [0.0] * len(found)
    for ws in groups.values():
        for k, w in enumerate(ws):
            offsets[w] = (k - (len(ws) - 1) / 2) * 24.0
    wires = tuple(Wire(channel, tuple(path), axes, index, offset)
                  for (channel, path, axes, index), offset in zip(found, offsets))
    return wires, tuple(loops)
