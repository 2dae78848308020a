"""Syntax tree of a .diag file: frozen dataclasses that keep their source position."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from ..errors import Position
from ..ir.types import TensorType


@dataclass(frozen=True)
class Index:
    """An index name as written, e.g. the ``i`` of ``X[i,j]``."""

    name: str
    pos: Position


@dataclass(frozen=True)
class Number:
    """A rational constant such as ``1/3`` or ``0.5`` (kept exact)."""

    value: Fraction
    pos: Position


@dataclass(frozen=True)
class Factor:
    """A tensor occurrence ``NAME[indices]``: an input, an earlier output, ``delta`` or ``eps``."""

    name: str
    indices: tuple[Index, ...]
    pos: Position
    block: str | None = None  # h.1o[...]: the irrep of the selected block of an irreps tensor


@dataclass(frozen=True)
class Constant:
    """A built-in constant with parameters: ``cg(l1,l2,l3)[a,b,c]`` or ``P(l)[m,i1,...,il]``."""

    name: str
    params: tuple[int, ...]
    indices: tuple[Index, ...]
    pos: Position


@dataclass(frozen=True)
class Neg:
    operand: "Expr"
    pos: Position


@dataclass(frozen=True)
class BinOp:
    """``left op right`` with op one of ``+ - * /`` (``/`` only by a number)."""

    op: str
    left: "Expr"
    right: "Expr"
    pos: Position


@dataclass(frozen=True)
class Call:
    """A function of invariants applied to arguments: a built-in (``silu(x)``, ``rsqrt(x)``), a user
    function declared ``phi: fn(n -> m)`` with its output number ``select`` (``phi(a, b)[1]``), or the
    reciprocal ``recip`` that ``a / (expr)`` becomes (division by anything but a number)."""

    name: str
    args: tuple["Expr", ...]
    select: int | None
    pos: Position


Expr = Number | Factor | Constant | Neg | BinOp | Call


@dataclass(frozen=True)
class FnType:
    """The type of a user function argument: ``fn(n_in -> n_out)``, a callable of the array library
    from n_in invariants (stacked on a last axis) to n_out invariants (on a last axis)."""

    n_in: int
    n_out: int
    family = "fn"
    channels = ()

    def __str__(self) -> str:
        return f"fn({self.n_in} -> {self.n_out})"


@dataclass(frozen=True)
class Param:
    """``name: type`` in a diagram's signature."""

    name: str
    type: TensorType
    pos: Position
    type_pos: Position


@dataclass(frozen=True)
class Equation:
    """``target[indices] = expr``."""

    target: str
    indices: tuple[Index, ...]
    expr: Expr
    pos: Position
    block: str | None = None  # out.1o[...] = ...: the block of an irreps output assigned


@dataclass(frozen=True)
class Diagram:
    name: str
    inputs: tuple[Param, ...]
    outputs: tuple[Param, ...]
    equations: tuple[Equation, ...]
    pos: Position


@dataclass(frozen=True)
class BasisInput:
    """``X: sym2^2`` (degree 2) or ``X: sym2^<=2`` (every degree up to 2) in a basis declaration."""

    param: Param
    degree: int
    up_to: bool


@dataclass(frozen=True)
class Basis:
    """``basis NAME(inputs) -> output``: every independent equivariant contraction, stacked."""

    name: str
    inputs: tuple[BasisInput, ...]
    output: Param
    pos: Position


@dataclass(frozen=True)
class Module:
    """A whole .diag file."""

    filename: str
    source: str
    group: str
    diagrams: tuple[Diagram | Basis, ...]
