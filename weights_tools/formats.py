"""Which kind of Keras file a path holds, from its first bytes; opened as a regular file only.

Its own module so that the readers (keras_golden included) can use it without
importing the package's ``__init__``, which imports them: no import cycle.
"""

from __future__ import annotations

import pathlib

from npxception.untrusted import IrregularFileError, open_regular

from .hdf5 import HDF5_MAGIC
from .keras3 import ZIP_MAGIC
from .mapping import ConversionError


def _open_checked(path: pathlib.Path):
    """Open a regular file for reading (a FIFO would block open() forever); ConversionError otherwise."""
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such file") from None
    except IrregularFileError as exc:
        raise ConversionError(str(exc)) from None
    except OSError as exc:
        raise ConversionError(f"{path}: cannot open ({exc.strerror or exc})") from None


def detect_format(path) -> str:
    """``"hdf5"`` or ``"zip"`` from the magic bytes; ConversionError for anything else."""
    path = pathlib.Path(path)
    where = str(path)
    with _open_checked(path) as f:
        head = f.read(8)
    if not head:
        raise ConversionError(f"{where}: the file is empty")
    if head == HDF5_MAGIC:
        return "hdf5"
    if head[:4] == ZIP_MAGIC:
        return "zip"
    raise ConversionError(f"{where}: not a Keras weight file (neither HDF5 nor a .keras zip archive)")
