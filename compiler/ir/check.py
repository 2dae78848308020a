"""The equivariance checker: a structural proof per term, and exact checks where structure is not enough.

Structural proof (the composition lemma): every node is equivariant (inputs by their declared type,
``delta`` since R Rᵀ = 1, ``eps`` since it picks up det R, weights carry no geometric leg), every
contracted geometric index joins exactly two legs of the same representation, and the open legs are
exactly the output's. Then the term is SO(3)-equivariant with the output's representation.

O(3) adds the inversion -I, which commutes with everything: a term scales by the product of the
inversion eigenvalues of its input occurrences ((-1)^r for a rank-r tensor, one more -1 for a
pseudotensor, p for a spherical ``lp``), which must equal the output's. For graded tensors
(e.g. TensorNet's 0e+1o+2e) the parts have different eigenvalues and the rule is decided exactly on
the whole equation instead (see :mod:`compiler.ir.exact`), as is every declared output symmetry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DiagWarning, EquivarianceError
from .exact import inversion_eigenvalues, is_zero, parity_violation, rank2_parts, symmetry_violation
from .program import Diagram, Equation, Program, TensorNetwork, label_text
from .types import Irrep, TensorType

_PART_NAMES = {0: "trace", 1: "antisymmetric", 2: "symmetric traceless"}


@dataclass(frozen=True)
class TermProof:
    """Why one term is equivariant: node lemmas, matched edges, parity product."""

    formula: str
    lemmas: tuple[str, ...]
    edges: tuple[str, ...]
    parity: int | None  # product of inversion eigenvalues, None when decided exactly


@dataclass(frozen=True)
class Verdict:
    """The checker's answer for one diagram."""

    diagram: str
    group: str
    signature: str
    proofs: tuple[TermProof, ...] = ()
    exact_checks: tuple[str, ...] = ()
    error: EquivarianceError | None = field(default=None)  # the first of ``errors``
    errors: tuple[EquivarianceError, ...] = ()  # one per equation that is not equivariant
    warnings: tuple[DiagWarning, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        if self.ok:
            n = len(self.proofs)
            return f"{self.diagram}: equivariant under {self.group}  {self.signature}  ({n} term{'s' * (n != 1)})"
        return str(self.error)


def check_program(program: Program) -> list[Verdict]:
    verdicts = [check_diagram(d) for d in program.diagrams]
    if program.composites:  # a diagram with function nodes: an input no stage uses is unused
        from dataclasses import replace

        from ..frontend.functions import unused_composite_inputs

        index = {v.diagram: k for k, v in enumerate(verdicts)}
        for c in program.composites:
            k = index.get(c.steps[-1])
            if k is None or any(isinstance(s, str) and s not in index for s in c.steps):
                continue  # a graph stage split into its parts (a certificate's program): warned when checked
            verdicts[k] = replace(verdicts[k], warnings=verdicts[k].warnings + unused_composite_inputs(c, program))
    return verdicts


def check_diagram(diagram: Diagram) -> Verdict:
    outputs = ", ".join(f"{t.name}: {t.type}" for t in diagram.outputs)
    if diagram.stacked:
        outputs = f"{len(diagram.outputs)} x {diagram.outputs[0].type}, stacked"
    signature = "(" + ", ".join(f"{t.name}: {t.type}" for t in diagram.inputs) + ") -> " + outputs
    proofs: list[TermProof] = []
    exact: list[str] = []
    errors: list[EquivarianceError] = []
    for eq in diagram.equations:  # every equation, so that each one's first problem is reported
        try:
            found = [_structural(diagram, eq, term) for term in eq.terms]
            exact += _exact(diagram, eq)
            proofs += found
        except EquivarianceError as err:
            errors.append(err)
    return Verdict(diagram.name, diagram.group, signature, tuple(proofs), tuple(exact),
                   errors[0] if errors else None, tuple(errors), unused_inputs(diagram))


def unused_inputs(diagram: Diagram) -> tuple[DiagWarning, ...]:
    """A warning for every input of a diagram that no term uses (legal, and usually a mistake)."""
    if diagram.stacked:
        return ()
    used = {n.name for eq in diagram.equations for t in eq.terms for n in t.nodes if n.kind == "input"}
    used |= {b for r in diagram.irreps if not r.output for b in r.blocks}  # a block may go unused
    # a stage of a graph diagram with functions takes every edge list (graph_stages): whether the
    # user's diagram uses each is the composite's question (unused_composite_inputs)
    passed = {t.name for t in diagram.inputs if diagram.origin and t.type.family == "edges"}
    return tuple(DiagWarning(f"input '{t.name}' of diagram '{diagram.shown_name}' is never used", t.pos,
                             "remove it, or use it in an equation (the function still takes it as an argument)")
                 for t in diagram.inputs if t.name not in used and t.name not in passed)


def _structural(diagram: Diagram, eq: Equation, term: TensorNetwork) -> TermProof:
    where = f"in '{diagram.shown_tensor(eq.target)}' of diagram '{diagram.shown_name}', term '{diagram.shown_formula(term)}'"
    lemmas = []
    for node in term.nodes:
        if node.kind == "delta":
            lemmas.append("delta: R delta R^T = R R^T = delta")
        elif node.kind == "eps":
            lemmas.append("eps: R⊗R⊗R eps = det(R) eps")
        elif node.kind == "cg":
            lemmas.append(f"{node.name}: real Wigner-3j, D^l1 ⊗ D^l2 ⊗ D^l3 C = C (SO(3)-invariant)")
        elif node.kind == "P":
            lemmas.append(f"{node.name}: D^l(R) P = P R^{{⊗l}} (isometry onto spherical l)")
        elif node.type.family == "weight":
            lemmas.append(f"{node.name}: weight, no geometric leg")
        elif node.type.family == "edges":
            lemmas.append(f"{node.name}: edge list (incidence matrix), no geometric leg: invariant")
        else:
            lemmas.append(f"{node.name}: input of type {node.type}")
    edges = []
    for index in term.indices():
        kind = term.kind(index)
        legs = term.legs(index)
        in_output = index in term.output
        if not kind.geometric:
            if in_output and not legs:
                raise EquivarianceError(
                    f"{where}: output channel index '{label_text(index)}' appears in no factor", term.pos)
            continue
        n = len(legs) + (1 if in_output else 0)
        if in_output and not legs:
            raise EquivarianceError(f"{where}: output index '{label_text(index)}' appears in no factor of the term",
                                    term.pos, _index_help(term, index))
        if n == 1:
            node = term.nodes[legs[0].node]
            raise EquivarianceError(
                f"{where}: index '{label_text(index)}' is on one leg only ({node.shown()}) and is not an output "
                "index; summing a single leg over its components is not equivariant", node.pos or term.pos,
                _index_help(term, index))
        if n > 2:
            node = term.nodes[legs[-1].node]
            owners = ", ".join(term.nodes[leg.node].shown() for leg in legs)
            extra = " and the output" if in_output else ""
            raise EquivarianceError(
                f"{where}: geometric index '{label_text(index)}' is on {n} legs ({owners}{extra}); a geometric index "
                "must join exactly two legs", node.pos or term.pos)
        if not in_output:
            a, b = legs
            edges.append(f"{label_text(index)}: {term.nodes[a.node].name} axis {a.axis} -- "
                         f"{term.nodes[b.node].name} axis {b.axis} ({kind})")
    parity = None
    if diagram.group == "O3" and not _graded(diagram, eq):
        parity = _term_parity(term)
        want = eq.type.inversion
        if parity != want:
            # terms of both parities into a rank-2 output: its parts differ (the graded type), not all flip
            mixed = eq.type.family == "cart" and eq.type.rank == 2 and len({_term_parity(t) for t in eq.terms}) > 1
            raise EquivarianceError(
                f"{where}: the term is {_parity_word(parity)} under inversion (product of its inputs' parities) "
                f"but output {eq.target}: {eq.type} is {_parity_word(want)}; under O3 they must agree "
                "(change the output type, or declare 'group SO3')", term.pos,
                _parity_help(eq, _actual_type(diagram, eq) if mixed else flipped(eq.type), diagram))
    return TermProof(term.formula(shown=True), tuple(lemmas), tuple(edges), parity)


def _index_help(term: TensorNetwork, index: str) -> str | None:
    """``did you mean 'j'?`` when the term has exactly one index on a single leg and exactly one
    output index in no factor, of the same kind: one of them is a misspelling of the other."""
    dangling, missing = [], []
    for i in term.indices():
        kind = term.kind(i)
        if not kind.geometric:
            continue
        legs = term.legs(i)
        if i in term.output and not legs:
            missing.append(i)
        elif i not in term.output and len(legs) == 1:
            dangling.append(i)
    if len(dangling) != 1 or len(missing) != 1 or term.kind(dangling[0]) != term.kind(missing[0]):
        return None
    (d,), (m,) = dangling, missing
    if index == d:
        return f"did you mean '{label_text(m)}'? (output index '{label_text(m)}' appears in no factor)"
    return f"did you mean '{label_text(m)}' where '{label_text(d)}' is written? ('{label_text(d)}' is on one leg only)"


def flipped(typ: TensorType) -> TensorType:
    """The type with every inversion parity reversed (vec -> axial, cart2(0e+1o+2e) -> cart2(0o+1e+2o))."""
    irrep = Irrep(typ.irrep.l, -typ.irrep.p) if typ.irrep is not None else None
    return TensorType(typ.family, typ.rank, typ.symmetry, tuple(-p for p in typ.parities), irrep, typ.channels)


def _parity_help(eq: Equation, want: TensorType | None, diagram: Diagram | None = None) -> str | None:
    if want is None:
        return None
    for r in diagram.irreps if diagram is not None else ():
        if eq.target in r.blocks and want.family in ("sph", "cart") and want.channels == eq.type.channels:
            new = Irrep(eq.type.parts[0].l if want.family == "sph" else 0,
                        want.irrep.p if want.family == "sph" else (-1 if want.pseudo else 1))
            k = r.blocks.index(eq.target)
            blocks = r.type.blocks[:k] + ((r.type.blocks[k][0], new),) + r.type.blocks[k + 1:]
            shown = "+".join(f"{m}x{ir}" for m, ir in blocks)
            return f"declare '{r.name}: irreps({shown})' (or 'group SO3' if reflections do not matter)"
    return f"declare '{eq.target}: {want}' (or 'group SO3' if reflections do not matter)"


def _term_parity(term: TensorNetwork) -> int:
    parity = 1
    for node in term.nodes:
        if node.kind == "input":
            parity *= node.type.inversion
    return parity


def _parity_word(p: int) -> str:
    return "even (+1)" if p == 1 else "odd (-1)"


def _graded(diagram: Diagram, eq: Equation) -> bool:
    if eq.type.graded:
        return True
    used = {node.name for term in eq.terms for node in term.nodes if node.kind == "input"}
    return any(t.type.graded for t in diagram.inputs if t.name in used)


def _exact(diagram: Diagram, eq: Equation) -> list[str]:
    done = []
    problem, how = symmetry_violation(diagram, eq)
    if problem is not None:
        raise EquivarianceError(
            f"output '{diagram.shown_tensor(eq.target)}' of diagram '{diagram.shown_name}' is declared {eq.type} but its right-hand side "
            f"is not {problem} (decided {how}, using the inputs' symmetries)", eq.pos)
    if eq.type.family == "cart" and eq.type.symmetry:
        done.append(f"{eq.target}: declared symmetry {eq.type.base_name()} holds ({how})")
    if diagram.group == "O3" and _graded(diagram, eq):
        per_term, how = parity_violation(diagram, eq)
        total = per_term[0]
        for v in per_term[1:]:
            total = total + v
        if not is_zero(total):
            _raise_graded(diagram, eq, per_term, total)
        done.append(f"{eq.target}: commutes with the inversion ({how}, graded parts)")
    return done


def _raise_graded(diagram, eq, per_term, total):
    typ = eq.type
    if typ.family == "cart" and typ.rank == 2:
        parts = dict(zip((0, 1, 2), rank2_parts(total)))
        bad = [ir for ir in typ.parts if not is_zero(parts[ir.l])]
        if bad:
            ir = bad[0]
            culprit = next((t for t, v in zip(eq.terms, per_term) if not is_zero(rank2_parts(v)[ir.l])),
                           eq.terms[0])
            what = f"the {_PART_NAMES[ir.l]} ({ir}) part of '{eq.target}'"
        else:
            culprit = next((t for t, v in zip(eq.terms, per_term) if not is_zero(v)), eq.terms[0])
            what = f"'{eq.target}' ({typ})"
    else:
        culprit = next((t for t, v in zip(eq.terms, per_term) if not is_zero(v)), eq.terms[0])
        what = f"'{eq.target}' ({typ})"
    raise EquivarianceError(
        f"in diagram '{diagram.shown_name}': {what} does not transform as declared under inversion; "
        f"term '{culprit.formula(shown=True)}' mixes parities (decided exactly; under O3 every part must keep "
        "its declared parity, or declare 'group SO3')", culprit.pos or eq.pos,
        _parity_help(eq, _actual_type(diagram, eq), diagram))


def _actual_type(diagram: Diagram, eq: Equation) -> TensorType | None:
    """The output type the right-hand side really has under inversion, or None if no type fits."""
    signs = inversion_eigenvalues(diagram, eq)
    if None in signs:
        return None
    typ = eq.type
    if typ.family == "cart" and typ.rank == 2:
        return TensorType("cart", 2, typ.symmetry, signs, None, typ.channels)
    (sign,) = signs
    if typ.family == "sph":
        return TensorType("sph", irrep=Irrep(typ.irrep.l, sign), channels=typ.channels)
    if typ.family == "cart":
        return TensorType("cart", typ.rank, typ.symmetry, (sign * (-1) ** typ.rank,), None, typ.channels)
    return None
