"""Exact dimensions of spaces of equivariant polynomial maps, by character theory.

Computes ``dim Hom_G(S^{d_1}V_1 ⊗ ... ⊗ S^{d_n}V_n, W)`` for G = SO(3) or O(3), where ``V_i`` and
``W`` are real orthogonal representations given as direct sums of O(3) irreps ``(l, p)``.

Everything is exact integer arithmetic:

* a class function of O(3) is a pair of Laurent polynomials in ``z = e^{iθ}`` (dict exponent ->
  integer coefficient): its values on the proper elements ``R_θ`` and on the improper ``-R_θ``;
* ``χ_l(R_θ) = Σ_{m=-l..l} z^m`` and the irrep ``(l, p)`` has ``χ(-R_θ) = p·χ_l(R_θ)``;
* Haar integral over SO(3) of a class function f: the constant term of ``f(z)·(1 - (z + 1/z)/2)``,
  i.e. ``(1/π)∫_0^π f(θ)(1 - cos θ) dθ``; over O(3) the mean of the proper and improper integrals;
* symmetric / exterior powers by Newton's identities on the power sums ``p_k(g) = χ_V(g^k)``
  (equivalent to the cycle index of S_d), with ``(±R_θ)^k = (±1)^k R_{kθ}``;
* all representations are real (self-dual), so ``dim Hom(U, W) = ∫ χ_U χ_W``.

>>> hom_dimension([(Rep.parse("1o"), 2)], Rep.cartesian2(""))
2
>>> invariant_dimension([(Rep.cartesian(4), 1)], group="SO3")
3
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from ..ir.types import RANK2_PARTS, Irrep

__all__ = [
    "Irrep",
    "Rep",
    "hom_dimension",
    "invariant_dimension",
    "GROUPS",
    "RANK2_PARTS",
    "MAX_CARTESIAN_RANK",
]

#: the groups understood by :func:`hom_dimension`
GROUPS = ("O3", "SO3")
#: largest rank accepted by :meth:`Rep.cartesian` (rank 14 already has 616,227 irreducible parts)
MAX_CARTESIAN_RANK = 14

_IRREP_RE = re.compile(r"\s*([0-9]+)\s*([eo])\s*")
_TERM_RE = re.compile(r"\s*(?:([0-9]+)\s*x\s*)?([0-9]+)\s*([eo])\s*")


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# ----------------------------------------------------------------------------------------------
# Irreps and representations
# ----------------------------------------------------------------------------------------------


def _sort_key(ir: Irrep) -> tuple[int, int]:
    # by l, then even before odd (e3nn-like reading order)
    return (ir.l, -ir.p)


@dataclass(frozen=True)
class Rep:
    """A direct sum of O(3) irreps; multiplicities are given by repetition.

    ``Rep.parse("2x1o+0e")`` and ``str(rep)`` round-trip (e3nn style; multiplicity 1 prints bare).
    """

    irreps: tuple[Irrep, ...]

    def __post_init__(self) -> None:
        items = self.irreps
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise ValueError(f"Rep expects a sequence of Irrep, got {items!r}")
        items = tuple(items)
        for ir in items:
            if not isinstance(ir, Irrep):
                raise ValueError(f"Rep expects Irrep objects, got {ir!r}")
        object.__setattr__(self, "irreps", items)

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> "Rep":
        """Parse ``'2x1o+0e'`` (terms ``[m x]lp`` joined by ``+``; the empty string is the zero rep)."""
        if not isinstance(text, str):
            raise ValueError(f"a representation is written as a string such as '2x1o+0e', got {text!r}")
        if not text.strip():
            return cls(())
        out: list[Irrep] = []
        for term in text.split("+"):
            m = _TERM_RE.fullmatch(term)
            if not m:
                raise ValueError(f"'{term.strip()}' in '{text}' is not a term such as 2x1o or 0e")
            mult = int(m.group(1)) if m.group(1) is not None else 1
            out.extend([Irrep(int(m.group(2)), 1 if m.group(3) == "e" else -1)] * mult)
        return cls(tuple(out))

    @classmethod
    def from_multiplicities(cls, mults: dict[Irrep, int] | Iterable[tuple[Irrep, int]]) -> "Rep":
        """The rep ``⊕ m·ir``, sorted by l (even before odd)."""
        pairs = mults.items() if isinstance(mults, dict) else mults
        total: Counter = Counter()
        for ir, m in pairs:
            if not isinstance(ir, Irrep):
                raise ValueError(f"expected an Irrep, got {ir!r}")
            if not _is_int(m) or m < 0:
                raise ValueError(f"multiplicity of {ir} must be an integer >= 0, got {m!r}")
            total[ir] += m
        out: list[Irrep] = []
        for ir in sorted(total, key=_sort_key):
            out.extend([ir] * total[ir])
        return cls(tuple(out))

    @classmethod
    def cartesian(cls, rank: int, pseudo: bool = False) -> "Rep":
        """Irreducible decomposition of ``(1o)^{⊗rank}`` (times ``0o`` if ``pseudo``).

        By repeated Clebsch-Gordan ``l ⊗ 1 = |l-1| .. l+1``; every part has parity ``(-1)^rank``
        (``-(-1)^rank`` for a pseudotensor). Rank 0 is ``0e`` (``0o`` if pseudo).
        """
        if not _is_int(rank) or rank < 0:
            raise ValueError(f"Cartesian rank must be an integer >= 0, got {rank!r}")
        if rank > MAX_CARTESIAN_RANK:
            raise ValueError(f"Cartesian rank {rank} is too large (at most {MAX_CARTESIAN_RANK})")
        if not isinstance(pseudo, bool):
            raise ValueError(f"pseudo must be True or False, got {pseudo!r}")
        mult = {0: 1}
        for _ in range(rank):
            nxt: dict[int, int] = {}
            for l, m in mult.items():
                for L in range(abs(l - 1), l + 2):  # 0 ⊗ 1 = 1
                    nxt[L] = nxt.get(L, 0) + m
            mult = nxt
        p = (-1) ** rank * (-1 if pseudo else 1)
        return cls.from_multiplicities({Irrep(l, p): m for l, m in mult.items()})

    @classmethod
    def cartesian2(cls, symmetry: str = "", parities: tuple[int, ...] | None = None) -> "Rep":
        """Rank-2 Cartesian tensor with a symmetry: ``''`` -> l = 0,1,2; ``'sym'`` -> 0,2;
        ``'skew'`` -> 1; ``'sym_traceless'`` -> 2. ``parities``: one ±1 per part in that order
        (default all +1: a proper tensor, ``0e+1e+2e``; TensorNet's feature is ``(1, -1, 1)``)."""
        if not isinstance(symmetry, str) or symmetry not in RANK2_PARTS:
            raise ValueError(
                f"unknown rank-2 symmetry {symmetry!r}; expected one of "
                + ", ".join(repr(s) for s in RANK2_PARTS)
            )
        ls = RANK2_PARTS[symmetry]
        if parities is None:
            parities = (1,) * len(ls)
        if isinstance(parities, (str, bytes)) or not isinstance(parities, Iterable):
            raise ValueError(f"parities must be a tuple of ±1, got {parities!r}")
        parities = tuple(parities)
        if len(parities) != len(ls):
            raise ValueError(
                f"symmetry {symmetry!r} has {len(ls)} part(s) (l = {', '.join(map(str, ls))}), "
                f"got {len(parities)} parities"
            )
        for p in parities:
            if not _is_int(p) or p not in (1, -1):
                raise ValueError(f"each parity must be +1 or -1, got {p!r}")
        return cls(tuple(Irrep(l, p) for l, p in zip(ls, parities)))

    # -- properties -------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Total dimension ``Σ (2l+1)``."""
        return sum(ir.dim * m for ir, m in self._counts().items())

    def multiplicities(self) -> dict[Irrep, int]:
        """``{irrep: multiplicity}``, sorted by l (even before odd)."""
        c = self._counts()
        return {ir: c[ir] for ir in sorted(c, key=_sort_key)}

    def simplify(self) -> "Rep":
        """Same representation with equal irreps grouped and sorted by l."""
        return Rep.from_multiplicities(self._counts())

    def __add__(self, other: "Rep") -> "Rep":
        if not isinstance(other, Rep):
            return NotImplemented
        return Rep(self.irreps + other.irreps)

    def __len__(self) -> int:
        return len(self.irreps)

    def __iter__(self):
        return iter(self.irreps)

    def __str__(self) -> str:
        parts: list[str] = []
        i, n = 0, len(self.irreps)
        while i < n:
            j = i
            while j < n and self.irreps[j] == self.irreps[i]:
                j += 1
            m = j - i
            parts.append(str(self.irreps[i]) if m == 1 else f"{m}x{self.irreps[i]}")
            i = j
        return "+".join(parts)

    def __repr__(self) -> str:
        return f"Rep('{self}')"

    # -- derived representations (decomposed exactly from characters) -----------------------

    def tensor(self, other: "Rep") -> "Rep":
        """Irreducible decomposition of ``self ⊗ other``."""
        if not isinstance(other, Rep):
            raise ValueError(f"expected a Rep, got {other!r}")
        return _decompose(_char_mul(_character(self), _character(other)))

    def symmetric_power(self, d: int) -> "Rep":
        """Irreducible decomposition of ``S^d(self)``."""
        return _decompose(_power_character(self, _check_degree(d), exterior=False))

    def exterior_power(self, d: int) -> "Rep":
        """Irreducible decomposition of ``Λ^d(self)``."""
        return _decompose(_power_character(self, _check_degree(d), exterior=True))

    # -- private -----------------------------------------------------------------------------

    def _counts(self) -> Counter:
        c = self.__dict__.get("_counts_cache")
        if c is None:
            c = Counter(self.irreps)
            object.__setattr__(self, "_counts_cache", c)
        return c


# ----------------------------------------------------------------------------------------------
# Characters: (proper, improper) pairs of Laurent polynomials {exponent: int}
# ----------------------------------------------------------------------------------------------

_Poly = dict  # exponent -> int coefficient
_Char = tuple  # (proper: _Poly, improper: _Poly)


def _poly_mul(a: _Poly, b: _Poly) -> _Poly:
    out: dict[int, int] = {}
    for ea, ca in a.items():
        for eb, cb in b.items():
            e = ea + eb
            out[e] = out.get(e, 0) + ca * cb
    return {e: c for e, c in out.items() if c}


def _poly_add_into(acc: _Poly, a: _Poly, scale: int = 1) -> None:
    for e, c in a.items():
        acc[e] = acc.get(e, 0) + scale * c


def _poly_dilate(a: _Poly, k: int) -> _Poly:
    """``f(z) -> f(z^k)``."""
    return {e * k: c for e, c in a.items()}


def _char_mul(a: _Char, b: _Char) -> _Char:
    return (_poly_mul(a[0], b[0]), _poly_mul(a[1], b[1]))


def _character(rep: Rep) -> _Char:
    """``(χ(R_θ), χ(-R_θ))`` with ``χ_{(l,p)}(R_θ) = Σ_{|m|≤l} z^m`` and ``χ(-R_θ) = p·χ(R_θ)``."""
    cached = rep.__dict__.get("_char_cache")
    if cached is not None:
        return cached
    proper: dict[int, int] = {}
    improper: dict[int, int] = {}
    for ir, m in rep._counts().items():
        for e in range(-ir.l, ir.l + 1):
            proper[e] = proper.get(e, 0) + m
            improper[e] = improper.get(e, 0) + ir.p * m
    ch = ({e: c for e, c in proper.items() if c}, {e: c for e, c in improper.items() if c})
    object.__setattr__(rep, "_char_cache", ch)
    return ch


def _power_sum(ch: _Char, k: int) -> _Char:
    """Class function ``g -> χ(g^k)``: ``(R_θ)^k = R_{kθ}``, ``(-R_θ)^k = (-1)^k R_{kθ}``."""
    proper = _poly_dilate(ch[0], k)
    improper = _poly_dilate(ch[1] if k % 2 else ch[0], k)
    return (proper, improper)


def _power_character(rep: Rep, d: int, exterior: bool) -> _Char:
    """Character of ``S^d V`` (or ``Λ^d V``) by Newton's identities
    ``d·h_d = Σ_{k=1..d} p_k h_{d-k}`` (``d·e_d = Σ (-1)^{k-1} p_k e_{d-k}``),
    equivalent to ``Σ_{λ⊢d} z_λ^{-1} Π_k χ_V(g^{λ_k})``."""
    ch = _character(rep)
    seq: list[_Char] = [({0: 1}, {0: 1})]
    sums = [None] + [_power_sum(ch, k) for k in range(1, d + 1)]
    for n in range(1, d + 1):
        acc0: dict[int, int] = {}
        acc1: dict[int, int] = {}
        for k in range(1, n + 1):
            sign = -1 if exterior and k % 2 == 0 else 1
            term = _char_mul(sums[k], seq[n - k])
            _poly_add_into(acc0, term[0], sign)
            _poly_add_into(acc1, term[1], sign)
        part = []
        for acc in (acc0, acc1):
            poly = {}
            for e, c in acc.items():
                q, r = divmod(c, n)
                if r:
                    raise ArithmeticError("internal error: non-integral power character")
                if q:
                    poly[e] = q
            part.append(poly)
        seq.append((part[0], part[1]))
    return seq[d]


def _so3_integral(f: _Poly) -> int:
    """``∫_{SO(3)} f = [z^0] f(z)(1 - (z + 1/z)/2) = c_0 - (c_1 + c_{-1})/2``."""
    twice = 2 * f.get(0, 0) - f.get(1, 0) - f.get(-1, 0)
    q, r = divmod(twice, 2)
    if r:
        raise ArithmeticError("internal error: non-integral SO(3) integral")
    return q


def _decompose(ch: _Char) -> Rep:
    """Irreps of a genuine character: ``n_l = c_l - c_{l+1}`` on each of ``(χ ± χ(-·))/2``."""
    proper, improper = ch
    top = max((abs(e) for e in proper), default=-1)
    mults: dict[Irrep, int] = {}
    for l in range(top + 1):
        tot = proper.get(l, 0) - proper.get(l + 1, 0)
        diff = improper.get(l, 0) - improper.get(l + 1, 0)
        even, r = divmod(tot + diff, 2)
        odd = tot - even
        if r or even < 0 or odd < 0:
            raise ArithmeticError("internal error: not a character of O(3)")
        if even:
            mults[Irrep(l, 1)] = even
        if odd:
            mults[Irrep(l, -1)] = odd
    return Rep.from_multiplicities(mults)


# ----------------------------------------------------------------------------------------------
# Public counting functions
# ----------------------------------------------------------------------------------------------


def _check_degree(d: object) -> int:
    if not _is_int(d) or d < 0:
        raise ValueError(f"polynomial degree must be an integer >= 0, got {d!r}")
    return d


def _as_rep(x: object, what: str) -> Rep:
    if isinstance(x, Rep):
        return x
    if isinstance(x, Irrep):
        return Rep((x,))
    raise ValueError(f"{what} must be a Rep (or an Irrep), got {x!r}")


def _check_group(group: object) -> str:
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; expected 'O3' or 'SO3'")
    return group  # type: ignore[return-value]


def _input_character(inputs: Sequence[tuple[Rep, int]]) -> _Char:
    if isinstance(inputs, (str, bytes, Rep)) or not isinstance(inputs, Iterable):
        raise ValueError(f"inputs must be a sequence of (Rep, degree) pairs, got {inputs!r}")
    total: _Char = ({0: 1}, {0: 1})
    for i, pair in enumerate(inputs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"input {i} must be a (Rep, degree) pair, got {pair!r}")
        rep = _as_rep(pair[0], f"input {i}")
        d = _check_degree(pair[1])
        if d == 0:
            continue
        ch = _character(rep) if d == 1 else _power_character(rep, d, exterior=False)
        total = _char_mul(total, ch)
    return total


def hom_dimension(inputs: Sequence[tuple[Rep, int]], output: Rep, group: str = "O3") -> int:
    """``dim Hom_G(S^{d_1}V_1 ⊗ ... ⊗ S^{d_n}V_n, W) = ∫_G Π_i χ_{S^{d_i}V_i}(g) χ_W(g) dg``.

    ``inputs``: ``(V_i, d_i)`` pairs (polynomial degree ``d_i >= 0``); ``output``: W;
    ``group``: ``'O3'`` (mean of the proper and improper integrals) or ``'SO3'``.
    """
    group = _check_group(group)
    out = _as_rep(output, "output")
    fin = _input_character(inputs)
    wch = _character(out)

    def integral(f: _Poly, w: _Poly) -> int:
        # only c_0, c_{±1} of f·w are needed
        coeff = {j: sum(c * w.get(j - e, 0) for e, c in f.items()) for j in (-1, 0, 1)}
        return _so3_integral(coeff)

    proper = integral(fin[0], wch[0])
    if group == "SO3":
        return proper
    improper = integral(fin[1], wch[1])
    q, r = divmod(proper + improper, 2)
    if r:
        raise ArithmeticError("internal error: non-integral O(3) integral")
    return q


def invariant_dimension(inputs: Sequence[tuple[Rep, int]], group: str = "O3") -> int:
    """``dim Hom_G(S^{d_1}V_1 ⊗ ... ⊗ S^{d_n}V_n, 0e)``: the number of independent invariants."""
    return hom_dimension(inputs, Rep((Irrep(0, 1),)), group)
