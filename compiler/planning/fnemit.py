"""A diagram with function nodes (:class:`~compiler.ir.program.Composite`) lowered to emit-program
functions (:class:`~compiler.planning.emit.ChainFunction`), which the Python printer prints.

Its stages are ordinary diagrams, emitted by :mod:`compiler.targets.python.codegen` as private functions
(``_NAME_s0`` ...); this module writes the public function that chains them (argument checks, the
stages, the function applications between them) and its derivative ``NAME_vjp`` (the chain rule:
each stage's generated VJP in reverse, the functions' derivatives between them). What runs between
the stages is in :mod:`compiler.targets.python.runtime`: the built-ins and their derivatives as backend methods
(``_b.silu``, ``_b.silu_vjp``, ...), user functions through ``_apply_fn`` / ``_apply_fn_vjp``,
autograd of the whole chain through ``_composite_vjp``; a module copies them only when reached.
"""

from __future__ import annotations

from .emit import Assign, Call, ChainFunction, Evaluate, Int, Invoke, Item, Literal, Ref, Return, SignedSum, Str, Tuple
from ..ir.grad import cotangent_name, vjp_name
from ..ir.program import Apply, Composite, FnInput, Program, StageCall, Sum, Tensor
from ..ir.types import FixedSize

#: the keyword arguments every emitted function takes (the stages are called with them)
_OPTIONS = (("fused", Literal(False)), ("kernels", Literal(True)))
_PASSED = (("fused", Ref("fused")), ("kernels", Ref("kernels")))
_B = Ref("_b")


def _signature(c: Composite) -> tuple[list, list]:
    """(the array arguments, the function arguments); an edge list (a graph diagram's index array,
    passed to the stages that use it) is neither: no shape of its own to check, no cotangent."""
    tensors = [t for t in c.inputs if isinstance(t, Tensor) and not _is_edges(t)]
    fns = [t for t in c.inputs if isinstance(t, FnInput)]
    return tensors, fns


def _is_edges(t) -> bool:
    return isinstance(t, Tensor) and t.type.family == "edges"


def _declared(f: FnInput) -> str:
    return f"fn({f.n_in} -> {f.n_out})"


def composite_doc(c: Composite, program: Program) -> str:
    stages = {d.name: d for d in program.diagrams}
    applies = any(isinstance(step, Apply) for step in c.steps)
    why = " (functions of invariants are invariant)" if applies else ""
    lines = [f"{c.name}: equivariant under {c.group}{why}.", "", "Arguments:"]
    for t in c.inputs:
        if isinstance(t, FnInput):
            lines.append(f"    {t.name}: {_declared(t)}, a callable of the array library (an nn.Module too): "
                         f"takes the {t.n_in} invariant")
            lines.append(f"        argument{'s' * (t.n_in != 1)} stacked on a last axis (..., {t.n_in}), "
                         f"returns (..., {t.n_out})")
        elif _is_edges(t):
            edge_set, node_set = t.type.channels
            lines.append(f"    {t.name}: {t.type}, shape ({edge_set},) integers in 0..{node_set}-1")
        else:
            dims = ", ".join(["..."] + [str(c) for c in t.type.channels] + [str(d) for d in t.type.geometric_dims])
            lines.append(f"    {t.name}: {t.type}, shape ({dims})")
    if _is_graph(c):
        edge_set, node_set = next(t for t in c.inputs if _is_edges(t)).type.channels
        lines.append(f"    num_nodes: the number of nodes {node_set}, passed to the graph stages (required where a stage has")
        lines.append("        no per-node array argument; checked against the per-node arrays where it has)")
    lines.append("    out, fused, kernels: as for any emitted function (they apply to the stages)")
    lines.append("Returns:" if len(c.outputs) == 1 else "Returns a tuple:")
    for t in c.outputs:
        dims = ", ".join(["..."] + [str(c) for c in t.type.channels] + [str(d) for d in t.type.geometric_dims])
        lines.append(f"    {t.name}: {t.type}, shape ({dims})")
    lines += ["", "Computed in stages (each a checked diagram" +
              ("; function results are invariant by type):" if applies else "):")]
    from ..ir.program import sum_formula

    for step in c.steps:
        if isinstance(step, Sum):
            lines.append(f"    {step.target.name} = {' + '.join(p.name for p in step.parts)}")
        elif isinstance(step, Apply):
            args = ", ".join(a.name for a in step.arguments)
            value = f"1 / {args}" if step.function == "recip" else f"{step.function}({args})"
            lines.append(f"    {', '.join(r.name for r in step.results)} = {value}")
        else:
            d, args, results = _call_of(step, stages)
            pad = ""
            if isinstance(step, StageCall):  # a shared stage, under names of its own
                lines.append(f"    {', '.join(results)} = {d.name}({', '.join(args)}), where")
                pad = "    "
            for eq in d.equations:
                legs = eq.terms[0].output if eq.terms else ()
                target = f"{eq.target}[{','.join(legs)}]" if legs else eq.target
                lines.append(f"    {pad}{target} = {sum_formula(eq.terms)}")
    return "\n".join(("    " + line).rstrip() for line in lines).lstrip() + "\n    "


def _refs(names) -> Tuple:
    return Tuple(tuple(Ref(n) for n in names))


def _target(names) -> Ref | Tuple:
    names = list(names)
    return Ref(names[0]) if len(names) == 1 else _refs(names)


def _checks(c: Composite, where: str) -> list:
    """The user function arguments checked to be callables."""
    return [Evaluate(Invoke("_check_callable", (Str(where), Str(f.name), Str(_declared(f)), Ref(f.name))))
            for f in _signature(c)[1]]


def _nodes(c: Composite, arrays, where: str) -> list:
    """A graph diagram's number of nodes, where not given, from its first per-node array (``arrays``:
    (variable, its tensor) pairs), before any stage runs: a stage that reads no per-node array needs it."""
    if not _is_graph(c):
        return []
    node_set = next(t for t in c.inputs if _is_edges(t)).type.channels[1]
    per_node = [(n, t) for n, t in arrays if t.type.channels[:1] == (node_set,)]
    if not per_node:
        return []
    axes = Tuple(tuple(Tuple((Str(n), Tuple(tuple(Int(ch.size) if isinstance(ch, FixedSize) else Str(ch)
                                                  for ch in t.type.channels)),
                              Tuple(tuple(Int(d) for d in t.type.geometric_dims)), Ref(n))) for n, t in per_node))
    return [Assign(Ref("num_nodes"), Invoke("_graph_nodes", (Str(where), Ref("num_nodes"), axes)))]


def _apply(step: Apply, where: str, declared: dict) -> Assign:
    """results = the function applied: a backend method for a built-in, _apply_fn for a user function."""
    if step.builtin:
        (a,), (r,) = step.arguments, step.results
        return Assign(Ref(r.name), Call(step.function, (Ref(a.name),)))
    f = declared[step.function]
    rank = len(step.results[0].type.channels)
    return Assign(_refs(r.name for r in step.results), Invoke("_apply_fn", (
        Str(where), Str(f.name), Str(_declared(f)), Ref(f.name), _refs(a.name for a in step.arguments),
        Literal(step.channels), Int(rank), Int(f.n_out))))


def _sum(step: Sum) -> Assign:
    return Assign(Ref(step.target.name), Invoke("_sum_parts", (
        _refs(p.name for p in step.parts), Literal(step.channels), Int(len(step.target.type.channels)))))


def _is_graph(c: Composite) -> bool:
    """Whether the composite is a graph diagram (edge lists): its functions take ``num_nodes=``."""
    return any(_is_edges(t) for t in c.inputs)


def _options(c: Composite) -> tuple:
    """The keyword arguments of NAME and NAME_vjp after ``out``: a graph diagram's ``num_nodes`` first."""
    return ((("num_nodes", Literal(None)),) if _is_graph(c) else ()) + _OPTIONS


def _passed(d) -> tuple:
    """The keyword arguments a stage is called with: ``num_nodes`` for a graph stage (edge lists), so
    that a stage with no per-node array argument is told the number of nodes."""
    return ((("num_nodes", Ref("num_nodes")),) if any(_is_edges(t) for t in d.inputs) else ()) + _PASSED


def _call_of(step, stages: dict) -> tuple:
    """A stage step as (its diagram, the composite's values it takes, those it gives): a stage named
    by the step (a str: its own input and output names are the values) or a StageCall."""
    if isinstance(step, StageCall):
        return stages[step.stage], step.arguments, step.results
    d = stages[step]
    return d, tuple(t.name for t in d.inputs), tuple(t.name for t in d.outputs)


def _stage(d, args, results, caller: str | None = None) -> Assign:
    """The values ``results`` = stage ``d`` called on the values ``args``; a graph stage called by
    ``caller`` (NAME_vjp) names that function in its messages (``_caller``), not NAME."""
    passed = _passed(d)
    if caller is not None and any(_is_edges(t) for t in d.inputs):
        passed += (("_caller", Str(caller)),)
    return Assign(_target(results), Invoke(d.name, _refs(args).items, passed))


def lower_composite(c: Composite, program: Program, derivatives=frozenset()) -> list[ChainFunction]:
    """The public function ``NAME`` of a composite and its ``NAME_vjp`` (by the chain rule when every
    stage has a generated VJP, the names in ``derivatives``; else by autograd of the whole chain)."""
    stages = {d.name: d for d in program.diagrams}
    tensors, fns = _signature(c)
    declared = {f.name: f for f in fns}
    body = _checks(c, c.name)
    if tensors:  # arrays of one library, dtype and device (a Python number or list among them too)
        body.append(Assign(_B, Invoke("_backend", tuple(Ref(t.name) for t in tensors))))
        body += [Assign(Ref(t.name), Call("asarray", (Ref(t.name),) + ((Ref(tensors[0].name),) if k else ())))
                 for k, t in enumerate(tensors)]
    if len(tensors) > 1:  # shapes of all array arguments at once (the stages see only some of them)
        signature = Tuple(tuple(Tuple((Str(t.name), Tuple(tuple(Int(ch.size) if isinstance(ch, FixedSize) else Str(ch)
                                                                   for ch in t.type.channels)),
                                       Tuple(tuple(Int(d) for d in t.type.geometric_dims)))) for t in tensors))
        body.append(Evaluate(Invoke("_check_shapes", (signature, _refs(t.name for t in tensors)))))
    body += _nodes(c, [(t.name, t) for t in tensors], c.name)
    for step in c.steps:
        if isinstance(step, Sum):
            body.append(_sum(step))
        elif isinstance(step, Apply):
            body.append(_apply(step, c.name, declared))
        elif step == c.steps[-1]:
            d, args, _ = _call_of(step, stages)
            body.append(Return(Invoke(d.name, _refs(args).items, (("out", Ref("out")),) + _passed(d))))
        else:
            body.append(_stage(*_call_of(step, stages)))
    public = ChainFunction(c.name, tuple(t.name for t in c.inputs), (("out", Literal(None)),) + _options(c),
                           composite_doc(c, program), tuple(body))
    if all(vjp_name(_call_of(step, stages)[0].name) in derivatives for step in c.steps
           if isinstance(step, (str, StageCall))):
        return [public, _chain_vjp(c, program)]
    return [public, _autograd_vjp(c)]


def _cotangents(c: Composite) -> list[str]:
    taken = {t.name for t in c.inputs}
    cots = []
    for t in c.outputs:
        name = cotangent_name(t.name, taken)
        taken.add(name)
        cots.append(name)
    return cots


def _returns(names: list[str]) -> str:
    return f"{', '.join(names)}" + (" (a tuple, in that order)" if len(names) > 1 else "")


def _vjp_function(c: Composite, doc: str, body: list) -> ChainFunction:
    return ChainFunction(vjp_name(c.name), tuple(t.name for t in c.inputs) + tuple(_cotangents(c)), _options(c), doc,
                         tuple(_checks(c, vjp_name(c.name)) + body))


def _chain_vjp(c: Composite, program: Program) -> ChainFunction:
    """NAME_vjp by the chain rule: the stages' generated NAME_vjp in reverse order, and between them
    each function's derivative (a backend method for a built-in, the array library's for a user
    function). A value's cotangent is the variable ``_g<k>``, assigned where a step first reaches it and
    added to after; one that nothing reached is zeros (decided here, on the steps)."""
    stages = {d.name: d for d in program.diagrams}
    tensors, fns = _signature(c)
    cots = _cotangents(c)
    names = [t.name for t in tensors]
    shown = [t.name for t in c.inputs if isinstance(t, Tensor)]
    doc = (f"{vjp_name(c.name)}: the cotangents of {_returns(shown)} given the cotangents {', '.join(cots)} of "
           f"the outputs of {c.name}{' (None for an edge list)' if len(shown) > len(names) else ''}: the chain rule through the stages' generated VJPs (in reverse) and the "
           "functions' derivatives (built-ins written out; a user function's by torch or jax autograd).")
    body = _nodes(c, [(t.name, t) for t in tensors] + list(zip(cots, c.outputs)), vjp_name(c.name))
    body += [Assign(_B, Invoke("_backend", tuple(Ref(n) for n in names + cots)))]
    body += [Assign(Ref(n), Call("asarray", (Ref(n),))) for n in names]
    declared = {f.name: f for f in fns}
    where = vjp_name(c.name)  # what every message of NAME_vjp names: the function the user called
    for step in c.steps[:-1]:  # forward: every intermediate value
        if isinstance(step, Sum):
            body.append(_sum(step))
        elif isinstance(step, Apply):
            body.append(_apply(step, where, declared))
        else:
            body.append(_stage(*_call_of(step, stages), where))
    # backward: one cotangent variable per value
    every = list(names) + [r.name for s in c.steps if isinstance(s, Apply) for r in s.results] + \
        [a.name for s in c.steps if isinstance(s, Apply) for a in s.arguments] + \
        [p.name for s in c.steps if isinstance(s, Sum) for p in s.parts] + \
        [r for s in c.steps[:-1] if isinstance(s, (str, StageCall)) for r in _call_of(s, stages)[2]]  # stage to stage
    grad = {n: f"_g{k}" for k, n in enumerate(dict.fromkeys(every))}
    reached: set[str] = set()

    def cotangent(value: str):
        return Ref(grad[value]) if value in reached else Call("zeros_like", (Ref(value),))

    def accumulate(values, parts) -> list:
        """Each value's cotangent given (its first part) or added to (a later one)."""
        out = []
        for v, p in zip(values, parts):
            g, p = Ref(grad[v]), Ref(p) if isinstance(p, str) else p
            out.append(Assign(g, SignedSum(((1, g), (1, p))) if v in reached else p))
            reached.add(v)
        return out

    for step in reversed(c.steps):
        if isinstance(step, Sum):
            t = step.target
            parts = [f"_p{k}" for k in range(len(step.parts))]
            body.append(Assign(_refs(parts), Invoke("_sum_parts_vjp", (
                _refs(p.name for p in step.parts), Literal(step.channels), Int(len(t.type.channels)),
                cotangent(t.name)))))
            body += accumulate([p.name for p in step.parts], parts)
        elif isinstance(step, Apply) and step.builtin:
            (a,), (r,) = step.arguments, step.results
            body += accumulate([a.name], [Call(step.function + "_vjp", (Ref(a.name), Ref(r.name), cotangent(r.name)))])
        elif isinstance(step, Apply):
            f = declared[step.function]
            parts = [f"_p{k}" for k in range(len(step.arguments))]
            body.append(Assign(_refs(parts), Invoke("_apply_fn_vjp", (
                Str(where), Str(f.name), Ref(f.name), _refs(a.name for a in step.arguments), Literal(step.channels),
                Int(len(step.results[0].type.channels)), Tuple(tuple(cotangent(r.name) for r in step.results))))))
            body += accumulate([a.name for a in step.arguments], parts)
        else:
            d, args, results = _call_of(step, stages)
            if not d.inputs:
                continue
            if step == c.steps[-1]:
                outs = tuple(Ref(g) for g in cots)
            else:
                outs = tuple(cotangent(r) for r in results)
            parts = [f"_p{k}" for k in range(len(d.inputs))]
            body.append(Assign(_target(parts), Invoke(vjp_name(d.name), _refs(args).items + outs, _passed(d))))
            kept = [(a, q) for t, a, q in zip(d.inputs, args, parts) if not _is_edges(t)]  # an edge list's: None
            body += accumulate([n for n, _ in kept], [q for _, q in kept])
    results = [Literal(None) if _is_edges(t) else cotangent(t.name) for t in c.inputs if isinstance(t, Tensor)]
    body.append(Return(results[0] if len(results) == 1 else Tuple(tuple(results))))
    return _vjp_function(c, doc, body)


def _autograd_vjp(c: Composite) -> ChainFunction:
    """NAME_vjp by autograd of the whole chain (a stage has no derivative network)."""
    tensors, _ = _signature(c)
    cots = _cotangents(c)
    names = [t.name for t in tensors]
    doc = (f"{vjp_name(c.name)}: the cotangents of {_returns(names)} given the cotangents {', '.join(cots)} of "
           f"the outputs of {c.name}; by torch or jax autograd through the stages (a stage has no derivative "
           "network) and the functions' derivatives.")
    at = tuple(k for k, t in enumerate(c.inputs) if isinstance(t, Tensor))
    result = Invoke("_composite_vjp", (Str(vjp_name(c.name)), Ref(c.name), _refs(t.name for t in c.inputs),
                                       Literal(at), _refs(cots), Ref("fused"), Ref("kernels"))
                    + ((Ref("num_nodes"),) if _is_graph(c) else ()))
    return _vjp_function(c, doc, [Return(Item(result, 0) if len(names) == 1 else result)])
