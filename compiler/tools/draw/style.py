"""Sizes, inks and text metrics shared by the three steps (graph, layout, svg)."""

from __future__ import annotations

from ...ir.program import Renamed

TERM_W = 160  # the box of one term
TERM_H = 150
CAPTION_H = 16  # the formula under the box
MARGIN = 16
ROW_GAP = 12
TITLE_H = 30
FONT = 14  # coefficients and "OUT ="
LABEL_FONT = 11  # index labels
NODE_FONT = 12
CAPTION_FONT = 9.5

INK = "#1d1d1f"
CHANNEL_INK = "#6b6b6b"


def show_index(label: str) -> str:
    """A label as drawn: a renamed one (:class:`~compiler.ir.program.Renamed`) as its base with a
    prime, ``k'``."""
    return label.base + "'" if isinstance(label, Renamed) else label


def text_width(text: str, size: float) -> float:
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
