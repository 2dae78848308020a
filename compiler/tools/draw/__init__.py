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

A term's picture is three pure steps, frozen data between them: :mod:`.graph` (term -> drawing graph:
vertices, wires), :mod:`.layout` (drawing graph -> positioned shapes: stress majorization and a
scored search, then curves, attachment points, labels) and :mod:`.svg` (positioned shapes -> text);
:mod:`.diagrams` sets the pictures of a diagram's equations in rows. Output is deterministic: no set
iteration, fixed seeds, coordinates rounded to 2 decimals.

    draw_network(term, output_name) -> Picture   # one term
    draw_diagram(diagram) -> str                 # SVG document for one diagram
    draw_program(program) -> str                 # SVG document for every diagram of a file
"""

from .diagrams import draw_diagram, draw_network, draw_program
from .svg import Picture, svg_document

__all__ = ["Picture", "draw_network", "draw_diagram", "draw_program", "svg_document"]
