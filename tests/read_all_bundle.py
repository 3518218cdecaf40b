"""``main([prefix])``: open a TensorFlow bundle and read every entry, as the converter does once it has checked
shapes; a refusal is printed as one line on stderr with exit status 1.

test_hostile_tf.py runs it through tests/limited_runner.py (forked under ``RLIMIT_AS`` from a server that
imported this module once) instead of a fresh ``python -c`` per case, which spent its ~1.5 s of CPU importing
numpy and numba before each case's few milliseconds of reading.
"""

from __future__ import annotations

import sys

from npxception.weights_tools.errors import ConversionError
from npxception.weights_tools.tf_bundle import Bundle


def main(args) -> int:
    try:
        with Bundle(args[0]) as b:
            for key, e in b.entries.items():
                b.string(key) if e.dtype == 7 else b.tensor(key).read()
    except ConversionError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0
