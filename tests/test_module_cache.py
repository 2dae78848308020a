"""The module cache of compiler.load / load_source (compiler.api.cached_compile): a later load of
the same source by the same generator reads the module text back instead of compiling, and gets
exactly the text a compile gives; anything that could change the text is in the key; a cache that
cannot be used only means compiling."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import compiler
from compiler import api
from compiler.errors import DiagError

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "diagram cross(a: vec, b: vec) -> c: axial { c[i] = eps[i,j,k] a[j] b[k] }\n"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIAGC_CACHE", str(tmp_path))
    return tmp_path / "modules"


@pytest.fixture
def compiles(monkeypatch):
    """The compiles that load makes (sources compiled), counted through compile_source."""
    seen = []
    real = api.compile_source

    def counting(source, filename="<string>", target="numpy", *, staging=True):
        seen.append(filename)
        return real(source, filename, target, staging=staging)

    monkeypatch.setattr(api, "compile_source", counting)
    return seen


def _cross(m):
    a, b = np.array([1.0, 2.0, 3.0]), np.array([-2.0, 0.5, 4.0])
    return m.cross(a, b), np.cross(a, b)


def test_a_second_load_reads_the_text_a_compile_gives(cache, compiles):
    first = compiler.load_source(SOURCE, "cross_ops")
    assert compiles == ["<cross_ops>"]
    second = compiler.load_source(SOURCE, "cross_ops")
    assert compiles == ["<cross_ops>"]  # read back, not compiled
    files = list(cache.iterdir())
    header, text = files[0].read_text(encoding="utf-8").split("\n", 1)
    assert len(files) == 1 and text == compiler.compile_source(SOURCE, "<cross_ops>")
    assert header == api._CACHE_HEADER + api._digest(text)
    assert first is not second and first.__name__ != second.__name__
    np.testing.assert_array_equal(*_cross(second))


def test_a_diag_file_is_cached_under_its_path(cache, compiles, tmp_path):
    path = tmp_path / "ops.diag"
    path.write_text(SOURCE, encoding="utf-8")
    m = compiler.load(path)
    compiler.load(path)
    assert compiles == [os.fspath(path)]
    assert m.__file__ == f"<diagc:{os.fspath(path)}>"
    np.testing.assert_array_equal(*_cross(m))
    # the same text under another file name compiles again (the name is in the module's text)
    other = tmp_path / "other.diag"
    other.write_text(SOURCE, encoding="utf-8")
    compiler.load(other)
    assert compiles == [os.fspath(path), os.fspath(other)]
    assert len(list(cache.iterdir())) == 2


def test_what_changes_the_text_changes_the_key(cache, compiles, monkeypatch):
    compiler.load_source(SOURCE, "k")
    compiler.load_source(SOURCE.replace("eps[i,j,k] a[j] b[k]", "eps[i,j,k] b[j] a[k]"), "k")  # the source
    assert len(compiles) == 2
    monkeypatch.setattr(api, "generator_fingerprint", lambda: "another diagc")  # the generator
    compiler.load_source(SOURCE, "k")
    assert len(compiles) == 3 and len(list(cache.iterdir())) == 3


def test_the_fingerprint_covers_the_generator_and_its_libraries(monkeypatch):
    files = dict(api._package_files())
    for rel in ("api.py", "frontend/grammar.lark", "planning/plan.py", "targets/python/runtime.py",
                "templates/python_module.py.j2", "templates/cuda/module.cu.j2"):
        assert rel in files, rel
    before = api.generator_fingerprint()
    api.generator_fingerprint.cache_clear()
    from importlib import metadata

    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda d: "0.0" if d == "sympy" else real(d))
    try:
        assert api.generator_fingerprint() != before
    finally:
        api.generator_fingerprint.cache_clear()


def test_cache_false_compiles(cache, compiles):
    compiler.load_source(SOURCE, "nc")
    compiler.load_source(SOURCE, "nc", cache=False)
    assert len(compiles) == 2


def test_a_cache_that_cannot_be_written_only_means_compiling(tmp_path, monkeypatch, compiles):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DIAGC_CACHE", str(blocker))
    for _ in range(2):
        np.testing.assert_array_equal(*_cross(compiler.load_source(SOURCE, "nw")))
    assert len(compiles) == 2
    assert blocker.read_text() == "not a folder"


def test_bad_source_raises_and_writes_nothing(cache):
    with pytest.raises(DiagError, match="<bad>:1:"):
        compiler.load_source("diagram f(a: vec) -> s: scalar { s = a[i] }\n", "bad")
    assert not cache.exists() or not list(cache.iterdir())


def test_import_compiler_and_a_cached_load_import_neither_sympy_nor_networkx(tmp_path):
    """What makes a cached load fast: the checker's libraries are imported only to compile."""
    code = ("import sys, compiler\n"
            f"m = compiler.load_source({SOURCE!r}, 'x')\n"
            "print(sorted(k for k in ('sympy', 'networkx', 'lark') if k in sys.modules))\n")
    env = dict(os.environ, DIAGC_CACHE=str(tmp_path), PYTHONPATH=str(ROOT))
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
            for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert runs[0].stdout.strip() == "['lark', 'networkx', 'sympy']"  # the first load compiles
    assert runs[1].stdout.strip() == "[]"


@pytest.mark.parametrize("damage", ["truncated", "empty", "edited", "not utf-8"])
def test_a_damaged_cache_file_is_compiled_again_and_replaced(cache, compiles, damage):
    compiler.load_source(SOURCE, "dmg")
    (path,) = cache.iterdir()
    whole = path.read_bytes()
    path.write_bytes({"truncated": whole[: len(whole) // 2], "empty": b"",
                      "edited": whole.replace(b"def cross", b"def crosz"), "not utf-8": b"\xff" + whole}[damage])
    m = compiler.load_source(SOURCE, "dmg")
    np.testing.assert_array_equal(*_cross(m))
    assert len(compiles) == 2 and path.read_bytes() == whole


def test_the_target_is_part_of_the_key(cache):
    py = api.cached_compile(SOURCE, "<t>")
    cu = api.cached_compile(SOURCE, "<t>", target="cuda")
    assert py != cu and sorted(p.suffix for p in cache.iterdir()) == [".cu", ".py"]
    assert api.cached_compile(SOURCE, "<t>", target="cuda") == cu == compiler.compile_source(SOURCE, "<t>", "cuda")


def test_staging_is_part_of_the_key(cache, compiles):
    """A module built without stages (staging=False) is cached apart from the staged one."""
    source = "diagram scaled(x: vec[c], s: scalar[c], W: weight[c,d]) -> y: vec[d] { y[d,i] = W[c,d] s[c] x[c,i] }\n"
    staged = api.cached_compile(source, "<s>")
    one_call = api.cached_compile(source, "<s>", staging=False)
    assert staged != one_call and len(compiles) == 2 and len(list(cache.iterdir())) == 2
    assert "_scaled_staged" in staged and "_scaled_staged" not in one_call
    assert api.cached_compile(source, "<s>", staging=False) == one_call == compiler.compile_source(source, "<s>",
                                                                                                     staging=False)
    assert api.cached_compile(source, "<s>") == staged and len(compiles) == 2  # both read back
    assert "_scaled_SPEC" in compiler.load_source(source, "s", staging=False).scaled.__code__.co_names
    assert len(compiles) == 2  # load_source(staging=False) read the same file back


def test_names_that_are_not_utf8_and_parts_that_look_joined(cache, compiles, tmp_path):
    """A file name with undecodable bytes (surrogate escapes) loads as without the cache; the key
    hashes each part on its own, so a name ending in what another source begins with is no match."""
    name = os.fsdecode(b"odd\xff.diag")
    path = tmp_path / name
    try:
        path.write_text(SOURCE, encoding="utf-8")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses the name")
    np.testing.assert_array_equal(*_cross(compiler.load(path)))
    api.cached_compile(SOURCE, "<x>\0y")  # (a NUL in the name: compiled and cached, not importable)
    with pytest.raises(DiagError):  # joined with NULs, the two keys' texts would be equal
        api.cached_compile("y\0" + SOURCE, "<x>")


def test_the_cache_is_not_used_once_the_generator_changed(cache, compiles, monkeypatch):
    """A process whose generator files changed after it imported diagc (an edit, an upgrade) neither
    reads nor writes the cache: what its code compiles would be stored under the new files' key."""
    compiler.load_source(SOURCE, "gen")
    monkeypatch.setattr(api, "_STATS_AT_IMPORT", api._STATS_AT_IMPORT[1:])
    compiler.load_source(SOURCE, "gen")
    compiler.load_source(SOURCE, "gen2")
    assert compiles == ["<gen>", "<gen>", "<gen2>"] and len(list(cache.iterdir())) == 1
