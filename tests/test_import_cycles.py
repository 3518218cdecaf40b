"""The import graph of npxception and weights_tools has no cycle (scripts/check_import_cycles.py).

Read from the source, so it costs no import. The checker itself is checked on
a planted cycle, so that a graph it failed to read could not pass as clean.
"""

from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _checker():
    spec = importlib.util.spec_from_file_location("check_import_cycles", ROOT / "scripts" / "check_import_cycles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_cycles():
    check = _checker()
    graph = check.graph()
    assert "npxception.model" in graph and "weights_tools.mapping" in graph  # the walk found the packages
    assert "npxception.ops" in graph["npxception.model"]  # and reads imports
    assert check.cycles(graph) == []


def test_checker_finds_a_planted_cycle(tmp_path):
    check = _checker()
    for package in check.PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "npxception" / "a.py").write_text("from . import b\n")
    (tmp_path / "npxception" / "b.py").write_text("def f():\n    from .c import g  # function-level\n")
    (tmp_path / "npxception" / "c.py").write_text("import weights_tools.d\n")
    (tmp_path / "weights_tools" / "d.py").write_text("from npxception.a import x\n")
    assert check.cycles(check.graph(tmp_path)) == [["npxception.a", "npxception.b", "npxception.c",
                                                    "weights_tools.d"]]
