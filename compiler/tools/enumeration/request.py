"""The request, its limits and its checks, and the result types of an enumeration.

A :class:`Request` (inputs with degrees, an output type, a group) is validated and sized by character
theory (:func:`expected_dimension`, :func:`refuse_large`) before any candidate is built; the search
(:mod:`.search`) answers with a :class:`Basis` (one multidegree) or a :class:`BasisSet` (several).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ...errors import DiagError
from ...ir.program import TensorNetwork
from ...ir.types import TensorType
from ...math.characters import Rep, hom_dimension
from ...math.stf import is_stf

PRIME = 2097143  # the largest prime below 2**21: 4096 products of balanced residues sum below 2**53 (float64)
MAX_LEGS = 16  # requests with more legs in total are refused (15!! = 2 027 025 matchings)
MAX_LEGS_GENERAL = 12  # the same with an input of rank > 2 (slower canonical form by search)
MAX_DIMENSION = 5000  # larger spaces are refused, before any work: the exact rank step grows like
# candidates × dimension², and a spherical basis has one coupling path (and one compiled output) per dimension
LABELS = "ijklmnpqrstuvwxyzabcdefgh"


class EnumerationError(DiagError):
    """A request that cannot be enumerated (unsupported type, too large, ...)."""


@dataclass(frozen=True)
class InputSpec:
    """An input tensor, used ``degree`` times (a homogeneous polynomial of that degree in it)."""

    name: str
    type: TensorType
    degree: int = 1


@dataclass(frozen=True)
class Request:
    inputs: tuple[InputSpec, ...]
    output: TensorType
    group: str = "O3"
    output_name: str = "Y"

    def __str__(self) -> str:
        ins = ", ".join(f"{i.name}: {i.type}" + (f"^{i.degree}" if i.degree != 1 else "") for i in self.inputs)
        return f"({ins}) -> {self.output_name}: {self.output} under {self.group}"


@dataclass(frozen=True)
class Element:
    """One basis element: the output as a sum of networks, with readable forms."""

    terms: tuple[TensorNetwork, ...]
    formula: str  # index notation of the generating contraction
    words: str  # e.g. "tr(X) X", "(v·v) delta"
    degrees: tuple[int, ...]


@dataclass(frozen=True)
class Basis:
    request: Request
    elements: tuple[Element, ...]
    expected: int  # dimension from character theory
    candidates: int  # contractions generated (after symmetry pruning)
    unique: int  # after canonical dedupe
    prime: int = PRIME
    timings: dict = field(default_factory=dict, compare=False)

    @property
    def dimension(self) -> int:
        return len(self.elements)


def rep_of(t: TensorType) -> Rep:
    """The O(3) representation carried by a type's geometric axes."""
    if t.family == "sph":
        return Rep((t.irrep,))
    if t.family != "cart":
        raise EnumerationError(f"type {t} carries no rotation")
    if t.rank == 2:
        return Rep.cartesian2(t.symmetry, t.parities)
    if t.symmetry == "sym_traceless":  # symt(l)
        return Rep(t.parts)
    return Rep.cartesian(t.rank, pseudo=t.parities == (-1,))


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------

def validate(request: Request) -> None:
    if request.group not in ("O3", "SO3"):
        raise EnumerationError(f"unknown group '{request.group}' (known: O3, SO3)")
    for t, what in [(i.type, f"input '{i.name}'") for i in request.inputs] + [(request.output, "the output")]:
        if t.family not in ("cart", "sph"):
            raise EnumerationError(f"{what} has type {t}: enumeration covers Cartesian and spherical types")
        if t.graded:
            raise EnumerationError(f"{what} has the graded type {t}; enumerate its parts separately")
    names = [i.name for i in request.inputs]
    if len(set(names)) != len(names):
        raise EnumerationError("an input name is given twice")
    for i in request.inputs:  # channel axes: the basis acts channel by channel (see _with_channels)
        missing = [str(c) for c in i.type.channels if c not in request.output.channels]
        if missing:
            raise EnumerationError(
                f"input '{i.name}' has the channel ax{'is' if len(missing) == 1 else 'es'} {', '.join(missing)} that "
                f"the output ({request.output}) lacks; a basis acts channel by channel: give the output every "
                "input's channel axes")
    for i in request.inputs:
        if i.degree < 0:
            raise EnumerationError(f"degree of '{i.name}' must be >= 0")
    if is_coupled(request):
        return  # sized by character theory and by its number of coupling paths
    legs = sum(i.type.rank * i.degree for i in request.inputs) + request.output.rank
    limit = MAX_LEGS if all(i.type.rank <= 2 for i in request.inputs) else MAX_LEGS_GENERAL
    if legs > limit:
        raise EnumerationError(f"the request has {legs} legs in total; the limit is {limit} "
                               f"({_double_factorial(limit - 1):,} matchings)"
                               + ("" if limit == MAX_LEGS else " when an input has rank above 2"))


def is_coupled(request: Request) -> bool:
    """True for a request with a spherical type or a symt(l): enumerated by coupling paths."""
    return any(t.family == "sph" or is_stf(t) for t in [i.type for i in request.inputs] + [request.output])


def _double_factorial(n: int) -> int:
    return math.prod(range(n, 0, -2)) if n > 0 else 1


def expected_dimension(request: Request) -> int:
    """dim Hom_G(⊗ S^{d_i} V_i, W) by character theory."""
    return hom_dimension([(rep_of(i.type), i.degree) for i in request.inputs], rep_of(request.output),
                         request.group)


def refuse_large(dimension: int, spherical: bool, parts: int = 1, allow_large: bool = False) -> None:
    """EnumerationError if a space (or the direct sum of ``parts`` spaces) has more than MAX_DIMENSION
    dimensions; called with the character-theory count, before any candidate is generated.
    ``allow_large`` (``diagc enumerate --allow-large``) lifts this limit; the leg limits stay."""
    if dimension <= MAX_DIMENSION or allow_large:
        return
    what = "the space has" if parts == 1 else f"the {parts} spaces (one per degree) have"
    hint = ("use fewer inputs or lower l" if spherical
            else "use symmetric inputs or polynomial degrees to shrink it")
    raise EnumerationError(f"{what} dimension {dimension:,} (character theory); listing more than "
                           f"{MAX_DIMENSION:,} elements is refused (the enumeration would take hours and "
                           f"gigabytes); {hint}, or pass --allow-large to go on anyway")


def is_large(dimension: int) -> bool:
    """True for a space of more than MAX_DIMENSION dimensions (refused unless ``allow_large``)."""
    return dimension > MAX_DIMENSION


@dataclass(frozen=True)
class BasisSet:
    """The union over several multidegrees (``X<=3``): a direct sum, one :class:`Basis` per degree."""

    parts: tuple[Basis, ...]

    @property
    def elements(self) -> tuple[Element, ...]:
        return tuple(e for b in self.parts for e in b.elements)

    @property
    def dimension(self) -> int:
        return sum(b.dimension for b in self.parts)

    @property
    def expected(self) -> int:
        return sum(b.expected for b in self.parts)

    @property
    def candidates(self) -> int:
        return sum(b.candidates for b in self.parts)

    @property
    def unique(self) -> int:
        return sum(b.unique for b in self.parts)
