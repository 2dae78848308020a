"""Certificates: they verify for every example, and every kind of tampering is caught."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from compiler import cli
from compiler.tools.certify import cayley, det3, mirror, verify, CertificateError
from conftest import DIAGRAMS, ROOT


def run(*args):
    return subprocess.run([sys.executable, "-m", "compiler", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A certificate for every example file (how long proving takes is a benchmark's business, not a
    test's: the machine is shared)."""
    root = tmp_path_factory.mktemp("certs")
    for path in DIAGRAMS:
        assert cli.main(["prove", str(path), "-o", str(root / path.stem)]) == 0
    return root, None


def test_exact_group_elements():
    from fractions import Fraction as F

    r = cayley([F(1, 2), F(-2, 3), F(3)])
    for i in range(3):
        for j in range(3):
            assert sum(r[i][k] * r[j][k] for k in range(3)) == (1 if i == j else 0)
    assert det3(r) == 1
    m = mirror([F(1), F(2), F(-5, 7)])
    assert det3(m) == -1 and all(m[i][j] == m[j][i] for i in range(3) for j in range(3))


@pytest.mark.parametrize("path", DIAGRAMS, ids=[p.stem for p in DIAGRAMS])
def test_every_example_certificate_verifies(certs, path):
    root, _ = certs
    folder = root / path.stem
    assert sorted(p.name for p in folder.iterdir() if p.suffix != ".svg") == [
        "certificate.json", "module.py", "report.md", "source.diag"]
    r = run("verify", folder)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("verified ") and len(r.stdout.strip().splitlines()) == 1
    report = (folder / "report.md").read_text()
    assert "Structural proof" in report and "Algebraic proof" in report and ".svg)" in report


def _copy(certs, name, tmp_path):
    root, _ = certs
    target = tmp_path / name
    shutil.copytree(root / name, target)
    return target


def test_module_edited_by_one_character_fails(certs, tmp_path):
    folder = _copy(certs, "products", tmp_path)
    module = folder / "module.py"
    text = module.read_text()
    edited = text.replace("    _t0 = _b.", "    _t0 = _b .", 1)  # one character, still valid Python
    assert edited != text
    module.write_text(edited)
    r = run("verify", folder)
    assert r.returncode == 1 and "module does not match its sha256" in r.stderr


def test_changed_claim_fails(certs, tmp_path):
    folder = _copy(certs, "products", tmp_path)
    cert = json.loads((folder / "certificate.json").read_text())
    cross = next(d for d in cert["diagrams"] if d["name"] == "cross")
    cross["outputs"][0]["type"] = "vec"
    (folder / "certificate.json").write_text(json.dumps(cert))
    with pytest.raises(CertificateError) as info:
        verify(str(folder))
    message = str(info.value)
    assert "claims outputs" in message and "algebraic check fails for a reflection" in message


def _tamper(folder, edit) -> None:
    """Edit the certified module with ``edit(text) -> text`` and update its hash, as an attacker would."""
    import hashlib

    module = folder / "module.py"
    text = module.read_text()
    bad = edit(text)
    assert bad != text
    module.write_text(bad)
    cert = json.loads((folder / "certificate.json").read_text())
    cert["module"]["sha256"] = hashlib.sha256(bad.encode()).hexdigest()
    (folder / "certificate.json").write_text(json.dumps(cert))


def test_non_equivariant_module_fails_even_with_matching_hashes(certs, tmp_path):
    """An attacker edits the module and updates its hash: the exact identity catches it."""
    folder = _copy(certs, "products", tmp_path)
    # compute a[i] b[i] + a[0] b[0]: well-formed code, not rotation-invariant
    _tamper(folder, lambda text: re.sub(r"\n( +)s = (_t[^\n]*)\n", r"\n\1s = \2 + a[..., 0] * b[..., 0]\n",
                                        text, count=1))
    with pytest.raises(CertificateError, match="algebraic check fails for a rotation"):
        verify(str(folder))


def _flip_fused_sign(text):  # one sign flipped in the unrolled formulas of matmul_o3
    k = text.index(" + ", text.index("def _matmul_o3_fused"))
    return text[:k] + " - " + text[k + 3:]


def _subtract_in_place(text):  # matmul_o3's in-place path subtracts Y M instead of adding it
    k = text.index("C += ", text.index("def _matmul_o3_planned(")) + 1
    return text[:k] + " -= " + text[k + 3:]


def _misplace_component(text):  # the fused formulas write one component into the wrong place
    return text.replace("_b.copyto(_out[0][..., 0, 1], _C_1)", "_b.copyto(_out[0][..., 0, 1], _C_2)", 1)


def _flip_host_sign(text):  # one sign flipped in matmul_o3's C++ element function (its host loop's)
    k = text.index(" + ", text.index("void diagc_matmul_o3("))
    return text[:k] + " - " + text[k + 3:]


def _has_compiler():
    import shutil

    return bool(shutil.which(os.environ["CXX"]) if os.environ.get("CXX") else shutil.which("g++") or shutil.which("c++"))


@pytest.mark.parametrize("edit", [_flip_fused_sign, _subtract_in_place, _misplace_component, _flip_host_sign])
def test_every_code_path_is_bound_to_the_source(certs, tmp_path, edit):
    """The out= and fused=True paths are checked against the source too: an edit to either fails
    (fused=True: the fused array code, and the host loops' C++ where a compiler is found)."""
    if edit is _flip_host_sign and not _has_compiler():
        pytest.skip("no C++ compiler: the host loops are not run, nor checked")
    folder = _copy(certs, "tensornet", tmp_path)
    _tamper(folder, edit)
    with pytest.raises(CertificateError, match="the module differs from the source"):
        verify(str(folder))


def _break_host_build(text):  # C++ that does not compile, in matmul_o3's element function
    k = text.index("{", text.index("void diagc_matmul_o3("))
    return text[:k + 1] + " not C++; " + text[k + 1:]


def test_host_loops_that_do_not_build_fail_the_check(certs, tmp_path):
    """A host loop that cannot be built makes the module run its array code (with a warning); the
    certificate must not then claim the host loops agree: verify fails and says why."""
    if not _has_compiler():
        pytest.skip("no C++ compiler: the host loops are not run, nor checked")
    folder = _copy(certs, "tensornet", tmp_path)
    _tamper(folder, _break_host_build)
    with pytest.warns(RuntimeWarning, match="host loops could not be built"):
        with pytest.raises(CertificateError, match="host loops .* could not be built"):
            verify(str(folder))


def test_edited_source_and_structural_proof_fail(certs, tmp_path):
    folder = _copy(certs, "tensornet", tmp_path)
    cert = json.loads((folder / "certificate.json").read_text())
    cert["diagrams"][0]["structural"]["terms"][0]["parity"] = 1
    (folder / "certificate.json").write_text(json.dumps(cert))
    with pytest.raises(CertificateError, match="structural proof does not match"):
        verify(str(folder))
    src = folder / "source.diag"
    src.write_text(src.read_text() + "\n")
    with pytest.raises(CertificateError, match="source does not match"):
        verify(str(folder))


def test_truncated_and_missing_certificates(certs, tmp_path):
    folder = _copy(certs, "linear", tmp_path)
    path = folder / "certificate.json"
    path.write_text(path.read_text()[:200])
    r = run("verify", folder)
    assert r.returncode == 1 and "not valid JSON" in r.stderr and "Traceback" not in r.stderr
    r = run("verify", tmp_path / "nothing")
    assert r.returncode == 2 and "cannot read" in r.stderr
    path.write_text(json.dumps({"format": "diagc-certificate/1"}))
    r = run("verify", folder)
    assert r.returncode == 1 and "malformed" in r.stderr


def test_basis_certificate_has_a_checked_completeness_claim(tmp_path):
    src = tmp_path / "law.diag"
    src.write_text("group O3\nbasis stress(E: sym2^<=2) -> S: sym2\n")
    assert cli.main(["prove", str(src), "-o", str(tmp_path / "cert")]) == 0
    cert = json.loads((tmp_path / "cert" / "certificate.json").read_text())
    (entry,) = cert["diagrams"]
    assert entry["completeness"]["dimension"] == entry["completeness"]["rank"] == 7
    assert verify(str(tmp_path / "cert")).startswith("verified 1 diagram")
    # a witness at which the evaluations are singular is caught
    entry["completeness"]["witness_points"] = [[[["0"] * 3] * 3]]
    (tmp_path / "cert" / "certificate.json").write_text(json.dumps(cert))
    with pytest.raises(CertificateError, match="full rank"):
        verify(str(tmp_path / "cert"))


def test_prove_refuses_non_equivariant_sources(tmp_path):
    src = tmp_path / "bad.diag"
    src.write_text("diagram cross(a: vec, b: vec) -> c: vec {\n  c[i] = eps[i,j,k] a[j] b[k]\n}\n")
    r = run("prove", src, "-o", tmp_path / "cert")
    assert r.returncode == 1 and not (tmp_path / "cert").exists()
    assert not any(p.name.startswith(".cert") for p in tmp_path.iterdir())


def test_small_identities_are_expanded_large_ones_sampled(tmp_path):
    src = tmp_path / "two.diag"
    src.write_text("diagram small(a: vec, b: vec) -> c: axial {\n  c[i] = eps[i,j,k] a[j] b[k]\n}\n"
                   "diagram large(T: cart(4), U: cart(4)) -> s: scalar {\n  s = T[i,j,k,l] U[i,j,k,l]\n}\n")
    assert cli.main(["prove", str(src), "-o", str(tmp_path / "cert")]) == 0
    cert = json.loads((tmp_path / "cert" / "certificate.json").read_text())
    small, _, large, _ = cert["diagrams"]  # each followed by its NAME_vjp
    assert small["algebraic"]["symbolic"] and small["algebraic"]["false_pass_bound"] == "0"
    assert all(e["expanded_entries"] == 3 for e in small["algebraic"]["elements"])
    assert not large["algebraic"]["symbolic"]
    # 3 group elements x (degree 2 / 2^20)^2
    assert large["algebraic"]["false_pass_bound"] == "3/274877906944"
    assert verify(str(tmp_path / "cert")).startswith("verified 4 diagram")  # and their VJPs


MIXED = """group O3
diagram cross(a: vec, b: vec) -> c: axial {
    c[i] = eps[i,j,k] a[j] b[k]
}
diagram path(x: sph(1o), y: sph(1o)) -> t: sph(2e) {
    t[c] = cg(1,1,2)[a,b,c] x[a] y[b]
}
"""


def _report_sections(report: str) -> dict:
    """The report's text per diagram, keyed by the diagram's name (from its '## name:' heading)."""
    parts = re.split(r"^## ", report, flags=re.M)[1:]
    return {p.split(":", 1)[0]: p for p in parts}


def test_report_says_where_each_identity_was_proved_as_the_certificate_does(tmp_path):
    from compiler.tools.certify import CHECKED

    src = tmp_path / "mixed.diag"
    src.write_text(MIXED)
    assert cli.main(["prove", str(src), "-o", str(tmp_path / "cert")]) == 0
    cert = json.loads((tmp_path / "cert" / "certificate.json").read_text())
    sections = _report_sections((tmp_path / "cert" / "report.md").read_text())
    where = {d["name"]: d["algebraic"]["checked_on"] for d in cert["diagrams"]}
    # delta/eps only: the module itself, exactly; cg: the source, the module rounded (their VJPs alike)
    assert where == {"cross": "module", "cross_vjp": "module", "path": "source", "path_vjp": "source"}
    for d in cert["diagrams"]:
        a = d["algebraic"]
        text = sections[d["name"]]
        assert a["checked"] == CHECKED[a["checked_on"]]
        assert f"### Algebraic proof (on the {a['checked_on']})" in text
        assert f"- f is {a['checked']}" in text
        other = CHECKED["source" if a["checked_on"] == "module" else "module"]
        assert other not in text
    assert "rounded" not in sections["cross"] and "exact rational arithmetic" in sections["cross"]
    assert "rounded to float64" in sections["path"] and "Wigner D" in sections["path"]
    # a certificate that claims the wrong one does not verify
    for name, wrong in (("cross", "source"), ("path", "module")):
        folder = tmp_path / f"edited_{name}"
        shutil.copytree(tmp_path / "cert", folder)
        edited = json.loads((folder / "certificate.json").read_text())
        for d in edited["diagrams"]:
            if d["name"] == name:
                d["algebraic"]["checked_on"] = wrong
        (folder / "certificate.json").write_text(json.dumps(edited))
        with pytest.raises(CertificateError, match=f"diagram '{name}': the certificate says the identity was "
                                                   f"checked on the {wrong}"):
            verify(str(folder))
    assert verify(str(tmp_path / "cert")).startswith("verified 4 diagram(s)")  # and their VJPs
