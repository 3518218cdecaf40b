"""The one error every weights_tools reader and matcher raises for a file it cannot convert.

It lives alone, below everything else in weights_tools, so that the readers and
the matcher's modules can all raise it without importing one another.
"""


class ConversionError(ValueError):
    """A file or model that npxception cannot convert; the message says why and where."""
