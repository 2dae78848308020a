"""Tensor types of the language: a small immutable value type that parses from text and prints back.

>>> TensorType.parse("cart2(0e+1o+2e)[c]")
TensorType('cart2(0e+1o+2e)[c]')
>>> str(TensorType.parse("cart(1)"))
'vec'

A type is one of three families:

* ``cart``: a Cartesian tensor with ``rank`` legs of dimension 3, ``R`` acting on each leg, optionally
  a symmetry (``sym``, ``skew``, ``sym_traceless`` on rank 2; ``sym_traceless`` on rank l >= 3 is
  ``symt(l)``, the Cartesian twin of ``sph(l)``) and an inversion parity per
  irreducible part (a rank-2 tensor has parts l = 0, 1, 2; TensorNet's feature is 0e+1o+2e);
* ``sph``: a spherical tensor of type ``lp`` with one leg of dimension 2l+1;
* ``weight``: invariant parameters, channel axes only;
* ``edges``: an edge list ``edges[e,n]``: for each edge of the edge set ``e`` one node of the node
  set ``n`` (the source or the target). In a formula it is the incidence matrix (1 where the edge
  meets the node), an invariant with two channel axes; at run time an integer array of shape (E,).
* ``irreps``: e3nn's flat feature array ``irreps(32x0e+16x1o+8x2e)``: blocks ``mul x lp`` laid out one
  after the other, each ``mul * (2l+1)`` values, multiplicity-major (e3nn's layout). It exists only in
  signatures: lowering splits it into one ``sph(lp)[mul]`` block per term (``scalar[mul]`` /
  ``pscalar[mul]`` for 0e / 0o; a channel axis of fixed size ``mul``, named by its size), selected in
  equations as ``h.1o[u,m]``, ``h.0e[u]``.

Every type may carry channel axes (non-geometric, declared by name) stored before its geometric axes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Union

#: irreducible parts (the l's) of a rank-2 tensor with each symmetry
RANK2_PARTS = {"": (0, 1, 2), "sym": (0, 2), "skew": (1,), "sym_traceless": (2,)}
_SYMMETRY_NAMES = {"cart2": "", "sym2": "sym", "skew2": "skew", "sym2t": "sym_traceless"}
_NAMED = {
    "scalar": (0, False),
    "pscalar": (0, True),
    "vec": (1, False),
    "axial": (1, True),
}
TYPE_NAMES = tuple(_NAMED) + tuple(_SYMMETRY_NAMES) + ("cart", "pcart", "symt", "psymt", "sym3t", "sph", "weight", "edges", "irreps")
MAX_RANK = 12
MAX_L = 12
#: the largest multiplicity of one irreps block (a fixed channel size)
MAX_MUL = 1 << 20


class TypeSyntaxError(ValueError):
    """A type written wrongly; the parser turns it into a positioned DiagTypeError."""


@dataclass(frozen=True, order=True)
class Irrep:
    """An irreducible representation of O(3): degree ``l``, inversion parity ``p`` = +1 (e) or -1 (o)."""

    l: int
    p: int

    def __post_init__(self) -> None:
        if not isinstance(self.l, int) or isinstance(self.l, bool) or self.l < 0:
            raise TypeSyntaxError(f"irrep degree l must be an integer >= 0, got {self.l!r}")
        if self.p not in (1, -1) or isinstance(self.p, bool):
            raise TypeSyntaxError(f"irrep parity p must be +1 or -1, got {self.p!r}")

    @classmethod
    def parse(cls, text: str) -> "Irrep":
        if not isinstance(text, str):
            raise TypeSyntaxError(f"an irrep is written as a string such as '1o', got {text!r}")
        m = re.fullmatch(r"([0-9]+)([eo])", text.strip())
        if not m:
            raise TypeSyntaxError(f"'{text}' is not an irrep such as 0e or 1o")
        return cls(int(m.group(1)), 1 if m.group(2) == "e" else -1)

    def __str__(self) -> str:
        return f"{self.l}{'e' if self.p == 1 else 'o'}"

    @property
    def dim(self) -> int:
        return 2 * self.l + 1


@dataclass(frozen=True)
class FixedSize:
    """A channel axis of a fixed size, written as a number in a type (``weight[16,32]``, the
    multiplicity axis of an irreps block ``sph(1o)[16]``); a named channel axis is its name (str)."""

    size: int

    def __str__(self) -> str:
        return str(self.size)


Channel = Union[str, FixedSize]  # one channel axis of a type: its name, or a fixed size


@dataclass(frozen=True)
class TensorType:
    """A tensor type; see the module docstring. Build with :meth:`parse` or :func:`make_type`."""

    family: str  # 'cart' | 'sph' | 'weight' | 'edges' | 'irreps'
    rank: int = 0  # number of Cartesian legs
    symmetry: str = ""  # '' | 'sym' | 'skew' | 'sym_traceless' (rank 2; rank >= 3: 'sym_traceless' only)
    parities: tuple[int, ...] = ()  # cart: inversion sign of each irreducible part, rank 2; else one sign
    irrep: Irrep | None = None  # sph only
    channels: tuple[Channel, ...] = field(default=())
    blocks: tuple[tuple[int, Irrep], ...] = ()  # irreps only: (multiplicity, irrep) per block, in order

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> "TensorType":
        """Parse ``scalar``, ``vec[c]``, ``cart(3)``, ``skew2(1o)``, ``sph(2e)[c,d]``, ``weight[c,d]``..."""
        shorthand = re.fullmatch(r"\s*([0-9]+[eo])\s*(\[[^\]]*\])?\s*", text)
        if shorthand:  # e3nn's notation: 1o is sph(1o)
            text = f"sph({shorthand.group(1)}){shorthand.group(2) or ''}"
        m = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\(([^)]*)\))?\s*(?:\[([^\]]*)\])?\s*", text)
        if not m:
            raise TypeSyntaxError(f"'{text}' is not a type")
        args = None if m.group(2) is None else [a.strip() for a in m.group(2).split("+")]
        channels = None if m.group(3) is None else [c.strip() for c in m.group(3).split(",") if c.strip()]
        return make_type(m.group(1), args, channels)

    # -- properties ---------------------------------------------------------------------------
    @property
    def geometric_dims(self) -> tuple[int, ...]:
        """Sizes of the geometric axes: 3 per Cartesian leg, 2l+1 for a spherical one."""
        if self.family == "cart":
            return (3,) * self.rank
        if self.family == "sph":
            return (self.irrep.dim,)
        return ()

    @property
    def n_geometric(self) -> int:
        return len(self.geometric_dims)

    @property
    def parts(self) -> tuple[Irrep, ...]:
        """The irreducible parts with their inversion parity (rank 2 and spherical only)."""
        if self.family == "sph":
            return (self.irrep,)
        if self.family == "cart" and self.rank == 2:
            return tuple(Irrep(l, p) for l, p in zip(RANK2_PARTS[self.symmetry], self.parities))
        if self.family == "cart" and self.symmetry == "sym_traceless":  # symt(l): the one part l
            return (Irrep(self.rank, self.parities[0] * (-1) ** self.rank),)
        return ()

    @property
    def inversion(self) -> int | None:
        """The eigenvalue of the inversion -I on the whole tensor, or None if its parts differ."""
        if self.family in ("weight", "edges"):
            return 1
        if self.family == "sph":
            return self.irrep.p
        if self.graded:
            return None
        return self.parities[0] * (-1) ** self.rank

    @property
    def pseudo(self) -> bool | None:
        """True for a pseudotensor (an extra det R), None for a mixed grading."""
        if self.family != "cart":
            return False
        signs = set(self.parities)
        return None if len(signs) != 1 else (signs.pop() == -1)

    @property
    def graded(self) -> bool:
        """True when the irreducible parts have different inversion parities (e.g. 0e+1o+2e)."""
        return self.family == "cart" and len(set(self.parities)) > 1

    def with_channels(self, channels: tuple[Channel, ...]) -> "TensorType":
        return TensorType(self.family, self.rank, self.symmetry, self.parities, self.irrep, tuple(channels),
                          self.blocks)

    # -- irreps (e3nn's flat layout) ------------------------------------------------------------
    @property
    def flat_dim(self) -> int:
        """irreps only: the length of the flat feature axis, sum of mul * (2l+1)."""
        return sum(mul * ir.dim for mul, ir in self.blocks)

    def block_offsets(self) -> tuple[tuple[int, int, Irrep], ...]:
        """irreps only: (offset in the flat axis, multiplicity, irrep) of each block."""
        result, offset = [], 0
        for mul, ir in self.blocks:
            result.append((offset, mul, ir))
            offset += mul * ir.dim
        return tuple(result)

    def block_type(self, irrep: Irrep) -> "TensorType":
        """irreps only: the type of the block of ``irrep``: ``sph(lp)[mul]`` (channel named by its size)."""
        mul = dict((ir, m) for m, ir in self.blocks)[irrep]
        if irrep.l == 0:  # 0e / 0o: scalar[mul] / pscalar[mul], no leg of size 1
            return TensorType("cart", 0, "", (irrep.p,), channels=(FixedSize(mul),))
        return TensorType("sph", irrep=irrep, channels=(FixedSize(mul),))

    # -- printing ------------------------------------------------------------------------------
    def base_name(self) -> str:
        """The type without channel axes, in its shortest spelling."""
        if self.family in ("weight", "edges"):
            return self.family
        if self.family == "irreps":
            return f"irreps({'+'.join(f'{mul}x{ir}' for mul, ir in self.blocks)})"
        if self.family == "sph":
            return f"sph({self.irrep})"
        if self.rank == 2:
            name = {v: k for k, v in _SYMMETRY_NAMES.items()}[self.symmetry]
            if all(p == 1 for p in self.parities):
                return name
            if name == "cart2" and all(p == -1 for p in self.parities):
                return "pcart(2)"
            return f"{name}({'+'.join(str(ir) for ir in self.parts)})"
        pseudo = self.parities == (-1,)
        if self.symmetry == "sym_traceless":
            return f"{'psymt' if pseudo else 'symt'}({self.rank})"
        for name, (rank, ps) in _NAMED.items():
            if rank == self.rank and ps == pseudo:
                return name
        return f"{'pcart' if pseudo else 'cart'}({self.rank})"

    def __str__(self) -> str:
        if self.family in ("weight", "edges") or self.channels:
            return f"{self.base_name()}[{','.join(map(str, self.channels))}]"
        return self.base_name()

    def __repr__(self) -> str:
        return f"TensorType('{self}')"


def make_type(name: str, args: list[str] | None, channels: list[str] | None) -> TensorType:
    """Build a type from its name, its parenthesised arguments and its channel names."""
    chans = tuple(FixedSize(int(c)) if c.isdigit() else c for c in channels or ())  # a number: a fixed size
    named = [c for c in chans if isinstance(c, str)]  # weight[8,1,8] repeats a size, never a name
    if len(set(named)) != len(named):
        raise TypeSyntaxError(f"channel axes of '{name}' repeat a name: {', '.join(map(str, chans))}")
    if name == "weight":
        if args is not None:
            raise TypeSyntaxError("'weight' takes no arguments, only channel axes: weight[c,d]")
        if not chans:
            raise TypeSyntaxError("'weight' needs at least one channel axis, e.g. weight[c,d]")
        return TensorType("weight", channels=chans)
    if name == "edges":
        if args is not None or len(chans) != 2:
            raise TypeSyntaxError("'edges' takes two axes, the edge set then the node set: edges[e,n]")
        return TensorType("edges", channels=chans)
    if name in _NAMED:
        if args is not None:
            raise TypeSyntaxError(f"'{name}' takes no arguments")
        rank, pseudo = _NAMED[name]
        return TensorType("cart", rank, "", (-1 if pseudo else 1,), channels=chans)
    if name in ("cart", "pcart"):
        if args is None or len(args) != 1 or not args[0].isdigit():
            raise TypeSyntaxError(f"'{name}' needs a rank, e.g. {name}(3)")
        rank = int(args[0])
        if rank > MAX_RANK:
            raise TypeSyntaxError(f"rank {rank} is above the supported maximum {MAX_RANK}")
        sign = -1 if name == "pcart" else 1
        if rank == 2:
            return TensorType("cart", 2, "", (sign,) * 3, channels=chans)
        return TensorType("cart", rank, "", (sign,), channels=chans)
    if name in ("symt", "psymt", "sym3t"):
        if name == "sym3t":
            if args is not None:
                raise TypeSyntaxError("'sym3t' takes no arguments (it is symt(3); psymt(3) is the pseudotensor)")
            args = ["3"]
        if args is None or len(args) != 1 or not args[0].isdigit():
            raise TypeSyntaxError(f"'{name}' needs a rank, e.g. {name}(3)")
        rank = int(args[0])
        if rank > MAX_RANK:
            raise TypeSyntaxError(f"rank {rank} is above the supported maximum {MAX_RANK}")
        sign = -1 if name == "psymt" else 1
        if rank <= 1:  # symmetric traceless of rank 0 or 1 is every scalar or vector
            return TensorType("cart", rank, "", (sign,), channels=chans)
        if rank == 2:
            return TensorType("cart", 2, "sym_traceless", (sign,), channels=chans)
        return TensorType("cart", rank, "sym_traceless", (sign,), channels=chans)
    if name in _SYMMETRY_NAMES:
        symmetry = _SYMMETRY_NAMES[name]
        expected = RANK2_PARTS[symmetry]
        if args is None:
            return TensorType("cart", 2, symmetry, (1,) * len(expected), channels=chans)
        irreps = [Irrep.parse(a) for a in args]
        if tuple(ir.l for ir in irreps) != expected:
            want = "+".join(f"{l}e" for l in expected)
            raise TypeSyntaxError(
                f"'{name}' has irreducible parts l = {', '.join(map(str, expected))}; "
                f"write their parities in that order, e.g. {name}({want})"
            )
        return TensorType("cart", 2, symmetry, tuple(ir.p for ir in irreps), channels=chans)
    if name == "sph":
        if args is None or len(args) != 1:
            raise TypeSyntaxError("'sph' needs one irrep, e.g. sph(1o)")
        irrep = Irrep.parse(args[0])
        if irrep.l > MAX_L:
            raise TypeSyntaxError(f"l = {irrep.l} is above the supported maximum {MAX_L}")
        return TensorType("sph", irrep=irrep, channels=chans)
    if name == "irreps":
        return _irreps_type(args, chans)
    raise TypeSyntaxError(f"unknown type '{name}' (known: {', '.join(TYPE_NAMES)})")


def _irreps_type(args: list[str] | None, chans: tuple[str, ...]) -> TensorType:
    """``irreps(32x0e+16x1o+8x2e)``: e3nn's Irreps string, each term ``MULxLP`` (``LP`` alone: mul 1)."""
    if args is None or args == [""]:
        raise TypeSyntaxError("'irreps' needs its blocks, e.g. irreps(32x0e+16x1o+8x2e)")
    if chans:
        raise TypeSyntaxError("an irreps type takes no channel axes: each block's multiplicity is its channel "
                              "axis (select a block as h.1o[u,m])")
    blocks, seen = [], set()
    for arg in args:
        m = re.fullmatch(r"(?:([0-9]+)x)?([0-9]+[eo])", arg)
        if not m:
            raise TypeSyntaxError(f"'{arg}' is not an irreps term such as 16x1o")
        mul = int(m.group(1)) if m.group(1) is not None else 1
        irrep = Irrep.parse(m.group(2))
        if not 1 <= mul <= MAX_MUL:
            raise TypeSyntaxError(f"multiplicity {mul} of {irrep} is outside 1..{MAX_MUL}")
        if irrep.l > MAX_L:
            raise TypeSyntaxError(f"l = {irrep.l} is above the supported maximum {MAX_L}")
        if irrep in seen:
            raise TypeSyntaxError(f"{irrep} appears twice; blocks are selected by their irrep, so each may appear "
                                  "once (e3nn: Irreps(...).simplify() merges them)")
        seen.add(irrep)
        blocks.append((mul, irrep))
    return TensorType("irreps", blocks=tuple(blocks))
