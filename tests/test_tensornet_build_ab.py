"""benchmarks/tensornet_build_ab.py: builds of TensorNet's diagrams swapped into examples/tensornet.py
in one process, each checked against torchmd-net before anything is timed."""

import pytest

import compiler
from conftest import ROOT
import reference  # noqa: F401  (puts benchmarks/ on the path)

pytest.importorskip("torchmdnet")
import tensornet_build_ab  # noqa: E402

SOURCES = {"tensornet_layer.py": "diagrams/tensornet_layer.diag", "tensornet.py": "diagrams/tensornet.diag",
           "tensornet_so3.py": "diagrams/tensornet_so3.diag", "tensornet_graph.py": "examples/tensornet_graph.diag"}


def test_builds_are_timed_against_torchmd_net_and_a_wrong_build_is_refused(tmp_path, capsys):
    good, wrong = tmp_path / "good", tmp_path / "wrong"
    for folder in (good, wrong):
        folder.mkdir()
        for name, source in SOURCES.items():
            (folder / name).write_text(compiler.compile_file(ROOT / source))
    assert set(tensornet_build_ab.MODULES.values()) == set(SOURCES)
    argv = ["--atoms", "12", "--threads", "1", "--rounds", "1"]
    assert tensornet_build_ab.main([str(good)] + argv) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| 12 | 1 |"))
    assert len(row.split("|")) == 8  # atoms, threads, torchmd-net, the build's time and ratio, faults
    # a build whose message passing triples the messages disagrees with torchmd-net: refused
    text = (wrong / "tensornet_graph.py").read_text()
    (wrong / "tensornet_graph.py").write_text(
        text + "\n_right = message\n\n\ndef message(*a, **k):\n    mi, ma, mt = _right(*a, **k)\n"
               "    return 3 * mi, 3 * ma, 3 * mt\n")
    import tensornet

    own = tensornet.GRAPH
    with pytest.raises(SystemExit, match="disagree"):
        tensornet_build_ab.main([str(wrong)] + argv)
    assert tensornet.GRAPH is own  # the example's own modules are back
