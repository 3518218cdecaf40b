"""Source text that makes a subprocess behave as if no deep-learning framework were installed.

Prepend :data:`BLOCKER` to a ``python -c`` script, before anything else is
imported: a meta-path finder then refuses every module of the frameworks
(ModuleNotFoundError, the ImportError subclass a missing package raises), so any
import of them, direct or from a dependency, fails as on a framework-free
machine. :data:`LEAKED` is an expression listing any of them that got into
``sys.modules`` anyway.

Used by test_convert_files.py and test_framework_free.py.
"""

from __future__ import annotations

import textwrap

BLOCKED = ("tensorflow", "keras", "tf_keras", "torch", "jax", "jaxlib")

BLOCKER = textwrap.dedent(f"""
    import importlib.abc as _block_abc
    import sys as _block_sys

    class BlockFrameworks(_block_abc.MetaPathFinder):
        BLOCKED = {BLOCKED!r}

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ModuleNotFoundError(f"{{name}} is blocked in this test", name=name)
            return None

    _block_sys.meta_path.insert(0, BlockFrameworks())
""")

LEAKED = f"sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r})"
