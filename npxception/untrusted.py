"""Reading untrusted files within bounds, and writing files that are whole or absent.

Every weight file, image, manifest and download may be broken or hostile
(docs/security.md). A guard that checks each object alone is not enough: a
small file can make a reader do far more work than its size justifies. The
pieces every reader shares live here:

* :class:`ReadBudget`: the total bytes a reader may read, known before reading,
  charged before each allocation;
* :func:`open_regular`: open only regular files (a FIFO blocks ``open()`` forever,
  ``/dev/zero`` never ends);
* :func:`loads_json`: JSON whose nesting is a clear error, never a ``RecursionError``;
* :func:`address_space_cap`: a block in which the process may map at most so many more
  bytes, for a library call whose allocation cannot be known before it runs;
* :func:`check_zip_directory`: a zip's entry count and central-directory size, read from its
  end records before ``zipfile.ZipFile`` parses (and allocates for) every entry;
* :func:`atomic_write`: a temporary ``<name>.<uuid>.partial`` beside the
  destination, renamed into place when complete, deleted on any exception and
  on SIGTERM; stale partials of killed processes are swept before writing;
  into an existing directory only (:func:`check_output_dir`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import re
import signal
import stat
import sys
import threading
import time
import uuid
import zipfile

# A partial older than this was left by a killed process: no write takes a day.
STALE_PARTIAL_S = 24 * 3600


class ReadBudget:
    """The bytes a reader may still read from one file; refuses *before* allocating.

    ``error`` is the exception class raised (``ValueError`` or a subclass such
    as weights_tools' ``ConversionError``); its message names the file and the object.
    """

    def __init__(self, limit: int, where: str, *, error=ValueError, why: str = ""):
        self.limit = int(limit)
        self.left = int(limit)
        self.where = where
        self.error = error
        self.why = why

    def charge(self, nbytes: int, what: str) -> None:
        nbytes = int(nbytes)
        if nbytes > self.left:
            raise self.error(f"{self.where}: {what} claims {nbytes:,} bytes; only {self.left:,} of the "
                             f"{self.limit:,}-byte read budget are left{self.why} (a hostile or corrupt file?)")
        self.left -= nbytes


# --------------------------------------------------------------------------- regular files

def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


class IrregularFileError(ValueError):
    """A path that names a FIFO, a device, a socket or a directory instead of a file."""

    def __init__(self, path, kind: str):
        super().__init__(f"{os.fsdecode(path)}: is {kind}, not a regular file")
        self.kind = kind


def check_regular(path) -> None:
    """Raise IrregularFileError unless ``path`` (symlinks followed) is a regular file.

    FileNotFoundError/PermissionError pass through. ``stat`` never blocks, even on a FIFO.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise IrregularFileError(path, _kind(mode))


NO_FILE = "no such file"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # a scheme and "//" (RFC 3986): https://, file://, s3://


def no_such_file(path) -> str:
    """:data:`NO_FILE`, saying that only local files are read when ``path`` (which is no file) is spelled as a
    URL (review 30, F6): the reason predict, show and compare give for a photo that is not there."""
    if isinstance(path, (str, bytes, os.PathLike)) and _URL.match(os.fsdecode(path)):
        return f"{NO_FILE}: npxception reads local files only, not URLs; download it first (curl -O URL)"
    return NO_FILE


def why_not_regular(path) -> str | None:
    """None when ``path`` (symlinks followed) is a regular file; else what it is instead, for a refusal that
    says so: :data:`NO_FILE` (a dangling link included), ``"is a FIFO (named pipe), not a regular file"`` (or
    a device, a socket, a directory), ``"cannot be opened (Too many levels of symbolic links)"``. ``stat``
    never blocks, even on a FIFO."""
    try:
        check_regular(path)
    except FileNotFoundError:
        return NO_FILE
    except IrregularFileError as exc:
        return f"is {exc.kind}, not a regular file"
    except OSError as exc:  # ELOOP: a symbolic link loop; EACCES
        return f"cannot be opened ({exc.strerror or exc})"
    return None


def open_regular(path, *, follow_symlinks: bool = True):
    """Open ``path`` for binary reading only if it is a regular file; never blocks.

    The file is opened non-blocking and checked with ``fstat`` on the open
    descriptor, so swapping in a FIFO between a check and the open cannot hang us.
    ``follow_symlinks=False``: a symlink as the last component is an OSError (ELOOP),
    for a path already resolved and checked by the caller.
    """
    nofollow = 0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | nofollow)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise IrregularFileError(path, _kind(mode))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")  # from here the file object owns (and closes) the descriptor


def read_capped(path, limit: int, f=None) -> bytes:
    """A regular file's bytes, its size checked against ``limit`` on the open descriptor before a byte is read
    (and the read capped: a file growing meanwhile is cut); ``f``: the file already opened with
    :func:`open_regular`. A FIFO or device is an :class:`IrregularFileError`, a larger file a ValueError."""
    if f is None:
        with open_regular(path) as opened:
            return read_capped(path, limit, opened)
    size = os.fstat(f.fileno()).st_size
    if size > limit:
        raise ValueError(f"{path}: {size:,} bytes, over the {limit:,}-byte limit")
    return f.read(limit + 1)[:limit]


# --------------------------------------------------------------------------- messages

def short_repr(value, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: a hostile value must not flood an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# A counter in a name a file holds (conv2d_12, vars/3): 1 to 9 ASCII digits, more than any model has. A longer
# one is no counter: int() of over 4,300 digits raises Python's int-conversion limit, an error naming nothing.
COUNTER = "[0-9]{1,9}"


def counter(text: str) -> int | None:
    """``text`` as an int when it is a :data:`COUNTER`, else None."""
    return int(text) if re.fullmatch(COUNTER, text) else None


# --------------------------------------------------------------------------- JSON

class DeepJSONError(ValueError):
    """JSON nested deeper than Python's parser recurses: a clear error, never a RecursionError."""


def loads_json(text, object_hook=None):
    """``json.loads`` whose too-deep nesting is a ValueError, not a RecursionError.

    Python's parser recurses once per level, up to the interpreter's recursion
    limit (about 1000 levels); real Keras configs nest a few dozen.
    ``object_hook`` is json's: called on every decoded object, innermost first.
    """
    try:
        return json.loads(text, object_hook=object_hook)
    except RecursionError:
        raise DeepJSONError("the JSON is nested too deeply to be a model description "
                         "(over ~1000 levels)") from None
    except MemoryError:  # callers cap the text; this is the last line of defence
        raise ValueError(f"the JSON ({len(text):,} bytes) does not fit in memory once parsed") from None


# --------------------------------------------------------------------------- address space

def _mapped_bytes() -> int | None:
    """The process's address space (Linux ``VmSize``), or None where /proc does not say."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@contextlib.contextmanager
def address_space_cap(extra_bytes: int):
    """Within the block, mapping more than ``extra_bytes`` beyond what is mapped now fails.

    For a library call whose allocation is decided inside it and cannot be read first
    (libhdf5 inflating a variable-length string attribute: HDF5 reads an attribute
    whole, with no selection, and each entry may point to one large string): the
    allocation fails (a MemoryError or the library's own error) instead of taking the
    machine's memory. The soft ``RLIMIT_AS`` is lowered for the block and restored
    after it. Process-wide, so kept to short reads; where the limit or ``VmSize`` is
    unavailable (not Linux), the block runs unbounded.
    """
    try:
        import resource  # Unix only: imported here so that untrusted imports on Windows too
    except ImportError:  # Windows
        yield
        return
    mapped = _mapped_bytes()
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    except (OSError, ValueError):
        mapped = None
    if mapped is None:
        yield
        return
    cap = mapped + int(extra_bytes)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        yield  # already bounded at least as tightly
        return
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# --------------------------------------------------------------------------- zip directories

# A central-directory entry: 46 fixed bytes, then its name, extra fields and comment.
# Python's zipfile (np.savez, Keras) writes a name and at most a 28-byte zip64 extra
# field; other zip tools add timestamps (< 100 bytes). Names are layer paths, a few
# dozen bytes: 1 KiB per entry is far above any writer's.
ZIP_ENTRY_BYTES = 46 + 1024


def check_zip_directory(f, where: str, *, max_entries: int, what: str, error=ValueError) -> int:
    """The entry count of the zip ``f`` (a binary file object), refused *before* ``zipfile.ZipFile``
    builds a ZipInfo per entry of its central directory (1,000,000 entries: 635 MB, 22 s).

    Read from the end-of-central-directory record (the last <= 65,557 bytes) and, for a zip64
    archive, its locator and record, with zipfile's own reader of them, so that the numbers
    checked are those ZipFile uses. Refused: more than ``max_entries`` entries (``what``: the
    kind of file, whose real count sets the cap), and a central directory larger than its
    entries can need (ZipFile parses entries until the directory's *size* is used up, whatever
    the count says). A file with no end record is left to ZipFile, whose BadZipFile says so.
    """
    end = zipfile._EndRecData(f)  # private but stable since Python 2; ZipFile's own first step
    f.seek(0)
    if end is None:
        return 0
    entries, cd_bytes = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    if entries > max_entries:
        raise error(f"{where}: its zip directory lists {entries:,} entries; {what} holds at most "
                    f"{max_entries:,} (a hostile or corrupt file?); refused before reading the directory")
    if cd_bytes > max(entries, 1) * ZIP_ENTRY_BYTES:
        raise error(f"{where}: its zip directory takes {cd_bytes:,} bytes for {entries:,} entries; expected "
                    f"at most {ZIP_ENTRY_BYTES:,} bytes per entry (a hostile or corrupt file?); refused "
                    "before reading the directory")
    return entries


# --------------------------------------------------------------------------- atomic writes

def partial_name(path: pathlib.Path) -> pathlib.Path:
    """``<name>.<uuid4hex>.partial`` beside ``path``."""
    return path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")


def sweep_partials(path, max_age_s: float = STALE_PARTIAL_S) -> list[pathlib.Path]:
    """Delete ``<name>.<uuid>.partial`` files of ``path`` older than ``max_age_s``; return them.

    Only names this module writes are touched (and the older ``.<name>.<uuid>.partial``
    form), so no other file is ever deleted.
    """
    path = pathlib.Path(path)
    pattern = re.compile(r"\.?" + re.escape(path.name) + r"\.[0-9a-f]{32}\.partial")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and now - entry.stat().st_mtime > max_age_s:
                os.unlink(entry.path)
                removed.append(pathlib.Path(entry.path))
        except OSError:
            pass  # another process removed or replaced it
    return removed


def _terminate(signum, frame):
    # SystemExit unwinds the stack, so every `except BaseException` / `finally`
    # runs and deletes its partial file; the exit status is the usual 128 + 15.
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def sigterm_unwinds():
    """Within the block, SIGTERM raises SystemExit instead of killing the process outright.

    SIGINT already raises KeyboardInterrupt. Signal handlers can only be set
    from the main thread; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except (ValueError, OSError):  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError, TypeError):  # either does not exist (yet), or is no path: not the same
        return False


# The links through which a path names a descriptor of a process: /dev/stdout, /dev/fd/1,
# /proc/self/fd/1. Written through, never renamed over (see output_target).
_FD_LINK = re.compile(r"/(?:proc/(self|thread-self|[0-9]+)(?:/task/[0-9]+)?/fd|dev/fd)/([0-9]+)")
_STD_LINKS = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def descriptor_link(path) -> tuple[bool, int | None]:
    """Whether ``path``, its links followed one at a time, passes through a descriptor link; and
    the descriptor's number when it is one of this process's (else None)."""
    p = os.path.abspath(os.fsdecode(path))
    for _ in range(40):  # the kernel's own limit on links followed
        p = os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))
        if p in _STD_LINKS:
            return True, _STD_LINKS[p]
        match = _FD_LINK.fullmatch(p)
        if match:
            ours = match[1] in (None, "self", "thread-self", str(os.getpid()))
            return True, int(match[2]) if ours else None
        try:
            link = os.readlink(p)
        except OSError:  # not a link (or not there): the chain ends
            return False, None
        p = os.path.join(os.path.dirname(p), link)
    return False, None


def output_target(path) -> tuple[pathlib.Path, bool]:
    """Where a write to ``path`` lands, and whether it can be atomic: ``(target, atomic)``.

    What ``open(path, "w")`` users expect, and a file that is whole or absent where that can be:

    * a symlink is followed: the target is replaced atomically (the partial beside the *target*),
      the link stays; a dangling link creates its target, as ``open`` does;
    * an existing FIFO or character device (``/dev/null``, a terminal), and any path through a
      descriptor link (``/dev/stdout``, ``/proc/self/fd/1``, whatever it points to, a pipe or a
      redirected file): written straight to, ``atomic`` False. A rename cannot replace a
      device, and renaming over the file behind ``> out.txt`` would cut the shell's output off;
    * a block device or a socket: refused by name (OSError), as is a directory.

    ``path`` as given otherwise: a new name, or a regular file to replace.
    """
    path = pathlib.Path(path)
    try:
        mode = os.stat(path).st_mode  # follows links; never blocks, even on a FIFO
    except (FileNotFoundError, NotADirectoryError):  # a new name (check_output_dir names a parent that is a file)
        mode = None
    except OSError as exc:  # a link loop, a component that is a file, no permission
        error = type(exc)(f"{path}: cannot write ({exc.strerror or exc})")
        error.errno = exc.errno  # not strerror: str() would then print only it
        raise error from None
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{path}: cannot write: it is a directory; expected the path of a file "
                                "to write (a new name, or a file to replace)")
    if mode is not None and (stat.S_ISBLK(mode) or stat.S_ISSOCK(mode)):
        error = IrregularFileError(path, _kind(mode))
        error.args = (f"{path}: cannot write: it is {_kind(mode)}; expected a file to write (a new name, "
                      "a file to replace), a FIFO, or a character device such as /dev/stdout",)
        raise error
    if (mode is not None and not stat.S_ISREG(mode)) or descriptor_link(path)[0]:
        return path, False
    if path.is_symlink():  # to a file, or dangling: the write goes where the link points
        return pathlib.Path(os.path.realpath(path)), True
    return path, True


def check_output_dir(path, inputs=()) -> pathlib.Path:
    """``path`` as a Path, after checking that it can be written without losing anything.

    Refused, each naming the path and what is expected: a directory that does
    not exist, a ``path`` that is itself a directory (found before the work, not
    at the final rename), a block device or a socket (:func:`output_target`), and
    a ``path`` that is one of the command's ``inputs`` (the same file, through any
    link): the write would replace it. ``None`` in ``inputs`` is skipped.
    """
    path = pathlib.Path(path)
    target, atomic = output_target(path)
    if atomic and not target.parent.is_dir():
        what = "is not a directory" if target.parent.exists() else "does not exist"
        via = "" if target == path else f" (where the link {path} points)"
        raise FileNotFoundError(f"{path}: cannot write: the directory {target.parent}{via} {what}; "
                                "expected an existing directory (create it first)")
    for source in inputs:
        if source is not None and _same_file(path, source):
            raise FileExistsError(f"{path}: cannot write: it is also an input of this command "
                                  f"({os.fsdecode(source)}), which the output would replace; "
                                  "expected a different output path")
    return path


def atomic_write(path, write) -> pathlib.Path:
    """Call ``write(file_object)`` on ``<name>.<uuid>.partial`` beside ``path``, then rename it.

    A failure at any point (KeyboardInterrupt and SIGTERM included) leaves no
    file behind. Partials older than a day, left by killed processes, are
    swept first. A missing directory is an error, as for ``open`` and
    ``np.save``: a mistyped output path must not create directories somewhere
    unexpected (our cache makes its own folders).

    A symlink is followed: its target is replaced, the link stays. A FIFO, a
    character device or a descriptor link (``/dev/stdout``) is written straight
    to (:func:`output_target`): there, no rename can make the write atomic, and a
    failure can leave part of the output in the stream. Returns ``path``.
    """
    path = check_output_dir(path)
    target, atomic = output_target(path)
    with sigterm_unwinds():
        if not atomic:
            for stream in (sys.stdout, sys.stderr):  # what was printed comes first in a shared stream
                with contextlib.suppress(Exception):
                    stream.flush()
            # One of our descriptors (/dev/stdout): written through a copy of it, which shares its
            # offset, so that the report lands after what was printed in a file the shell opened
            # (`> out.txt`), not over it. Else "ab": after what is there; on a pipe, FIFO or device the
            # same as "wb". A FIFO waits for its reader here, as `> fifo` does in a shell.
            fd = descriptor_link(path)[1]
            with _naming(path):
                f = open(os.dup(fd), "wb") if fd is not None else open(path, "ab")  # noqa: SIM115 - closed below
            with _naming(path, _DISK_ERRNOS), f:
                write(f)
            return path
        sweep_partials(target)
        tmp = partial_name(target)
        try:
            with _naming(path):
                f = open(tmp, "xb")  # noqa: SIM115 - closed by the with below
            # Outside f: closing flushes what is still buffered, so a full disk may show only there.
            # Only the file system's errnos: the producer's own (a download's ECONNRESET) pass as they are.
            with _naming(path, _DISK_ERRNOS), f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            with _naming(path):
                os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
    return path


# What the file system says when a write cannot happen here (a full disk, a quota, a
# file size limit, a read-only mount, a failing device), as opposed to the errors of
# whatever produces the bytes (a download's ECONNRESET), which the caller reports.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}


@contextlib.contextmanager
def _naming(path, errnos=None):
    """An OSError (with an errno in ``errnos``, if given) becomes "PATH: cannot write (REASON)".

    The bare "[Errno 28] No space left on device" named no file, and the partial's
    name would be the wrong one to give: ``path`` is what the user asked for.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno is None or (errnos is not None and exc.errno not in errnos):
            raise
        error = type(exc)(f"{path}: cannot write ({exc.strerror or exc})")
        error.errno = exc.errno  # not strerror: str() would then print only it
        raise error from None
