"""Functions of invariants in a diagram: lowering and the proof that every argument is invariant.

A scalar function of invariants is invariant, so ``s[c] = silu(X[c,i,j] X[c,i,j]) Y[c,k,k]`` is
equivariant whatever the function is. A diagram with function applications is lowered into stages
(:class:`~compiler.ir.program.Composite`): the arguments of the innermost applications are the outputs of a
first pure diagram (``_NAME_s0``), each application turns them into results (elementwise over batch
and channel axes), the results are inputs of the next stage, and the last stage computes the declared
outputs. Every stage is an ordinary diagram, checked, planned, emitted and differentiated as any
other; the function nodes themselves are axioms (a result is invariant by its type, ``scalar``).

Which indices of an argument are its own: a channel index that is also written outside the call,
anywhere in the same equation (on the left-hand side or in any other factor), passes through the
function elementwise; every other channel index is summed inside the argument. A geometric index on
one leg inside an argument gives it a rank: refused (a function of a vector is not equivariant); one
on two legs is contracted inside. Under O3 an argument must be even (a scalar); an odd scalar (a pseudoscalar) may go
only into an odd function (``tanh`` and the reciprocal ``1/x``), whose result is then a pseudoscalar.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import chain

from . import ast
from ..errors import DiagNameError, DiagTypeError, EquivarianceError, Position
from ..ir.program import (BUILTIN_FUNCTIONS, Apply, Composite, Diagram, Equation, FnInput, Sum, Tensor, base_name,
                          sum_formula)
from ..ir.types import TensorType

#: what a message calls a built-in (``recip`` is the division ``a / (expr)``)
_SHOWN = {"recip": "1/x (a division)"}


def shown(name: str) -> str:
    return _SHOWN.get(name, name)


def _written(expr):
    """The index names of ``expr``, one each time an index is written, in the order they are written."""
    stack = [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, (ast.Factor, ast.Constant)):
            yield from (i.name for i in e.indices)
        elif isinstance(e, ast.Neg):
            stack.append(e.operand)
        elif isinstance(e, ast.BinOp):
            stack += [e.right, e.left]
        elif isinstance(e, ast.Call):
            stack += list(reversed(e.args))


def index_counts(expr, lhs=()) -> dict[str, int]:
    """How often each index name is written in ``expr`` (and on the left-hand side ``lhs``)."""
    return dict(Counter(chain((index.name for index in lhs), _written(expr))))


@dataclass(frozen=True)
class CallSite:
    """One distinct application while lowering: its argument equations (outputs of a stage), its
    results (inputs of later stages), and its level (1 + the deepest application it reads)."""

    function: str
    builtin: bool
    arguments: tuple[Equation, ...]
    results: tuple[Tensor, ...]
    channels: tuple[tuple[int, ...], ...]
    level: int
    pos: Position
    sums: tuple[Sum, ...] = ()  # arguments whose terms carry different channel indices, summed
    text: str = ""  # the call as the user wrote it, ``tanh(f[e,c])``: what messages show for its tensors


def lower_call(lw, c: ast.Call):
    """The factor that stands for ``c`` in its product (a result of the application, with the
    channel indices that pass through); records the application on the lowering ``lw``."""
    from .lower import _Occ

    d = lw.d
    builtin = c.name in BUILTIN_FUNCTIONS
    if builtin:
        n_in, n_out = 1, 1
    elif c.name in lw.fns:
        typ = lw.fns[c.name].type
        n_in, n_out = typ.n_in, typ.n_out
    elif c.name in lw.inputs or c.name in lw.outputs or c.name in ("delta", "eps"):
        raise DiagTypeError(f"'{c.name}' is a tensor, not a function", c.pos,
                            f"for a product write '{c.name}[...] (...)' or '{c.name} (...)' with a space")
    else:
        from .parser import did_you_mean

        known = [n for n in BUILTIN_FUNCTIONS if n != "recip"] + list(lw.fns)
        raise DiagNameError(f"unknown function '{c.name}' in diagram '{d.name}' (built-ins: "
                            f"{', '.join(n for n in BUILTIN_FUNCTIONS if n != 'recip')}; or declare "
                            f"'{c.name}: fn(n -> m)' among the inputs)", c.pos, did_you_mean(c.name, known))
    if len(c.args) != n_in:
        what = "takes 1 argument" if builtin else f"is declared fn({n_in} -> {n_out}): it takes {n_in} argument" + \
            "s" * (n_in != 1)
        raise DiagTypeError(f"'{c.name}' {what} but {len(c.args)} {'is' if len(c.args) == 1 else 'are'} given", c.pos)
    if c.select is not None and (builtin or not 0 <= c.select < n_out):
        why = "gives one value" if builtin else f"gives {n_out} value{'s' * (n_out != 1)} (0 to {n_out - 1})"
        raise DiagTypeError(f"'{c.name}(...)[{c.select}]': {shown(c.name)} {why}", c.pos)
    if c.select is None and n_out > 1:
        raise DiagTypeError(f"'{c.name}' gives {n_out} values: pick one by number, "
                            f"{c.name}(...)[k] with k from 0 to {n_out - 1}", c.pos)
    select = c.select or 0
    written = [name for a in c.args for name in _written(a)]  # one walk: counts and first-seen order
    inside = Counter(written)
    order = list(dict.fromkeys(written))
    through = [n for n in order if lw.eq_counts.get(n, 0) > inside[n]]  # also written outside the call
    arg_products = [lw.expand(a) for a in c.args]
    key = (c.name, tuple(through), tuple(tuple((p.coefficient, tuple((o.name, o.indices, o.constant)
                                                                       for o in p.factors))
                                              for p in products) for products in arg_products))
    for site, site_key, labels in lw.call_keys:
        if site_key == key:
            return _Occ(site.results[select].name, labels, c.pos, tuple(c.pos for _ in labels))
    n = len(lw.calls)
    arguments, kinds, arg_labels, level = [], {}, [], 0
    for k, (a, products) in enumerate(zip(c.args, arg_products)):
        where = f"argument {k + 1} of {shown(c.name)}" if n_in > 1 or not builtin else f"the argument of {shown(c.name)}"
        probe = ast.Equation("", (), a, a.pos)
        nets = [lw.network(p, (), (), probe) for p in products]
        text = sum_formula(nets)
        for net in nets:
            for index in net.indices():
                kind = net.kind(index)
                kinds[index] = kind
                if kind.geometric and len(net.legs(index)) == 1:
                    free = sorted({base_name(i) for i in net.indices()
                                   if net.kind(i).geometric and len(net.legs(i)) == 1})
                    raise EquivarianceError(
                        f"{where}, '{text}', has rank {len(free)} (free geometric ind"
                        f"{'ex' if len(free) == 1 else 'ices'} {', '.join(repr(i) for i in free)}): a function "
                        "applies to invariants only (rank 0, even parity)", a.pos,
                        "contract every leg inside the argument, e.g. a[i] a[i] or X[i,i]")
            for node in net.nodes:
                for s in lw.calls:
                    if any(r.name == node.name for r in s.results):
                        level = max(level, s.level + 1)
        mine = tuple(i for i in through if any(i in net.indices() and not net.kind(i).geometric for net in nets))
        groups: dict[tuple[str, ...], list] = {}  # terms by the channel indices they carry (1 + v[c,k] v[c,k])
        for net in nets:
            groups.setdefault(tuple(i for i in mine if i in net.indices()), []).append(net)
        parts = [(labels_, [replace_output(net, labels_) for net in group]) for labels_, group in groups.items()]
        arg_labels.append(mine)
        dims = tuple(kinds[i].dim for i in mine)
        arguments.append((where, a.pos, parts, mine, dims, text))
    labels = tuple(i for i in through if any(i in m for m in arg_labels))
    dims = tuple(kinds[i].dim for i in labels)
    equations, sums, odd = [], [], False
    for k, (where, pos, parts, mine, arg_dims, text) in enumerate(arguments):
        parities = []
        for part_labels, nets in parts:
            part_dims = tuple(kinds[i].dim for i in part_labels)
            parities.append(_parity(lw, where, pos, nets, part_dims, c, text))
        if len(set(parities)) > 1:
            raise EquivarianceError(f"{where}, '{text}', adds a scalar and a pseudoscalar: it has no parity", pos,
                                    "every term of an argument must be even (or every one odd, into tanh or 1/x)")
        parity = parities[0]
        odd = odd or parity < 0
        typ = TensorType("cart", 0, "", (parity,), None, arg_dims)
        name = f"_{d.name}_a{n}_{k}"
        if len(parts) == 1 and parts[0][0] == mine:
            equations.append(Equation(name, typ, tuple(parts[0][1]), pos))
            continue
        pieces = []
        for j, (part_labels, nets) in enumerate(parts):
            part_type = TensorType("cart", 0, "", (parity,), None, tuple(kinds[i].dim for i in part_labels))
            equations.append(Equation(f"{name}_p{j}", part_type, tuple(nets), pos))
            pieces.append((Tensor(f"{name}_p{j}", part_type, pos), tuple(mine.index(i) for i in part_labels)))
        sums.append(Sum(Tensor(name, typ, pos), tuple(t for t, _ in pieces), tuple(ch for _, ch in pieces), pos))
    result_type = TensorType("cart", 0, "", (-1 if odd else 1,), None, dims)
    if builtin:
        results = (Tensor(f"_{d.name}_f{n}", result_type, c.pos),)
    else:
        results = tuple(Tensor(f"_{d.name}_f{n}_{j}", result_type, c.pos) for j in range(n_out))
    for r in results:
        lw.results[r.name] = r.type
    channels = tuple(tuple(labels.index(i) for i in m) for m in arg_labels)
    texts = ", ".join(text for *_, text in arguments)
    call_text = f"1/({texts})" if c.name == "recip" else f"{c.name}({texts})"
    site = CallSite(c.name, builtin, tuple(equations), results, channels, level, c.pos, tuple(sums), call_text)
    lw.calls.append(site)
    lw.call_keys.append((site, key, labels))
    return _Occ(results[select].name, labels, c.pos, tuple(c.pos for _ in labels))


def replace_output(net, output):
    from dataclasses import replace

    return replace(net, output=tuple(output))


def _parity(lw, where, pos, nets, dims, c: ast.Call, text) -> int:
    """+1 if the argument is a scalar, -1 if a pseudoscalar (allowed only into an odd built-in);
    EquivarianceError naming the argument otherwise."""
    from ..ir.check import check_diagram

    used = {n.name for net in nets for n in net.nodes if n.kind == "input"}
    inputs = tuple(Tensor(name, p.type, p.pos) for name, p in lw.inputs.items() if name in used)
    inputs += tuple(Tensor(name, typ) for name, typ in lw.results.items() if name in used)
    verdicts = {}
    for parity in (1, -1):
        typ = TensorType("cart", 0, "", (parity,), None, dims)
        probe = Diagram(lw.d.name, lw.group, inputs, (Tensor(where, typ, pos),), (Equation(where, typ, tuple(nets), pos),),
                        pos)
        verdicts[parity] = check_diagram(probe)
        if verdicts[parity].ok:
            break
    if verdicts[1].ok:
        return 1
    odd_ok = c.name in BUILTIN_FUNCTIONS and BUILTIN_FUNCTIONS[c.name]
    if verdicts[-1].ok and lw.group == "O3":
        if odd_ok:
            return -1
        raise EquivarianceError(
            f"{where}, '{text}', is an odd scalar (a pseudoscalar: rank 0, parity -1); {shown(c.name)} takes "
            "invariants only (rank 0, parity +1)", pos,
            "only the odd functions tanh and 1/x take a pseudoscalar (their result is one); square it, or "
            "multiply it by another pseudoscalar")
    err = verdicts[1].error
    raise EquivarianceError(f"{where}, '{text}', is not invariant: {err.message}", err.position or pos, err.help)


def stages(lw, diagram: Diagram) -> tuple[Composite, list[Diagram]]:
    """The composite of a lowered diagram with applications, and its stage diagrams in order."""
    d = lw.d
    name = d.name
    types = {t.name: t for t in diagram.inputs}
    results = {r.name: r for s in lw.calls for r in s.results}

    def used_inputs(equations) -> tuple[Tensor, ...]:
        used = {n.name for eq in equations for t in eq.terms for n in t.nodes if n.kind == "input"}
        return tuple(t for t in diagram.inputs if t.name in used) + \
            tuple(r for r in results.values() if r.name in used)

    shown_tensors = []  # every internal tensor -> the call it belongs to, as the user wrote it
    for s in lw.calls:
        shown_tensors += [(eq.target, s.text) for eq in s.arguments]
        shown_tensors += [(t.target.name, s.text) for t in s.sums]
        shown_tensors += [(r.name, s.text + (f"[{j}]" if len(s.results) > 1 else "")) for j, r in enumerate(s.results)]
    shown_tensors = tuple(shown_tensors)
    top = max((s.level for s in lw.calls), default=-1)
    steps, parts = [], []
    for level in range(top + 1):
        sites = [s for s in lw.calls if s.level == level]
        eqs = tuple(eq for s in sites for eq in s.arguments)
        outputs = tuple(Tensor(eq.target, eq.type, eq.pos) for eq in eqs)
        stage = Diagram(f"_{name}_s{level}", diagram.group, used_inputs(eqs), outputs, eqs, diagram.pos,
                        origin=name, shown_tensors=shown_tensors)
        parts.append(stage)
        steps.append(stage.name)
        for s in sites:
            steps += list(s.sums)
            summed = {t.target.name: t.target for t in s.sums}
            pieces = {p.name for t in s.sums for p in t.parts}
            arguments = tuple(Tensor(eq.target, eq.type, eq.pos) for eq in s.arguments if eq.target not in pieces)
            arguments += tuple(summed.values())
            arguments = tuple(sorted(arguments, key=lambda t: int(t.name.rpartition("_")[2])))
            steps.append(Apply(s.function, s.builtin, arguments, s.results, s.channels, s.pos))
    last = Diagram(f"_{name}_s{top + 1}", diagram.group, used_inputs(diagram.equations), diagram.outputs,
                   diagram.equations, diagram.pos, origin=name, shown_tensors=shown_tensors)
    parts.append(last)
    steps.append(last.name)
    inputs = []
    for p in d.inputs:
        if isinstance(p.type, ast.FnType):
            inputs.append(FnInput(p.name, p.type.n_in, p.type.n_out, p.pos))
        else:
            inputs.append(types[p.name])
    return Composite(name, diagram.group, tuple(inputs), diagram.outputs, tuple(steps), diagram.pos), parts


def unused_composite_inputs(c: Composite, program) -> tuple:
    """A warning for every declared input (array or function) of a diagram with function nodes that
    none of its stages or applications uses."""
    from ..errors import DiagWarning

    stages = {d.name: d for d in program.diagrams}
    used = set()
    for step in c.steps:
        if isinstance(step, Apply):
            used.add(step.function)
        elif isinstance(step, str):  # what its terms read (a graph stage takes every edge list)
            used |= {n.name for eq in stages[step].equations for t in eq.terms for n in t.nodes if n.kind == "input"}
    return tuple(DiagWarning(f"input '{t.name}' of diagram '{c.name}' is never used", t.pos,
                             "remove it, or use it in an equation (the function still takes it as an argument)")
                 for t in c.inputs if t.name not in used)


def composite_summary(c: Composite) -> str:
    """One line for ``diagc check``: the functions applied and the stages that are checked."""
    applied = [shown(s.function) for s in c.steps if isinstance(s, Apply)]
    stages = [s for s in c.steps if isinstance(s, str)]
    return (f"{c.name}: functions of invariants ({', '.join(applied)}: invariant by type), "
            f"{len(stages)} checked stage{'s' * (len(stages) != 1)}:")
