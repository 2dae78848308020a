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


@pytest.fixture(autouse=True, scope="session")
def _host_loop_cache(tmp_path_factory):
    """The kernels' host loops (fused=True on CPU arrays) built into this session's own folder, not
    the user's ~/.cache/diagc: every run starts cold, as on a fresh machine."""
    import os

    before = os.environ.get("DIAGC_CACHE")
    os.environ["DIAGC_CACHE"] = str(tmp_path_factory.mktemp("diagc_cache"))
    yield
    if before is None:
        os.environ.pop("DIAGC_CACHE", None)
    else:
        os.environ["DIAGC_CACHE"] = before
