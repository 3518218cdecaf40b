"""The optional extras, named for what they enable, and the one way messages ask for them.

pyproject.toml defines each (``[project.optional-dependencies]``); ``test`` is all of them plus the
test runner. A message that needs one says ``pip install 'npxception[NAME]'`` through
:func:`pip_install`, so a renamed extra cannot leave a message pointing at one that does not exist
(tests/test_packaging.py checks both against pyproject).
"""

from __future__ import annotations

# name -> what it enables (the README's list says the same)
EXTRAS = {
    "keras": "compare --against a Keras file, convert --check-with-keras (TensorFlow, tf_keras)",
    "onnx": "compare --against an .onnx file (onnxruntime, onnx)",
    "bench": "npxception bench, against TensorFlow and ONNX Runtime (tensorflow, onnxruntime, tf2onnx)",
    "plot": "compare --plot, Report.plot (matplotlib)",
}


def pip_install(extra: str) -> str:
    """The command that installs ``extra``: ``pip install 'npxception[keras]'``."""
    if extra not in EXTRAS:
        raise KeyError(f"no extra {extra!r}: one of {', '.join(EXTRAS)}")
    return f"pip install 'npxception[{extra}]'"
