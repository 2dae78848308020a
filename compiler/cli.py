"""The ``diagc`` command line: check, compile, build.

Exit codes: 0 success; 1 a well-formed diagram that is not equivariant; 2 bad input (syntax, names,
types, unreadable or unwritable files); 3 an internal error (a bug in diagc: please report it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .api import TARGETS, compile_source, read_source, write_atomic
from .targets import TARGETS as _REGISTRY
from .ir.check import check_program
from .targets.python.codegen import source_sha256
from .errors import DiagError, OutputError, each_error
from .frontend.lower import lower_source


_TARGET_HELP = "; ".join(f"{t.name}: {t.summary}" for t in _REGISTRY.values()).replace("%", "%%")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diagc",
        description="Compile tensor-network diagrams (.diag) into proven-equivariant array code.",
        epilog="Exit codes: 0 ok, 1 not equivariant, 2 bad input.",
    )
    p.add_argument("--version", action="version", version=f"diagc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    c = sub.add_parser("check", help="prove every diagram of a file equivariant (or say why not)",
                       description="Check every diagram: a structural proof per term (legs, parity) and "
                       "exact checks of declared symmetries. Exit 0 if all are equivariant, 1 if one is "
                       "not, 2 for bad input.")
    c.add_argument("files", nargs="+", metavar="FILE.diag")
    c.add_argument("-v", "--verbose", action="store_true", help="print the proof of every term")
    c.add_argument("--json", action="store_true",
                   help="print one JSON document (every file's diagrams, verdicts, terms, errors and warnings) "
                   "instead of text; the exit code is the same")

    k = sub.add_parser("compile", help="compile a file to a standalone module",
                       description="Compile every diagram of FILE into one standalone module (one function "
                       "per diagram). Nothing is written unless every diagram checks.")
    k.add_argument("file", metavar="FILE.diag")
    k.add_argument("--target", choices=TARGETS, default="numpy", help=_TARGET_HELP)
    k.add_argument("-o", "--output", metavar="OUT", help="output file (default: standard output)")
    k.add_argument("--explain", action="store_true",
                   help="print the plan (contraction steps, estimated cost) instead of the module, or beside -o")

    e = sub.add_parser("enumerate", help="list every independent equivariant contraction",
                       description="Enumerate every linearly independent equivariant contraction from the "
                       "inputs to the output (deltas, at most one eps), with the character-theory count "
                       "that proves the list complete. Example: diagc enumerate --in X=sym2 --out sym2 "
                       "--degree X=2. " + _enumerate_limits())
    e.add_argument("--in", dest="inputs", action="append", default=[], metavar="NAME=TYPE",
                   help="an input tensor, e.g. X=sym2 (repeatable)")
    e.add_argument("--out", required=True, metavar="[NAME=]TYPE", help="the output type, e.g. sym2 or S=sym2")
    e.add_argument("--degree", action="append", default=[], metavar="NAME=D|NAME<=D",
                   help="polynomial degree of an input (default 1); NAME<=D gives every degree up to D")
    e.add_argument("--group", choices=("O3", "SO3"), default="O3")
    e.add_argument("--name", default="maps", help="name of the diagram written by -o (default: maps)")
    e.add_argument("-o", "--output", metavar="BASIS.diag", help="write the basis as a .diag file")
    e.add_argument("--module", metavar="OUT.py", help="write a compiled module returning the stacked basis")
    e.add_argument("--json", action="store_true", help="print one JSON object instead of the listing")
    e.add_argument("--allow-large", action="store_true",
                   help="lift the dimension limit (not the leg limits), e.g. for six distinct cart2 inputs -> "
                        "cart2 (30,537 elements; minutes and gigabytes)")

    pr = sub.add_parser("prove", help="write a proof certificate for every diagram of a file",
                        description="Write CERT (a folder): certificate.json, report.md, one SVG picture per "
                        "diagram, and the source and module it certifies. The algebraic proof runs the emitted "
                        "module on exact rational inputs.")
    pr.add_argument("file", metavar="FILE.diag")
    pr.add_argument("-o", "--output", metavar="CERT", required=True)

    ve = sub.add_parser("verify", help="re-check a certificate and the code it certifies",
                        description="Re-check a certificate folder (or its certificate.json) from the "
                        "certificate, the source and the module alone. Exit 0 if all holds, 1 naming what "
                        "failed, 2 if it cannot be read.")
    ve.add_argument("certificate", metavar="CERT")

    g = sub.add_parser("grad", help="print the derivative (VJP) diagrams of a file in .diag syntax",
                       description="Print, for every diagram NAME of FILE, the diagram NAME_vjp: its inputs, "
                       "then one cotangent d_<output> per output; its outputs, the cotangent of every input "
                       "(one derivative network per input occurrence, like terms combined, deltas folded). "
                       "The text compiles back with diagc compile and passes diagc check.")
    g.add_argument("file", metavar="FILE.diag")
    g.add_argument("--wrt", metavar="NAME", help="only the cotangent of input NAME (diagrams without it are left out)")
    g.add_argument("--order", type=int, choices=(1, 2), default=1,
                   help="2: also print the second-order diagrams NAME_vjp_vjp (they check; compile the "
                   "order-1 text, which emits them itself)")

    dr = sub.add_parser("draw", help="draw the diagrams of a file as symmetric tensor networks (SVG)",
                        description="Draw every diagram of FILE: one row per equation, one picture per term.")
    dr.add_argument("file", metavar="FILE.diag")
    dr.add_argument("-o", "--output", metavar="OUT.svg", required=True)
    dr.add_argument("--derivatives", action="store_true",
                    help="draw each diagram's derivative diagrams (NAME_vjp, NAME_vjp_vjp) after it")

    b = sub.add_parser("build", help="compile every .diag file in a folder",
                       description="Compile every .diag file under DIR into OUT, mirroring the folder layout, "
                       "and write OUT/index.json and OUT/INDEX.md listing what was produced and what failed.")
    b.add_argument("directory", metavar="DIR")
    b.add_argument("-o", "--output", metavar="OUT", required=True)
    b.add_argument("--target", choices=TARGETS, default="numpy", help=_TARGET_HELP)
    return p


def _enumerate_limits() -> str:
    from .tools.enumeration import MAX_DIMENSION, MAX_LEGS, MAX_LEGS_GENERAL
    from .ir.program import MAX_CONSTANT_L

    return (f"Limits, checked before any work: a space of more than {MAX_DIMENSION:,} dimensions (the "
            "character-theory count, all degrees together) is refused unless --allow-large is given, as are "
            f"requests of more than {MAX_LEGS} legs in total ({MAX_LEGS_GENERAL} with an input of rank above 2) "
            f"and spherical coupling paths that need cg with l above {MAX_CONSTANT_L['cg']}.")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"check": _check, "compile": _compile, "build": _build, "enumerate": _enumerate,
                "prove": _prove, "verify": _verify, "draw": _draw,
                "grad": _grad}[args.command](args)
    except DiagError as err:
        print(str(err), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (diagc ... | head): not an error of diagc's
        sys.stdout = None
        return 0
    except Exception as exc:  # a bug: say so in one line rather than with a traceback
        print(f"diagc: internal error (please report it): {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3


def _check(args) -> int:
    """Every file, even after one that cannot be read or parsed; every error of each (up to MAX_ERRORS)."""
    code = 0
    report = []
    for path in args.files:
        entry = {"file": path, "diagrams": [], "errors": [], "warnings": []}
        report.append(entry)
        try:
            program = lower_source(read_source(path), path)
        except DiagError as err:
            entry["errors"] = [{**e.as_dict(), "file": path} for e in each_error(err)]  # a file error has no position
            entry["exit_code"] = err.exit_code
            code = max(code, err.exit_code)
            if not args.json:
                print(str(err), file=sys.stderr)
            continue
        file_code = 0
        first_stage = {c.steps[0]: c for c in program.composites}
        for verdict in check_program(program):
            entry["diagrams"].append(_verdict_json(verdict))
            entry["warnings"] += [w.as_dict() for w in verdict.warnings]
            entry["errors"] += [e.as_dict() for e in verdict.errors]
            for w in verdict.warnings if not args.json else ():
                print(str(w), file=sys.stderr)
            if not verdict.ok:
                file_code = max(file_code, verdict.error.exit_code)
            if args.json:
                continue
            if verdict.diagram in first_stage:
                from .frontend.functions import composite_summary

                print(composite_summary(first_stage[verdict.diagram]))
            if verdict.ok:
                print(verdict.summary())
                if args.verbose:
                    for proof in verdict.proofs:
                        print(f"  term {proof.formula}")
                        for line in proof.lemmas + proof.edges:
                            print(f"    {line}")
                        if proof.parity is not None:
                            print(f"    parity product {proof.parity:+d} matches the output")
                    for line in verdict.exact_checks:
                        print(f"  {line}")
            else:
                for err in verdict.errors:
                    print(str(err), file=sys.stderr)
        entry["exit_code"] = file_code
        code = max(code, file_code)
    if args.json:
        print(json.dumps({"diagc": __version__, "exit_code": code, "files": report}, indent=2))
    return code


def _warn_unused(source: str, path: str) -> None:
    """Unused inputs, on stderr (the source has already compiled: lowering it again is cheap)."""
    from .ir.check import unused_inputs

    program = lower_source(source, path)
    for diagram in program.diagrams:
        for warning in unused_inputs(diagram):
            print(str(warning), file=sys.stderr)
    if program.composites:
        from .frontend.functions import unused_composite_inputs

        for c in program.composites:
            for warning in unused_composite_inputs(c, program):
                print(str(warning), file=sys.stderr)


def _verdict_json(verdict) -> dict:
    return {
        "name": verdict.diagram,
        "group": verdict.group,
        "signature": verdict.signature,
        "verdict": "equivariant" if verdict.ok else "not equivariant",
        "terms": [{"formula": p.formula, "lemmas": list(p.lemmas), "edges": list(p.edges), "parity": p.parity}
                  for p in verdict.proofs],
        "exact_checks": list(verdict.exact_checks),
        "errors": [e.as_dict() for e in verdict.errors],
    }


def _compile(args) -> int:
    source = read_source(args.file)
    text = compile_source(source, args.file, args.target)
    _warn_unused(source, args.file)
    if args.explain:
        from .api import checked_program
        from .planning.plan import explain, plan_diagram

        from .frontend.graph import split_program

        from .planning.staging import stage_diagram

        program = split_program(checked_program(source, args.file))[0]  # graph diagrams: their parts
        stage_of = program.stage_of()
        for d in program.diagrams:
            staged = stage_diagram(d) if d.name not in stage_of else None
            if staged is None:
                sys.stdout.write(explain(plan_diagram(d)))
                continue
            names = ", ".join(s.name for s in staged.diagrams)
            sys.stdout.write(f"{d.name}: runs in stages (channel mixing scaled per channel): {names}\n")
            sys.stdout.write("".join(explain(plan_diagram(s)) for s in staged.diagrams))
        if args.output is None:
            return 0
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_atomic(args.output, text)
        print(f"wrote {args.output}")
    return 0


def _name_type(text: str, what: str):
    from .frontend.parser import RESERVED
    from .ir.types import TensorType, TypeSyntaxError

    name, sep, typ = text.partition("=")
    if not sep:
        raise DiagError(f"{what} '{text}': write NAME=TYPE, e.g. X=sym2")
    name = name.strip()
    if not name.isidentifier() or not name.isascii() or name.startswith("_") or name in RESERVED:
        raise DiagError(f"{what} '{text}': '{name}' is not a usable name (an identifier, not a keyword, "
                        "not starting with '_')")
    try:
        return name, TensorType.parse(typ)
    except TypeSyntaxError as exc:
        raise DiagError(f"{what} '{text}': {exc}") from None


def _enumerate(args) -> int:
    import re

    from .tools import enumeration as en
    from .api import compile_source

    inputs = [_name_type(t, "--in") for t in args.inputs]
    out_text = args.out if "=" in args.out else "Y=" + args.out
    out_name, out_type = _name_type(out_text, "--out")
    degrees = {n: (1,) for n, _ in inputs}
    for d in args.degree:
        m = re.fullmatch(r"\s*([A-Za-z][A-Za-z0-9_]*)\s*(<=|=)\s*([0-9]+)\s*", d)
        if not m:
            raise DiagError(f"--degree '{d}': write NAME=D or NAME<=D, e.g. X=2")
        name, op, value = m.group(1), m.group(2), int(m.group(3))
        if name not in degrees:
            raise DiagError(f"--degree '{d}': no input named '{name}' (inputs: "
                            f"{', '.join(degrees) or 'none'})")
        degrees[name] = tuple(range(value + 1)) if op == "<=" else (value,)
    _name_type(f"{args.name}=scalar", "--name")
    names = [n for n, _ in inputs]
    if len(set(names + [out_name])) != len(names) + 1:
        raise DiagError("input and output names must all differ")
    specs = [(n, t, degrees[n]) for n, t in inputs]
    try:
        found = en.enumerate_degrees(specs, out_type, args.group, out_name, args.allow_large)
    except en.EnumerationError as err:
        raise DiagError(err.message) from None
    diag_text = en.to_diag(found, specs, out_type, args.group, out_name, args.name)
    module_text = None
    if args.module:
        if not found.elements:
            raise DiagError("the space is empty (dimension 0): there is no module to write")
        module_text = compile_source(diag_text, args.output or f"<{args.name}.diag>")
    if args.output:
        write_atomic(args.output, diag_text)
    if module_text is not None:
        write_atomic(args.module, module_text)
    if args.json:
        print(json.dumps(en.to_json(found, specs, out_type, args.group, out_name), indent=2))
    else:
        sys.stdout.write(en.listing(found, specs, out_type, args.group, out_name))
    return 0


def _prove(args) -> int:
    from .tools.certify import write_certificate

    cert = write_certificate(args.file, args.output)
    print(f"wrote {args.output}: {len(cert['diagrams'])} diagram(s) proved "
          f"(certificate.json, report.md, pictures)")
    return 0


def _verify(args) -> int:
    from .tools.certify import verify

    print(verify(args.certificate))
    return 0


def _draw(args) -> int:
    from .api import checked_program
    from .tools.draw import draw_program

    program = checked_program(read_source(args.file), args.file)  # nothing drawn unless every diagram checks
    if args.derivatives:
        from .ir.grad import with_derivatives

        program = with_derivatives(program)
    write_atomic(args.output, draw_program(program))
    print(f"wrote {args.output}")
    return 0


def _grad(args) -> int:
    from .api import checked_program
    from .errors import DiagNameError
    from .ir.grad import diag_text, vjp_diagram

    program = checked_program(read_source(args.file), args.file)
    wrt = None
    if args.wrt is not None:
        wrt = (args.wrt,)
        if not any(t.name == args.wrt for d in program.diagrams for t in d.inputs):
            names = sorted({t.name for d in program.diagrams for t in d.inputs})
            pos = program.diagrams[0].pos if program.diagrams else None
            raise DiagNameError(f"--wrt {args.wrt}: no diagram of {args.file} has an input named '{args.wrt}' "
                                f"(inputs: {', '.join(names) or 'none'})", pos)
    diagrams, skipped = [], []
    for d in program.diagrams:
        if d.stacked:
            skipped.append(d.name)
            continue
        if wrt is not None and not any(t.name == args.wrt for t in d.inputs):
            continue
        first = vjp_diagram(d, wrt=wrt)
        diagrams.append(first)
        if args.order == 2:
            diagrams.append(vjp_diagram(first))
    header = f"# Derivative diagrams of {args.file}, written by diagc grad"
    for c in program.composites:  # its stages' derivatives are printed; the functions' are not diagrams
        stages = ", ".join(s for s in c.steps if isinstance(s, str))
        header += (f"\n# {c.name} applies functions of invariants: {c.name}_vjp chains the derivatives of its "
                   f"stages ({stages}) below with the functions' derivatives (internal names: not .diag input)")
    if skipped:
        header += f"\n# no derivative diagram for a stacked basis: {', '.join(skipped)}"
    sys.stdout.write(diag_text(diagrams, program.group, header))
    return 0


def _build(args) -> int:
    root = Path(args.directory)
    if not root.is_dir():
        raise OutputError(f"cannot build {root}: not a folder")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot build into {out}: it exists and is not a folder")
    try:
        out.mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out}: {exc.strerror or exc}") from None
    sources = sorted(p for p in root.rglob("*.diag") if p.is_file())
    produced, failed = [], []
    code = 0
    for src in sources:
        rel = src.relative_to(root)
        target = out / rel.with_suffix(_REGISTRY[args.target].suffix)
        try:
            text = read_source(src)
            module = compile_source(text, str(src), args.target)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, module)
        except DiagError as err:
            if target.is_file():  # never leave a stale module from an earlier build beside a failure
                target.unlink()
            failed.append({"source": str(rel), "exit_code": err.exit_code, "message": str(err)})
            print(str(err), file=sys.stderr)
            code = max(code, err.exit_code)
            continue
        except OSError as exc:
            failed.append({"source": str(rel), "exit_code": 2, "message": f"cannot write {target}: {exc}"})
            code = 2
            continue
        names = [d.name for d in lower_source(text, str(src)).diagrams]
        produced.append({"source": str(rel), "module": str(rel.with_suffix(_REGISTRY[args.target].suffix)), "functions": names,
                         "source_sha256": source_sha256(text)})
        print(f"compiled {src} -> {target} ({', '.join(names)})")
    index = {"diagc": __version__, "target": args.target, "produced": produced, "failed": failed}
    write_atomic(out / "index.json", json.dumps(index, indent=2, sort_keys=True) + "\n")
    write_atomic(out / "INDEX.md", _index_markdown(index))
    print(f"{len(produced)} compiled, {len(failed)} failed; index in {out / 'INDEX.md'}")
    return code


def _index_markdown(index) -> str:
    lines = [f"# diagc build (diagc {index['diagc']}, target {index['target']})", "",
             "| source | module | functions |", "|---|---|---|"]
    for p in index["produced"]:
        lines.append(f"| `{p['source']}` | `{p['module']}` | {', '.join(p['functions'])} |")
    if index["failed"]:
        lines += ["", "## Failed", ""]
        for f in index["failed"]:
            lines += [f"### `{f['source']}` (exit {f['exit_code']})", "", "```", f["message"], "```", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
