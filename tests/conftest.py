import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DIAGRAMS = sorted((ROOT / "diagrams").glob("*.diag"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def example_diagrams():
    """(file, diagram IR) for every diagram of every example file."""
    from compiler.frontend.lower import lower_source

    out = []
    for path in DIAGRAMS:
        for d in lower_source(path.read_text(), str(path)).diagrams:
            out.append(pytest.param(path, d, id=f"{path.stem}.{d.name}"))
    return out
