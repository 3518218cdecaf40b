"""The code the docs quote is the code the package runs.

The ``>>>`` examples of docs/*.md are executed (pyproject's ``--doctest-glob``). A
fenced ```python block without ``>>>`` is a quotation, and nothing executes it, so a
quotation of a function that later changed would go on teaching the old code (review 19:
docs/ops.md showed ``np.maximum`` where max_pool2d's reference uses ``np.fmax``, which skips
NaN as TF does). So every such block names what it quotes in its fence's info string,
after the language (Markdown renderers show only the language):

* ```` ```python from=npxception.ops.pooling.max_pool2d ````: the block's lines are
  lines of that object's source (``inspect.getsource``), or of a repository file
  (``from=examples/finetune_recipe.py``), in order and consecutive, compared with
  their indentation and runs of spaces collapsed (a doc may align its comments).
  A line ``...`` in the block skips any number of source lines.
* ```` ```python run ````: executed by a test, with Keras: docs/keras-recipe.md's
  Flatten head by tests/test_flatten_head.py::test_the_docs_flatten_head_runs (there,
  beside the Keras models that file builds anyway: TensorFlow's import is paid once).
* ```` ```python not-run: REASON ````: cannot run here (it needs torch, never a
  dependency). It must still parse, and its ``npxception`` imports must import.

Any other ```python block without ``>>>`` fails ``test_every_quotation_is_named``.
README.md has its own test (tests/test_readme.py: every block runs).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>\w*)(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)


def quotations():
    """(doc, line number, info string, body) of every ```python block without ``>>>``."""
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            if m["lang"] == "python" and ">>>" not in m["body"]:
                line = text.count("\n", 0, m.start()) + 1
                yield doc.relative_to(ROOT).as_posix(), line, m["info"].strip(), m["body"]


QUOTES = list(quotations())


def _id(q):
    return f"{q[0]}:{q[1]}"


def normalised(text):
    """Non-blank lines, stripped, each run of spaces collapsed to one."""
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def source_of(name):
    """The source text named by ``from=``: a repository file, or a module / function / class by its dotted name."""
    if "/" in name:
        return (ROOT / name).read_text()
    module, _, attr = name.rpartition(".")
    try:
        return inspect.getsource(getattr(importlib.import_module(module), attr))
    except (ImportError, ValueError):  # the name is a module itself
        return inspect.getsource(importlib.import_module(name))


def find_quote(quote, source):
    """None if ``quote``'s lines occur in ``source`` (runs of consecutive lines, in order, split at ``...``),
    else the first run that does not occur."""
    runs, run = [], []
    for line in normalised(quote):
        if line == "...":
            runs.append(run)
            run = []
        else:
            run.append(line)
    runs.append(run)
    src = normalised(source)
    at = 0
    for run in filter(None, runs):
        for start in range(at, len(src) - len(run) + 1):
            if src[start:start + len(run)] == run:
                at = start + len(run)
                break
        else:
            return run
    return None


def test_every_quotation_is_named():
    """No ```python block without ``>>>`` goes unchecked: each says what it quotes, or why it cannot run."""
    unnamed = [_id(q) for q in QUOTES if not re.fullmatch(r"from=\S+|run|not-run: .+", q[2])]
    assert not unnamed, f"```python blocks without >>> that name no source (from=...), run or not-run: {unnamed}"
    runs = [_id(q) for q in QUOTES if q[2] == "run"]
    assert len(runs) == 1, f"each ```python run block needs a test that runs it (one, in test_flatten_head.py): {runs}"
    assert any(q[2].startswith("from=") for q in QUOTES)  # the parser still finds the quotations


@pytest.mark.parametrize("quote", [q for q in QUOTES if q[2].startswith("from=")], ids=_id)
def test_quotation_is_the_source(quote):
    doc, line, info, body = quote
    name = info[len("from="):]
    missing = find_quote(body, source_of(name))
    assert missing is None, (f"{doc}:{line} quotes {name}, whose source does not have these lines "
                             f"(in this order, consecutive):\n" + "\n".join(missing))


def test_find_quote_fails_on_stale_code():
    """The check itself: a changed call, a reordered pair of lines and a gap without ``...`` are caught."""
    source = "def f(y, v):\n    a = 1\n    np.fmax(y, v, out=y)  # skips NaN\n    return y\n"
    assert find_quote("np.fmax(y,   v, out=y)   # skips NaN", source) is None
    assert find_quote("a = 1\n...\nreturn y", source) is None
    assert find_quote("np.maximum(y, v, out=y)", source) == ["np.maximum(y, v, out=y)"]
    assert find_quote("return y\n...\na = 1", source) == ["a = 1"]
    assert find_quote("a = 1\nreturn y", source) == ["a = 1", "return y"]


@pytest.mark.parametrize("quote", [q for q in QUOTES if q[2].startswith("not-run")], ids=_id)
def test_unrunnable_block_parses_and_imports(quote):
    doc, line, info, body = quote
    tree = ast.parse(body, filename=f"{doc}:{line}")
    imports = [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.module
               and node.module.split(".")[0] == "npxception"]
    for node in imports:
        module = importlib.import_module(node.module)
        for alias in node.names:
            assert hasattr(module, alias.name), f"{doc}:{line}: {node.module} has no {alias.name}"

