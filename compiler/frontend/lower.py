"""Syntax tree -> tensor-network IR.

Each equation's right-hand side is expanded into a sum of products (parentheses distribute,
earlier outputs of the same diagram are substituted with fresh internal indices), and each product
becomes a :class:`~compiler.ir.program.TensorNetwork`. Everything that makes a term ill-formed is reported
here with its position (exit code 2): unknown names, wrong numbers of indices, an index used as a
channel and as a geometric leg, a contraction of legs of different kinds. Whether a well-formed
term is *equivariant* is the checker's job.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

from . import ast
from ..math.constants import Constant
from ..errors import DiagError, DiagNameError, DiagTypeError, Position, raise_all
from ..ir.program import (CONSTANT_TYPE, DELTA_TYPE, EPS_TYPE, MAX_CONSTANT_L, Diagram, Equation, IndexKind, Node,
                          Program, Tensor, TensorNetwork, axis_kinds, constant_axes)
from ..ir.program import BUILTIN_FUNCTIONS, Apply, BasisInfo, Composite, FnInput, IrrepsTensor, Renamed, base_name
from .graph import graph_stages, validate as graph_errors
from ..ir.types import Irrep
from .parser import did_you_mean, parse, parse_collecting
from ..ir.types import TensorType

MAX_TERMS = 4096
MAX_INDICES = 52  # distinct indices in one term (einsum letters)
MAX_COEFFICIENT = 10**30
_CONSTANTS = {"delta": DELTA_TYPE, "eps": EPS_TYPE}
#: other names of the built-in constants, for "did you mean"
CONSTANT_ALIASES = {"kron": "delta", "kronecker": "delta", "id": "delta", "eye": "delta", "identity": "delta",
                    "kd": "delta", "epsilon": "eps", "levi": "eps", "levicivita": "eps", "levi_civita": "eps",
                    "lc": "eps", "epsilon3": "eps"}


@dataclass(frozen=True)
class _Occ:
    """A factor while expanding: a name, its index labels and where it was written."""

    name: str
    indices: tuple[str, ...]
    pos: Position
    index_pos: tuple[Position, ...]
    constant: Constant | None = None  # cg / P


@dataclass(frozen=True)
class _Product:
    coefficient: Fraction
    factors: tuple[_Occ, ...]
    pos: Position


def lower_source(source: str, filename: str = "<string>") -> Program:
    """Parse and lower a .diag text; every error found (up to ``MAX_ERRORS``) is raised together."""
    with deep_recursion():
        module, errors = parse_collecting(source, filename)
        program, more = lower_collecting(module)
    raise_all(errors + more)
    return program


class deep_recursion:
    """Allow the recursion a long expression needs (a sum of a few thousand terms) while it lasts."""

    LIMIT = 20000

    def __enter__(self):
        import sys

        self.old = sys.getrecursionlimit()
        sys.setrecursionlimit(max(self.old, self.LIMIT))

    def __exit__(self, *exc):
        import sys

        sys.setrecursionlimit(self.old)


def lower(module: ast.Module) -> Program:
    program, errors = lower_collecting(module)
    raise_all(errors)
    return program


def lower_collecting(module: ast.Module) -> tuple[Program, list[DiagError]]:
    """The program of every diagram that lowers, and the errors of the others (each equation of a
    diagram is lowered, so one diagram may give several)."""
    seen: dict[str, Position] = {}
    diagrams, errors, composites = [], [], []
    for d in module.diagrams:
        if d.name in seen:
            errors.append(DiagNameError(f"diagram '{d.name}' is defined twice (first at line {seen[d.name].line})",
                                        d.pos))
            continue
        seen[d.name] = d.pos
        try:
            if isinstance(d, ast.Basis):
                diagrams.append(lower_basis(d, module.group))
            else:
                lowering = _DiagramLowering(d, module.group)
                diagram = lowering.run()
                if lowering.errors:
                    errors.extend(lowering.errors)
                elif lowering.calls or lowering.fns:
                    from .functions import stages

                    if lowering.irreps:  # not yet: irreps tensors (split into blocks) + functions
                        raise DiagTypeError(
                            f"diagram '{d.name}' has irreps tensors ({', '.join(lowering.irreps)}) and applies "
                            "functions of invariants: not supported together yet",
                            lowering.calls[0].pos if lowering.calls else d.pos,
                            "declare the blocks as sph(lp)[u] tensors (h.0e as h0: scalar[u]) in the diagram with "
                            "functions, or apply them in a separate diagram")

                    composite, parts = stages(lowering, diagram)
                    parts = graph_stages(diagram, parts)
                    shape_errors = [e for part in parts for e in graph_errors(part)]  # a graph stage's terms
                    errors.extend(shape_errors)
                    if not shape_errors:
                        composites.append(composite)
                        diagrams.extend(parts)
                else:
                    shape_errors = graph_errors(diagram)  # a graph diagram's terms must be gathers/scatters
                    errors.extend(shape_errors)
                    if not shape_errors:
                        diagrams.append(diagram)
        except DiagError as err:
            errors.append(err)
    return Program(module.filename, module.source, module.group, tuple(diagrams), tuple(composites)), errors


class _Skip(Exception):
    """An equation that uses an output whose own equation failed: its errors would only repeat that one."""


class _DiagramLowering:
    def __init__(self, diagram: ast.Diagram, group: str):
        self.d = diagram
        self.group = group
        #: irreps tensors of the signature; each stands for its blocks (name_lp: sph(lp)[mul])
        self.irreps = {p.name: p for p in diagram.inputs + diagram.outputs if p.type.family == "irreps"}
        self.inputs = {q.name: q for p in diagram.inputs if not isinstance(p.type, ast.FnType) for q in _blocks(p)}
        self.fns = {p.name: p for p in diagram.inputs if isinstance(p.type, ast.FnType)}
        self.calls: list = []  # functions.CallSite, in the order they were written
        self.results: dict[str, TensorType] = {}  # a function result's internal name -> its type
        self.call_keys: list = []  # (CallSite, what it applies to, its channel labels): written twice, one call
        self.eq_counts: dict[str, int] = {}  # index name -> occurrences in the equation being lowered
        self.outputs = {q.name: q for p in diagram.outputs for q in _blocks(p)}
        self.defined: dict[str, tuple[tuple[str, ...], list[_Product]]] = {}
        self.fresh = 0
        self.errors: list[DiagError] = []
        self.failed: set[str] = set()  # outputs whose equation has an error

    def run(self) -> Diagram:
        d = self.d
        names: dict[str, Position] = {}
        for p in d.inputs + d.outputs:
            if p.name in names:
                self.errors.append(DiagNameError(f"'{p.name}' is declared twice in diagram '{d.name}'", p.pos))
            elif p.name == d.name:
                self.errors.append(DiagNameError(f"'{p.name}' is also the name of its diagram", p.pos))
            names[p.name] = p.pos
        for p in self.irreps.values():
            for q in _blocks(p):
                if q.name in names:
                    self.errors.append(DiagNameError(
                        f"block '{q.name}' of irreps tensor '{p.name}' has the name of another tensor", names[q.name]))
        for p in d.outputs:
            if p.type.family == "fn":
                self.errors.append(DiagTypeError(f"output '{p.name}' cannot be a function: functions are inputs "
                                                 "only", p.type_pos))
            elif p.type.family == "weight":
                self.errors.append(DiagTypeError(f"output '{p.name}' cannot be a weight: weights are inputs only",
                                                 p.type_pos, "declare it with its geometric type, e.g. scalar[c]"))
        if self.errors:
            return None
        equations: dict[str, Equation] = {}
        for eq in d.equations:
            target = eq.target
            try:
                target = self._resolve(eq.target, eq.block, eq.pos)
                equations[target] = self.equation(replace(eq, target=target))
            except _Skip:
                self.failed.add(target)
            except DiagError as err:
                self.errors.append(err)
                self.failed.add(target)
        for p in self.outputs.values():
            if p.name not in equations and p.name not in self.failed and not self.errors:  # else likely a cascade
                if p not in d.outputs:  # a block of an irreps output
                    owner = p.name.rsplit("_", 1)
                    self.errors.append(DiagNameError(
                        f"block {owner[1]} of irreps output '{owner[0]}' of diagram '{d.name}' is never assigned",
                        p.pos, f"assign it: {owner[0]}.{owner[1]}[...] = ..."))
                else:
                    self.errors.append(DiagNameError(f"output '{p.name}' of diagram '{d.name}' is never assigned",
                                                     p.pos))
        if self.errors:
            return None
        irreps = tuple(IrrepsTensor(p.name, p.type, tuple(q.name for q in _blocks(p)), p in d.outputs, p.pos)
                       for p in d.inputs + d.outputs if p.type.family == "irreps")
        return Diagram(
            d.name,
            self.group,
            tuple(Tensor(p.name, p.type, p.pos) for p in self.inputs.values()),
            tuple(Tensor(p.name, p.type, p.pos) for p in self.outputs.values()),
            tuple(equations[p] for p in self.outputs),
            d.pos,
            irreps=irreps,
        )

    def _resolve(self, name: str, block: str | None, pos: Position) -> str:
        """The tensor that ``name`` (with its block selector ``.lp``, if any) stands for: an irreps
        tensor's block, or the name itself."""
        if name in self.irreps:
            typ = self.irreps[name].type
            shown = ", ".join(f"{m}x{ir}" for m, ir in typ.blocks)
            if block is None:
                first = typ.blocks[0][1]
                legs = "u" if first.l == 0 else "u,m"
                raise DiagTypeError(f"'{name}' is {typ}: select one of its blocks ({shown})", pos,
                                    f"e.g. {name}.{first}[{legs}]: channel u of size {typ.blocks[0][0]}"
                                    + ("" if first.l == 0 else f", spherical leg m of size {first.dim}"))
            irrep = Irrep.parse(block)
            if irrep not in {ir for _, ir in typ.blocks}:
                raise DiagTypeError(f"'{name}' has no {irrep} block (its blocks: {shown})", pos)
            return f"{name}_{irrep}"
        if block is not None:
            if name in self.inputs or name in self.outputs or name in _CONSTANTS:
                raise DiagTypeError(f"'{name}' is not an irreps tensor: '.{block}' selects a block of one "
                                    "(declared as irreps(...))", pos)
        return name

    # -- one equation ----------------------------------------------------------------------------
    def equation(self, eq: ast.Equation) -> Equation:
        if eq.target not in self.outputs:
            what = "an input" if eq.target in self.inputs else "not a declared output"
            unassigned = [n for n in self.outputs if n not in self.defined]
            raise DiagNameError(f"'{eq.target}' is {what} of diagram '{self.d.name}'; only outputs are assigned",
                                eq.pos, did_you_mean(eq.target, unassigned))
        if eq.target in self.defined:
            raise DiagNameError(f"output '{eq.target}' is assigned twice", eq.pos)
        out = self.outputs[eq.target]
        kinds = axis_kinds(out.type)
        lhs = tuple(i.name for i in eq.indices)
        if len(lhs) != len(kinds):
            raise DiagTypeError(_arity_message(eq.target, out.type, len(lhs)), eq.pos)
        for k, index in enumerate(eq.indices):
            if index.name in lhs[:k]:
                raise DiagTypeError(f"index '{index.name}' appears twice on the left-hand side", index.pos)
        from .functions import index_counts

        self.eq_counts = index_counts(eq.expr, eq.indices)
        try:
            products = self.expand(eq.expr)
        except RecursionError:
            raise DiagError("the right-hand side is nested too deeply or is too long to compile", eq.pos) from None
        if not products:
            raise DiagTypeError(f"the right-hand side of '{eq.target}' is empty", eq.pos)
        terms = tuple(self.network(p, lhs, kinds, eq) for p in products)
        self.defined[eq.target] = (lhs, products)
        return Equation(eq.target, out.type, terms, eq.pos)

    def network(self, product: _Product, lhs, lhs_kinds, eq: ast.Equation) -> TensorNetwork:
        c = product.coefficient
        if abs(c.numerator) >= MAX_COEFFICIENT or c.denominator >= MAX_COEFFICIENT:
            raise DiagError("a coefficient is too large to compute with (more than 30 digits)", product.pos)
        labels = {i for occ in product.factors for i in occ.indices} | set(lhs)
        if len(labels) > MAX_INDICES:
            raise DiagTypeError(f"a term with {len(labels)} distinct indices; at most {MAX_INDICES} are supported",
                                product.pos)
        kinds: dict[str, IndexKind] = {}
        where: dict[str, str] = {}
        nodes = []
        for occ in product.factors:
            if occ.constant is not None:
                kind, typ = occ.constant.kind, CONSTANT_TYPE
                axes = constant_axes(kind, occ.constant.params)
                if len(occ.indices) != len(axes):
                    raise DiagTypeError(f"'{occ.name}' has {len(axes)} legs but {len(occ.indices)} indices are given",
                                        occ.pos)
                for index, ipos, ak in zip(occ.indices, occ.index_pos, axes):
                    self._unify(kinds, where, index, ak, occ.name, ipos)
                nodes.append(Node(kind, occ.name, typ, occ.indices, occ.pos, occ.constant))
                continue
            if occ.name in _CONSTANTS:
                kind, typ = occ.name, _CONSTANTS[occ.name]
            elif occ.name in self.inputs:
                kind, typ = "input", self.inputs[occ.name].type
            elif occ.name in self.results:  # a function's result: an invariant input of a later stage
                kind, typ = "input", self.results[occ.name]
            elif occ.name in self.outputs:
                raise DiagNameError(f"output '{occ.name}' is used before it is assigned", occ.pos)
            elif occ.name in self.fns:
                raise DiagTypeError(f"'{occ.name}' is a function ({self.fns[occ.name].type}): apply it to "
                                    f"invariants, e.g. {occ.name}(a[i] a[i])", occ.pos)
            else:
                known = list(self.inputs) + [n for n in self.outputs if n in self.defined] + list(_CONSTANTS)
                raise DiagNameError(f"unknown tensor '{occ.name}' in diagram '{self.d.name}'", occ.pos,
                                    did_you_mean(occ.name, known, CONSTANT_ALIASES))
            axes = axis_kinds(typ)
            if len(occ.indices) != len(axes):
                raise DiagTypeError(_arity_message(occ.name, typ, len(occ.indices)), occ.pos)
            for index, ipos, ak in zip(occ.indices, occ.index_pos, axes):
                self._unify(kinds, where, index, ak, f"{occ.name}", ipos)
            nodes.append(Node(kind, occ.name, typ, occ.indices, occ.pos))
        for index, ak, ipos in zip(lhs, lhs_kinds, (i.pos for i in eq.indices)):
            if index in kinds:
                self._unify(kinds, where, index, ak, f"output {eq.target}", ipos)
            else:
                kinds[index] = ak
        ordered = {}
        for node in nodes:
            for i in node.indices:
                ordered.setdefault(i, kinds[i])
        for i in lhs:
            ordered.setdefault(i, kinds[i])
        return TensorNetwork(product.coefficient, tuple(nodes), tuple(lhs), tuple(ordered.items()), product.pos)

    def _unify(self, kinds, where, index, kind: IndexKind, owner: str, pos: Position) -> None:
        if index not in kinds:
            kinds[index], where[index] = kind, owner
            return
        have = kinds[index]
        if have == kind:
            return
        shown = base_name(index)
        if have.geometric != kind.geometric:
            weight = owner if not kind.geometric else where[index]
            help = None
            if weight in self.inputs and self.inputs[weight].type.family == "weight":
                help = (f"'{weight}' is a weight: it has channel axes only, because a learnable matrix acting on "
                        "Cartesian legs (a 3x3 matrix W[i,j]) does not commute with rotations and is not "
                        f"equivariant; mix channels instead (Y[d,i] = {weight}[c,d] X[c,i]), or scale by an "
                        f"invariant ({weight}[c,d] delta[i,j])")
            raise DiagTypeError(
                f"index '{shown}' is used for {kind} of {owner} and for {have} of {where[index]}; "
                "channel and geometric indices cannot be mixed", pos, help)
        raise DiagTypeError(
            f"index '{shown}' joins {kind} of {owner} with {have} of {where[index]}; "
            "only legs of the same kind can be contracted", pos)

    # -- expansion into a sum of products --------------------------------------------------------
    def expand(self, expr) -> list[_Product]:
        """expr -> [coefficient × factors], distributing products over sums."""
        if isinstance(expr, ast.Number):
            return [_Product(expr.value, (), expr.pos)]
        if isinstance(expr, ast.Factor):
            return self.factor(expr)
        if isinstance(expr, ast.Constant):
            return [_Product(Fraction(1), (self.constant(expr),), expr.pos)]
        if isinstance(expr, ast.Neg):
            return [_Product(-p.coefficient, p.factors, p.pos) for p in self.expand(expr.operand)]
        if isinstance(expr, ast.Call):
            from .functions import lower_call

            return [_Product(Fraction(1), (lower_call(self, expr),), expr.pos)]
        left = self.expand(expr.left)
        if expr.op == "/":
            return [_Product(p.coefficient / expr.right.value, p.factors, p.pos) for p in left]
        right = self.expand(expr.right)
        if expr.op == "+":
            result = left + right
        elif expr.op == "-":
            result = left + [_Product(-p.coefficient, p.factors, p.pos) for p in right]
        else:
            if len(left) * len(right) > MAX_TERMS:
                raise DiagError(f"the expression expands to more than {MAX_TERMS} terms", expr.pos)
            result = [
                _Product(a.coefficient * b.coefficient, a.factors + b.factors, a.pos if a.factors or not b.factors else b.pos)
                for a in left for b in right
            ]
        if len(result) > MAX_TERMS:
            raise DiagError(f"the expression expands to more than {MAX_TERMS} terms", expr.pos)
        return result

    def constant(self, c: ast.Constant) -> _Occ:
        """cg(l1,l2,l3) or P(l), with its parameters checked."""
        if c.name == "cg":
            if len(c.params) != 3:
                raise DiagTypeError("cg takes three degrees: cg(l1,l2,l3)[a,b,c]", c.pos)
            l1, l2, l3 = c.params
            if not abs(l1 - l2) <= l3 <= l1 + l2:
                raise DiagTypeError(f"cg({l1},{l2},{l3}) violates the triangle condition |l1-l2| <= l3 <= l1+l2",
                                    c.pos)
        elif len(c.params) != 1:
            raise DiagTypeError("P takes one degree: P(l)[m,i1,...,il]", c.pos)
        if max(c.params) > MAX_CONSTANT_L[c.name]:
            raise DiagTypeError(f"l = {max(c.params)} is above the supported maximum {MAX_CONSTANT_L[c.name]} for "
                                f"{c.name}", c.pos)
        constant = Constant(c.name, tuple(c.params))
        return _Occ(str(constant), tuple(i.name for i in c.indices), c.pos, tuple(i.pos for i in c.indices), constant)

    def factor(self, f: ast.Factor) -> list[_Product]:
        f = replace(f, name=self._resolve(f.name, f.block, f.pos))
        if f.name in self.failed:
            raise _Skip(f.name)
        names = tuple(i.name for i in f.indices)
        ipos = tuple(i.pos for i in f.indices)
        if f.name not in self.defined:
            return [_Product(Fraction(1), (_Occ(f.name, names, f.pos, ipos),), f.pos)]
        # an earlier output: substitute its definition, renaming its indices
        lhs, products = self.defined[f.name]
        if len(names) != len(lhs):
            raise DiagTypeError(_arity_message(f.name, self.outputs[f.name].type, len(names)), f.pos)
        self.fresh += 1
        copy = self.fresh  # one number per substitution, told apart per label where two share a name
        result = []
        for p in products:
            rename = dict(zip(lhs, names))
            taken: set = set(names)
            occs = []
            for occ in p.factors:
                labels = []
                for i in occ.indices:
                    if i not in rename:
                        label = Renamed(base_name(i), copy)
                        while label in taken:  # i~1 and i~2 (two earlier copies) both met again: i~3, i~4
                            self.fresh += 1
                            label = Renamed(base_name(i), self.fresh)
                        rename[i] = label
                        taken.add(label)
                    labels.append(rename[i])
                occs.append(_Occ(occ.name, tuple(labels), occ.pos, occ.index_pos, occ.constant))
            result.append(_Product(p.coefficient, tuple(occs), f.pos))
        return result


def _blocks(p: ast.Param) -> list[ast.Param]:
    """An irreps parameter -> one ``sph(lp)[mul]`` parameter per block (``h_1o``); any other: itself."""
    if p.type.family != "irreps":
        return [p]
    return [ast.Param(f"{p.name}_{ir}", p.type.block_type(ir), p.pos, p.type_pos) for _, ir in p.type.blocks]


def lower_basis(decl: ast.Basis, group: str) -> Diagram:
    """A basis declaration -> a diagram whose outputs are the basis elements, stacked."""
    from ..tools.enumeration import EnumerationError, enumerate_degrees

    names = [i.param.name for i in decl.inputs]
    for p in [i.param for i in decl.inputs] + [decl.output]:
        if p.type.family == "irreps":
            raise DiagTypeError(f"a basis takes Cartesian and sph(lp) types, not {p.type}: enumerate per irrep "
                                "(each block of an irreps tensor is a sph(lp) with a channel axis)", p.type_pos)
    for i in decl.inputs:
        if i.param.type.family == "fn":
            raise DiagTypeError(f"input '{i.param.name}' of basis '{decl.name}' is a function: a basis enumerates "
                                "contractions of tensors; apply functions of invariants in a diagram",
                                i.param.type_pos)
    for k, i in enumerate(decl.inputs):
        if i.param.name in names[:k] or i.param.name == decl.output.name:
            raise DiagNameError(f"'{i.param.name}' is declared twice in basis '{decl.name}'", i.param.pos)
    specs = [(i.param.name, i.param.type, tuple(range(i.degree + 1)) if i.up_to else (i.degree,))
             for i in decl.inputs]
    out = decl.output
    try:
        found = enumerate_degrees(specs, out.type, group, out.name)
    except EnumerationError as err:
        raise DiagTypeError(err.message, decl.pos) from None
    if not found.elements:
        raise DiagTypeError(
            f"basis '{decl.name}' is empty: no equivariant contraction maps these inputs to {out.type} under "
            f"{group} (character theory: dimension 0)", decl.pos)
    equations, outputs = [], []
    for k, element in enumerate(found.elements):
        name = f"_e{k}"
        terms = tuple(TensorNetwork(t.coefficient, tuple(replace(n, pos=decl.pos)
                                                         for n in t.nodes), t.output, t.kinds, decl.pos)
                      for t in element.terms)
        equations.append(Equation(name, out.type, terms, decl.pos))
        outputs.append(Tensor(name, out.type, decl.pos))
    inputs = tuple(Tensor(i.param.name, i.param.type, i.param.pos) for i in decl.inputs)
    info = BasisInfo(Tensor(out.name, out.type, out.pos), tuple((i.degree, i.up_to) for i in decl.inputs),
                     tuple(e.words for e in found.elements))
    return Diagram(decl.name, group, inputs, tuple(outputs), tuple(equations), decl.pos, stacked=True, basis=info)


def _arity_message(name: str, typ, given: int) -> str:
    n_ch, n_geo = len(typ.channels), typ.n_geometric
    parts = []
    if n_ch:
        parts.append(f"{n_ch} channel")
    parts.append(f"{n_geo} geometric")
    want = n_ch + n_geo
    return (f"'{name}' of type {typ} has {want} ax{'is' if want == 1 else 'es'} ({' + '.join(parts)}) "
            f"but {given} ind{'ex is' if given == 1 else 'ices are'} given")
