"""One root error type for everything a user can get wrong.

Every error carries the file, line and column it is about and prints the offending
source line with a caret under it (as lark's ``get_context`` does), and a ``help:`` line where
the fix is known::

    diagrams/bad.diag:3:12: error: unknown type 'vector' (known: ...)
        diagram f(a: vector) -> s: scalar {
                     ^
        help: did you mean 'vec'?

Several errors of one file travel together as :class:`DiagErrors`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Position:
    """A place in a source text: 1-based line and column, with the text it came from."""

    file: str
    line: int
    column: int
    source: str = field(default="", repr=False, compare=False)

    def context(self) -> str:
        """The source line and a caret under ``column`` (empty when unknown)."""
        lines = [line[:-1] if line.endswith("\r") else line for line in self.source.split("\n")]  # as the lexer
        if not 1 <= self.line <= len(lines):
            return ""
        text = "".join(ch if ch.isprintable() or ch == "\t" else " " for ch in lines[self.line - 1]).expandtabs(1)
        caret = " " * (max(self.column, 1) - 1) + "^"
        return f"    {text}\n    {caret}"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class DiagError(Exception):
    """Root of all diagc errors. ``exit_code`` is what the command line returns."""

    exit_code = 2
    kind = "error"

    def __init__(self, message: str, position: Position | None = None, help: str | None = None):
        super().__init__(message)
        self.message = message
        self.position = position
        self.help = help

    def __str__(self) -> str:
        return _format(self.kind, self.message, self.position, self.help)

    def as_dict(self) -> dict:
        """The error as plain data (``diagc check --json``)."""
        return {**_as_dict(self.kind, self.message, self.position, self.help), "exit_code": self.exit_code}


def _format(kind: str, message: str, position: Position | None, help: str | None) -> str:
    help_line = f"\n    help: {help}" if help else ""
    if position is None:
        return f"{kind}: {message}{help_line}"
    head = f"{position}: {kind}: {message}"
    ctx = position.context()
    return (f"{head}\n{ctx}" if ctx else head) + help_line


def _as_dict(kind: str, message: str, position: Position | None, help: str | None) -> dict:
    return {"file": position.file if position else None, "line": position.line if position else None,
            "column": position.column if position else None, "kind": kind, "message": message, "help": help}


@dataclass(frozen=True)
class DiagWarning:
    """Something legal but probably unintended (an input no equation uses): printed, never raised,
    and it does not change the exit code."""

    message: str
    position: Position | None = None
    help: str | None = None
    kind = "warning"

    def __str__(self) -> str:
        return _format(self.kind, self.message, self.position, self.help)

    def as_dict(self) -> dict:
        return _as_dict(self.kind, self.message, self.position, self.help)


#: at most this many errors of one file are reported
MAX_ERRORS = 20


class DiagErrors(DiagError):
    """Every error found in one file (in source order, at most ``MAX_ERRORS``), raised together.

    ``message``, ``position`` and ``help`` are the first error's; ``exit_code`` is the worst."""

    def __init__(self, errors, truncated: bool = False):
        errors = tuple(errors)
        first = errors[0]
        super().__init__(first.message, first.position, first.help)
        self.errors = errors
        self.truncated = truncated
        self.kind = first.kind
        self.exit_code = max(e.exit_code for e in errors)

    def __str__(self) -> str:
        text = "\n".join(str(e) for e in self.errors)
        if self.truncated:
            text += f"\nerror: stopped after {len(self.errors)} errors"
        return text


def raise_all(errors) -> None:
    """Raise nothing, the one error, or :class:`DiagErrors` with the first ``MAX_ERRORS`` in source order."""
    errors = sorted(errors, key=lambda e: (e.position.line, e.position.column) if e.position else (0, 0))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise DiagErrors(errors[:MAX_ERRORS], truncated=len(errors) > MAX_ERRORS)


def each_error(err: DiagError) -> tuple[DiagError, ...]:
    """The single errors inside ``err`` (itself, unless it is a :class:`DiagErrors`)."""
    return err.errors if isinstance(err, DiagErrors) else (err,)


class DiagSyntaxError(DiagError):
    """The text does not follow the grammar of the language."""


class DiagNameError(DiagError):
    """An unknown, reserved, duplicated or unsafe name."""


class DiagTypeError(DiagError):
    """An unknown type, or a tensor used with the wrong number or kind of indices."""


class EquivarianceError(DiagError):
    """A well-formed diagram that is not equivariant as declared (exit code 1)."""

    exit_code = 1
    kind = "not equivariant"


class OutputError(DiagError):
    """A file that cannot be read or written."""
