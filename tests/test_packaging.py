"""What the sdist and the wheel carry (review 24, findings 1-3), checked from the files that decide it.

Static, not a build: building needs setuptools >= 77 (pyproject's build-system), which a test
environment need not have (the build runs in pip's isolated environment), and takes seconds. So the
sdist's file list is computed with setuptools' own MANIFEST.in machinery (``FileList``, what
``sdist`` runs on the template) plus the packages setuptools adds itself, and compared with the
repository's tracked files. The real build was checked by hand for the commit (an unpacked sdist
collects its tests with 0 errors; the wheel holds ``dist-info/licenses/LICENSE``).
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import pathlib
import re
import shutil
import subprocess
import tomllib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def tracked_files() -> list[str]:
    """The repository's files: git's list in a checkout, else every file (an unpacked sdist's tree)."""
    if (REPO / ".git").exists() and shutil.which("git"):
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        return [name for name in out.decode().split("\0") if name and (REPO / name).is_file()]
    skip = {"__pycache__", ".pytest_cache", ".hypothesis", "build", "dist"}
    return [str(p.relative_to(REPO)) for p in REPO.rglob("*")
            if p.is_file() and not skip.intersection(p.relative_to(REPO).parts)
            and not any(part.endswith(".egg-info") for part in p.relative_to(REPO).parts)
            and p.name not in ("PKG-INFO", "setup.cfg") and p.suffix not in (".pyc", ".nbi", ".nbc")]


def manifest_files() -> set[str]:
    """What MANIFEST.in adds to the sdist, by setuptools' own template processing."""
    from setuptools.command.egg_info import FileList

    files = FileList()
    cwd = os.getcwd()
    os.chdir(REPO)  # FileList walks the current directory
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # "no previously-included files matching ..."
            for line in (REPO / "MANIFEST.in").read_text().splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    files.process_template_line(line)
    finally:
        os.chdir(cwd)
    return {pathlib.PurePath(name).as_posix() for name in files.files}


def in_packages(name: str) -> bool:
    """A file setuptools puts in both the wheel and the sdist without MANIFEST.in: a package's module, or
    package data pyproject declares."""
    tool = PYPROJECT["tool"]["setuptools"]
    top = name.split("/", 1)[0]
    if not any(pathlib.PurePath(top).match(pattern) for pattern in tool["packages"]["find"]["include"]):
        return False
    if name.endswith(".py"):
        return True
    return any(name.startswith(package.replace(".", "/") + "/")
               and pathlib.PurePath(name[len(package) + 1:]).match(pattern)
               for package, patterns in tool.get("package-data", {}).items() for pattern in patterns)


def test_sdist_is_the_whole_source():
    """Finding 1: the sdist shipped tests without conftest.py or their helpers, and no docs (a testpath),
    examples, scripts, .ci or LICENSE: pytest in the unpacked sdist had 34 collection errors."""
    shipped = manifest_files()
    missing = [name for name in tracked_files() if name not in shipped and not in_packages(name)]
    assert missing == [], f"not in the sdist (MANIFEST.in): {missing}"
    for name in ("tests/conftest.py", "tests/keras_helpers.py", "docs/index.md", "examples/chelsea.png",
                 "LICENSE", ".ci/run"):  # the ones the review found missing, should tracked_files miss them
        assert name in shipped, name


def test_license_is_spdx_and_shipped():
    """Findings 2 and 3: the SPDX expression (the TOML-table form is deprecated, builds refused from
    2027-02-18 by setuptools), the licence text at the root, and the setuptools that supports both."""
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert "LICENSE" in project["license-files"]
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    requires = PYPROJECT["build-system"]["requires"]
    # PEP 639's `license` string and `license-files` arrived in setuptools 77.0
    assert any(req.replace(" ", "") == "setuptools>=77" for req in requires), requires


def _requirements(extra: str) -> set[str]:
    return {req.replace(" ", "") for req in PYPROJECT["project"]["optional-dependencies"][extra]}


def test_extras_are_named_for_what_they_enable_and_test_holds_them():
    """Finding 4: compare against a Keras file and convert --check-with-keras asked for the `test` extra
    (pytest, hypothesis, tf2onnx, matplotlib...), an ONNX compare for `bench`, and `bench` alone could not
    run bench. Each feature's extra exists in pyproject, and CI's `test` installs every one of them."""
    from npxception.extras import EXTRAS

    defined = PYPROJECT["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(defined), set(EXTRAS) - set(defined)
    for extra in EXTRAS:
        assert _requirements(extra) <= _requirements("test"), (extra, _requirements(extra) - _requirements("test"))
    names = lambda extra: {re.split(r"[<>=!~\[]", req)[0].lower() for req in _requirements(extra)}  # noqa: E731
    assert {"tensorflow", "tf_keras"} <= names("keras")  # Keras 3 files and Keras 2 (tf_keras) files
    assert {"onnx", "onnxruntime"} <= names("onnx")
    assert {"tensorflow", "onnxruntime", "tf2onnx"} <= names("bench")  # bench builds its model in Keras 3
    assert not names("keras") & {"pytest", "hypothesis", "tf2onnx", "matplotlib"}
    readme = (REPO / "README.md").read_text()
    assert all(f"* `{extra}`: " in readme for extra in EXTRAS), "the README lists the extras"


def test_every_install_hint_names_a_user_extra():
    """Every `pip install 'npxception[...]'` in the package's messages names an extra pyproject defines,
    and none sends a user to `test` (the test runner's)."""
    from npxception.extras import EXTRAS, pip_install

    found = []
    for folder in ("npxception",):  # npxception/weights_tools included
        for path in set((REPO / folder).rglob("*.py")) - {REPO / "npxception" / "extras.py"}:  # its docstring
            for extras in re.findall(r"npxception\[([\w,-]+)\]", path.read_text()):
                found += [(path.name, extra) for extra in extras.split(",")]
    assert found and all(extra in EXTRAS for _, extra in found), found
    assert pip_install("keras") == "pip install 'npxception[keras]'"


def test_messages_point_to_the_feature_extras(monkeypatch):
    """The messages themselves, where the module is missing (a None in sys.modules makes import fail)."""
    import sys

    from npxception import keras_side

    monkeypatch.setitem(sys.modules, "tf_keras", None)
    with pytest.raises(ImportError, match=r"needs tf_keras \(pip install 'npxception\[keras\]'\)"):
        keras_side._import("tf_keras")


def _message_texts(tree):
    """The string literals of a module that are not docstrings (messages, help texts), as their constant text."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    inner = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    for node in ast.walk(tree):
        if id(node) in docstrings or id(node) in inner:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr):
            yield node.lineno, "".join(p.value for p in node.values if isinstance(p, ast.Constant))


def test_messages_naming_source_files_say_where_they_are():
    """Finding 8: a message cited docs/keras-recipe.md#mixed-precision or scripts/make_imagenet_labels.py,
    which a wheel does not hold. A message naming a file of the source tree says it is in the source
    distribution."""
    bad = []
    for folder in ("npxception",):  # npxception/weights_tools included
        for path in sorted((REPO / folder).rglob("*.py")):
            for line, text in _message_texts(ast.parse(path.read_text())):
                if re.search(r"\b(docs|scripts|examples|benchmarks|tests)/\w", text) and "source distribution" not in text:
                    bad.append(f"{path.relative_to(REPO)}:{line}: {text[:80]!r}")
    assert bad == []
