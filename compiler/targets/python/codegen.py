"""Python code generation: each plan lowered to an emit program (:mod:`compiler.planning.emit`), printed by
the stateless Python printer (``targets/python/printer.py``), and a jinja2 template
(``templates/python_module.py.j2``) that holds the shape of the module.

Everything that comes from the user reaches the emitted text through :func:`py_string` (escaped
string literals) or as a name that the parser has already checked to be a safe identifier.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import replace
import inspect
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jinja2

from ... import __version__
from . import runtime
from ...math.constants import EPS
from ...planning.emit import lower_batch_sums, lower_function, lower_fused
from ...planning.fuse import FusedPlan
from ...ir.program import Diagram, Program, sum_formula
from ...planning.plan import kept_copies, plan_diagram
from ...planning.staging import stage_diagram
from .printer import PythonPrinter, _tuple_text, input_checks, py_string  # noqa: F401

TABLES = {
    "eps": tuple(tuple(tuple(int(EPS[i, j, k]) for k in range(3)) for j in range(3)) for i in range(3)),
    "eye": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
}


def _shape_text(typ) -> str:
    if typ.family == "irreps":
        return f"(..., {typ.flat_dim})"
    dims = ["..."] + [str(c) for c in typ.channels] + [str(d) for d in typ.geometric_dims]
    return "(" + ", ".join(dims) + ")"


def function_doc(d: Diagram, fused: FusedPlan | None = None, kernel: dict | None = None,
                 stages: tuple[Diagram, ...] | None = None) -> str:
    """The public function's docstring; ``kernel``: its kernel's launch configuration
    (kernels.module_config), None without one; ``stages``: the diagrams it runs in turn
    (:mod:`compiler.planning.staging`), None where it runs as one."""
    kind = kernel["kind"] if kernel else None
    lines = [f"{d.name}: equivariant under {d.group}.", "", "Arguments:"]
    inputs, outputs = public_signature(d)
    for t in inputs:
        lines.append(f"    {t.name}: {t.type}, shape {_shape_text(t.type)}")
        lines += _irreps_doc(t)
    if d.basis is not None:
        lines.append("    out: optional preallocated result (one array of the stacked shape), numpy or torch, "
                     "written in place")
    else:
        lines.append("    out: optional preallocated result (a tuple for several), numpy or torch, written in place")
    if stages:
        lines.append("    fused, kernels: passed to the stages it runs in turn (below), each as its own function")
        lines.append("        runs them: an elementwise stage by its fused code (CPU: a host loop) or CUDA kernel, a")
        lines.append("        channel mixing by the array library's GEMM (cuBLAS on a GPU)")
    elif fused is not None and fused.outputs:
        lines.append(f"    fused: every component as one formula ({fused.products} products), one pass;")
        lines.append("        torch inputs run it through torch.compile (compiled on the first call)")
    else:
        reason = fused.reason if fused is not None else "no inputs"
        if d.basis is not None:  # the elements' internal names are no business of the reader
            for k, (t, words) in enumerate(zip(d.outputs, d.basis.words)):
                reason = reason.replace(f"output '{t.name}'", f"element {k} ({words})")
        lines.append(f"    fused: no fused form ({reason}); the planned code runs")
        if kind in ("mixing", "mixing_vjp"):
            lines.append("        (on CPU arrays whose weights have no batch axes: the host loop, C++ built at first use)")
        elif kind == "elementwise":  # the outputs other than those zero everywhere have a fused form
            lines.append("        (on CPU arrays: the kernel's host loop, C++ built at first use)")
    if stages:
        pass
    elif kind == "mixing_vjp" and "launches" not in kernel:
        lines.append("    kernels: no CUDA kernel for this function (host loops only); the array-library code")
        lines.append("        runs on a GPU")
    elif kind in ("mixing", "mixing_vjp"):
        if kernel["library_gemm"]:
            lines.append("    kernels: on CUDA torch tensors (or cupy arrays) the array library's GEMM (cuBLAS) runs")
            lines.append("        unless the module's MIXING is \"kernel\": then the generated kernels, when cupy is")
        else:
            lines.append("    kernels: on CUDA torch tensors (or cupy arrays) the generated kernels run, unless the")
            lines.append("        module's MIXING is \"blas\" (the array library's GEMM), when cupy is")
        lines.append("        importable (compiled at first use; float32/float64, one dtype and device; a")
        if kind == "mixing_vjp":
            lines.append("        non-contiguous input is copied; weights with batch axes: the array library's")
            lines.append("        GEMMs); kernels=False runs the array-library code")
        else:
            lines.append("        non-contiguous input is copied); kernels=False runs the array-library code")
    elif kind:
        lines.append("    kernels: CUDA torch tensors (or cupy arrays) run the generated CUDA kernel when cupy is")
        lines.append("        importable (compiled at first use; float32/float64, one dtype and device; a")
        lines.append("        non-contiguous input is copied); kernels=False runs the array-library code")
    else:
        lines.append("    kernels: no CUDA kernel for this function; the array-library code runs everywhere")
    if d.sum_to:
        lines.append("The vector-Jacobian product (compiler.ir.grad): the cotangent of each input, the plain partial")
        lines.append("derivative of the formula as written (as autograd gives; for a symmetric input not")
        lines.append("symmetrised), summed over the batch axes that input was broadcast over.")
    if d.basis is not None:  # one array: the elements stacked before the geometric axes
        out = d.basis.output
        n = len(d.outputs)
        stacked = "(" + ", ".join(["...", str(n)] + [str(k) for k in out.type.geometric_dims]) + ")"
        lines.append("Returns:")
        lines.append(f"    {out.name}: the {n} basis elements of {out.type} stacked, shape {stacked};")
        after = ", :" * out.type.n_geometric
        lines.append(f"        {out.name}[..., n{after}] is element n:")
        lines.append("")
        width = max(len(w) for w in d.basis.words)
        for k, (words, eq) in enumerate(zip(d.basis.words, d.equations)):
            legs = eq.terms[0].output if eq.terms else ()
            target = f"{out.name}[{','.join(legs)}]" if legs else out.name
            lines.append(f"    {k:>3}. {words:<{width}}   {target} = " + sum_formula(eq.terms))
    else:
        lines.append("Returns:" if len(outputs) == 1 else "Returns a tuple:")
        for t in outputs:
            lines.append(f"    {t.name}: {t.type}, shape {_shape_text(t.type)}")
            lines += _irreps_doc(t)
        lines.append("")
        for eq in d.equations:
            lines.append(f"    {eq.target} = " + sum_formula(eq.terms))
    if stages:
        lines += ["", "Run in stages (compiler.planning.staging; each a checked diagram):"]
        for stage in stages:
            lines.append(f"    {stage.name}:")
            for eq in stage.equations:
                lines.append(f"        {eq.target} = " + sum_formula(eq.terms))
    return py_string("\n".join(("    " + line).rstrip() for line in lines).lstrip() + "\n    ", triple=True)


def _irreps_doc(t) -> list[str]:
    """Docstring lines naming the blocks of an irreps tensor (e3nn's layout), none for another tensor."""
    if t.type.family != "irreps":
        return []
    parts = []
    for (offset, mul, ir), block in zip(t.type.block_offsets(), t.blocks):
        shape = f"(..., {mul})" if ir.l == 0 else f"(..., {mul}, {ir.dim})"
        parts.append(f"{t.name}.{ir} = {block}: [{offset}:{offset + mul * ir.dim}] as {shape}")
    return ["        blocks (e3nn's layout): " + "; ".join(parts)]


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    text = template_text("python_module.py.j2")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, autoescape=False)
    return env.from_string(text)


def template_text(name: str) -> str:
    """A template's text: from the installed ``compiler.templates`` package, else the source tree."""
    try:
        return resources.files("compiler.templates").joinpath(name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return (Path(__file__).resolve().parents[3] / "templates" / name).read_text(encoding="utf-8")


def source_sha256(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def generate_python(program: Program, staging: bool = True) -> str:
    """The text of a standalone Python module with one function per diagram, and beside each its
    derivative functions ``NAME_vjp`` and ``NAME_vjp_vjp`` (:mod:`compiler.ir.grad`).

    With ``staging`` a diagram that :func:`~compiler.planning.staging.stage_diagram` stages runs in
    stages: its public function calls the chain ``_NAME_staged``, and the module has no one-call code
    of its own for it (no ``_NAME_planned``, ``_NAME_SPEC``, kernel); its ``NAME_vjp`` with ``out``
    and ``NAME_vjp_vjp`` run as one call all the same. Without, every diagram runs as one call."""
    from ...frontend.graph import split_program
    from ...ir.grad import with_derivatives

    stage_of = program.stage_of()
    source_names = [d.name for d in program.diagrams if d.name not in stage_of]
    source_names += [c.name for c in program.composites]
    # channel mixing scaled per channel: run as an elementwise stage, GEMMs, an elementwise stage
    found = (stage_diagram(d) for d in program.diagrams if d.name not in stage_of) if staging else ()
    stagings = {st.source: st for st in found if st}
    shared = {s.name: s for st in stagings.values() for s in st.diagrams}  # equal mixings: one stage
    program = replace(program, diagrams=program.diagrams + tuple(shared.values()))
    program, graphs = split_program(program)  # graph diagrams: their edge and node diagrams
    program = with_derivatives(program, checked=True)
    printer = PythonPrinter()
    # a staged diagram's public function runs its stages: it has no code of its own as one call
    one_call = tuple(d for d in program.diagrams if d.name not in stagings)
    plans = [plan_diagram(d) for d in one_call]
    by_name = {d.name: d for d in program.diagrams}
    cuda_source, kernels = kernel_configs(replace(program, diagrams=one_call), plans)
    functions, specs = [], []
    plan_of = {d.name: p for p, d in zip(plans, one_call)}
    for d in program.diagrams:
        if d.name in stagings:
            st = stagings[d.name]
            functions.append(_print_public(d, function_doc(d, stages=st.diagrams), st.composite.name))
            continue
        p = plan_of[d.name]
        if p.fused is not None and p.fused.outputs:
            functions.append(printer.doprint(lower_fused(p.fused, p.stack_axis)))
        body = f"_{d.name}_planned"
        functions.append(printer._print_FunctionProgram(
            lower_function(p), py_string(f"{d.name}: the emitted code (see {d.name}).", triple=True), d.inputs, body,
            f"_{d.name}_blocks" if d.irreps else None))
        staged = stagings.get(d.name[:-4]) if d.sum_to and d.name.endswith("_vjp") else None
        functions.append(_print_public(d, function_doc(d, p.fused, kernels.get(d.name)),
                                       staged.composite.name if staged else None))
        second = d.sum_to and d.name.endswith("_vjp") and bool(getattr(by_name.get(d.name[:-4]), "sum_to", ()))
        vjp = d.name + "_vjp" if d.name + "_vjp" in by_name and not second else None
        positions = {t.name: k for k, t in enumerate(d.inputs)}
        sum_to = tuple(positions[n] for n in d.sum_to)
        trailing = tuple(n for _, n in p.trailing)
        kernel = f"_{d.name}_KERNEL" if d.name in kernels else None
        batch = "None"
        if p.batch_sums and (p.rest is None or p.rest.name not in by_name):
            functions += _batch_sum_functions(printer, p, d)
            batch = printer.doprint(lower_batch_sums(p, _rest_name(p))[1])
        # the copies the forward makes that its derivative makes again: kept for it under autograd
        kept = tuple((c.input, c.axes) for c in kept_copies(p, plan_of[vjp])) if vjp is not None else ()
        specs.append(f"_{d.name}_SPEC = ({body}, {vjp}, {sum_to!r}, {trailing!r}, {p.stack_axis!r}, {kernel}, "
                     f"{batch}, {kept!r})")
    exports = [d.name for d in program.diagrams if not d.name.startswith("_")]
    graph_vjps = set()
    if graphs:  # the public functions of graph diagrams: gathers and scatters around those diagrams
        from .graph import graph_function, graph_kernel_configs, graph_vjp_function

        graph_source, graph_kernels, _ = graph_kernel_configs(graphs, by_name, kernels) if kernels else ("", {}, {})
        cuda_source += graph_source
        for g in graphs.values():
            name = g.diagram.name
            public = not name.startswith("_")  # a stage of a diagram with functions is private
            vjp_text = graph_vjp_function(g, by_name, kernel=name + "_vjp" in graph_kernels)
            functions.append(graph_function(g, kernel=name in graph_kernels, vjp=vjp_text is not None,
                                            vjp_kernel=name + "_vjp" in graph_kernels))
            exports += [name] if public else []
            if vjp_text is not None:
                functions.append(vjp_text)
                exports += [name + "_vjp"] if public else []
                graph_vjps.add(name + "_vjp")
        specs += [f"_{name}_GRAPH = {literal(cfg)}" for name, cfg in graph_kernels.items()]
    if program.composites:  # diagrams with function nodes: the functions chaining their stages
        from ...planning.fnemit import lower_composite

        # a stage that is a graph diagram is called by its public function (gathers, parts, sums)
        staged = replace(program, diagrams=program.diagrams + tuple(g.diagram for g in graphs.values()))
        for c in program.composites:
            functions += [printer.doprint(f) for f in lower_composite(c, staged, frozenset(by_name) | graph_vjps)]
            exports += [c.name, c.name + "_vjp"]
    if stagings:  # the chains of staged diagrams (their public functions call them)
        from ...planning.fnemit import lower_composite

        for st in stagings.values():
            functions += [printer.doprint(f) for f in lower_composite(st.composite, program, frozenset(by_name))]
    used = sorted({c for p in plans for c in p.constants})
    values = dict(TABLES)
    for p in plans:
        values.update(dict(p.tables))
    tables = [("_TABLES", "{" + ", ".join(f"{py_string(n)}: {values[n]!r}" for n in used) + "}")]
    doc = (
        f"Generated by diagc {__version__} from {program.filename}\n"
        f"source sha256: {source_sha256(program.source)}\n"
        f"functions: {', '.join(source_names)} (and their derivatives NAME_vjp, NAME_vjp_vjp)\n\n"
        "Diagram source:\n\n" + program.source
    )
    footer = "_TORCH_READY = _prepare()\n" + (
        'if _TORCH_READY and _kernels_possible(_BACKENDS["torch"]):\n    _torch_ops()\n' if kernels else "")
    text = _template().render(
        runtime=runtime_source(functions + specs + [footer], bool(kernels)),
        docstring=py_string(doc, triple=True),
        version=__version__,
        tables=tables,
        functions=functions,
        specs=specs,
        cuda_source=py_string(cuda_source, triple=True) if kernels else None,
        kernel_configs=[(f"_{name}_KERNEL", literal(cfg)) for name, cfg in kernels.items()],
        kernel_names=list(kernels),
        op_namespace=py_string("diagc_" + source_sha256(__version__ + "\n" + program.source)[:16]),
        exports=", ".join(py_string(name) for name in exports),
    )
    return text



def _rest_name(p) -> str | None:
    """The function of a derivative's outputs not summed to a weight (FunctionPlan.rest)."""
    return f"_{p.rest.name}_planned" if p.rest is not None else None


def _batch_sum_functions(printer: PythonPrinter, p, d: Diagram) -> list[str]:
    """A derivative's outputs summed to unbatched weights (plan.BatchSum) as one function,
    ``_NAME_batch_summed(_b, inputs)``, after the planned (and fused) code of its other outputs."""
    functions = []
    if p.rest is not None:
        if p.rest.fused is not None and p.rest.fused.outputs:
            functions.append(printer.doprint(lower_fused(p.rest.fused, p.rest.stack_axis)))
        functions.append(printer._print_FunctionProgram(
            lower_function(p.rest, unbatched=False),
            py_string(f"{d.name}: the outputs not summed to a weight (see {d.name}).", triple=True),
            d.inputs, _rest_name(p)))
    functions.append(printer._print_BatchSumProgram(lower_batch_sums(p, _rest_name(p))[0], d.inputs))
    return functions


#: definitions of compiler/targets/python/runtime.py that each module writes itself (its tables, its CUDA source)
MODULE_DATA = frozenset({"_TABLES", "_CUDA_SOURCE", "_OP_NAMESPACE", "_CUDA", "MIXING", "_KERNEL_SPECS"})
#: runtime functions with a variant for modules with CUDA kernels (NAME_kernels, emitted as NAME)
KERNEL_VARIANTS = ("_call", "_make_backend")
#: names a backend is bound to in the runtime and the emitted code: attributes read on them are methods
BACKEND_NAMES = frozenset({"_b", "b", "self"})
_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
#: an attribute read on a backend (BACKEND_NAMES, or ``_backend(...)``) in emitted code
_BACKEND_ATTR = re.compile(r"(?<![\w.])(?:" + "|".join(sorted(BACKEND_NAMES)) + r"|_backend\([^()]*\))\.([A-Za-z_][A-Za-z_0-9]*)")


@lru_cache(maxsize=1)
def _runtime_definitions() -> tuple[str, dict]:
    """The source of compiler/targets/python/runtime.py and its top-level definitions by name, in source order."""
    source = inspect.getsource(runtime)
    return source, {_defined_name(node): node for node in ast.parse(source).body if _defined_name(node)}


def _defined_name(node) -> str | None:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return node.name
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    return None


def runtime_source(code, kernels: bool) -> str:
    """The part of compiler/targets/python/runtime.py that ``code`` (the module's own Python source: its functions,
    specs, the statements around them) reaches: the top-level definitions it names, and the backend
    methods called in them, transitively; in runtime.py's order, each as written there. With
    ``kernels`` (the module has CUDA kernels) the NAME_kernels variants are emitted as NAME."""
    source, defs = _runtime_definitions()
    variant = {n: n + "_kernels" if kernels else n for n in KERNEL_VARIANTS}
    methods: dict[str, list] = {}
    for node in defs.values():
        if isinstance(node, ast.ClassDef):
            for m in node.body:
                if isinstance(m, ast.FunctionDef):
                    methods.setdefault(m.name, []).append(m)
    names, attrs = set(), {"__init__"}
    pending = list(methods["__init__"])

    def name_used(word):  # a top-level definition named: it and what its body reads
        name = variant.get(word, word)
        if name in defs and name not in names and name not in MODULE_DATA:
            names.add(name)
            d = defs[name]
            pending.extend([*d.bases, *(b for b in d.body if not isinstance(b, ast.FunctionDef))]
                           if isinstance(d, ast.ClassDef) else [d])

    def method_used(attr):  # a backend method called: every class's method of that name
        if attr not in attrs and attr in methods:
            attrs.add(attr)
            pending.extend(methods[attr])

    # the module's own code (about 350 kB for tensornet_layer: parsing it took half of a compile) is read as
    # words: its names, and the attributes read on a backend; a word in a string may add a definition unused
    text = "\n".join(code)
    for word in dict.fromkeys(_WORD.findall(text)):
        name_used(word)
    for attr in dict.fromkeys(_BACKEND_ATTR.findall(text)):
        method_used(attr)
    while pending:  # the runtime's own definitions, parsed once (_runtime_definitions)
        for node in ast.walk(pending.pop()):
            if isinstance(node, ast.Name):
                name_used(node.id)
            elif isinstance(node, ast.Attribute) and (
                    (isinstance(node.value, ast.Name) and node.value.id in BACKEND_NAMES)
                    or (isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                        and node.value.func.id == "_backend")):
                method_used(node.attr)
    lines = source.splitlines()
    parts, previous = [], None
    renamed = {v: k for k, v in variant.items()}
    for name, node in defs.items():
        if name not in names:
            continue
        if isinstance(node, ast.ClassDef):
            members = [m for m in node.body if not _docstring(m) and (not isinstance(m, ast.FunctionDef)
                                                                       or m.name in attrs)]
            body = "\n\n".join("\n".join(_lines(lines, m)) for m in members) or "    pass"
            text = lines[node.lineno - 1] + "\n" + body
        else:
            text = "\n".join(_lines(lines, node))
            if name in renamed:  # the variant under the name the module calls
                text = f"def {renamed[name]}" + text[len(f"def {name}"):]
        kind = isinstance(node, ast.Assign)
        parts.append(("\n" if kind and previous else "\n\n\n" if parts else "") + text)
        previous = kind
    return "".join(parts)


def _docstring(node) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _lines(lines: list[str], node) -> list[str]:
    """The source lines of ``node`` without the docstrings in it (runtime.py documents them; the
    module carries the code)."""
    drop = set()
    for n in ast.walk(node):
        if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.body and _docstring(n.body[0]):
            drop |= set(range(n.body[0].lineno, n.body[0].end_lineno + 1))
    return [lines[k - 1] for k in range(node.lineno, node.end_lineno + 1) if k not in drop]


def literal(value) -> str:
    """A Python literal of plain data (str through :func:`py_string`, int, float, bool, None, tuples,
    lists and dicts with str keys)."""
    if isinstance(value, str):
        return py_string(value)
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_string(k)}: {literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not plain data: {type(value).__name__}")


def kernel_configs(program: Program, plans) -> tuple[str, dict]:
    """The CUDA source the module embeds (the cuda target's printer, over the diagrams it can
    express) and, per such diagram, its launch configuration as plain data. A diagram the kernel
    generator refuses, or one whose outputs are stacked into one array (a basis), has none: it runs
    the array-library code on the GPU too."""
    from ...errors import DiagError
    from ..cuda.kernels import CudaProgram, lower_diagram, module_config
    from ..cuda.printer import print_program

    lowered = []
    for p, d in zip(plans, program.diagrams):
        if p.stack_axis is not None or not d.inputs:
            continue
        try:
            lowered.append(lower_diagram(d, p.fused))
        except DiagError:
            continue
    if not lowered:
        return "", {}
    source = print_program(CudaProgram(program.filename, source_sha256(program.source), tuple(lowered)))
    return source, {k.name: module_config(k) for k in lowered}


def _print_public(d: Diagram, doc: str, staged: str | None = None) -> str:
    """The public function: the emitted code, differentiable through the generated derivatives
    (torch autograd, jax custom_vjp) where they exist, and summed to its inputs' shapes for a
    derivative diagram. A diagram with irreps tensors gets it as ``_NAME_blocks`` (on the blocks),
    and as ``NAME`` the function on e3nn's flat arrays (:func:`_print_irreps_public`). ``staged``:
    the chain of stages that runs a staged diagram (``_NAME_staged``), or for its NAME_vjp without
    ``out`` that chain's VJP (the chain rule through the stages' derivatives)."""
    params = ", ".join(t.name for t in d.inputs)
    sig = params + (", " if params else "") + "*, out=None, fused=False, kernels=True"
    args = _tuple_text([t.name for t in d.inputs])
    name = f"_{d.name}_blocks" if d.irreps else d.name
    body = [f"    return _call(_{d.name}_SPEC, {args}, out, fused, kernels)"]
    if staged and not d.sum_to:
        body = [f"    return {staged}({params}{', ' if params else ''}out=out, fused=fused, kernels=kernels)"]
    elif staged:
        body = ["    if out is None:",
                f"        return {staged}_vjp({params}, fused=fused, kernels=kernels)"] + body
    text = "\n".join([f"def {name}({sig}):", "    " + doc] + body)
    if d.irreps:
        text += "\n\n\n" + _print_irreps_public(d, doc)
    return text


def public_signature(d: Diagram) -> tuple[list, list]:
    """The inputs and outputs as the source declared them: an irreps tensor (``ir.IrrepsTensor``) in
    place of its run of blocks, every other one a ``Tensor``."""
    first = {r.blocks[0]: r for r in d.irreps}
    inner = {b for r in d.irreps for b in r.blocks}
    result = []
    for tensors in (d.inputs, d.outputs):
        result.append([first[t.name] if t.name in first else t for t in tensors
                       if t.name in first or t.name not in inner])
    return result[0], result[1]


def _print_irreps_public(d: Diagram, doc: str) -> str:
    """``NAME`` on e3nn's flat arrays: each irreps input split into its blocks as views (a slice of the
    last axis reshaped to (..., mul, 2l+1): no copy where the array library has views), the block-level
    function called, each irreps output's blocks joined into one flat array (one copy)."""
    inputs, outputs = public_signature(d)
    names = [t.name for t in inputs]
    sig = ", ".join(names) + (", " if names else "") + "*, out=None, fused=False, kernels=True"
    lines = [f"def {d.name}({sig}):", "    " + doc, f"    _b = _backend({', '.join(names)})"]
    for t in inputs:
        if t in d.irreps:
            layout = _tuple_text([f"({o}, {m}, {ir.dim if ir.l else 0})" for o, m, ir in t.type.block_offsets()])
            lines.append(f"    {', '.join(t.blocks)}, = _irreps_split(_b, {t.name}, {py_string(t.name)}, "
                         f"{t.type.flat_dim}, {py_string(str(t.type))}, {layout})")
    blocks = ", ".join(t.name for t in d.inputs)
    lines.append(f"    _r = _{d.name}_blocks({blocks}{', ' if blocks else ''}fused=fused, kernels=kernels)")
    if len(d.outputs) == 1:
        lines.append("    _r = (_r,)")
    results, k = [], 0
    for t in outputs:
        if t in d.irreps:
            n = len(t.blocks)
            ranks = _tuple_text([str(1 if ir.l == 0 else 2) for _, ir in t.type.blocks])
            results.append(f"_irreps_join(_b, _r[{k}:{k + n}], {ranks})")
            k += n
        else:
            results.append(f"_r[{k}]")
            k += 1
    lines.append(f"    return _irreps_results(_b, {_tuple_text(results)}, out, ({', '.join(names)}{',' if names else ''}))")
    return "\n".join(lines)
