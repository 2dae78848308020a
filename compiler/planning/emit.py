"""The emit program: a function plan lowered to typed statements over typed expressions.

Every decision about how a planned function is written out is taken here, on data: which step is
computed straight into its output (``seeds``), which output reuses an earlier one (``reuses``),
which products with deltas several terms share (``shared_eyes``), which products of an unrolled
contraction several components share, where a coefficient is applied (Horner order, a scale folded
into the small factor of a broadcast, a delta term added to a diagonal). A printer only prints:
one ``_print_<Node>`` per expression and statement kind (``targets/python/printer.py``).

To add a statement kind: a frozen dataclass below (its fields typed, no text), the lowering that
produces it, and a ``_print_<Kind>`` in each printer that meets it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Union

from .plan import (Combination, Contraction, Dot, FlatMatmul, FunctionPlan, Layout, Matmul, OutputPlan, Product,
                   Scaled, Unrolled, broadcast_indexes)


# ---- expressions ---------------------------------------------------------------------------------

class Slot:
    """One axis of an :class:`Index` (after the leading ``...``): ``Slot.ALL`` (the whole axis),
    ``Slot.NEW`` (a new axis of size 1), or an ``int`` (one component)."""

    ALL = "all"
    NEW = "new"


@dataclass(frozen=True)
class Ref:
    """A local name: an input, a step, an output, a shared product."""

    name: str


@dataclass(frozen=True)
class Table:
    """A constant table (delta, eps, a folded constant), bound once per call."""

    name: str


@dataclass(frozen=True)
class Int:
    value: int


@dataclass(frozen=True)
class Real:
    """A plain number written as Python writes it (a float or int coefficient of a product)."""

    value: Union[int, float]


@dataclass(frozen=True)
class Rational:
    """numerator / denominator, exact on object arrays, in the dtype of the inputs otherwise."""

    numerator: int
    denominator: int
    like: str = "_like"


@dataclass(frozen=True)
class Str:
    value: str


@dataclass(frozen=True)
class Shape:
    """An output's shape: the inputs' broadcast batch shape, then ``extra``, channel and geometric
    sizes."""

    trailing: tuple  # (input, its number of trailing axes)
    extra: tuple[int, ...]
    channels: tuple  # plan.AxisSize per channel axis
    geometric: tuple[int, ...]


@dataclass(frozen=True)
class Index:
    base: "Expr"
    slots: tuple  # Slot.ALL / Slot.NEW / int per axis after '...'


@dataclass(frozen=True)
class Mul:
    factors: tuple  # of Expr, multiplied left to right


@dataclass(frozen=True)
class SignedSum:
    terms: tuple  # of (sign: +1/-1, Expr)


@dataclass(frozen=True)
class Paren:
    value: "Expr"


@dataclass(frozen=True)
class MatMul:
    left: "Expr"
    right: "Expr"


@dataclass(frozen=True)
class Tuple:
    items: tuple


@dataclass(frozen=True)
class Call:
    """A runtime method: ``_b.<method>(args)``."""

    method: str
    args: tuple


@dataclass(frozen=True)
class Einsum:
    spec: str
    operands: tuple
    blas: bool = False


@dataclass(frozen=True)
class Item:
    """``base[k]``: one array of a tuple of arrays."""

    base: "Expr"
    k: int


@dataclass(frozen=True)
class Literal:
    """Plain data (an int or a tuple of ints) written as Python writes it."""

    value: object


@dataclass(frozen=True)
class Invoke:
    """A function of the module (a stage, a runtime helper): ``function(args, name=value, ...)``."""

    function: str
    args: tuple
    keywords: tuple = ()  # of (name, Expr)


Expr = Union[Ref, Table, Int, Real, Rational, Str, Shape, Index, Mul, SignedSum, Paren, MatMul, Tuple, Call,
             Einsum, Item, Literal, Invoke]


# ---- statements ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Assign:
    """target = value (target a name, or a view of one)."""

    target: Expr
    value: Expr


@dataclass(frozen=True)
class AddInPlace:
    """target += value (sign +1) or target -= value (sign -1)."""

    target: str
    sign: int
    value: Expr


@dataclass(frozen=True)
class ScaleInPlace:
    target: str
    factor: Expr


@dataclass(frozen=True)
class AddDiagonal:
    """target += factor × value ⊗ delta, on the diagonal of the last two axes only."""

    target: str
    value: Expr
    factor: Expr


@dataclass(frozen=True)
class CopyInto:
    """value written into the existing array (or view) ``target``."""

    target: Expr
    value: Expr


@dataclass(frozen=True)
class BinaryInto:
    """target = left <op> right, written into the existing array ``target`` (op: add, subtract,
    multiply)."""

    op: str
    left: Expr
    right: Expr
    target: Expr


@dataclass(frozen=True)
class NegateInto:
    value: Expr
    target: Expr


@dataclass(frozen=True)
class MatmulInto:
    left: Expr
    right: Expr
    target: str


@dataclass(frozen=True)
class FlatMatmulInto:
    """A channel mixing as one batched matrix product; into ``target`` when given."""

    weight: Expr
    x: Expr
    n: int
    target: str


@dataclass(frozen=True)
class EinsumInto:
    target: str
    spec: str
    operands: tuple
    blas: bool


@dataclass(frozen=True)
class Evaluate:
    """value computed for its effect only (an argument check that raises)."""

    value: Expr


@dataclass(frozen=True)
class Return:
    value: Expr


Stmt = Union[Assign, AddInPlace, ScaleInPlace, AddDiagonal, CopyInto, BinaryInto, NegateInto, MatmulInto,
             FlatMatmulInto, EinsumInto, Evaluate, Return]


# ---- the decisions, recorded ---------------------------------------------------------------------

@dataclass(frozen=True)
class Reuse:
    """Output ``output`` is written with ``factor`` × the earlier output ``earlier`` in place of
    the terms they share."""

    output: str
    earlier: str
    factor: Fraction


@dataclass(frozen=True)
class SharedEye:
    """``name`` = step ``var`` ⊗ deltas (``spec``), computed once for the several terms using it."""

    name: str
    var: str
    spec: str


@dataclass(frozen=True)
class FunctionProgram:
    """A planned function as statements: ``tables`` bound, ``steps`` computed (both whatever the
    call), then either fresh results (``fresh``) or the results written into the given ``out``
    (``into``). ``fresh_buffers``: fresh results are written into new buffers when the arrays
    allow writes (a seed is an unrolled contraction: components written in place beat stacking).
    ``unbatched``: numpy object arrays with an argument without batch axes are routed through the
    module's ``_unbatched`` (False for a function never called with object arrays: the other
    outputs of a derivative with batch sums)."""

    plan: FunctionPlan
    tables: tuple = ()
    steps: tuple = ()
    fresh_buffers: bool = False
    fresh: tuple = ()
    into: tuple = ()
    seeds: tuple[str, ...] = ()
    reuses: tuple[Reuse, ...] = ()
    shared_eyes: tuple[SharedEye, ...] = ()
    unbatched: bool = True


@dataclass(frozen=True)
class ChainFunction:
    """A function of straight-line statements around calls of other functions of the module: a
    diagram with function nodes (its stages and the function applications between them) and its
    derivative, lowered by :mod:`compiler.planning.fnemit`."""

    name: str
    params: tuple[str, ...]
    keywords: tuple  # of (name, default Expr), after '*'
    doc: str
    body: tuple  # of Stmt


EYE = Table("eye")
LIKE = Ref("_like")


def is_plain(e: Expr) -> bool:
    """A name or a slice of one: nothing to compute."""
    return isinstance(e, Ref) or (isinstance(e, Index) and is_plain(e.base))


def has_call(e) -> bool:
    """Whether ``e`` calls anything (or is parenthesised): it cannot be split into factors."""
    if isinstance(e, (Call, Einsum, Paren, Rational)):
        return True
    if isinstance(e, Index):
        return has_call(e.base)
    if isinstance(e, Mul):
        return any(has_call(f) for f in e.factors)
    if isinstance(e, SignedSum):
        return any(has_call(t) for _, t in e.terms)
    if isinstance(e, MatMul):
        return has_call(e.left) or has_call(e.right)
    return False


def factors_of(e: Expr) -> list:
    """``e`` as a list of factors (a product of plain factors split, anything else whole)."""
    if isinstance(e, Mul) and not has_call(e):
        out = []
        for f in e.factors:
            out += factors_of(f)
        return out
    return [e]


def number(c: Fraction) -> Expr:
    """A coefficient in a statement: an integer (negative ones parenthesised) or a rational."""
    if c.denominator == 1:
        return Int(c.numerator) if c >= 0 else Paren(Int(c.numerator))
    return Rational(c.numerator, c.denominator)


def operand(name: str, tables) -> Expr:
    return Table(name) if name in tables else Ref(name)


def broadcast(spec: str, operands: list) -> list:
    """The operands of an einsum that sums nothing, each permuted (a view) and given new axes so
    that their product broadcasts to the output."""
    out = []
    for e, (perm, axes) in zip(operands, broadcast_indexes(spec)):
        if perm is not None:
            e = Einsum(perm, (e,))
        if axes is not None:
            e = Index(e, tuple(Slot.ALL if a else Slot.NEW for a in axes))
        out.append(e)
    return out


def dotted(d: Dot, operands: list) -> tuple:
    """A batched dot product's arguments: both operands permuted (views) to the output's letters
    followed by the summed ones, and how many trailing axes are summed."""
    return tuple(o if p is None else Einsum(p, (o,)) for o, p in zip(operands, d.permutations)) + (Literal(d.summed),)


def eye_trailing(spec: str) -> bool:
    """var ⊗ delta with the delta's legs the trailing output axes: a broadcast multiply (cheaper than
    an einsum outer product on every backend), or an add to the diagonal."""
    lhs, out = spec.split("->")
    core, *eyes = lhs.split(",")
    return len(eyes) == 1 and core.startswith("...") and out == core + eyes[0]


def times_eye(var: str, spec: str) -> Expr:
    if eye_trailing(spec):
        return Mul((Index(Ref(var), (Slot.NEW, Slot.NEW)), EYE))
    return Einsum(spec, (Ref(var), EYE))


# ---- lowering ------------------------------------------------------------------------------------

def product(p: Product) -> Expr:
    """One product of sliced operands: plain * when the slices line up, einsum otherwise."""
    parts = [Index(Ref(name), tuple(Slot.ALL if i is None else i for i in idx))
             if any(i is not None for i in idx) else Ref(name) for name, idx in p.slices]
    lhs, out = p.spec.split("->")
    if all(sub == out for sub in lhs.split(",")):
        return parts[0] if len(parts) == 1 else Mul(tuple(parts))
    if broadcast_indexes(p.spec) is not None:
        factors = broadcast(p.spec, parts)
        return factors[0] if len(factors) == 1 else Mul(tuple(factors))
    return Einsum(p.spec, tuple(parts))


def signed(p: Product) -> tuple[int, Expr]:
    """(sign, |coefficient| × product)."""
    e = product(p)
    magnitude = abs(p.coefficient)
    if magnitude != 1:
        e = Mul((Real(magnitude), e))
    return (-1 if p.coefficient < 0 else 1), e


def unrolled_cells(u: Unrolled):
    """(each cell's signed products, with the products several cells use replaced by names; the
    statements computing those): a product shared by components is computed once."""
    cells = [[signed(p) for p in products] for products in u.cells]
    counts: dict = {}
    for cell in cells:
        for _, e in cell:
            counts[e] = counts.get(e, 0) + 1
    stmts, names = [], {}
    for e, n in counts.items():
        if n > 1 and not is_plain(e):
            names[e] = Ref(f"{u.var}_{len(names)}")
            stmts.append(Assign(names[e], e))
    return [factored([(s, names.get(e, e)) for s, e in cell]) for cell in cells], stmts


def factored(cell: list) -> list:
    """A cell's signed products with their common factors taken out, the factor most products share
    first (``s a - s b`` is ``s (a - b)``, two passes instead of three; a coefficient every product of
    a group carries is applied once): fewer array operations, the same value up to rounding."""
    monomials = []
    for sign, e in cell:
        factors = factors_of(e)
        if isinstance(factors[0], Real):
            monomials.append((sign * factors[0].value, tuple(factors[1:])))
        else:
            monomials.append((sign, tuple(factors)))
    combined: dict = {}  # like products summed: r0 r2 + r2 r0 is 2 r0 r2
    for c, factors in monomials:
        key = frozenset(Counter(factors).items())
        c0, f0 = combined.get(key, (0, factors))
        combined[key] = (c0 + c, f0)
    like = [(c, fs) for c, fs in combined.values() if c != 0]
    return _factored_sum(like if like else monomials)


def _factored_sum(monomials: list) -> list:
    """(sign, Expr) terms for a sum of (coefficient, factors) monomials, common factors taken out."""
    counts: dict = {}
    for _, factors in monomials:
        for f in dict.fromkeys(factors):  # a factor counted once per monomial
            counts[f] = counts.get(f, 0) + 1
    common = [f for f, n in counts.items() if n > 1
              and all(len(fs) > 1 for _, fs in monomials if f in fs)]  # something left beside it
    if not common:  # products that share a coefficient: it is applied once to their sum
        shared = Counter(abs(c) for c, _ in monomials if abs(c) != 1)
        scale = next((m for m, n in shared.items() if n > 1), None)
        if scale is None:
            return [_signed_monomial(c, fs) for c, fs in monomials]
        group = [(c / scale, fs) for c, fs in monomials if abs(c) == scale]
        rest = [(c, fs) for c, fs in monomials if abs(c) != scale]
        sign = -1 if all(c < 0 for c, _ in group) else 1
        inner = [_signed_monomial(c * sign, fs) for c, fs in group]
        return [(sign, Mul((Real(scale), Paren(SignedSum(tuple(inner))))))] + _factored_sum(rest)
    f = max(common, key=counts.__getitem__)  # the first of the most shared: deterministic
    group, rest = [], []
    for c, fs in monomials:
        if f in fs:
            k = fs.index(f)
            group.append((c, fs[:k] + fs[k + 1:]))
        else:
            rest.append((c, fs))
    magnitudes = {abs(c) for c, _ in group}
    scale = magnitudes.pop() if len(magnitudes) == 1 else 1
    sign = -1 if all(c < 0 for c, _ in group) else 1
    inner = _factored_sum([(c / scale * sign if scale != 1 else c * sign, fs) for c, fs in group])
    value = inner[0][1] if len(inner) == 1 and inner[0][0] > 0 else Paren(SignedSum(tuple(inner)))
    term = Mul(((Real(scale),) if scale != 1 else ()) + (f, value))
    return [(sign, term)] + _factored_sum(rest)


def _signed_monomial(c, factors) -> tuple:
    magnitude = abs(c)
    parts = ((Real(magnitude),) if magnitude != 1 else ()) + tuple(factors)
    return (-1 if c < 0 else 1), (parts[0] if len(parts) == 1 else Mul(parts))


def step(c, tables) -> list:
    """A contraction step, into a fresh array."""
    if isinstance(c, FlatMatmul):
        w = Ref(c.operands[0])
        return [Assign(Ref(c.var), Call("matmul_flat", (Call("swap", (w,)) if c.transpose else w,
                                                        Ref(c.operands[1]), Literal(c.n))))]
    if isinstance(c, Matmul):
        x, y = (Call("swap", (Ref(o),)) if t else Ref(o) for o, t in zip(c.operands, c.transpose))
        return [Assign(Ref(c.var), MatMul(x, y))]
    if isinstance(c, Unrolled):
        return unrolled(c)
    if isinstance(c, Combination):  # the other factors of a factored linear map, summed
        ctx = _Context(frozenset(), {}, frozenset())
        return [Assign(Ref(c.var), output_value(OutputPlan(c.var, c.terms), ctx))]
    args = [operand(o, tables) for o in c.operands]
    lhs, _, rhs = c.spec.partition("->")
    if len(c.operands) == 1 and lhs == rhs:  # an identity: no work to do
        return [Assign(Ref(c.var), args[0])]
    if c.broadcast:
        return [Assign(Ref(c.var), Mul(tuple(broadcast(c.spec, args))))]
    if c.dot is not None:
        return [Assign(Ref(c.var), Call("sum_product", dotted(c.dot, args)))]
    return [Assign(Ref(c.var), Einsum(c.spec, tuple(args), c.blas))]


def unrolled(u: Unrolled) -> list:
    """Components of an unrolled contraction, stacked; a zero component is a zeros_like of a
    computed one."""
    cells, stmts = unrolled_cells(u)
    values = [SignedSum(tuple(cell)) if cell else None for cell in cells]
    filler = next(v for v in values if v is not None)
    if any(v is None for v in values):
        zero = Ref(f"{u.var}_z")
        single = filler.terms[0][1] if len(filler.terms) == 1 and filler.terms[0][0] < 0 else None
        stmts.append(Assign(zero, Call("zeros_like", (single if isinstance(single, Ref) else filler,))))
        values = [v if v is not None else zero for v in values]
    if not u.open_dims:
        value = values[0]
    elif len(u.open_dims) == 1:
        value = Call("stack", (Tuple(tuple(values)), Literal(-1)))
    else:  # one stack of all components (row-major), then the trailing axis split: a single copy
        value = Call("unflatten", (Call("stack", (Tuple(tuple(values)), Literal(-1))), Literal(u.open_dims)))
    if u.source:
        value = Call("moveaxis", (value, Literal(u.source), Literal(u.destination)))
    stmts.append(Assign(Ref(u.var), value))
    return stmts


def unrolled_into(u: Unrolled, target: str) -> list:
    """Each component of an unrolled contraction written into its place in ``target``."""
    cells, stmts = unrolled_cells(u)
    for values, cell in zip(itertools.product(*(range(d) for d in u.open_dims)), cells):
        view = Index(Ref(target), tuple(Slot.ALL if k is None else values[k] for k in u.open_at))
        if not cell:
            stmts.append(Assign(view, Int(0)))
        elif len(cell) == 2 and all(is_plain(e) for _, e in cell):  # a ± b in one pass
            (sa, a), (sb, b) = cell
            if sa > 0:
                stmts.append(BinaryInto("add" if sb > 0 else "subtract", a, b, view))
            elif sb > 0:
                stmts.append(BinaryInto("subtract", b, a, view))
            else:
                stmts += [BinaryInto("add", a, b, view), NegateInto(view, view)]
        elif len(cell) == 1:  # one product, straight into the view
            sign, e = cell[0]
            factors = factors_of(e)
            if len(factors) == 1:
                stmts.append(CopyInto(view, e) if sign > 0 else NegateInto(e, view))
            else:
                rest = factors[1] if len(factors) == 2 else Mul(tuple(factors[1:]))
                stmts.append(BinaryInto("multiply", factors[0], rest, view))
                if sign < 0:
                    stmts.append(NegateInto(view, view))
        else:  # a longer sum: component-sized temporaries, one strided write
            stmts.append(CopyInto(view, SignedSum(tuple(cell))))
    return stmts


def seed_into(c, target: str, tables) -> list:
    """A contraction computed straight into ``target``."""
    if isinstance(c, FlatMatmul):
        w = Ref(c.operands[0])
        return [FlatMatmulInto(Call("swap", (w,)) if c.transpose else w, Ref(c.operands[1]), c.n, target)]
    if isinstance(c, Matmul):
        x, y = (Call("swap", (Ref(o),)) if t else Ref(o) for o, t in zip(c.operands, c.transpose))
        return [MatmulInto(x, y, target)]
    if isinstance(c, Contraction) and c.broadcast:
        factors = broadcast(c.spec, [operand(o, tables) for o in c.operands])
        if len(factors) == 2:
            return [BinaryInto("multiply", factors[0], factors[1], Ref(target))]
        return [CopyInto(Ref(target), Mul(tuple(factors)))]
    if isinstance(c, Contraction) and c.dot is not None:
        args = [operand(o, tables) for o in c.operands]
        return [CopyInto(Ref(target), Call("sum_product", dotted(c.dot, args)))]
    if isinstance(c, Contraction):
        return [EinsumInto(target, c.spec, tuple(operand(o, tables) for o in c.operands), c.blas)]
    return unrolled_into(c, target)


@dataclass(frozen=True)
class _Context:
    """What the output lowering reads: the function's views, shared eye products, inputs."""

    views: frozenset
    eyes: dict  # (var, eye_spec) -> name
    inputs: frozenset
    outputs: frozenset = frozenset()  # the function's outputs (one read as another's value is copied)


def term_value(s: Scaled, ctx: _Context) -> Expr:
    """The term without its coefficient's magnitude."""
    if s.var is None and s.eye_spec is None:  # a number alone
        return Call("one", (LIKE,))
    if s.var is None:  # deltas only: a fresh constant array
        n = s.eye_spec.partition("->")[0].count(",") + 1
        return Call("copy", (Einsum(s.eye_spec, (EYE,) * n),))
    if s.eye_spec is not None:
        name = ctx.eyes.get((s.var, s.eye_spec))
        return Ref(name) if name else times_eye(s.var, s.eye_spec)
    return Ref(s.var)


def scaled(s: Scaled, ctx: _Context) -> Expr:
    value = term_value(s, ctx)
    c = abs(s.coefficient)
    if c == 0:
        return Mul((Int(0), value))
    if c == 1:
        return value
    if c.denominator == 1:
        return Mul((Int(c.numerator), value))
    return Mul((value, Rational(c.numerator, c.denominator)))


def output_value(o: OutputPlan, ctx: _Context) -> Expr:
    """The sum of terms, grouped by coefficient magnitude: (t1 - t2) * c costs one pass fewer than
    t1 * c - t2 * c; a lone negative term takes its sign into its coefficient."""
    groups: dict = {}
    for s in o.terms:
        groups.setdefault(abs(s.coefficient), []).append(s)
    terms = []
    for magnitude, members in groups.items():
        unit = [Scaled(s.coefficient / magnitude if magnitude else s.coefficient, s.var, s.eye_spec)
                for s in members]
        body = tuple((-1 if s.coefficient < 0 else 1, scaled(s, ctx)) for s in unit)
        if magnitude == 1:
            terms += body
            continue
        if magnitude == 0:
            terms.append((1, Mul((Int(0), Paren(SignedSum(body))))))
            continue
        sign = 1
        if len(body) == 1 and body[0][0] < 0:  # -t * c: fold the sign into c
            value, sign = body[0][1], -1
        elif len(body) > 1:
            value = Paren(SignedSum(body))
        else:
            value = SignedSum(body)
        factor = (Int(sign * magnitude.numerator) if magnitude.denominator == 1
                  else Rational(sign * magnitude.numerator, magnitude.denominator))
        terms.append((1, Mul((value, factor))))
    expr = SignedSum(tuple(terms))
    single = o.terms[0]
    if len(o.terms) == 1 and single.coefficient == 1 and single.eye_spec is None and (
            single.var in ctx.views or single.var in ctx.outputs):
        expr = Call("copy", (expr,))  # never hand back a view of an input, nor an output twice
    return expr


def _broadcast_factors(s: Scaled, ctx: _Context) -> tuple[Expr, Expr | None]:
    """The term (without coefficient) as one array, or as two broadcast factors (var, delta)."""
    value = term_value(replace(s, coefficient=Fraction(1)), ctx)
    if isinstance(value, Mul) and len(value.factors) == 2 and value.factors[1] == EYE:
        return value.factors
    return value, None


def output_into(o: OutputPlan, seeds: dict, ctx: _Context, tables, fresh_reads=None) -> list | None:
    """``o`` evaluated in place into the array bound to its name: a seed written into it (a
    contraction computed straight into it, or a ufunc with ``out=``), then in-place adds, and one
    in-place scale per change of coefficient magnitude (Horner), so the sum needs no temporary the
    size of the output (other contractions are computed before, on their own).

    With ``fresh_reads`` (the inputs each term reads) the array is not given but created by the
    seed (a fresh contraction result, or the first sum or product), and the rest is done in place
    as above; None when no seed is known to have the output's full shape (it must read every input
    for in-place adds to broadcast)."""
    target = o.name
    fresh = fresh_reads is not None
    terms = list(o.terms)
    arrays = [k for k, s in enumerate(terms) if s.var is not None]
    if not arrays:  # constants only
        return None if fresh else [CopyInto(Ref(target), output_value(o, ctx))]
    direct = [k for k in arrays if terms[k].var in seeds and terms[k].eye_spec is None]
    first = direct[0] if direct else next((k for k in arrays if terms[k].eye_spec is None), arrays[0])
    seed = terms.pop(first)
    mag = abs(seed.coefficient)
    terms.sort(key=lambda s: abs(s.coefficient) != mag)  # the seed's magnitude first (stable)
    stmts = []
    scale = seed.coefficient
    covered = fresh_reads(seed) if fresh else None
    unit = lambda s: term_value(replace(s, coefficient=Fraction(1)), ctx)  # noqa: E731
    if seed.var in seeds and seed.eye_spec is None:
        stmts += [Assign(Ref(target), Ref(seed.var))] if fresh else seed_into(seeds[seed.var], target, tables)
    elif terms and abs(terms[0].coefficient) == mag and seed.eye_spec is None \
            and terms[0].var is not None and terms[0].eye_spec is None:
        nxt = terms.pop(0)
        same = nxt.coefficient == seed.coefficient
        if fresh:
            covered = covered | fresh_reads(nxt)
            stmts.append(Assign(Ref(target), SignedSum(((1, unit(seed)), (1 if same else -1, unit(nxt))))))
        else:
            stmts.append(BinaryInto("add" if same else "subtract", unit(seed), unit(nxt), Ref(target)))
    elif scale != 1:
        a, b = _broadcast_factors(seed, ctx)
        if b is None:
            stmts.append(Assign(Ref(target), Mul((a, number(scale)))) if fresh
                         else BinaryInto("multiply", a, number(scale), Ref(target)))
            scale = Fraction(1)
        else:  # scale the small factor before it is broadcast: one pass over the output fewer
            if isinstance(a, Index) and a.slots == (Slot.NEW, Slot.NEW):
                a = Index(Paren(Mul((a.base, number(scale)))), a.slots)
                scale = Fraction(1)
            stmts.append(Assign(Ref(target), Mul((a, b))) if fresh else BinaryInto("multiply", a, b, Ref(target)))
    else:
        a, b = _broadcast_factors(seed, ctx)
        if fresh:
            stmts.append(Assign(Ref(target), Call("copy", (a,)) if b is None else Mul((a, b))))
        else:
            stmts.append(CopyInto(Ref(target), a) if b is None else BinaryInto("multiply", a, b, Ref(target)))
    if fresh and not covered >= ctx.inputs:
        return None
    for s in terms:
        if s.var is not None and s.eye_spec is not None and (s.var, s.eye_spec) not in ctx.eyes \
                and eye_trailing(s.eye_spec):
            # a diagonal is cheap to scale: no rescale of the rest
            stmts.append(AddDiagonal(target, Ref(s.var), number(s.coefficient / scale)))
            continue
        if abs(s.coefficient) != abs(scale):
            stmts.append(ScaleInPlace(target, number(abs(scale) / abs(s.coefficient))))
            scale = abs(s.coefficient) * (1 if scale > 0 else -1)
        stmts.append(AddInPlace(target, 1 if s.coefficient / scale > 0 else -1, unit(s)))
    if scale != 1:
        stmts.append(ScaleInPlace(target, number(scale)))
    return stmts


def _leaves(var: str, steps: dict) -> set[str]:
    """What the contraction chain ending in ``var`` reads: inputs and constant tables."""
    found = set()
    for o in steps[var].operands:
        found |= _leaves(o, steps) if o in steps else {o}
    return found


def direct_seeds(f: FunctionPlan, outputs: list[OutputPlan]) -> dict:
    """Contractions that may be computed straight into their output: the last step of a chain, used
    by one term of one output only, not a view, and reading every input (so its batch shape is the
    output's)."""
    uses: dict[str, int] = {}
    for o in outputs:
        for s in o.terms:
            if s.var is not None:
                uses[s.var] = uses.get(s.var, 0) + 1
    steps = {c.var: c for c in f.contractions}
    operand_vars = {o for c in f.contractions for o in c.operands}
    candidates = set()
    for var, c in steps.items():
        if uses.get(var) != 1 or var in operand_vars:
            continue
        if isinstance(c, Contraction) and len(c.operands) == 1:
            continue
        if set(f.inputs) <= _leaves(var, steps):
            candidates.add(var)
    seeds = {}
    for o in outputs:  # one seed per output: its first candidate term without deltas
        var = next((s.var for s in o.terms if s.var in candidates and s.eye_spec is None), None)
        if var is not None:
            seeds[var] = steps[var]
    return seeds


def reuse(o: OutputPlan, earlier: list[OutputPlan]) -> tuple[OutputPlan, Reuse | None]:
    """``o`` written with an earlier output in place of the terms they share up to a factor
    (TensorNet's S = sym(X) - I reuses I instead of recomputing it); an output whose terms are all an
    earlier output's (a derivative's two cotangents equal, the embedding's d_zd and d_zs) is that
    output scaled, or a copy of it: one pass where the sum again would take one per term."""
    terms = {(s.var, s.eye_spec): s.coefficient for s in o.terms}
    for prev in earlier:
        if not prev.terms or len(prev.terms) > len(o.terms) or any(s.var is None for s in prev.terms):
            continue
        if len(prev.terms) == len(o.terms) == 1:
            continue  # one term alone is already one pass
        keys = [(s.var, s.eye_spec) for s in prev.terms]
        if not all(k in terms for k in keys):
            continue
        factor = terms[keys[0]] / prev.terms[0].coefficient
        if all(terms[k] == factor * s.coefficient for k, s in zip(keys, prev.terms)):
            rest = tuple(s for s in o.terms if (s.var, s.eye_spec) not in keys)
            return replace(o, terms=rest + (Scaled(factor, prev.name, None),)), Reuse(o.name, prev.name, factor)
    return o, None


def lower_function(f: FunctionPlan, unbatched: bool = True) -> FunctionProgram:
    """The planned function as an emit program (nothing to lower when the cost model prefers the
    fused formulas: those run instead); ``unbatched``: see :class:`FunctionProgram`."""
    if f.prefer_unrolled:
        return FunctionProgram(f, unbatched=unbatched)
    tables = frozenset(f.constants)
    bound = tuple(Assign(Table(c), Call("const", (Str(c), LIKE))) for c in f.constants)
    views = frozenset(c.var for c in f.contractions if isinstance(c, Contraction) and len(c.operands) == 1)
    outputs, reuses = [], []
    for k, o in enumerate(f.outputs):
        o, r = reuse(o, list(f.outputs[:k]))
        outputs.append(o)
        if r is not None:
            reuses.append(r)
    seeds = direct_seeds(f, outputs)
    inputs = frozenset(f.inputs)
    steps = {c.var: c for c in f.contractions}
    earlier = {o.name: o for o in outputs}

    def reads_of(s: Scaled) -> set:
        """The inputs a term reads (its batch shape is their broadcast)."""
        if s.var is None:
            return set()
        if s.var in earlier:
            return set().union(*(reads_of(t) for t in earlier[s.var].terms))
        return (_leaves(s.var, steps) if s.var in steps else {s.var}) & inputs

    before = []
    for c in f.contractions:
        if c.var not in seeds:
            before += step(c, tables)
    uses: dict = {}
    for o in outputs:
        for s in o.terms:
            if s.var is not None and s.eye_spec is not None:
                uses[(s.var, s.eye_spec)] = uses.get((s.var, s.eye_spec), 0) + 1
    eyes, shared = {}, []
    for (var, spec), n in uses.items():
        if n > 1:
            eyes[(var, spec)] = name = f"_e{len(eyes)}"
            shared.append(SharedEye(name, var, spec))
            before.append(Assign(Ref(name), times_eye(var, spec)))
    ctx = _Context(views, eyes, inputs, frozenset(o.name for o in outputs))
    fresh = []
    for c in f.contractions:
        if c.var in seeds:
            fresh += step(c, tables)
    for o in outputs:
        single_eye = len(o.terms) == 1 and o.terms[0].eye_spec is not None and o.terms[0].coefficient != 1
        stmts = output_into(o, seeds, ctx, tables, reads_of) if len(o.terms) > 1 or single_eye else None
        if all(s.var is None for s in o.terms) and f.inputs:  # a constant, given the batch shape
            shape = Shape(f.trailing, (), o.channels, o.geometric)
            stmts = [Assign(Ref(o.name), Call("filled", (output_value(o, ctx), shape, LIKE)))]
        fresh += stmts or [Assign(Ref(o.name), output_value(o, ctx))]
    into = []
    for o in outputs:
        into += output_into(o, seeds, ctx, tables)
    return FunctionProgram(f, bound, tuple(before), any(isinstance(c, Unrolled) for c in seeds.values()),
                           tuple(fresh), tuple(into), tuple(seeds), tuple(reuses), tuple(shared), unbatched)


# ---- a weight's cotangent summed over the batch --------------------------------------------------

@dataclass(frozen=True)
class BatchSumProgram:
    """``_<name>_batch_summed(_b, inputs)``: the outputs of a derivative summed to weights without
    batch axes (:class:`~compiler.planning.plan.BatchSum`), each as contractions over the batch axes too,
    and the other outputs when they are computed from the same copies (plan.BatchRest):
    ``steps`` (channels-last copies, contractions, the outputs' sums), then ``outputs`` returned
    as a tuple. Its inputs are checked as the derivative's are, without the object-array route
    (the runtime calls it only for arrays that are not numpy object arrays)."""

    name: str
    inputs: tuple[str, ...]
    steps: tuple = ()
    outputs: tuple[str, ...] = ()
    bound: tuple = ()  # the constant tables the contractions read, bound first
    others: int = 0  # the last outputs that are not weights' cotangents (plan.BatchRest)


@dataclass(frozen=True)
class BatchSpec:
    """The SPEC entry of a derivative with batch sums, read by the runtime's ``evaluate``: the
    function of its other outputs (``rest``, None when every output is summed), the batch-summed
    function (``summed``), the positions of the weights that must have no batch axes for it to run
    (``weights``), and per output where its result is (``order``: (0, k) result k of ``rest``,
    (1, k) result k of ``summed``)."""

    rest: str | None
    summed: str
    weights: tuple[int, ...]
    order: tuple[tuple[int, int], ...]


def layout(m: Layout) -> Assign:
    """A channels-last contiguous copy of an operand."""
    return Assign(Ref(m.var), Call("contiguous", (Einsum(m.spec, (Ref(m.operand),)),)))


def lower_batch_sums(f: FunctionPlan, rest: str | None) -> tuple[BatchSumProgram, BatchSpec]:
    """The batch sums of a derivative's plan (``f.batch_sums``, then ``f.batch_rest``) as one
    function, and its SPEC entry (``rest``: the name of the function computing the other outputs,
    if any)."""
    ctx = _Context(frozenset(), {}, frozenset(f.inputs))
    known = {name for name, _ in f.tables} | {"eps"}
    tables = [o for s in f.batch_sums for c in s.contractions if not isinstance(c, Layout)
              for o in c.operands if o in known]
    tables = tuple(dict.fromkeys(sorted(tables)))
    steps = []
    for s in f.batch_sums:
        for c in s.contractions:
            steps += [layout(c)] if isinstance(c, Layout) else step(c, frozenset(tables))
        steps.append(Assign(Ref(s.output.name), output_value(s.output, ctx)))
    summed = [s.output.name for s in f.batch_sums]
    if f.batch_rest is not None:  # the other outputs here too, from the same channels-last copies
        for c in f.batch_rest.contractions:
            steps += [layout(c)] if isinstance(c, Layout) else step(c, frozenset())
        for o in f.batch_rest.outputs:
            steps.append(Assign(Ref(o.name), output_value(o, ctx)))
            summed.append(o.name)
    others = [o.name for o in f.rest.outputs] if f.rest is not None else []
    order = tuple((1, summed.index(o.name)) if o.name in summed else (0, others.index(o.name)) for o in f.outputs)
    weights = tuple(f.inputs.index(s.input) for s in f.batch_sums)
    bound = tuple(Assign(Table(c), Call("const", (Str(c), LIKE))) for c in tables)
    program = BatchSumProgram(f.name, f.inputs, tuple(steps), tuple(summed), bound,
                              len(f.batch_rest.outputs) if f.batch_rest is not None else 0)
    return program, BatchSpec(rest, f"_{f.name}_batch_summed", weights, order)


# ---- the fused form ------------------------------------------------------------------------------

@dataclass(frozen=True)
class FusedProgram:
    """``_<name>_fused(_b, inputs, _out=None)``: every output component as one arithmetic
    expression (``computed``; a component equal to an earlier one of the same output reuses it),
    then either written into the views of ``_out`` (``written``) or assembled into the outputs
    (``assembled``), stacked on ``stack_axis`` for a basis."""

    name: str
    inputs: tuple[str, ...]
    products: int
    outputs: tuple[str, ...]
    computed: tuple = ()
    written: tuple = ()
    assembled: tuple = ()
    stack_axis: int | None = None


def polynomial(monomials, n_channels: int, like: str) -> Expr:
    """Σ coefficient × Π entries, entries as ``x[..., None, :, i, j]`` (channels broadcast);
    monomials of equal coefficient magnitude share one multiplication."""
    if not monomials:
        return Int(0)
    groups: dict = {}
    for m in monomials:
        groups.setdefault(abs(m.coefficient), []).append(m)
    terms = []
    for magnitude, members in groups.items():
        body = []
        for m in members:
            factors = []
            for e in m.factors:
                slots = [Slot.ALL if q in e.channels else Slot.NEW for q in range(n_channels)]
                slots = slots[slots.index(Slot.NEW):] if Slot.NEW in slots else []
                index = tuple(slots) + tuple(e.component)
                factors.append(Index(Ref(e.input), index) if index else Ref(e.input))
            value = Int(1) if not factors else factors[0] if len(factors) == 1 else Mul(tuple(factors))
            body.append((-1 if m.coefficient < 0 else 1, value))
        if isinstance(magnitude, Fraction):  # exact on object arrays of Fractions
            num = Int(magnitude.numerator) if magnitude.denominator == 1 \
                else Rational(magnitude.numerator, magnitude.denominator, like)
        else:
            num = Real(float(magnitude))
        if num == Int(1):
            terms += body
        elif len(members) == 1:
            sign, value = body[0]
            terms.append((sign, num if not members[0].factors else Mul((num, value))))
        else:
            terms.append((1, Mul((num, Paren(SignedSum(tuple(body)))))))
    return SignedSum(tuple(terms))


def lower_fused(p, stack_axis: int | None) -> FusedProgram:
    """The fused formulas (a :class:`~compiler.planning.fuse.FusedPlan` with outputs) as statements."""
    computed, written, assembled = [], [], []
    for n, o in enumerate(p.outputs):
        cells, numbers, first_array, seen = [], [], None, {}
        for k, monomials in enumerate(o.components):
            value = polynomial(monomials, o.n_channels, p.inputs[0])
            var = Ref(f"_{o.name}_{k}" if o.geometric else o.name)
            if not any(m.factors for m in monomials):  # a number: made an array when stacked
                numbers.append(len(cells))
                cells.append(value)
            elif value in seen:
                cells.append(seen[value])
            else:
                seen[value] = var
                computed.append(Assign(var, value))
                first_array = first_array or var
                cells.append(var)
        for k, index in enumerate(itertools.product(*(range(d) for d in o.geometric))):
            view = Index(Item(Ref("_out"), n), index)
            written.append(Assign(view, cells[k]) if k in numbers else CopyInto(view, cells[k]))
        zero = Ref(f"_{o.name}_z")
        if numbers:
            assembled.append(Assign(zero, Call("zeros_like", (first_array,))))
        for k in numbers:
            cells[k] = zero if cells[k] == Int(0) else SignedSum(((1, zero), (1, cells[k])))
        stacked = Call("stack", (Tuple(tuple(cells)), Literal(-1)))
        if not o.geometric:
            value = cells[0]
        elif o.spherical or len(o.geometric) == 1:
            value = stacked
        else:
            value = Call("unflatten", (stacked, Literal(o.geometric)))
        if value != Ref(o.name):
            assembled.append(Assign(Ref(o.name), value))
    return FusedProgram(p.name, p.inputs, p.products, tuple(o.name for o in p.outputs), tuple(computed),
                        tuple(written), tuple(assembled), stack_axis)

