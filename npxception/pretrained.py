"""The official Keras ImageNet weights for Xception, downloaded and converted once.

Provenance: ``keras.applications.xception`` (François Chollet's ImageNet
training, 0.790 top-1 / 0.945 top-5 as reported by Keras), preprocessed with
``xception.preprocess_input`` (pixels scaled to [-1, 1]). Keras pins the
files' MD5 values below; we pin the same ones, so a mirror must serve the
identical bytes.

    path = imagenet_weights(include_top=True)   # an npxception .npz
    model = npxception.load(path)

Cache layout under ``cache_home()`` (``NPXCEPTION_HOME``, default
``~/.cache/npxception``):

    downloads/xception_weights_tf_dim_ordering_tf_kernels.h5      the official file, md5-checked on every use
    weights/xception_weights_tf_dim_ordering_tf_kernels.npz       its conversion (what npxception loads)
    weights/xception_weights_tf_dim_ordering_tf_kernels.npz.sha256  the .npz's SHA-256, written at conversion,
        and the official file's MD5 it was converted from ("# converted from NAME, md5 HEX", a comment to sha256sum)

The ``.npz`` is re-hashed against its sidecar on every call. Only an ``.npz``
whose sidecar records the pinned MD5 (our conversion of the checked download)
is called the official weights: ``model.source == "imagenet (PATH)"``. One
without that record was placed by hand (any ``.npz`` can be put there): it is
used as it is, the loader validates every key, shape and value of it, but
:func:`imagenet_source` names it unverified and warns once per process
(UnverifiedWeightsWarning). Either way the conversion carries a
golden test case (our float64 oracle's output, docs/weights-format.md) that
``Xception(weights="imagenet")`` runs once per process, so kernels that
miscompute on this machine are caught too.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import subprocess
import sys
import urllib.parse
import warnings

from . import _fork
from . import shell
from .download import DownloadError, discard, file_hash, get_file
from .paths import cache_home
from .untrusted import atomic_write

__all__ = ["imagenet_weights", "imagenet_source", "UnverifiedWeightsWarning", "weights_url", "official_include_top", "FILES", "WeightFile", "DEFAULT_BASE_URL",
           "BASE_URL_ENV"]

# Where Keras itself downloads them from (keras/src/applications/xception.py).
DEFAULT_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/xception/"
# Mirrors and air-gapped sites point this at their own copy (http(s):// or file://).
BASE_URL_ENV = "NPXCEPTION_WEIGHTS_URL"


@dataclasses.dataclass(frozen=True)
class WeightFile:
    fname: str  # the official file name, kept so that hand-placed copies match Keras' cache
    md5: str  # pinned by keras.applications.xception
    sha256: str | None = None  # not pinned: we have no verified digest of the official bytes yet
    # The download's size cap: both official files are under 92 MB (88 MB in Keras' table of
    # applications), so a server announcing more is not serving them; refused before reading.
    max_bytes: int = 100_000_000


# include_top -> the official file
FILES = {
    True: WeightFile("xception_weights_tf_dim_ordering_tf_kernels.h5", "0a58e3b7378bc2990ea3b43d5981f1f6"),
    False: WeightFile("xception_weights_tf_dim_ordering_tf_kernels_notop.h5", "b0042744bf5b25fce3cb969f33bebb97"),
}


def official_include_top(path) -> bool | None:
    """``include_top`` of the official file that ``path`` is (the MD5 of its whole bytes is one pinned
    in :data:`FILES`), else None. weights_tools gives the official file, and only it, the head
    ``keras.applications.Xception`` defines for it (a weights-only file does not record its head)."""
    md5 = file_hash(path, "md5")
    return next((top for top, spec in FILES.items() if spec.md5 == md5), None)


def weights_url(include_top: bool = True) -> str:
    """The download URL from ``$NPXCEPTION_WEIGHTS_URL`` (default: Keras' bucket).

    The variable may name a folder (``https://mirror/xception/``, with or without
    the trailing slash) or a file in it. The URL of either official file counts
    as its folder, so that pasting Keras' own file URL works for both files; a
    URL of any other ``.h5`` file is used as it is (the pinned MD5 still decides
    whether it is the right file).
    """
    base = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    if urllib.parse.urlsplit(base).scheme.lower() not in ("http", "https", "file"):
        raise ValueError(f"{BASE_URL_ENV}={base!r}: expected an http://, https:// or file:// URL of the folder "
                         "holding Keras' Xception weight files (or of one of them)")
    wanted = FILES[bool(include_top)].fname
    parts = urllib.parse.urlsplit(base)
    folder, _, name = parts.path.rpartition("/")
    if name in {spec.fname for spec in FILES.values()}:
        return urllib.parse.urlunsplit(parts._replace(path=f"{folder}/{wanted}"))
    if name.lower().endswith(".h5"):
        return base
    return base.rstrip("/") + "/" + wanted


def _paths(include_top: bool) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """(downloaded .h5, converted .npz, .npz sha256 sidecar)."""
    spec = FILES[bool(include_top)]
    home = cache_home()
    npz = home / "weights" / (pathlib.PurePath(spec.fname).stem + ".npz")
    return home / "downloads" / spec.fname, npz, npz.with_name(npz.name + ".sha256")


def imagenet_weights(include_top: bool = True, *, progress: bool = True, offline: bool | None = None) -> pathlib.Path:
    """Path of the converted official ImageNet weights, downloading and converting on first use.

    Raises DownloadError (an OSError) when the file cannot be obtained: offline
    and not cached, a network failure, or a file whose MD5 differs from Keras'.
    The message says where to place the ``.h5`` or the ``.npz`` by hand.
    """
    spec = FILES[bool(include_top)]
    h5, npz, sidecar = _paths(include_top)
    if npz.is_file():
        _check_npz(npz, sidecar)
        return npz

    url = weights_url(include_top)
    try:
        # allow_file: the URL is Keras' https bucket or a mirror the user configured
        # on purpose, which may be a file:// path on a shared disk.
        h5 = get_file(url, md5=spec.md5, sha256=spec.sha256, cache_dir=h5.parent, fname=spec.fname,
                      progress=progress, offline=offline, allow_file=True, max_bytes=spec.max_bytes)
    except DownloadError as exc:
        # The advice makes the folder first: `convert -o` makes none, so pasted alone it failed.
        by_hand = (f"mkdir -p {shell.arg(npz.parent)} && python -m npxception.weights_tools convert "
                   f"{shell.arg(spec.fname)} -o {shell.arg(npz)}")
        raise DownloadError(
            f"{exc}\nAlternatively place converted weights at {npz} (`{by_hand}`; used, but named unverified: "
            f"only a conversion of the MD5-checked download made here is called the official weights, so "
            f"placing the official .h5 at {h5} is better), or pass your own converted "
            f"file (npxception.Xception(weights=PATH), `npxception predict --weights PATH`); for a mirror, set "
            f"{BASE_URL_ENV}.", url=url, path=exc.path) from None

    convert(h5, npz)
    _write_sidecar(sidecar, file_hash(npz, "sha256"), spec)  # get_file checked the .h5 against spec.md5
    return npz


def convert(h5: pathlib.Path, npz: pathlib.Path) -> None:
    """Convert the official ``.h5`` to ``npz`` with ``python -m npxception.weights_tools convert``, in a child process.

    A process rather than an import, for two reasons: the converter depends on
    npxception (``weights_tools -> npxception``), never the other way round, so
    the package does not import it back; and libhdf5 reads the downloaded file in
    the child, so a crash on a damaged file cannot take the caller down. The
    child writes ``npz`` atomically. Raises ValueError with the converter's message.
    """
    spec = importlib.util.find_spec("npxception")  # the converters are its subpackage: one root to pass on
    roots = [str(pathlib.Path(spec.origin).resolve().parent.parent)] if spec is not None and spec.origin else []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(roots + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p]))
    cmd = [sys.executable, "-m", "npxception.weights_tools", "convert", str(h5), "-o", str(npz), "--variant", "keras"]
    npz.parent.mkdir(parents=True, exist_ok=True)  # our cache's folder: `convert -o` makes no directories
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not npz.is_file():
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        if f"{npz}: cannot write" in reason:  # untrusted.atomic_write's words: the .h5 was read fine
            raise ValueError(f"{h5}: converting the official weights failed ({reason}); the download is "
                             f"intact: free space in {npz.parent}, or set NPXCEPTION_HOME to a writable folder")
        raise ValueError(f"{h5}: converting the official weights failed ({reason}); delete it to download "
                         "it again, or convert a copy by hand with `python -m npxception.weights_tools convert`")


def _check_npz(npz: pathlib.Path, sidecar: pathlib.Path) -> None:
    """Raise DownloadError if the ``.npz`` does not match its sidecar; no sidecar means placed by hand."""
    if not sidecar.is_file():
        return  # placed by hand: the loader checks every key, shape and value
    try:
        expected = sidecar.read_text(encoding="ascii").split()[0].lower()
    except (OSError, UnicodeDecodeError, IndexError):
        expected = "(unreadable sidecar)"
    actual = file_hash(npz, "sha256")
    if actual == expected:
        return
    # The cached conversion changed after it was written. Remove it so that a
    # re-run converts the (md5-checked) download again; say so rather than
    # silently redoing it, because a damaged cache is worth knowing about.
    done = discard([npz, sidecar], "they will be converted (and if needed downloaded) again")
    raise DownloadError(f"{npz}: the cached weights are corrupt (sha256 expected {expected}, found {actual}); "
                        f"{done}", path=npz)


def _write_sidecar(sidecar: pathlib.Path, digest: str, spec: WeightFile) -> None:
    """The .npz's SHA-256 (sha256sum's format) and the record that it converts ``spec``'s MD5-checked file."""
    text = f"{digest}  {sidecar.name[:-len('.sha256')]}\n# converted from {spec.fname}, md5 {spec.md5}\n"
    atomic_write(sidecar, lambda f: f.write(text.encode("ascii")))


def _recorded_md5(sidecar: pathlib.Path) -> str | None:
    """The official file's MD5 the sidecar says the .npz was converted from, else None."""
    try:
        lines = sidecar.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        head, sep, md5 = line.rpartition(", md5 ")
        if sep and head.startswith("# converted from "):
            return md5.strip().lower()
    return None


class UnverifiedWeightsWarning(UserWarning):
    """The cached ImageNet .npz carries no record of its conversion from the official file (placed by hand)."""


_WARNED: set = set()
_WARNED_LOCK = _fork.lock()


def imagenet_source(include_top: bool = True) -> str:
    """What ``model.source`` says of the cached ImageNet ``.npz`` (call after :func:`imagenet_weights`).

    ``imagenet (PATH)`` only when its sidecar records a conversion of the official file (the pinned MD5);
    otherwise the file was placed by hand, which any ``.npz`` can be: named unverified, with a warning
    once per file per process, never silently called the official weights.
    """
    spec = FILES[bool(include_top)]
    h5, npz, sidecar = _paths(include_top)
    if _recorded_md5(sidecar) == spec.md5:
        return f"imagenet ({npz})"
    with _WARNED_LOCK:
        first = str(npz) not in _WARNED
        _WARNED.add(str(npz))
    if first:
        warnings.warn(f"{npz}: placed by hand, not verified as the official ImageNet weights (no record of a "
                      f"conversion of {spec.fname}, md5 {spec.md5}); used as it is. To have the official "
                      f"weights, delete it (a run then downloads and converts them) or place the official "
                      f"file at {h5}", UnverifiedWeightsWarning, stacklevel=3)
    return f"unverified ({npz}: placed by hand, not converted here from the official {spec.fname})"
