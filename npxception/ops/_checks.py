"""Input validation shared by every op in :mod:`npxception.ops`.

Each helper raises with a message that names the op, the argument, what was
expected and what was found, e.g.::

    conv2d: kernel has C_in=4 but x has 3 channels; expected kernel shape (KH, KW, 3, C_out)

Wrong dtypes raise ``TypeError``; wrong shapes and values raise ``ValueError``.
Arrays are returned C-contiguous (a copy only when needed) so that each Numba
kernel compiles once per dtype, and no op ever writes into its inputs.
"""

from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # float16 is refused: Keras computes it in float32
IMPLS = ("fast", "reference")
PADDINGS = ("same", "valid")


def check_impl(op: str, impl) -> str:
    """``impl`` is ``"fast"`` or ``"reference"``."""
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl must be 'fast' or 'reference', found {impl!r}")
    return impl


def float_array(op: str, name: str, a, like: np.ndarray | None = None) -> np.ndarray:
    """``a`` as a C-contiguous float32/float64 array; with ``like``, of exactly ``like``'s dtype."""
    arr = np.asarray(a)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be float32 or float64, found dtype {arr.dtype}")
    if like is not None and arr.dtype != like.dtype:
        raise TypeError(f"{op}: {name} has dtype {arr.dtype} but x has dtype {like.dtype}; "
                        f"expected {like.dtype} (no silent up- or downcast: convert one of them)")
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)  # (ascontiguousarray makes 0-D 1-D)


def check_rank(op: str, name: str, a: np.ndarray, rank: int, layout: str) -> None:
    """``a.ndim == rank``; ``layout`` names the dimensions, e.g. ``"(N, H, W, C)"``."""
    if a.ndim != rank:
        raise ValueError(f"{op}: {name} must be {rank}-D {layout}, found {a.ndim}-D array of shape {a.shape}")


def check_nhwc(op: str, name: str, x: np.ndarray) -> None:
    """A 4-D NHWC batch with at least one row, column and channel."""
    check_rank(op, name, x, 4, "(N, H, W, C)")
    if min(x.shape[1:]) < 1:
        raise ValueError(f"{op}: {name} must have H, W, C >= 1, found shape {x.shape}")


def check_same_shape(op: str, name: str, a: np.ndarray, expected: tuple, what: str) -> None:
    """``a.shape == expected``; ``what`` explains where ``expected`` comes from."""
    if a.shape != tuple(expected):
        raise ValueError(f"{op}: {name} must have shape {tuple(expected)} ({what}), found {a.shape}")


def pair(op: str, name: str, value) -> tuple[int, int]:
    """An int or a pair of ints, each >= 1, as ``(rows, cols)``."""
    values = (value, value) if _is_int(value) else value
    if not isinstance(values, (tuple, list)) or len(values) != 2 or not all(_is_int(v) for v in values):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, found {value!r}")
    if min(values) < 1:
        raise ValueError(f"{op}: {name} must be >= 1, found {value!r}")
    return int(values[0]), int(values[1])


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_padding(op: str, padding) -> str:
    """``"same"`` or ``"valid"``, case-insensitive; returned lower-case."""
    p = padding.lower() if isinstance(padding, str) else padding
    if p not in PADDINGS:
        raise ValueError(f"{op}: padding must be 'same' or 'valid', found {padding!r}")
    return p


def check_window_fits(op: str, what: str, hw: tuple[int, int], window: tuple[int, int], padding: str) -> None:
    """Under VALID the window must fit inside the (unpadded) map, else the output would be empty."""
    if padding == "valid" and (window[0] > hw[0] or window[1] > hw[1]):
        raise ValueError(f"{op}: {what} {window[0]}x{window[1]} is larger than the input "
                         f"{hw[0]}x{hw[1]} under padding='valid'; expected {what} <= input size "
                         f"(or use padding='same')")


def check_kernel_channels(op: str, name: str, kernel: np.ndarray, c_in: int, layout: str) -> None:
    """A rank-4 ``kernel`` whose axis 2 is x's channel count; ``layout`` like ``"(KH, KW, {c}, C_out)"``."""
    check_rank(op, name, kernel, 4, layout.format(c="C_in"))
    if kernel.shape[2] != c_in:
        raise ValueError(f"{op}: {name} has C_in={kernel.shape[2]} but x has {c_in} channels; "
                         f"expected {name} shape {layout.format(c=c_in)}, found {kernel.shape}")
    if min(kernel.shape) < 1:
        raise ValueError(f"{op}: {name} must have no zero-length axis, found shape {kernel.shape}")


def conv_args(op: str, x, kernel, strides, padding, *, kernel_name: str = "kernel",
              layout: str = "(KH, KW, {c}, C_out)"):
    """The shared checks of a windowed op: NHWC float x, matching rank-4 kernel, strides, padding, fit.

    Returns ``(x, kernel, (sh, sw), padding)`` contiguous and normalised.
    """
    x = float_array(op, "x", x)
    kernel = float_array(op, kernel_name, kernel, like=x)
    check_nhwc(op, "x", x)
    check_kernel_channels(op, kernel_name, kernel, x.shape[3], layout)
    strides = pair(op, "strides", strides)
    padding = check_padding(op, padding)
    check_window_fits(op, kernel_name, x.shape[1:3], kernel.shape[:2], padding)
    return x, kernel, strides, padding
