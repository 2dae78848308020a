"""Einsum index letters, and the one reference evaluator of a network term.

:func:`symbol` / :func:`letters` give the einsum letter of the k-th distinct index (``a-z``, ``A-Z``,
then further characters, as opt_einsum's ``get_symbol``; ``numpy.einsum`` itself accepts only the
first 52).

:func:`evaluate_term` is the dense, unplanned meaning of a term: coefficient × one einsum of all its
nodes, every constant (delta, eps, cg, P) a dense table. The number domain is a parameter:

* :class:`Floats` -- floating point (``numpy.einsum``, optionally ``optimize=True``);
* :class:`Exact` -- exact numbers in object arrays (Fractions, sympy surds, or the elements of a
  polynomial ring, with the constants lifted into it);
* :class:`ModP` -- integers modulo a prime, contracted pair by pair and reduced after every pair so
  that int64 never overflows.

Certificates (the source evaluated exactly), the checker's exact algebra, the enumeration's
evaluation modulo p, the planner's tests and the benchmark's naive contenders all call it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Iterable

import numpy as np

from .constants import constant_array

_BASE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def symbol(k: int) -> str:
    """The einsum letter of index number ``k``: a-z, A-Z, then unicode characters (no surrogates)."""
    if k < 52:
        return _BASE[k]
    code = k + 140  # past the ASCII letters and Latin-1's controls
    return chr(code if code < 0xD800 else code + 0x800)  # skipping the surrogates


def letters(labels: Iterable[str]) -> dict[str, str]:
    """One letter per distinct label, in order of first appearance."""
    return {label: symbol(k) for k, label in enumerate(dict.fromkeys(labels))}


@dataclass(frozen=True)
class TermEinsum:
    """A term as one einsum: ``spec`` over ``nodes`` (in order), times ``coefficient``."""

    spec: str
    nodes: tuple
    coefficient: Fraction


def term_einsum(term, batched: Callable[[str], bool] | None = None, output=None) -> TermEinsum:
    """The einsum of a term. An input node whose name ``batched`` accepts (every input when None)
    gets leading batch axes ``...``; the output has them when an operand has. ``output`` orders the
    output's labels (default ``term.output``)."""
    lab = letters(term.indices())
    specs, any_batch = [], False
    for node in term.nodes:
        s = "".join(lab[i] for i in node.indices)
        if node.kind == "input" and (batched is None or batched(node.name)):
            s, any_batch = "..." + s, True
        specs.append(s)
    out = ("..." if any_batch else "") + "".join(lab[i] for i in (term.output if output is None else output))
    return TermEinsum(",".join(specs) + "->" + out, tuple(term.nodes), term.coefficient)


def evaluate_term(term, arrays: dict, domain) -> np.ndarray:
    """coefficient × the contraction of the term's nodes, in ``domain``; ``arrays`` maps input names
    to arrays. ``term`` is a TensorNetwork or a prepared :class:`TermEinsum`."""
    e = term if isinstance(term, TermEinsum) else term_einsum(term)
    operands = [arrays[n.name] if n.kind == "input" else domain.constant(n) for n in e.nodes]
    value = domain.contract(e.spec, operands) if operands else domain.one()
    return domain.scale(value, e.coefficient)


def evaluate_sum(terms, arrays: dict, domain):
    """The sum of several terms (None for no terms)."""
    total = None
    for term in terms:
        v = evaluate_term(term, arrays, domain)
        total = v if total is None else domain.add(total, v)
    return total


# ------------------------------------------------------------------------------------------------
# number domains


@dataclass
class Floats:
    """Floating point: constants rounded once to ``dtype`` (cached), ``numpy.einsum(optimize=...)``."""

    dtype: Any = np.float64
    optimize: bool = False
    _tables: dict = field(default_factory=dict, repr=False)

    def constant(self, node) -> np.ndarray:
        key = (node.kind, node.constant)
        if key not in self._tables:
            self._tables[key] = np.asarray(constant_array(node), dtype=np.float64).astype(self.dtype)
        return self._tables[key]

    def contract(self, spec: str, operands) -> np.ndarray:
        return np.einsum(spec, *operands, optimize=self.optimize)

    def one(self):
        return np.ones((), self.dtype)

    def scale(self, value, c: Fraction):
        return value if c == 1 else float(c) * value

    def add(self, a, b):
        return a + b


@dataclass(frozen=True)
class Exact:
    """Exact numbers in object arrays: a coefficient becomes ``coefficient(Fraction)``; constant entries
    are lifted by ``element`` when given (a polynomial ring's constructor), else kept as exact ints /
    sympy surds."""

    coefficient: Callable[[Fraction], Any] = Fraction
    element: Callable[[Any], Any] | None = None

    def constant(self, node) -> np.ndarray:
        a = constant_array(node)
        return a if self.element is None else np.vectorize(self.element, otypes=[object])(a)

    def contract(self, spec: str, operands) -> np.ndarray:
        # a 0-d input (a channel-less scalar) may arrive as a bare number or polynomial
        # pair by pair (greedy order): one einsum over every label at once would loop over the
        # product of all index ranges (hopeless for a term with a few cg / P factors)
        ops = [np.asarray(o, dtype=object) for o in operands]
        if len(ops) <= 2:
            return np.einsum(spec, *ops)
        return pairwise(spec, ops, lambda v: np.asarray(v, dtype=object))

    def one(self):
        return np.array(self.coefficient(Fraction(1)), dtype=object)

    def scale(self, value, c: Fraction):
        return np.asarray(value * self.coefficient(c), dtype=object)

    def add(self, a, b):
        return a + b


@dataclass(frozen=True)
class ModP:
    """Integers modulo the prime ``p`` (int64; products of two residues must fit: p < 2**26 or so).
    Traces are taken first, then operands are contracted pairwise (pairs that share labels first),
    reducing mod p after every step; a step summing over more than ``max_legs`` legs at once raises
    ``error``."""

    p: int
    max_legs: int = 6
    error: type = ValueError
    #: give cg and P their images under sqrt(q) -> a root of q mod p (p from
    #: :func:`compiler.math.spherical.surd_prime`); without it they have no value modulo p
    surds: bool = False

    def constant(self, node) -> np.ndarray:
        if node.kind in ("cg", "P") and self.surds:
            from .spherical import constant_mod_p

            try:
                return constant_mod_p(node.kind, node.constant.params, self.p)
            except ValueError as err:
                raise self.error(f"'{node.name}' has no value modulo {self.p}: {err}") from None
        if node.kind not in ("delta", "eps"):
            raise self.error(f"'{node.name}' has no value modulo p")
        return constant_array(node).astype(np.int64) % self.p

    def one(self):
        return np.ones((), np.int64)

    def scale(self, value, c: Fraction):
        return value * ((c.numerator % self.p) * pow(c.denominator, -1, self.p) % self.p) % self.p

    def add(self, a, b):
        return (a + b) % self.p

    def contract(self, spec: str, operands) -> np.ndarray:
        """The einsum ``spec`` mod p; operands may carry leading batch axes beyond their letters."""
        p = self.p

        def reduce(value):
            return value % p

        return pairwise(spec, operands, reduce, self.max_legs, self.error)


def pairwise(spec: str, operands, reduce, max_legs: int | None = None, error: type = ValueError) -> np.ndarray:
    """The einsum ``spec`` contracted pair by pair (pairs that share labels first, traces first),
    ``reduce`` applied after every step (mod p; or wrapping a bare object back into a 0-d array);
    operands may carry leading batch axes beyond their letters. A step summing over more than
    ``max_legs`` legs at once raises ``error``."""
    lhs, out = spec.split("->")
    ops = []
    for arr, sub in zip(operands, lhs.split(",")):
        labels = list(sub.replace("...", ""))
        if len(set(labels)) < len(labels):  # a repeated label inside one operand: the trace first
            uniq = list(dict.fromkeys(labels))
            batch = "..." if arr.ndim > len(labels) else ""
            keep = [l for l in uniq if labels.count(l) == 1]
            lab = letters(uniq)
            arr = reduce(np.einsum(batch + "".join(lab[l] for l in labels) + "->" + batch + "".join(lab[l] for l in keep),
                                   arr))
            labels = keep
        ops.append((arr, labels))
    while len(ops) > 1:
        best = None
        for x, y in itertools.combinations(range(len(ops)), 2):
            lx, ly = ops[x][1], ops[y][1]
            score = (0 if set(lx) & set(ly) else 1, len(set(lx) ^ set(ly)))
            if best is None or score < best[0]:
                best = (score, x, y)
        _, x, y = best
        (ax, lx), (ay, ly) = ops[x], ops[y]
        batch_x, batch_y = ax.ndim > len(lx), ay.ndim > len(ly)
        others = [l for k, (_, ls) in enumerate(ops) if k not in (x, y) for l in ls] + list(out.replace("...", ""))
        keep = [l for l in dict.fromkeys(lx + ly) if l in others]  # any other label is summed here
        if max_legs is not None and len(set(lx) & set(ly) - set(keep)) > max_legs:
            raise error(f"a contraction over more than {max_legs} legs at once is not supported")
        lab = letters(lx + ly)  # lettered per pair: any number of labels in the whole term
        so = ("..." if (batch_x or batch_y) else "") + "".join(lab[l] for l in keep)
        sx = ("..." if batch_x else "") + "".join(lab[l] for l in lx)
        sy = ("..." if batch_y else "") + "".join(lab[l] for l in ly)
        value = reduce(np.einsum(f"{sx},{sy}->{so}", ax, ay))
        ops = [o for k, o in enumerate(ops) if k not in (x, y)] + [(value, keep)]
    value, labels = ops[0]
    batch = value.ndim - len(labels)
    want = list(out.replace("...", ""))
    if any(l not in want for l in labels):  # a label of one operand that no output keeps: summed
        lab = letters(labels)
        b = "..." if batch else ""
        value = reduce(np.einsum(b + "".join(lab[l] for l in labels) + "->" + b + "".join(lab[l] for l in labels if l in want),
                                 value))
        labels = [l for l in labels if l in want]
    return np.moveaxis(value, [batch + labels.index(l) for l in want], [batch + k for k in range(len(want))])
