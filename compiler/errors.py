"""One root error type for everything a user can get wrong.

Every error carries the file, line and column it is about and prints the offending
source line with a caret under it (as lark's ``get_context`` does)::

    diagrams/bad.diag:3:12: error: unknown type 'vector'
        diagram f(a: vector) -> s: scalar {
                     ^
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

    def __init__(self, message: str, position: Position | None = None):
        super().__init__(message)
        self.message = message
        self.position = position

    def __str__(self) -> str:
        if self.position is None:
            return f"{self.kind}: {self.message}"
        head = f"{self.position}: {self.kind}: {self.message}"
        ctx = self.position.context()
        return f"{head}\n{ctx}" if ctx else head


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
