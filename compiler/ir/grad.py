"""Derivatives as diagrams: the vector-Jacobian product of a diagram is again a diagram.

A term ``c × Π nodes`` is linear in each node, so its derivative with respect to one occurrence of
an input X is the same network with that node taken out: its legs become the open legs of the
result, and the output's cotangent ``d_Y`` (a new input, one leg per output axis) is plugged into
the legs the output had. Summing over every occurrence of X in every term of every output gives the
cotangent of X; like terms combine and deltas fold (the planner's :func:`~compiler.planning.plan.combine`
and :func:`~compiler.planning.plan.eliminate_deltas`). The result is an ordinary :class:`~compiler.ir.program.Diagram`
(checked, planned, fused and emitted like any other), so the VJP of the VJP, the second-order
network, is obtained the same way.

Conventions:

* ``vjp_diagram(D)`` is named ``D_vjp``; its inputs are D's inputs, then one cotangent per output
  (``d_<output>``), its outputs the cotangent of every input in declaration order (``d_<input>``,
  zeros for an input the outputs do not depend on).
* The derivative is the plain partial derivative of the formula as written, component by component,
  as autograd gives it: for a ``sym2`` input X the formula ``X[i,j] a[i] b[j]`` has cotangent
  ``a[i] b[j]``, which is not symmetric. So a cotangent (input or output) of a symmetric, skew or
  traceless type is declared with the general rank-2 type (parts that the symmetric type lacks get
  the parity the checker proves); a weight's cotangent is a ``scalar`` with the weight's channels.
* A diagram's inputs broadcast over their leading (batch) axes; each output of a VJP records in
  :attr:`~compiler.ir.program.Diagram.sum_to` the input whose shape it is summed to (a weight shared by a
  batch gets the sum of the per-element cotangents, as autograd gives).
"""

from __future__ import annotations

from fractions import Fraction

from ..errors import DiagError, DiagNameError
from .program import DELTA_TYPE, Diagram, Equation, Node, Program, Renamed, Tensor, TensorNetwork, base_name, signed_sum
from .types import RANK2_PARTS, TensorType

#: suffix of the derivative function of a diagram; the second order adds it twice
SUFFIX = "_vjp"
_GEOMETRIC_LABELS = "ijklmnpqrstuvwxyzabefgh"


def vjp_name(name: str) -> str:
    return name + SUFFIX


def cotangent_name(name: str, taken) -> str:
    """``d_<name>``, with more ``d`` prefixes until it is free."""
    new = f"d_{name}"
    while new in taken:
        new = "d" + new
    return new


def general_types(typ: TensorType) -> list[TensorType]:
    """The types a cotangent of ``typ`` may be declared with, best first: ``typ`` itself when it has
    no symmetry; for a symmetric/skew/traceless rank-2 type the general rank-2 type with the same
    parities on the parts ``typ`` has, the missing parts tried with each parity (uniform first);
    for a weight, an invariant scalar with the weight's channels."""
    if typ.family == "weight":
        return [TensorType("cart", 0, "", (1,), channels=typ.channels)]
    if typ.family == "cart" and typ.rank >= 3 and typ.symmetry:  # symt(l): the general rank-l type
        return [TensorType("cart", typ.rank, "", typ.parities, channels=typ.channels)]
    if typ.family != "cart" or typ.rank != 2 or not typ.symmetry:
        return [typ]
    have = dict(zip(RANK2_PARTS[typ.symmetry], typ.parities))
    missing = [l for l in (0, 1, 2) if l not in have]
    signs = list(dict.fromkeys(list(have.values()) + [1, -1]))
    out = []
    import itertools

    for choice in itertools.product(signs, repeat=len(missing)):
        parts = {**have, **dict(zip(missing, choice))}
        t = TensorType("cart", 2, "", tuple(parts[l] for l in (0, 1, 2)), channels=typ.channels)
        if t not in out:
            out.append(t)
    return out


class NoDerivative(DiagError):
    """A diagram whose derivative is not a network of the language: an input with a channel index
    repeated, or one whose channel axis is summed alone (its cotangent is constant along it)."""


def vjp_diagram(diagram: Diagram, name: str | None = None, wrt: tuple[str, ...] | None = None) -> Diagram:
    """The VJP of ``diagram`` as a diagram (see the module docstring): the cotangent of every input,
    or of the inputs named in ``wrt`` only. Raises DiagError when a term has no derivative network
    (an input with a repeated channel index)."""
    from ..planning.plan import combine, eliminate_deltas

    taken = {t.name for t in diagram.inputs} | {t.name for t in diagram.outputs}
    cotangents = []
    for out in diagram.outputs:
        c = cotangent_name(out.name, taken)
        taken.add(c)
        cotangents.append(Tensor(c, general_types(out.type)[0], out.pos))
    grads = []
    for inp in diagram.inputs:
        g = cotangent_name(inp.name, taken)
        taken.add(g)
        grads.append(g)
    cot_of = {eq.target: cot for eq, cot in zip(diagram.equations, cotangents)}
    equations = []
    for inp, g in zip(diagram.inputs, grads):
        if wrt is not None and inp.name not in wrt:
            continue
        lhs = _lhs(inp.type)
        terms = []
        for eq in diagram.equations:
            for term in eq.terms:
                for n, node in enumerate(term.nodes):
                    if node.kind == "input" and node.name == inp.name:
                        terms.append(_derivative(term, n, cot_of[eq.target], lhs, diagram))
        reduced = combine(eliminate_deltas(t) for t in terms)
        if not reduced:  # no dependence (or everything cancels): zero of the input's shape
            kinds = tuple(zip(lhs, _axis_kinds(inp.type)))
            reduced = [TensorNetwork(Fraction(0), (Node("input", inp.name, inp.type, lhs, inp.pos),), lhs,
                                     kinds, inp.pos)]
        else:
            reduced = [_relabel(t, lhs) for t in reduced]
            for t in reduced:
                alone = [i for i in t.output if not t.kind(i).geometric and not t.legs(i)]
                if alone:
                    raise NoDerivative(f"diagram '{diagram.name}': no derivative network for input '{inp.name}': "
                                       f"its channel axis '{t.kind(alone[0]).dim}' is summed alone, so its "
                                       "cotangent is constant along it", inp.pos)
        equations.append((g, inp, tuple(reduced)))
    inputs = diagram.inputs + tuple(cotangents)
    outputs, eqs = [], []
    for g, inp, terms in equations:
        typ = _checked_type(diagram, inputs, g, inp, terms)
        outputs.append(Tensor(g, typ, inp.pos))
        eqs.append(Equation(g, typ, terms, inp.pos))
    return Diagram(name or vjp_name(diagram.name), diagram.group, inputs, tuple(outputs), tuple(eqs),
                   diagram.pos, sum_to=tuple(inp.name for _, inp, _ in equations), in_runs=diagram.in_runs)


def _axis_kinds(typ: TensorType):
    from .program import axis_kinds

    return axis_kinds(typ)


def _lhs(typ: TensorType) -> tuple[str, ...]:
    """Index labels for an output of type ``typ``: its channel names, then i, j, k..."""
    labels = []
    for k, c in enumerate(typ.channels):  # a fixed size (weight[8,1,8]) is no label: u0, u1, ...
        label = c
        if not isinstance(c, str):
            label = f"u{k}"
            while label in labels or label in typ.channels:
                label += "_"
        labels.append(label)
    geo = [x for x in _GEOMETRIC_LABELS if x not in labels]
    return tuple(labels + geo[:typ.n_geometric])


def _derivative(term: TensorNetwork, n: int, cot: Tensor, lhs, diagram: Diagram) -> TensorNetwork:
    """``term`` without node ``n``, the cotangent on the output's legs; the node's legs are open
    (a leg repeated on the node, a trace, gets a fresh label joined by a delta)."""
    node = term.nodes[n]
    kinds = dict(term.kinds)
    used = set(kinds)
    out, deltas = [], []
    for index in node.indices:
        if index not in out:
            out.append(index)
            continue
        if not kinds[index].geometric:
            raise NoDerivative(f"diagram '{diagram.name}': no derivative network for '{node}': a channel index "
                            "repeated on one input", node.pos or term.pos)
        k = 1
        while Renamed(base_name(index), k, leg=True) in used:
            k += 1
        fresh = Renamed(base_name(index), k, leg=True)
        used.add(fresh)
        kinds[fresh] = kinds[index]
        out.append(fresh)
        deltas.append(Node("delta", "delta", DELTA_TYPE, (index, fresh), node.pos))
    nodes = term.nodes[:n] + term.nodes[n + 1:] + (Node("input", cot.name, cot.type, term.output, cot.pos),) \
        + tuple(deltas)
    order = {}
    for x in nodes:
        for i in x.indices:
            order.setdefault(i, kinds[i])
    for i in out:
        order.setdefault(i, kinds[i])
    return TensorNetwork(term.coefficient, nodes, tuple(out), tuple(order.items()), term.pos)


def _relabel(term: TensorNetwork, lhs: tuple[str, ...]) -> TensorNetwork:
    """The same term with output labels ``lhs`` and every other label a plain name (no renamed ones),
    so that it prints as .diag text that parses back."""
    rename = dict(zip(term.output, lhs))
    taken = set(lhs)
    for index in term.indices():
        if index in rename:
            continue
        base = base_name(index)
        new, k = base, 1
        while new in taken:
            new, k = f"{base}{k}", k + 1
        rename[index] = new
        taken.add(new)
    nodes = tuple(Node(x.kind, x.name, x.type, tuple(rename[i] for i in x.indices), x.pos, x.constant) for x in term.nodes)
    kinds = tuple((rename[i], k) for i, k in term.kinds if i in rename)
    return TensorNetwork(term.coefficient, nodes, tuple(lhs), kinds, term.pos)


def _checked_type(diagram: Diagram, inputs, g: str, inp: Tensor, terms) -> TensorType:
    """The first candidate type for the cotangent of ``inp`` under which its equation checks."""
    from .check import check_diagram

    candidates = general_types(inp.type)
    if len(candidates) == 1:
        return candidates[0]
    for typ in candidates:
        probe = Diagram(diagram.name, diagram.group, inputs, (Tensor(g, typ),), (Equation(g, typ, terms),))
        if check_diagram(probe).ok:
            return typ
    # no declared type holds it (a product of graded inputs whose parts mix parities): no derivative
    # diagram; NAME stays differentiable by autograd through its planned code
    raise NoDerivative(f"the cotangent of '{inp.name}' has no declared type under which it checks")


def derivatives(diagram: Diagram, second: bool = True) -> tuple[Diagram, ...]:
    """``NAME_vjp`` and ``NAME_vjp_vjp`` of a diagram (only the first with ``second=False``; none for
    a stacked basis, a diagram without inputs, or one with no derivative network, see NoDerivative)."""
    if diagram.stacked or not diagram.inputs:
        return ()
    try:
        first = vjp_diagram(diagram)
        return (first, vjp_diagram(first)) if second else (first,)
    except NoDerivative:  # the emitted NAME stays differentiable by autograd through its planned code
        return ()


def with_derivatives(program: Program, checked: bool = False, second: bool = True) -> Program:
    """The program with the derivative diagrams of each diagram after it. A diagram of the program
    named like a derivative is taken as that derivative when it is the same (inputs, outputs and
    networks, as ``diagc grad`` prints it: the ``--order 2`` text compiles back), and replaced by the
    generated one (which also sums to broadcast inputs' shapes); otherwise it is a DiagNameError.
    With ``checked``, every derivative is run through the checker (a failure is a bug of this
    module: DiagError)."""
    from dataclasses import replace

    from .check import check_diagram

    names = {d.name: d for d in program.diagrams}
    derived = {d.name: derivatives(d, second) for d in program.diagrams}
    spelled = set()  # diagrams of the program that are a derivative of another one
    for d in program.diagrams:
        for v in derived[d.name]:
            existing = names.get(v.name)
            if existing is None:
                continue
            if not same_diagram(existing, v):
                raise DiagNameError(f"diagram '{v.name}' clashes with the derivative of diagram '{d.name}' "
                                    "(emitted beside it); rename it", existing.pos)
            spelled.add(v.name)
    out = []
    for d in program.diagrams:
        if d.name in spelled:  # emitted as generated, after the diagram it derives
            continue
        out.append(d)
        for v in derived[d.name]:
            if checked:
                verdict = check_diagram(v)
                if not verdict.ok:
                    raise DiagError(f"internal error: the derivative '{v.name}' does not check: "
                                    f"{verdict.error.message}", d.pos)
            out.append(v)
    return replace(program, diagrams=tuple(out))


def same_diagram(a: Diagram, b: Diagram) -> bool:
    """Whether two diagrams declare the same inputs and outputs and compute the same networks
    (like terms combined, deltas folded, equal up to index renaming)."""
    from ..planning.plan import combine, eliminate_deltas

    if (a.group, a.inputs, a.outputs, a.stacked) != (b.group, b.inputs, b.outputs, b.stacked):
        return False
    for x, y in zip(a.equations, b.equations):
        terms = [{t.shape_key(): t.coefficient for t in combine(eliminate_deltas(t) for t in eq.terms)}
                 for eq in (x, y)]
        if x.target != y.target or terms[0] != terms[1]:
            return False
    return True


def diag_text(diagrams, group: str, header: str = "") -> str:
    """Diagrams printed in .diag syntax (parses back to the same networks)."""
    lines = [header] if header else []
    lines += [f"group {group}", ""]
    for d in diagrams:
        sig = ", ".join(f"{t.name}: {t.type}" for t in d.inputs)
        outs = [f"{t.name}: {t.type}" for t in d.outputs]
        outs_text = outs[0] if len(outs) == 1 else "(" + ", ".join(outs) + ")"
        lines.append(f"diagram {d.name}({sig}) -> {outs_text} {{")
        for eq in d.equations:
            lhs = eq.terms[0].output
            target = f"{eq.target}[{','.join(lhs)}]" if lhs else eq.target
            lines.append(f"    {target} = {_sum_text(eq.terms)}")
        lines.append("}")
        lines.append("")
    return "\n".join(lines)


def _sum_text(terms) -> str:
    """The terms in .diag syntax (a zero term keeps its factors, so its indices stay declared)."""
    def formula(t):
        if t.coefficient == 0:
            return "0 * " + " ".join(str(n) for n in t.nodes)
        return t.formula() if t.nodes else str(t.coefficient)
    return signed_sum(formula(t) for t in terms)
