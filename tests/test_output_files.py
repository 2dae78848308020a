"""Files diagc writes get the permissions a plain open() would give them under the user's umask."""

import os
import stat

import pytest

from compiler import cli

GOOD = "diagram dot(a: vec, b: vec) -> s: scalar {\n    s = a[i] b[i]\n}\n"


@pytest.fixture(params=[0o022, 0o027, 0o077, 0o002], ids=lambda m: f"umask{m:03o}")
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_every_command_writes_files_with_the_umask_mode(tmp_path, umask, capsys):
    src = tmp_path / "good.diag"
    src.write_text(GOOD)
    want = 0o666 & ~umask
    assert cli.main(["compile", str(src), "-o", str(tmp_path / "out.py")]) == 0
    assert cli.main(["draw", str(src), "-o", str(tmp_path / "out.svg")]) == 0
    assert cli.main(["enumerate", "--in", "X=sym2", "--out", "sym2", "-o", str(tmp_path / "basis.diag"),
                     "--module", str(tmp_path / "basis.py")]) == 0
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.diag").write_text(GOOD)
    assert cli.main(["build", str(tree), "-o", str(tmp_path / "built")]) == 0
    assert cli.main(["prove", str(src), "-o", str(tmp_path / "cert")]) == 0
    written = [tmp_path / n for n in ("out.py", "out.svg", "basis.diag", "basis.py")]
    written += [tmp_path / "built" / n for n in ("sub/a.py", "index.json", "INDEX.md")]
    written += sorted((tmp_path / "cert").iterdir())
    assert len(written) > 10
    for path in written:
        assert mode(path) == want, f"{path.name}: {mode(path):03o}, expected {want:03o}"
    # folders diagc creates get the mode of a plain mkdir
    for folder in (tmp_path / "built", tmp_path / "built" / "sub", tmp_path / "cert"):
        assert mode(folder) == 0o777 & ~umask, folder.name
    # no temporary file is left behind
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]
    capsys.readouterr()


def test_rewriting_a_file_or_certificate_keeps_its_mode(tmp_path, capsys):
    src = tmp_path / "good.diag"
    src.write_text(GOOD)
    out = tmp_path / "out.py"
    out.write_text("old")
    os.chmod(out, 0o750)
    assert cli.main(["compile", str(src), "-o", str(out)]) == 0
    assert mode(out) == 0o750 and "def dot" in out.read_text()
    cert = tmp_path / "cert"
    assert cli.main(["prove", str(src), "-o", str(cert)]) == 0
    os.chmod(cert, 0o751)
    assert cli.main(["prove", str(src), "-o", str(cert)]) == 0
    assert mode(cert) == 0o751
    capsys.readouterr()


def test_no_command_writes_a_file_for_a_diagram_that_does_not_check(tmp_path, capsys):
    """A cross product declared vec (it is axial): compile, draw and prove exit 1 and write nothing
    (draw once drew it and exited 0)."""
    src = tmp_path / "cross.diag"
    src.write_text("diagram cross(a: vec, b: vec) -> c: vec {\n    c[i] = eps[i,j,k] a[j] b[k]\n}\n")
    for command, out in (("compile", "out.py"), ("draw", "out.svg"), ("prove", "cert")):
        assert cli.main([command, str(src), "-o", str(tmp_path / out)]) == 1, command
        assert not (tmp_path / out).exists(), command
    assert "not equivariant" in capsys.readouterr().err
