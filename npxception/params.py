"""A model's weights in memory: ``{"layer/variable": array}``, Keras' layout and names.

:func:`check_params` holds them to the architecture table
(:func:`npxception.architecture.param_shapes`): every key present, nothing
extra, every shape right, one float dtype, all finite. :class:`Params` holds
them for a model, some kernels in the fast plan's packed form only.
:func:`random_params` draws seeded weights, BN statistics included, for tests
and teaching.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import architecture as arch
from .config import CONFIG
from .dtype_policy import SIXTEEN_BIT
from .untrusted import short_repr

DTYPES = (np.dtype("float32"), np.dtype("float64"))  # the two precisions every op computes in


def as_dtype(dtype, what="dtype") -> np.dtype:
    """``dtype`` as a NumPy dtype, float32 or float64; TypeError naming ``what`` for anything else.

    A name NumPy does not know ("flaot32", Keras' "mixed_float16") must not fall back to
    ``np.dtype(None)``, which is float64."""
    try:
        dt = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        dt = None
    if dt is None or dt not in DTYPES:
        hint = ""
        if isinstance(dtype, str) and dtype in SIXTEEN_BIT:  # Keras dtype policy names
            hint = (f"; npxception computes in float32 or float64 only: a Keras model that computed in "
                    f"{dtype!r} converts with weights_tools' dtype_policy='float32' (--dtype-policy float32), "
                    "and is then used with dtype='float32'")
        raise TypeError(f"{what}: expected 'float32' or 'float64', found {short_repr(dtype)}{hint}")
    return dt


def check_params(params: dict, expected: dict, where: str) -> None:
    """Every key present, nothing extra, every shape right, one float dtype, all finite."""
    missing = [k for k in expected if k not in params]
    if missing:
        raise ValueError(f"{where}: missing weight {missing[0]!r} (expected shape {expected[missing[0]]})"
                         + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    extra = [k for k in params if k not in expected]
    if extra:
        raise ValueError(f"{where}: unexpected weight {extra[0]!r} (shape {np.shape(params[extra[0]])}); "
                         "it belongs to no layer of this architecture and head")
    dtypes = set()
    for key, shape in expected.items():
        a = params[key]
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{where}: weight {key!r} must be a numpy array, found {type(a).__name__}")
        if a.shape != tuple(shape):
            raise ValueError(f"{where}: weight {key!r} has the wrong shape: expected {tuple(shape)}, "
                             f"found {a.shape}")
        if a.dtype not in DTYPES:
            raise TypeError(f"{where}: weight {key!r} must be float32 or float64, found {a.dtype}")
        dtypes.add(a.dtype)
        if not np.isfinite(a).all():
            raise ValueError(f"{where}: weight {key!r} contains NaN or Inf")
        if key.endswith("/moving_variance") and (a < 0).any():  # BN would take the sqrt of a negative
            raise ValueError(f"{where}: weight {key!r} is a variance but holds negative values "
                             f"(min {a.min():g})")
    if len(dtypes) > 1:
        raise TypeError(f"{where}: weights mix dtypes {sorted(d.name for d in dtypes)}; expected one")


class Params(Mapping):
    """A model's checked weights, ``{"layer/variable": array}``, read-only; each weight held once.

    A kernel the fast plan runs on the AVX-512 microkernel is held in the
    plan's packed layout instead of Keras' (:meth:`packed`): 80 MB of
    Xception's kernels would otherwise be in memory twice, against the 300 MB
    budget (docs/performance.md, "every kernel held only packed"). Reading it
    unpacks a new array, bit for bit (a permutation), kept by nobody here: the
    reference path, capture, ``save`` and ``astype`` see the weights they were given.
    Models made from one another's weights (:meth:`subset`, or the same
    Params) share one store: a kernel packed for one is packed for all.
    """

    def __init__(self, arrays):
        # key -> an array, or a packed form with unpack() (npxception/fast/direct.py PackedKernel)
        self._store = dict(arrays)
        self._keys = dict.fromkeys(self._store)
        for array in self._store.values():
            array.flags.writeable = False  # weights are shared with prepared fast plans

    def subset(self, keys) -> "Params":
        """The weights ``keys`` (in that order), sharing this store."""
        view = Params.__new__(Params)
        view._store = self._store
        view._keys = dict.fromkeys(keys)
        missing = [k for k in view._keys if k not in self._keys]
        if missing:
            raise KeyError(missing[0])
        return view

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        held = self._store[key]
        if isinstance(held, np.ndarray):
            return held
        array = held.unpack()
        array.flags.writeable = False
        return array

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)

    def replaced(self, arrays: dict) -> "Params":
        """These weights with ``arrays`` (``{key: array}``, keys of this model, checked) in place of theirs,
        in a store of their own: the models sharing this store keep their weights, and the rest of the
        weights are held as they are here (a kernel packed stays packed, once). A plan packs its kernels into
        one block (npxception/fast/packing.py, ``Slab``), which lives while any kernel cut from it does: kernels
        replaced one layer at a time hold the old block until its last kernel goes (up to the packed weights'
        size again, ~85 MB for Xception)."""
        out = Params.__new__(Params)
        out._store = {key: arrays[key] if key in arrays else self._store[key] for key in self._keys}
        out._keys = dict(self._keys)
        for array in arrays.values():
            array.flags.writeable = False
        return out

    def is_packed(self, key) -> bool:
        """Whether weight ``key`` is held packed (:meth:`packed`), not as an array."""
        if key not in self._keys:
            raise KeyError(key)
        return not isinstance(self._store[key], np.ndarray)

    def packed(self, key, pack):
        """Weight ``key`` held as ``pack(array)`` from now on (its array released), or as already packed.

        ``pack`` returns a form whose ``unpack()`` gives the array back bit for
        bit. Two plans packing at once at worst each keep their own copy.
        """
        if key not in self._keys:
            raise KeyError(key)
        held = self._store[key]
        if isinstance(held, np.ndarray):
            held = pack(held)
            self._store[key] = held
        return held


def new_weights(where: str, expected: dict, weights, dtype) -> dict[str, np.ndarray]:
    """``weights``, a list in ``expected``'s order (``get_weights()``'), as ``{key: array}`` in ``dtype``:
    what ``set_weights`` takes. Keras' rules: one array per weight, each of the weight's shape, cast to
    the model's dtype (Keras casts float64, int and bool arrays). Ours are stricter where Keras computes
    garbage silently: a complex array (Keras drops its imaginary part), values beyond the dtype's range
    (Keras stores inf), NaN or Inf, a negative moving_variance are refused as a file holding them is
    (:func:`check_params`). Copies: the caller's arrays stay theirs."""
    if isinstance(weights, np.ndarray) or not isinstance(weights, (list, tuple)):
        raise TypeError(f"{where}: expected a list of arrays in get_weights()' order, found "
                        f"{type(weights).__name__}")
    keys = list(expected)
    if len(weights) != len(keys):
        raise ValueError(f"{where}: expected a list of {len(keys)} arrays, one per weight in get_weights()' "
                         f"order ({_span(keys, expected)}), found {len(weights)}")
    out = {}
    for i, (key, a) in enumerate(zip(keys, weights)):
        want = tuple(expected[key])
        if not isinstance(a, np.ndarray):
            if not hasattr(a, "shape") or not hasattr(a, "__array__"):  # a tensor of another framework
                raise TypeError(f"{where}: weights[{i}], for {key!r} {want}, must be an array, found "
                                f"{type(a).__name__}")
            a = np.asarray(a)
        if a.shape != want:
            raise ValueError(f"{where}: weights[{i}] is for {key!r}, of shape {want}; found shape {a.shape}")
        if a.dtype.kind not in "fiub":
            raise TypeError(f"{where}: weights[{i}] ({key!r}) has dtype {a.dtype}; expected real numbers "
                            f"(float, int or bool arrays are cast to the model's {dtype.name}, as Keras casts them)")
        with np.errstate(over="ignore"):
            cast = np.array(a, dtype=dtype, copy=True)
        if not np.isfinite(cast).all():
            wide = a.dtype.kind == "f" and np.isfinite(a).all()
            raise ValueError(f"{where}: weight {key!r} (weights[{i}]) "
                             + (f"holds values beyond {dtype.name}'s range (largest magnitude "
                                f"{float(np.abs(a).max()):.4g}): in the model's {dtype.name} they would be inf"
                                if wide else "contains NaN or Inf"))
        out[key] = cast
    check_params(out, {k: expected[k] for k in out}, where)  # the rules a file's weights obey: variances >= 0
    return out


def _span(keys, expected) -> str:
    """The first and last weights of a list, for a message about its length."""
    if not keys:
        return "this layer has no weights"
    first = f"{keys[0]!r} {tuple(expected[keys[0]])}"
    return first if len(keys) == 1 else f"{first} to {keys[-1]!r} {tuple(expected[keys[-1]])}"


def check_bn_divisors(params: dict, head, where: str) -> None:
    """Every head batch_norm divides by sqrt(moving_variance + epsilon) in the weights' dtype, as the op
    computes it: a zero there (variance 0 with epsilon 0) is refused naming the layer. The backbone's
    epsilon is 1e-3, so only the head's can be 0."""
    for h in head:
        if h["kind"] != "batch_norm":
            continue
        eps = h.get("epsilon", CONFIG.bn_epsilon)
        var = params[f"{h['name']}/moving_variance"]
        zero = np.flatnonzero(var + var.dtype.type(eps) == 0)
        if zero.size:
            raise ValueError(f"{where}: layer {h['name']!r} (batch_norm): moving_variance + epsilon is 0 in "
                             f"channel {zero[0]} ({zero.size} channel{'s' if zero.size > 1 else ''} in all; "
                             f"epsilon {eps!r}), so BatchNormalization would divide by zero")


def random_params(layers, head, dtype="float32", seed=0, *, channels=3) -> dict[str, np.ndarray]:
    """Seeded random weights with random BN statistics (for tests and teaching), for ``channels``-channel
    inputs (3: RGB; the model's ``input_shape[2]``).

    Kernels are He-normal (std sqrt(2 / fan_in)) so activations keep their scale
    through 36 layers; BN statistics are drawn away from the identity on purpose,
    because BN with mean 0 and variance 1 would hide bugs.
    """
    dt = as_dtype(dtype)
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in arch.param_shapes(layers, head, channels).items():
        var = key.rsplit("/", 1)[1]
        if var in ("kernel", "pointwise_kernel"):
            fan_in = int(np.prod(shape[:-1]))
            a = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif var == "depthwise_kernel":
            a = rng.normal(0.0, np.sqrt(2.0 / (shape[0] * shape[1])), shape)
        elif var == "gamma":
            a = rng.uniform(0.5, 1.5, shape)
        elif var in ("beta", "bias"):
            a = rng.normal(0.0, 0.1, shape)
        elif var == "moving_mean":
            a = rng.normal(0.0, 0.5, shape)
        elif var == "moving_variance":
            a = rng.uniform(0.5, 2.0, shape)
        else:  # pragma: no cover
            raise AssertionError(key)
        out[key] = a.astype(dt)
    return out
