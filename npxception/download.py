"""A small, careful file downloader with a hash-checked cache: :func:`get_file`.

Anchors: ``keras.utils.get_file``, ``torch.hub.download_url_to_file`` and
``huggingface_hub``. What this one does that Keras' does not:

* It streams into ``<name>.<uuid4hex>.partial`` in the destination folder and
  ``os.replace``-s it onto the final name only after the size and the hash
  are checked (:func:`npxception.untrusted.atomic_write`; SIGTERM deletes it
  too, and partials over a day old, left by killed processes, are swept). Keras writes straight into the final path, so a killed process
  leaves a truncated file that later fails with "OSError: truncated file"
  (keras#6221, #8546). The partial is deleted on *any* error, including
  ``KeyboardInterrupt``.
* It checks the hash every time a cached file is used, not only after the
  download. A cached file with the wrong hash raises :class:`DownloadError`
  naming it. Unless offline, the bad file is deleted first, so a re-run
  downloads it again (no silent re-download: the user learns that the cache
  was damaged). Offline, the file is left in place for the user to replace.
* With ``offline=True`` or ``NPXCEPTION_OFFLINE=1`` it makes no network call.
  A file that is not cached then raises an error that names the URL and the
  exact path to copy the file to by hand (keras#5005, #11905).
* Progress goes to stderr and only when stderr is a terminal; ``progress=False``
  silences it. Nothing is ever printed to stdout.
* Nothing runs forever: besides the per-read ``timeout`` there is a minimum
  throughput over a sliding window, a size cap ``max_bytes`` and an optional
  overall ``deadline``. Only http(s) URLs are fetched,
  unless ``allow_file=True`` (then only regular files).

Every failure (offline miss, dead server, HTTP error, timeout, truncated body,
wrong hash, corrupt cache) is a :class:`DownloadError`, a subclass of
``OSError`` because all of them are I/O failures that ``except OSError`` code
already expects. Wrong *arguments* (a bad URL scheme, a malformed hash, a file
name with a path in it) are ``ValueError``.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import http.client
import os
import pathlib
import posixpath
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from . import __version__
from .paths import cache_home
from .untrusted import IrregularFileError, atomic_write, check_regular

__all__ = ["get_file", "file_hash", "DownloadError", "default_cache_dir", "is_offline"]

CHUNK_BYTES = 1 << 20  # 1 MiB: few syscalls, and a smooth progress bar for the ~90 MB weight files
TIMEOUT_S = 30.0  # per socket operation (connect, each read), not for the whole file
# urllib's timeout bounds each socket operation, so a server dripping a byte a second
# never trips it. A download must therefore keep up a minimum throughput: fewer than
# MIN_RATE * RATE_WINDOW_S bytes over the last RATE_WINDOW_S seconds ends it. Not a
# total deadline derived from the server's Content-Length, which the server chooses:
# that allowed 38,000 s for a claimed 1.9 GB (review 12). 50 kB/s is below any usable
# link (the 92 MB weight file then takes 31 min) and far above a drip; a 60 s window
# rides out the stalls of a real link (Wi-Fi roaming, TCP retransmission back-off
# reaching tens of seconds) yet cuts a drip off after a minute. The worst case is then
# bounded by what a valid file holds: max_bytes at MIN_RATE.
MIN_RATE = 50_000  # bytes/s
RATE_WINDOW_S = 60.0
MAX_BYTES = 2 * 1000**3  # the size cap when the caller gives none; the weight files are ~90 MB
SCHEMES = ("http", "https")
FILE_SCHEME = "file"  # mirrors on a shared disk (air-gapped sites); only with allow_file=True
HASH_HEX_LENGTH = {"md5": 32, "sha256": 64}
OFFLINE_ENV = "NPXCEPTION_OFFLINE"
_TRUE = ("1", "true", "yes", "on")


class DownloadError(OSError):
    """A file could not be downloaded, or its cached copy is unusable.

    ``url`` and ``path`` (the final cache path) are kept as attributes for
    callers that add their own advice.
    """

    def __init__(self, message: str, *, url: str | None = None, path: pathlib.Path | None = None):
        super().__init__(message)
        self.url = url
        self.path = path


def default_cache_dir() -> pathlib.Path:
    """``cache_home() / "downloads"`` (``$NPXCEPTION_HOME/downloads`` by default)."""
    return cache_home() / "downloads"


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else whether ``NPXCEPTION_OFFLINE`` is 1/true/yes/on."""
    if offline is not None:
        return bool(offline)
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in _TRUE


def file_hash(path, algorithm: str = "sha256") -> str:
    """Hex digest of the file at ``path``, read in chunks (any hashlib algorithm)."""
    return _file_hashes(path, [algorithm])[algorithm]


def get_file(url: str, *, md5: str | None = None, sha256: str | None = None, cache_dir=None,
             fname: str | None = None, progress: bool = True, offline: bool | None = None,
             timeout: float = TIMEOUT_S, deadline: float | None = None, max_bytes: int | None = None,
             allow_file: bool = False) -> pathlib.Path:
    """Return the path of ``url``'s file in the cache, downloading it if needed.

    url: http(s):// or file:// URL.
    md5 / sha256: expected hex digests. Every one given is checked, after the
      download and on every later call that finds the file cached. With no
      hash, a cached file is trusted by its existence alone.
    cache_dir: destination folder; default ``default_cache_dir()``.
    fname: file name in ``cache_dir``; default the last component of the URL path.
    progress: show a progress bar on stderr (only if stderr is a terminal).
    offline: never touch the network; default from ``NPXCEPTION_OFFLINE``.
    timeout: seconds per socket operation.
    deadline: seconds for the whole download; default none. Always, a download that
      receives under MIN_RATE bytes/s over RATE_WINDOW_S seconds is cut off (a
      dripping server), so it lasts at most about max_bytes / MIN_RATE.
    max_bytes: the size cap; default MAX_BYTES (2 GB). A larger Content-Length is
      refused before reading; a body that grows past it is cut off.
    allow_file: also accept file:// URLs (a mirror on a shared disk). They must
      name a regular file: never /dev/zero or a FIFO.

    Raises DownloadError (an OSError) for every download or cache failure and
    ValueError for bad arguments.
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES and not (allow_file and scheme == FILE_SCHEME):
        raise ValueError(f"url: expected an http:// or https:// URL{' or file://' if allow_file else ''}, "
                         f"found {url!r}" + ("" if allow_file or scheme != FILE_SCHEME else
                                             " (file:// URLs need allow_file=True)"))
    if deadline is not None and not deadline > 0:
        raise ValueError(f"deadline: expected a positive number of seconds, found {deadline!r}")
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
        raise ValueError(f"max_bytes: expected a positive int, found {max_bytes!r}")
    expected = _expected_hashes(md5=md5, sha256=sha256)
    fname = _check_fname(fname if fname is not None else _fname_from_url(url), url)
    cache_dir = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    dest = cache_dir / fname
    offline = is_offline(offline)

    if dest.is_file():
        _check_cached(dest, url, expected, offline)
        return dest  # pure cache hit: no network
    if offline:
        raise DownloadError(
            f"offline ({OFFLINE_ENV}=1 or offline=True): {dest} is not in the cache, and no download is "
            f"attempted.\nTo place it by hand, download {url} on a machine with network access and copy "
            f"it to {dest}{_hash_note(expected)}.", url=url, path=dest)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the cache folder {cache_dir}: {exc.strerror or exc}; "
                            "set NPXCEPTION_HOME to a writable folder", url=url, path=dest) from None
    if scheme == FILE_SCHEME:
        _check_local(url, dest)
    limits = _Limits(deadline=deadline, max_bytes=max_bytes or MAX_BYTES)
    _download(url, dest, expected, progress=progress, timeout=timeout, limits=limits)
    return dest


def _check_local(url: str, dest: pathlib.Path) -> None:
    """A file:// URL must name a regular file: /dev/zero would fill the disk, a FIFO would block."""
    path = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
    try:
        check_regular(path)
    except IrregularFileError as exc:
        raise DownloadError(f"could not download {url}: {exc}", url=url, path=dest) from None
    except OSError:
        pass  # urlopen reports a missing or unreadable file in its own words


# ---------------------------------------------------------------------------
# cache checks


def _expected_hashes(**given) -> dict[str, str]:
    expected = {}
    for algorithm, value in given.items():
        if value is None:
            continue
        value = str(value).strip().lower()
        if not re.fullmatch(f"[0-9a-f]{{{HASH_HEX_LENGTH[algorithm]}}}", value):
            raise ValueError(f"{algorithm}: expected {HASH_HEX_LENGTH[algorithm]} hex digits, found {value!r}")
        expected[algorithm] = value
    return expected


def _fname_from_url(url: str) -> str:
    return posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))


def _check_fname(fname: str, url: str) -> str:
    """A plain file name: no folder part, so nothing is written outside ``cache_dir``."""
    bad = (not fname or fname in (".", "..") or "/" in fname or "\\" in fname or "\0" in fname
           or os.sep in fname or (os.altsep is not None and os.altsep in fname))
    if bad:
        raise ValueError(f"fname: expected a plain file name, found {fname!r} (from {url!r}); pass fname=")
    return fname


def _file_hashes(path, algorithms) -> dict[str, str]:
    hashers = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            for h in hashers.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _mismatches(expected: dict[str, str], actual: dict[str, str]) -> str:
    """'' if every hash matches, else "md5 expected X, found Y" (joined with '; ')."""
    return "; ".join(f"{a} expected {expected[a]}, found {actual[a]}"
                     for a in expected if actual[a] != expected[a])


def _hash_note(expected: dict[str, str]) -> str:
    return "".join(f" ({a} {v})" for a, v in expected.items())


def _check_cached(dest: pathlib.Path, url: str, expected: dict[str, str], offline: bool) -> None:
    if not expected:
        return
    try:
        bad = _mismatches(expected, _file_hashes(dest, expected))
    except OSError as exc:
        raise DownloadError(f"{dest}: cannot read the cached file ({exc.strerror or exc}); "
                            f"delete {dest} or re-run; it will be downloaded again", url=url, path=dest) from None
    if not bad:
        return
    what = (f"the cached file is not the one expected ({bad}): a download cut short or damaged, or a file "
            "placed there by hand that is not the official one")
    if offline:
        raise DownloadError(f"{dest}: {what}; offline, so nothing is downloaded: replace it with a good copy of "
                            f"{url}{_hash_note(expected)}, or move it away and re-run with network access to "
                            "download it", url=url, path=dest)
    done = set_aside(dest, f"it will be downloaded again from {url}")
    raise DownloadError(f"{dest}: {what}; {done}", url=url, path=dest)


REJECTED_SUFFIX = ".rejected"


def set_aside(path: pathlib.Path, then: str) -> str:
    """Rename a cached download whose hash is wrong to ``<name>.rejected``; return what the user does next.

    Renamed, not deleted: it may be a file the user placed there by hand (a weight file of their own,
    saved under Keras' name), which we did not download and must not destroy. An older
    ``.rejected`` copy is replaced. In a read-only shared cache the rename fails, and the user is
    told which file to move, or to use a cache of their own.
    """
    rejected = path.with_name(path.name + REJECTED_SUFFIX)
    try:
        path.replace(rejected)
    except OSError as exc:
        return (f"could not move it aside ({exc.strerror or exc}): move or delete it, or set NPXCEPTION_HOME "
                f"to a writable folder; then re-run: {then}")
    return f"it was moved aside to {rejected} (kept, not deleted): re-run; {then}"


def discard(paths, then: str) -> str:
    """Delete a corrupt cache entry's ``paths``; return what the user does next, true either way.

    then: what a re-run does once they are gone ("it will be downloaded again from URL").
    In a read-only shared cache the delete fails, and "re-run" alone would fail the same way
    on every run: the user is told which file to delete, or to use a cache of their own.
    """
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            return (f"could not delete {path} ({exc.strerror or exc}): delete it, or set NPXCEPTION_HOME "
                    f"to a writable folder; then re-run: {then}")
    return f"{'it has' if len(paths) == 1 else 'they have'} been deleted: re-run; {then}"


# ---------------------------------------------------------------------------
# the download itself


def _open(url: str, timeout: float):
    """The HTTP(S)/file response for ``url`` (a seam for tests)."""
    request = urllib.request.Request(url, headers={"User-Agent": f"npxception/{__version__}"})
    return urllib.request.urlopen(request, timeout=timeout)


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if n >= 0 else None


def _clock() -> float:
    """Seconds, monotonic (a seam: tests drive the throughput rule with their own clock)."""
    return time.monotonic()


@dataclasses.dataclass(frozen=True)
class _Limits:
    deadline: float | None  # seconds for the whole download, if the caller gives one
    max_bytes: int  # the size cap


class _Throughput:
    """The minimum-throughput rule: at least MIN_RATE bytes/s over every RATE_WINDOW_S window.

    ``too_slow(now, received)`` is called as bytes arrive; it keeps one sample per
    second (so memory stays ~RATE_WINDOW_S samples however the server drips)
    and compares the bytes received now with those received a window ago.
    """

    def __init__(self, start: float):
        self.samples = collections.deque([(start, 0)])  # (time, bytes received by then)

    def too_slow(self, now: float, received: int) -> float | None:
        """The bytes/s over the last window if under MIN_RATE, else None."""
        while len(self.samples) > 1 and self.samples[1][0] <= now - RATE_WINDOW_S:
            self.samples.popleft()  # keep the newest sample at least a window old
        then, before = self.samples[0]
        if now - then >= RATE_WINDOW_S and received - before < MIN_RATE * (now - then):
            return (received - before) / (now - then)
        if now - self.samples[-1][0] >= 1.0:
            self.samples.append((now, received))
        return None


def _download(url: str, dest: pathlib.Path, expected: dict[str, str], *, progress: bool, timeout: float,
              limits: _Limits):
    by_hand = f"To place it by hand, download {url} elsewhere and copy it to {dest}{_hash_note(expected)}."

    def fail(reason: str):
        return DownloadError(f"could not download {url}: {reason}.\n{by_hand}", url=url, path=dest)

    def stream(out):
        hashers = {a: hashlib.new(a) for a in expected}
        bar = None
        start = _clock()
        throughput = _Throughput(start)
        try:
            with _open(url, timeout) as response:
                total = _content_length(response)
                if total is not None and total > limits.max_bytes:
                    raise fail(f"the server announces {total:,} bytes, over the {limits.max_bytes:,}-byte cap "
                               "(the most the expected file can hold)")
                bar = _ProgressBar(dest.name, total) if progress and _stderr_is_terminal() else None
                # read1 returns what has arrived, so the deadline is checked even
                # while a server drips; read(n) would wait for n bytes.
                read = getattr(response, "read1", response.read)
                received = 0
                while chunk := read(CHUNK_BYTES):
                    received += len(chunk)
                    if received > limits.max_bytes:
                        raise fail(f"the body exceeds the {limits.max_bytes:,}-byte cap")
                    out.write(chunk)
                    for h in hashers.values():
                        h.update(chunk)
                    if bar is not None:
                        bar.update(received)
                    now = _clock()
                    if limits.deadline is not None and now - start > limits.deadline:
                        raise fail(f"not finished after {limits.deadline:.0f} s (the download's deadline; "
                                   f"{received:,} bytes received)")
                    rate = throughput.too_slow(now, received)
                    if rate is not None:
                        raise fail(f"too slow: {rate:,.0f} bytes/s over the last {RATE_WINDOW_S:.0f} s, under "
                                   f"the minimum of {MIN_RATE:,} ({received:,} bytes received)")
        finally:
            if bar is not None:
                bar.close()
        if total is not None and received != total:
            raise fail(f"the body was truncated (received {received} of {total} bytes)")
        bad = _mismatches(expected, {a: h.hexdigest() for a, h in hashers.items()})
        if bad:
            raise DownloadError(f"{url}: hash mismatch: {bad} ({received} bytes); the download was discarded "
                                "(the server or mirror serves a different file)", url=url, path=dest)

    try:
        # <name>.<uuid>.partial beside dest, renamed when complete; deleted on any
        # error, KeyboardInterrupt and SIGTERM included; stale partials swept first.
        atomic_write(dest, stream)
    except DownloadError:
        raise
    except urllib.error.HTTPError as exc:
        exc.close()
        raise fail(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise fail(str(exc.reason)) from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, IncompleteRead, disk full
        raise fail(str(exc) or type(exc).__name__) from None


# ---------------------------------------------------------------------------
# progress bar (stderr only, plain text)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class _ProgressBar:
    """``name: [#######.............]  35%  31.2/89.6 MB`` redrawn in place with ``\\r``."""

    WIDTH = 30  # characters of bar
    INTERVAL_S = 0.1  # redraw at most 10 times a second

    def __init__(self, name: str, total: int | None):
        self.name, self.total = name, total
        self.last_draw = 0.0
        self.received = 0

    def update(self, received: int):
        self.received = received
        now = time.monotonic()
        if now - self.last_draw >= self.INTERVAL_S:
            self.last_draw = now
            self._draw()

    def _draw(self):
        mb = self.received / 1e6
        if self.total:
            frac = min(self.received / self.total, 1.0)
            filled = int(frac * self.WIDTH)
            line = (f"{self.name}: [{'#' * filled}{'.' * (self.WIDTH - filled)}] {frac:4.0%} "
                    f"{mb:.1f}/{self.total / 1e6:.1f} MB")
        else:
            line = f"{self.name}: {mb:.1f} MB"
        sys.stderr.write("\r" + line)
        sys.stderr.flush()

    def close(self):
        self._draw()
        sys.stderr.write("\n")
        sys.stderr.flush()
