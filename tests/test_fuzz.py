"""Fuzzing the whole pipeline with hypothesis: mutated example sources never crash diagc.

Every valid source in ``diagrams/*.diag`` is mutated (spans deleted, duplicated, swapped; characters
inserted; tokens replaced by names, types, numbers, operators; the group changed; the text cut
short; lines of other examples spliced in). For every mutant exactly one of these must happen:

1. ``check_source`` returns verdicts; a failing verdict carries an ``EquivarianceError`` positioned
   in the text (``fuzz.diag:LINE:COL: ...``);
2. a ``DiagError`` with a position in the text, quoting the offending line with a caret under it;
3. when every diagram checks, ``compile_source`` returns a module that ``exec``s in a fresh
   namespace, defines one callable per diagram, carries the source verbatim in its docstring, and
   (an extra oracle) whose functions are numerically equivariant as the checker claims.

Never any other exception. The command line (``diagc compile`` / ``diagc check``, in-process) must
exit 0, 1 or 2 consistently with the API, never print a traceback, and never leave a partial or
temporary file behind.

Known bugs (see ``KNOWN_BUGS`` and the strict xfails in ``test_nasty_input_known_bug``): mutants
that hit one of them are rejected by the properties, so that the fuzzers keep looking for *new*
bugs; when a bug is fixed its xfail starts passing (strict: the suite fails) and the matching entry
of ``KNOWN_BUGS`` should be removed.
"""

from __future__ import annotations

import ast as pyast
import builtins
import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
import traceback
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import compiler
from compiler.cli import main
from compiler.errors import DiagError, EquivarianceError
from compiler.frontend.lower import lower_source
from compiler.frontend.parser import parse
from compiler.testing import assert_equivariant, random_input

ROOT = Path(__file__).resolve().parent.parent
FILE = "fuzz.diag"


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )


#: an extra seed for syntax the examples do not use (yet): basis declarations
BASIS_SEED = """group O3

# every independent equivariant contraction, stacked
basis invariants(a: vec, b: vec) -> s: scalar
basis maps(X: cart2) -> Y: cart2
basis quadratic(r: vec^<=2) -> Y: sym2
"""


@lru_cache(maxsize=1)
def example_sources() -> tuple[str, ...]:
    """The text of every example, read when the first test runs (and the basis seed)."""
    sources = tuple(p.read_text(encoding="utf-8") for p in sorted((ROOT / "diagrams").glob("*.diag")))
    assert sources, "no diagrams/*.diag found"
    return sources + (BASIS_SEED,)


# ------------------------------------------------------------------------------------------------
# known bugs: reported, pinned by strict xfails below, and skipped by the fuzzers
# ------------------------------------------------------------------------------------------------

def _raised_in(exc: BaseException, filename: str, function: str | None = None) -> bool:
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.replace(os.sep, "/").endswith(filename) and function in (None, frame.name):
            return True
    return False


#: name -> predicate on an unexpected exception raised by the API for a mutant (none known now: the
#: bugs this fuzzer found -- cancelling terms, diagrams without inputs, >52 indices, graded parts,
#: huge numbers, deep recursion, odd line breaks, builtin names, coefficient overflow -- are fixed
#: and pinned by the hand-written cases below)
KNOWN_BUGS: dict = {}

#: builtins the generated module's runtime (``_Backend``, ``_backend``) calls by name: a diagram
#: may not be named like one of them (rejected with a positioned message)
SHADOWED_BUILTINS = {"len", "type", "str", "isinstance", "getattr"}

#: a Cartesian type of rank >= 6: exact checks of such inputs run at random points over 3**rank
#: entries per input, which is slow; skipped to keep the fuzzer fast
HIGH_RANK = re.compile(r"cart\s*\(\s*0*(?:[6-9]|[1-9][0-9]+)\s*\)")

#: line breaks other than "\n" (and "\r\n"): lines are counted by "\n" alone, in the lexer and in
#: the quoted context alike
ODD_BREAKS = re.compile("\r(?!\n)|[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")  # only "\n" ends a line


def heavy_basis(text: str) -> bool:
    """A basis request with many legs: allowed (the limit is 16) but it can take minutes and gigabytes
    (``basis f(X: cart2^7) -> Y: cart2`` 33 s; ``basis f(X: cart(4)^2) -> Y: cart(4)`` 48 s, 1.5 GB;
    ``basis f(X: cart(4)^3) -> Y: cart(4)`` over a minute): known bug "slow-basis"."""
    if "basis" not in text:
        return False
    try:
        module = parse(text, FILE)
    except Exception:
        return False
    for d in module.diagrams:
        if hasattr(d, "output") and hasattr(d, "inputs"):
            legs = sum(getattr(i.param.type, "rank", 0) * i.degree for i in d.inputs) + d.output.type.rank
            if legs > 10:
                return True
    return False


def known_bug(exc: BaseException) -> str | None:
    for name, matches in KNOWN_BUGS.items():
        try:
            if matches(exc):
                return name
        except Exception:  # pragma: no cover - a predicate must never hide the real error
            pass
    return None


# ------------------------------------------------------------------------------------------------
# the contract
# ------------------------------------------------------------------------------------------------

HEAD = re.compile(r"^fuzz\.diag:(\d+):(\d+): ")


def assert_positioned(err: DiagError, text: str) -> tuple[int, int]:
    """``str(err)`` starts with ``fuzz.diag:LINE:COL:`` inside the text and quotes the line with a caret."""
    shown = str(err)
    m = HEAD.match(shown)
    assert m, f"unpositioned message: {shown!r}"
    line, col = int(m.group(1)), int(m.group(2))
    assert err.position is not None and (err.position.line, err.position.column) == (line, col)
    assert "Traceback" not in shown
    shown_lines = shown.split("\n")
    raw = text.split("\n")
    rows = [r[:-1] if r.endswith("\r") else r for r in raw]
    assert 1 <= line <= len(rows), f"line {line} outside a text of {len(rows)} lines: {shown!r}"
    # (an end of line "\r\n" is reported at its "\n", one past the "\r": allowed)
    assert 1 <= col <= len(raw[line - 1]) + 1, f"column {col} outside line {raw[line - 1]!r}: {shown!r}"
    if line <= len(rows) and (rows[line - 1] or line < len(rows)):  # inside: the line, a caret under the column
        assert shown_lines[1:3] == ["    " + printable(rows[line - 1]), "    " + " " * (col - 1) + "^"], shown
    return line, col


def printable(row: str) -> str:
    """A source line as messages quote it: control characters shown as spaces, tabs as one space."""
    return "".join(ch if ch.isprintable() or ch == "\t" else " " for ch in row).expandtabs(1)


def _channel_sizes(diagram) -> dict[str, int]:
    names = sorted({c for t in diagram.inputs + diagram.outputs for c in t.type.channels})
    return {c: 2 + k % 3 for k, c in enumerate(names)}


def assert_functions_work(program, namespace) -> None:
    """Extra oracle: every compiled function runs, returns the declared shapes and is equivariant."""
    rng = np.random.default_rng(0)
    for d in program.diagrams:
        types = [t.type for t in d.inputs + d.outputs]
        if any(t.family == "sph" and t.irrep.l > 1 for t in types):  # no Wigner matrices for l > 1
            continue
        if sum(3 ** t.rank for t in types if t.family == "cart") > 3 ** 5:
            continue
        sizes = _channel_sizes(d)
        fn = namespace[d.name]
        args = [random_input(t.type, rng, (2,), sizes) for t in d.inputs]
        result = fn(*args)
        outputs = d.outputs
        if getattr(d, "stacked", False):  # a basis: its elements stacked on an axis before the output's
            outputs = d.outputs[:1]
            stack = (len(d.outputs),)
        else:
            stack = ()
        outs = result if len(outputs) > 1 else (result,)
        assert isinstance(outs, tuple) and len(outs) == len(outputs)
        for t, y in zip(outputs, outs):
            want = (2,) + stack + tuple(sizes[c] for c in t.type.channels) + t.type.geometric_dims
            # a constant output (no input in any term) has no batch axes: it broadcasts
            constant = not any(n.kind == "input" for eq in d.equations if eq.target == t.name
                               for term in eq.terms for n in term.nodes)
            assert np.shape(y) == want or (constant and np.broadcast_shapes(np.shape(y), want) == want), \
                (d.name, t.name, np.shape(y), want)
            assert np.all(np.isfinite(y))
        assert_equivariant(fn, [t.type for t in d.inputs], [t.type for t in outputs], d.group,
                           trials=1, batch=(2,), channel_sizes=sizes, tol=1e-8)


def run_contract(text: str) -> int:
    """Check the contract for one source; the exit code the command line should give (0, 1 or 2)."""
    try:
        verdicts = compiler.check_source(text, FILE)
    except DiagError as err:
        assert not isinstance(err, EquivarianceError), "check_source raised instead of returning a verdict"
        assert err.exit_code == 2
        assert_positioned(err, text)
        return 2
    assert isinstance(verdicts, list)
    for v in verdicts:
        assert isinstance(v.ok, bool)
        if not v.ok:
            assert isinstance(v.error, EquivarianceError) and v.error.exit_code == 1
            assert_positioned(v.error, text)
    if not all(v.ok for v in verdicts):
        with pytest.raises(EquivarianceError) as info:  # compile refuses, with the first failure
            compiler.compile_source(text, FILE)
        assert str(info.value) == str(next(v.error for v in verdicts if not v.ok))
        return 1
    module = compiler.compile_source(text, FILE)
    assert isinstance(module, str)
    namespace: dict = {}
    exec(compile(module, "<diagc fuzz>", "exec"), namespace)
    program = lower_source(text, FILE)
    names = [d.name for d in program.diagrams]
    assert names == [v.diagram for v in verdicts]
    from compiler.ir.grad import with_derivatives

    stage_of = program.stage_of()  # a diagram with functions exports itself, not its stages
    assert namespace["__all__"] == [d.name for d in with_derivatives(program).diagrams
                                    if d.name.partition("_vjp")[0] not in stage_of] + \
        [n for c in program.composites for n in (c.name, c.name + "_vjp")]
    for name in names:
        assert callable(namespace[name]), name
    assert text in namespace["__doc__"], "the docstring does not carry the source verbatim"
    assert_functions_work(program, namespace)
    return 0


def contract_or_known_bug(text: str) -> int:
    if HIGH_RANK.search(text) or heavy_basis(text):
        reject()  # known bugs "high-rank-exact-check" and "slow-basis": minutes and gigabytes
    try:
        return run_contract(text)
    except (AssertionError, DiagError):
        raise
    except Exception as exc:
        if known_bug(exc):
            reject()
        raise


# ------------------------------------------------------------------------------------------------
# mutations
# ------------------------------------------------------------------------------------------------

ALPHABET = (
    list("abcdijkXYWs0123456789") + list("[](){},:;=+-*/#\n _~\"'\\.@")
    + ["->", "\r\n", "\r", "\t", "\x00", "\x0c", "\x1b", "é", "∑", "ℝ", "😀", "\u2028", "\x85", "\ufeff", "\u00a0"]
)
NAMES = ["i", "j", "k", "l", "c", "d", "e", "a", "b", "v", "X", "Y", "W", "A", "S", "I", "M", "C", "s", "t",
         "f", "dot", "cross", "x_1", "Ünï", "class", "int", "_x", "__init__", "diagram", "group", "O3", "SO3",
         "U1", "len", "type", "print", "np", "einsum", "delta", "eps"]
TYPES = ["scalar", "pscalar", "vec", "axial", "cart2", "sym2", "skew2", "sym2t", "pcart(2)", "skew2(1o)",
         "skew2(1e)", "sym2t(2o)", "sym2(0e+2o)", "cart2(0e+1o+2e)", "cart2(0o+1o+2o)", "cart2(0e+1e)",
         "cart(0)", "cart(1)", "cart(3)", "cart(4)", "cart(13)", "cart", "pcart(3)", "sph(0e)", "sph(1o)",
         "sph(1e)", "sph(2e)", "sph(13e)", "sph(1x)", "weight", "weight[c]", "weight[c,d]", "vec[c]",
         "vec[c,c]", "scalar[]", "vector", "cart2[c]", "sym2t[d]"]
NUMBERS = ["0", "1", "2", "3", "1/3", "0.5", ".5", "1.", "007", "00", "0.0", "12345678901234567890123", "1/0",
           "2 * 3", "-1", "1e-3", "2.5E+2", "3e2", ".5e1", "1.e3", "1e99", "1e-3 e", "1e", "2x", "1e-3e", "3e2x", "2 e",
           "1E+", "1e-"]
OPERATORS = ["+", "-", "*", "/", "=", "->", ",", ":", ";", "(", ")", "[", "]", "{", "}", "\n", "", " ", "#"]
INDEX_LISTS = ["[i]", "[j]", "[i,j]", "[j,i]", "[i,i]", "[k,k]", "[]", "[c]", "[c,i]", "[c,i,j]", "[d,i,j]",
               "[i,j,k]", "[i,j,", "[,]"]
TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|->|\S")
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TYPE_DECL = re.compile(r":\s*([A-Za-z_][A-Za-z0-9_]*(?:\([^)]*\))?)")
INDEX_LABEL = re.compile(r"[\[,]\s*([A-Za-z_][A-Za-z0-9_]*)")

replacements = st.one_of(
    st.sampled_from(NAMES), st.sampled_from(TYPES), st.sampled_from(NUMBERS), st.sampled_from(OPERATORS),
    st.sampled_from(INDEX_LISTS), st.sampled_from(["delta", "eps", "delta[i,j]", "eps[i,j,k]"]),
)
insertions = st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=8).map("".join)


def _span(draw, text: str, longest: int = 40) -> tuple[int, int]:
    start = draw(st.integers(0, len(text)))
    return start, min(len(text), start + draw(st.integers(0, longest)))


@st.composite
def mutated_sources(draw) -> str:
    sources = example_sources()
    text = draw(st.sampled_from(sources))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "token", "token", "retype",
                                   "index", "rename", "group", "truncate", "splice"]))
        if op == "delete":
            a, b = _span(draw, text)
            text = text[:a] + text[b:]
        elif op == "duplicate":
            a, b = _span(draw, text)
            text = text[:b] + text[a:b] + text[b:]
        elif op == "swap":
            a, b = _span(draw, text, 30)
            c, d = _span(draw, text, 30)
            if b <= c:
                text = text[:a] + text[c:d] + text[b:c] + text[a:b] + text[d:]
        elif op == "insert":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(insertions) + text[at:]
        elif op == "token":
            tokens = list(TOKEN.finditer(text))
            if tokens:
                m = draw(st.sampled_from(tokens))
                text = text[: m.start()] + draw(replacements) + text[m.end():]
        elif op == "retype":  # the type of one parameter or output
            types = list(TYPE_DECL.finditer(text))
            if types:
                m = draw(st.sampled_from(types))
                text = text[: m.start(1)] + draw(st.sampled_from(TYPES)) + text[m.end(1):]
        elif op == "index":  # one index label inside brackets
            labels = list(INDEX_LABEL.finditer(text))
            if labels:
                m = draw(st.sampled_from(labels))
                text = text[: m.start(1)] + draw(st.sampled_from(["i", "j", "k", "l", "c", "d", "e", "i,j", ""])) + text[m.end(1):]
        elif op == "rename":  # every occurrence of one word: often still a valid program
            words = sorted({m.group() for m in WORD.finditer(text)})
            if words:
                old = draw(st.sampled_from(words))
                new = draw(st.sampled_from(NAMES + ["i", "j", "k", "c", "d"]))
                text = re.sub(rf"\b{re.escape(old)}\b", new, text)
        elif op == "group":
            text = draw(st.sampled_from([
                text.replace("group O3", "group SO3"),
                text.replace("group SO3", "group O3"),
                re.sub(r"group \w+\n", "", text),
                text + "\ngroup O3\n",
                "group SO3\n" + text,
            ]))
        elif op == "truncate":
            text = text[: draw(st.integers(0, len(text)))]
        else:  # splice in a line of any example (equations, signatures, braces)
            lines = text.split("\n")
            donor = draw(st.sampled_from(sources)).split("\n")
            at = draw(st.integers(0, len(lines)))
            line = draw(st.sampled_from(donor))
            if draw(st.booleans()) and at < len(lines):
                lines[at] = line
            else:
                lines.insert(at, line)
            text = "\n".join(lines)
    return text


# ------------------------------------------------------------------------------------------------
# the properties
# ------------------------------------------------------------------------------------------------

def test_examples_satisfy_the_contract():
    for text in example_sources():
        assert run_contract(text) == 0


@fuzz_settings(900)
@given(mutated_sources())
def test_mutated_source_gives_verdicts_positioned_error_or_working_module(text):
    contract_or_known_bug(text)


def _listing(folder: str) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@fuzz_settings(200)
@given(mutated_sources(), st.sampled_from(["utf-8", "utf-8", "utf-8", "bad-byte"]))
def test_cli_compile_exits_cleanly_and_leaves_no_stray_file(text, encoding):
    data = text.encode("utf-8")
    if encoding == "bad-byte":
        data = data[: len(data) // 2] + b"\xff" + data[len(data) // 2:]
    with tempfile.TemporaryDirectory() as tmp:
        src_dir, out_dir = os.path.join(tmp, "src"), os.path.join(tmp, "out")
        os.mkdir(src_dir)
        os.mkdir(out_dir)
        src = os.path.join(src_dir, "fuzz.diag")
        with open(src, "wb") as fh:
            fh.write(data)
        out = os.path.join(out_dir, "fuzz.py")
        if encoding == "bad-byte":
            expected = 2
        else:  # what the command line reads (universal newlines), through the API
            with open(src, encoding="utf-8") as fh:
                read = fh.read()
            expected = contract_or_known_bug(read)
        before = _listing(tmp)

        code, stdout, stderr = _cli(["compile", src, "-o", out])
        assert code in (0, 1, 2), stderr
        assert "Traceback" not in stderr and "internal error" not in stderr, stderr
        assert code == expected, (code, expected, stderr)
        if code == 0:
            assert _listing(tmp) == sorted(before + ["out/fuzz.py"])
            with open(out, encoding="utf-8") as fh:
                assert fh.read() == compiler.compile_source(read, src)
        else:
            assert not os.path.exists(out)
            assert stderr.strip() and not stdout
            assert _listing(tmp) == before, "a temporary or partial file was left behind"

        code, stdout, stderr = _cli(["check", src])
        assert code == expected, (code, expected, stderr)
        assert "Traceback" not in stderr and "internal error" not in stderr, stderr
        assert _listing(tmp) == sorted(before + (["out/fuzz.py"] if expected == 0 else []))


# ------------------------------------------------------------------------------------------------
# numbers in every notation, and names written directly after them
# ------------------------------------------------------------------------------------------------

@st.composite
def numerals(draw) -> tuple[str, Fraction]:
    """A number in a random notation (integer, decimal, .5, 1., scientific with e/E and a sign) and its
    exact value, computed from its parts (not by parsing the text)."""
    whole = draw(st.integers(0, 10**6))
    frac_digits = draw(st.integers(0, 4))
    frac = draw(st.integers(0, 10**frac_digits - 1)) if frac_digits else 0
    notation = draw(st.sampled_from(["int", "decimal", "leading-dot", "trailing-dot"]))
    exponent = draw(st.one_of(st.none(), st.integers(-12, 12)))
    if notation == "int" or (notation == "leading-dot" and not frac_digits):
        text, value = str(whole), Fraction(whole)
    elif notation == "trailing-dot":
        text, value = f"{whole}.", Fraction(whole)
    elif notation == "leading-dot":
        text, value = "." + str(frac).zfill(frac_digits), Fraction(frac, 10**frac_digits)
    else:
        digits = str(frac).zfill(frac_digits) if frac_digits else ""
        text, value = f"{whole}.{digits}", whole + Fraction(frac, 10**frac_digits)
    if exponent is not None:
        sign = draw(st.sampled_from(["", "+"])) if exponent >= 0 else ""
        text += draw(st.sampled_from("eE")) + sign + str(exponent)
        value *= Fraction(10) ** exponent
    return text, value


NUMBER_SRC = "diagram f(e: scalar, a: vec, b: vec) -> s: scalar {{\n    s = {} * a[i] b[i] + e\n}}\n"


@fuzz_settings(300)
@given(numerals())
def test_a_number_in_any_notation_is_its_exact_value(case):
    text, value = case
    terms = lower_source(NUMBER_SRC.format(text), FILE).diagrams[0].equations[0].terms
    assert [t.coefficient for t in terms] == [value, 1] and [len(t.nodes) for t in terms] == [2, 1]


@fuzz_settings(300)
@given(numerals(), st.sampled_from(["e", "E", "x", "e_", "ex", "a", "b", "cg", "P", "delta", "eps", "E1x"]))
def test_a_name_written_directly_after_a_number_is_a_positioned_error(case, name):
    text, _ = case
    source = NUMBER_SRC.format(f"{text}{name}")
    with pytest.raises(DiagError, match="a number written directly before a name") as info:
        lower_source(source, FILE)
    assert (info.value.position.line, info.value.position.column) == (2, 9)
    assert_positioned(info.value, source)


# ------------------------------------------------------------------------------------------------
# hand-written nasty inputs
# ------------------------------------------------------------------------------------------------

DOT = "diagram dot(a: vec, b: vec) -> s: scalar {\n    s = a[i] b[i]\n}\n"
INJECT = '# """; import os; os.system("echo pwned") #\n'
ESCAPES = ("# \\ \\\\ \\n \\x00 \\u2028 \\N{BULLET} \\\"\"\" \\' ''' {{ 1 + 1 }} {% raw %} {# x #} %s {}\n"
           "# '''\"\"\"\\\n")
INDICES_60 = ",".join(f"i{k}" for k in range(60))

NASTY = [
    # (id, source, expected outcome: 0 compiles, 2 positioned error)
    ("empty", "", 0),
    ("only-newlines", "\n\n\n", 0),
    ("only-comments", "# one\n# two\n#\n", 0),
    ("comment-no-newline", "# no newline at the end", 0),
    ("group-only", "group SO3", 0),
    ("crlf", DOT.replace("\n", "\r\n"), 0),
    ("tabs", DOT.replace("    ", "\t"), 0),
    ("diagram-alone", "diagram", 2),
    ("diagram-name-alone", "diagram f", 2),
    ("unterminated-paren", "diagram f(a: vec -> s: scalar {\n    s = a[i] a[i]\n}\n", 2),
    ("unterminated-bracket", "diagram f(a: vec) -> s: scalar {\n    s = a[i a[i]\n}\n", 2),
    ("unterminated-brace", "diagram f(a: vec) -> s: scalar {\n    s = a[i] a[i]\n", 2),
    ("unbalanced-close", "diagram f(a: vec) -> s: scalar {\n    s = a[i] a[i]))\n}\n", 2),
    ("nested-10", "diagram f(a: vec, b: vec) -> s: scalar {\n    s = " + "(" * 10 + "a[i] b[i]" + ")" * 10 + "\n}\n", 0),
    ("nested-10-scaled", "diagram f(a: vec, b: vec) -> s: scalar {\n    s = " + "1/2 (" * 10 + "a[i] b[i]" + ")" * 10 + "\n}\n", 0),
    ("nested-2000", "diagram f(a: vec, b: vec) -> s: scalar {\n    s = " + "(" * 2000 + "a[i] b[i]" + ")" * 2000 + "\n}\n", 0),
    ("huge-number", "diagram f(a: vec, b: vec) -> s: scalar {\n    s = " + "9" * 400 + " a[i] b[i] / " + "7" * 300 + "\n}\n", 2),
    ("huge-decimal", "diagram f(a: vec, b: vec) -> s: scalar {\n    s = 0." + "3" * 300 + " a[i] b[i]\n}\n", 2),
    ("indices-60", "diagram f(a: vec) -> s: scalar {\n    s = a[" + INDICES_60 + "]\n}\n", 2),
    ("channels-60-arity", "diagram f(W: weight[c]) -> s: scalar[c] {\n    s[c] = W[" + INDICES_60 + "]\n}\n", 2),
    ("nul", DOT.replace("b[i]", "b[i]\x00"), 2),
    ("bom", "\ufeff" + DOT, 2),
    ("non-ascii-name", DOT.replace("dot", "dót"), 2),
    ("docstring-injection", INJECT + DOT, 0),
    ("docstring-injection-inline", DOT.replace("b[i]\n", 'b[i]  # """ + __import__("os").system("echo pwned") + """\n'), 0),
    ("backslash-escapes", ESCAPES + DOT, 0),
    ("control-characters", "# \x1b[31m red \x07 \x7f \x0b\n" + DOT, 0),
    ("div-by-zero", DOT.replace("b[i]\n", "b[i] / 0\n"), 2),
    ("reserved-diagram-name", DOT.replace("dot", "class"), 2),
    ("trailing-operator-continues", "diagram f(a: vec, b: vec) -> s: scalar {\n    s = a[i] b[i] +\n        a[j] b[j]\n}\n", 0),
    ("sum-100", "diagram f(a: vec, b: vec) -> s: scalar {\n    s = " + " + ".join(["a[i] b[i]"] * 100) + "\n}\n", 0),
]


@pytest.mark.parametrize("source, expected", [pytest.param(s, e, id=n) for n, s, e in NASTY])
def test_nasty_input(source, expected, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    assert run_contract(source) == expected
    if expected == 0:
        module = compiler.compile_source(source, FILE)
        tree = pyast.parse(module)
        assert pyast.get_docstring(tree, clean=False).endswith("Diagram source:\n\n" + source)
        # the source stays inside the docstring: no statement at module level evaluates an expression,
        # and nothing anywhere calls os.system or __import__
        assert not any(isinstance(node, pyast.Expr) for node in tree.body[1:])
        for node in pyast.walk(tree):
            assert not (isinstance(node, pyast.Attribute) and node.attr == "system")
            assert not (isinstance(node, pyast.Name) and node.id == "__import__")
        namespace: dict = {}
        exec(compile(module, "<diagc nasty>", "exec"), namespace)
        assert namespace["__doc__"].endswith("Diagram source:\n\n" + source)
        assert "os" not in namespace and not calls


def _src(n_inputs: str, body: str, out: str = "s: scalar") -> str:
    return f"diagram f({n_inputs}) -> {out} {{\n    {body}\n}}\n"


FIXED = [
    # bugs this fuzzer found, with the outcome they have now (0 compiles, 1 not equivariant, 2 refused)
    ("cancelling-terms", _src("a: vec", "v[i] = a[i] - a[i]", "v: vec"), 0),
    ("cancelling-products", _src("a: vec, b: vec", "s = a[i] b[i] - b[j] a[j]"), 0),
    ("no-inputs", _src("", "s = delta[i,i]"), 0),
    ("graded-missing-part", _src("X: cart2(0e+1o+2e)", "A[i,j] = X[i,j]", "A: sym2"), 1),
    ("graded-missing-part-skew", _src("X: cart2(0e+1o+2e)", "A[i,j] = X[i,j] - X[j,i]", "A: sym2"), 1),
    ("channels-60", f"diagram f(W: weight[{INDICES_60}]) -> s: scalar[{INDICES_60}] {{\n"
                    f"    s[{INDICES_60}] = 2 W[{INDICES_60}]\n}}\n", 2),
    ("huge-product-of-numbers", _src("a: vec", "s = 1" + "0" * 3000 + " 1" + "0" * 3000 + " a[i] a[i]"), 2),
    ("huge-number-5000-digits", _src("a: vec", "s = " + "9" * 5000 + " a[i] a[i]"), 2),
    ("product-of-numbers-too-large", _src("a: vec", "s = " + " ".join(["1" + "0" * 20] * 3) + " a[i] a[i]"), 2),
    ("sum-1000", _src("a: vec", "s = " + " + ".join(["a[i] a[i]"] * 1000)), 0),
    ("unary-minus-500", _src("a: vec", "s = " + "-" * 500 + "a[i] a[i]"), 0),
    ("lone-cr", "diagram f(a: vec) -> s: scalar {\r    s = a[i] @ a[i]\n}\n", 2),
    ("line-separator-in-comment", "# one\u2028two\n" + _src("a: vec", "s = a[i] @ a[i]"), 2),
    ("lone-cr-at-eof", "\r\r\r\rdiagram f(", 2),
]


@pytest.mark.parametrize("source, expected", [pytest.param(s, e, id=n) for n, s, e in FIXED])
def test_fixed_bug_stays_fixed(source, expected):
    assert run_contract(source) == expected


@pytest.mark.parametrize("name", sorted(SHADOWED_BUILTINS))
def test_diagram_named_like_a_builtin_is_refused(name):
    assert hasattr(builtins, name)
    source = f"diagram {name}(a: vec, b: vec) -> c: axial {{\n    c[i] = eps[i,j,k] a[j] b[k]\n}}\n"
    with pytest.raises(DiagError, match="would shadow the Python builtin") as info:
        compiler.compile_source(source, FILE)
    assert_positioned(info.value, source)


def test_high_rank_input_is_checked_quickly():
    source = _src("a: cart(12), X: cart2", "Y[i,j] = X[i,j] + X[j,i]", "Y: sym2")
    # A 3^12-component expansion of the unused rank-12 input would take minutes of CPU and gigabytes:
    # bound the child's memory and its CPU time (not wall time: the machine may be shared).
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
            "resource.setrlimit(resource.RLIMIT_CPU, (20, 20))\n"
            "import compiler\n"
            "print(compiler.check_source(sys.stdin.read())[0].ok)\n")
    try:
        done = subprocess.run([sys.executable, "-c", code], input=source, capture_output=True, text=True,
                              timeout=300, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail("checking did not finish in 300 s")
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-500:]


@pytest.mark.parametrize("source", [
    pytest.param(_src("a: vec", "Y[i,j] = a[i] a[j] + delta[i,j]", "Y: sym2"), id="constant-delta-term"),
    pytest.param(_src("a: vec", "Y[i,j] = 2 delta[i,j] a[k] a[k] - delta[i,j]", "Y: sym2"), id="constant-delta-term-2"),
    pytest.param(_src("a: vec", "s = 1" + "0" * 400 + " a[i] a[i]"), id="coefficient-overflow"),
    pytest.param(_src("a: vec", "s = 1" + "0" * 400 + " a[i] a[i] / 7"), id="coefficient-overflow-rational"),
])
def test_compiled_function_runs(source):
    """A source that compiles gives functions that run on float inputs (or it is refused at compile time)."""
    try:
        module = compiler.compile_source(source, FILE)
    except DiagError as err:
        assert_positioned(err, source)
        return
    namespace: dict = {}
    exec(compile(module, "<diagc nasty>", "exec"), namespace)
    result = namespace["f"](np.random.default_rng(2).normal(size=(4, 3)))
    assert np.shape(result)[0] == 4
