"""Candidates: every contraction of the legs of the input copies and the output.

The legs are joined pairwise by deltas (a perfect matching), with one eps on three legs when the
number of legs is odd (never two: eps eps is a determinant of deltas). Contractions that vanish by a
declared symmetry are skipped (the trace of a skew or traceless tensor, eps on two legs of a
symmetric one, ...). A :class:`Setup` (the request's occurrences and legs) is the data every later
step reads; a :class:`Candidate` is one matching.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ...ir.types import TensorType
from .request import Request


@dataclass(frozen=True)
class Occ:
    name: str
    type: TensorType
    copy: int


@dataclass(frozen=True)
class Candidate:
    pairs: tuple[tuple[tuple[int, int], tuple[int, int]], ...]  # ((occ, axis), (occ, axis)); occ -1 = output
    eps: tuple[tuple[int, int], ...] | None


@dataclass(frozen=True)
class Setup:
    """A request's tensor copies (``occs``: input k used d_k times gives d_k copies) and their legs
    (``legs``: (occurrence, axis), occurrence -1 the output, output legs first); ``chains_only`` when
    every input has rank <= 2 (networks of paths and cycles)."""

    request: Request
    occs: tuple[Occ, ...]
    legs: tuple[tuple[int, int], ...]
    chains_only: bool

    @classmethod
    def of(cls, request: Request) -> "Setup":
        occs = tuple(Occ(i.name, i.type, c) for i in request.inputs for c in range(i.degree))
        legs = tuple((-1, a) for a in range(request.output.rank))
        legs += tuple((o, a) for o, occ in enumerate(occs) for a in range(occ.type.rank))
        return cls(request, occs, legs, all(i.type.rank <= 2 for i in request.inputs))

    def type_of(self, occ: int) -> TensorType:
        return self.request.output if occ == -1 else self.occs[occ].type

    def vanishes_pair(self, a, b) -> bool:
        """A delta between two legs of one symmetric-kind tensor that makes the term zero."""
        if a[0] != b[0]:
            return False
        sym = self.type_of(a[0]).symmetry
        return sym in ("skew", "sym_traceless")

    def vanishes_eps(self, legs) -> bool:
        for a, b in itertools.combinations(legs, 2):
            if a[0] == b[0] and self.type_of(a[0]).symmetry in ("sym", "sym_traceless"):
                return True
        return False

    def candidates(self):
        legs = self.legs
        if len(legs) % 2 == 0:
            for m in _matchings(legs, self.vanishes_pair):
                yield Candidate(m, None)
        else:
            for triple in itertools.combinations(legs, 3):
                if self.vanishes_eps(triple):
                    continue
                rest = [leg for leg in legs if leg not in triple]
                for m in _matchings(rest, self.vanishes_pair):
                    yield Candidate(m, triple)


def _matchings(legs, vanishes):
    if not legs:
        yield ()
        return
    first, rest = legs[0], legs[1:]
    for k, other in enumerate(rest):
        if vanishes(first, other):
            continue
        for m in _matchings(rest[:k] + rest[k + 1:], vanishes):
            yield ((first, other),) + m
