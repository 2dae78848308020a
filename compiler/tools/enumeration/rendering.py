"""Rendering: an element in words (``tr(X·X) X``, ``(v·v) delta``), a listing, JSON and a .diag file."""

from __future__ import annotations

from ...ir.program import TensorNetwork, sum_formula
from ...ir.types import TensorType
from .request import LABELS, PRIME, BasisSet, Element


def words(t: TensorNetwork) -> str:
    """A readable form: traces and dot products of the scalar parts, times the part carrying the
    output: ``tr(X·X) X``, ``(v·v) delta``, ``X·v``; index notation where no such form fits."""
    nodes = list(t.nodes)
    if any(n.kind == "eps" for n in nodes) or any(n.type.rank > 2 for n in nodes if n.kind == "input"):
        return t.formula()
    # walk chains: each rank-1/rank-2 node is a link between its legs' labels
    links = []
    for n in nodes:
        if n.kind == "delta":
            continue
        links.append(n)
    used = [False] * len(links)
    label_nodes: dict[str, list[int]] = {}
    for k, n in enumerate(links):
        for l in n.indices:
            label_nodes.setdefault(l, []).append(k)
    scalars, main = [], []

    def walk(start_label, k):
        """Follow the chain from link k entered through start_label; return its text and end label."""
        parts = []
        label = start_label
        while k is not None:
            used[k] = True
            n = links[k]
            if len(n.indices) == 1:
                parts.append(n.name)
                return parts, None
            if len(n.indices) == 0:
                parts.append(n.name)
                return parts, None
            a, b = n.indices
            if a == label:
                parts.append(n.name)
                label = b
            else:
                parts.append(n.name + "ᵀ" if not n.type.symmetry else n.name)
                label = a
            nxt = [j for j in label_nodes.get(label, []) if not used[j]]
            k = nxt[0] if nxt else None
        return parts, label

    out = list(t.output)
    for o in out:
        ks = [j for j in label_nodes.get(o, []) if not used[j]]
        if ks:
            parts, end = walk(o, ks[0])
            main.append("·".join(parts))
    for k, n in enumerate(links):
        if used[k]:
            continue
        if len(n.indices) == 0:
            used[k] = True
            scalars.append(n.name)
            continue
        if len(n.indices) == 1:
            used[k] = True
            nxt = [j for j in label_nodes.get(n.indices[0], []) if not used[j]]
            parts = [n.name] + (walk(n.indices[0], nxt[0])[0] if nxt else [])
            scalars.append("(" + "·".join(parts) + ")")
            continue
        parts, _ = walk(n.indices[0], k)
        scalars.append("tr(" + "·".join(parts) + ")")
    deltas = [n for n in nodes if n.kind == "delta"]
    if deltas:
        main.append("delta")
    scalars = [f"{s}^{scalars.count(s)}" if scalars.count(s) > 1 else s for s in dict.fromkeys(sorted(scalars))]
    text = " ".join(scalars + ["⊗".join(main)] if main else scalars)
    return text or "1"


def describe(inputs, output: TensorType, group: str, output_name: str = "Y") -> str:
    """``Hom_O3(S^2(X: sym2) ⊗ v: vec, Y: sym2)`` for a listing's title."""
    parts = []
    for name, t, degrees in inputs:
        ds = sorted(set(degrees))
        if ds == [1]:
            parts.append(f"{name}: {t}")
        elif len(ds) == 1:
            parts.append(f"S^{ds[0]}({name}: {t})")
        else:
            parts.append(f"S^<={ds[-1]}({name}: {t})")
    return f"Hom_{group}({' ⊗ '.join(parts) or '1'}, {output_name}: {output})"


def element_formula(element: Element) -> str:
    """The element's equation right-hand side, in index notation that the parser reads back."""
    return sum_formula(element.terms)


def listing(found: BasisSet, inputs, output: TensorType, group: str, output_name: str = "Y") -> str:
    title = describe(inputs, output, group, output_name)
    lines = [f"{title}: dimension {found.dimension} (character theory: {found.expected}); "
             f"{found.candidates} candidate contractions, {found.unique} distinct"]
    if not found.elements:
        lines.append("The space is empty: no equivariant contraction maps these inputs to this output "
                     f"under {group}.")
    width = max([len(e.words) for e in found.elements] + [0])
    for k, e in enumerate(found.elements):
        lines.append(f"  {k:>3}. {e.words:<{width}}   {_lhs(output_name, e, output)} = {element_formula(e)}")
    return "\n".join(lines) + "\n"


def _lhs(name: str, element: Element, output: TensorType) -> str:
    """``Y[i,j]``: the output's labels as the element's terms write them (channel axes first)."""
    labels = element.terms[0].output if element.terms else tuple(LABELS[:output.n_geometric])
    return f"{name}[{','.join(labels)}]" if labels else name


def to_json(found: BasisSet, inputs, output: TensorType, group: str, output_name: str = "Y") -> dict:
    return {
        "space": describe(inputs, output, group, output_name),
        "group": group,
        "inputs": [{"name": n, "type": str(t), "degrees": sorted(set(d))} for n, t, d in inputs],
        "output": {"name": output_name, "type": str(output)},
        "dimension": found.dimension,
        "expected": found.expected,
        "candidates": found.candidates,
        "distinct": found.unique,
        "prime": PRIME,
        "basis": [{"index": k, "words": e.words, "formula": element_formula(e), "generator": e.formula,
                   "degrees": dict(zip([n for n, _, _ in inputs], e.degrees))}
                  for k, e in enumerate(found.elements)],
    }


def to_diag(found: BasisSet, inputs, output: TensorType, group: str, output_name: str = "Y",
            name: str = "basis") -> str:
    """A .diag file: the basis as one ordinary diagram (one output per element) and as a ``basis``
    declaration (the same elements stacked on one axis)."""
    lines = [f"# {describe(inputs, output, group, output_name)}",
             f"# dimension {found.dimension} = character-theory count {found.expected}; written by diagc enumerate",
             f"group {group}", ""]
    if found.elements:
        taken = {n for n, _, _ in inputs}
        prefix = output_name
        while any(f"{prefix}{k}" in taken for k in range(len(found.elements))):
            prefix += "_"
        outs = [f"{prefix}{k}" for k in range(len(found.elements))]
        sig = ", ".join(f"{n}: {t}" for n, t, _ in inputs)
        lines.append(f"diagram {name}({sig}) -> ({', '.join(f'{o}: {output}' for o in outs)}) {{")
        for o, e in zip(outs, found.elements):
            lines.append(f"    # {e.words}")
            lines.append(f"    {_lhs(o, e, output)} = {element_formula(e)}")
        lines.append("}")
        lines.append("")
        decl = []
        for n, t, d in inputs:
            ds = sorted(set(d))
            deg = "" if ds == [1] else (f"^{ds[0]}" if len(ds) == 1 else f"^<={ds[-1]}")
            decl.append(f"{n}: {t}{deg}")
        lines.append(f"# the same elements stacked on one axis: shape (..., {found.dimension}, "
                     f"{', '.join([str(c) for c in output.channels] + [str(d) for d in output.geometric_dims])})"
                     .replace(", )", ")"))
        lines.append(f"basis {name}_stacked({', '.join(decl)}) -> {output_name}: {output}")
    else:
        lines.append("# the space is empty: there is nothing to compile")
    return "\n".join(lines) + "\n"
