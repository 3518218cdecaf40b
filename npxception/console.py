"""How both command-line programs behave, written once for ``npxception`` and ``python -m npxception.weights_tools``.

The manners are those of the Unix tools people already pipe together:

* an error is one line on stderr, ``PROG: error: <message>``, exit code 1
  (argparse's usage errors: 2); ``--debug`` shows the traceback instead;
* a closed pipe (``npxception predict DIR | head -2``) ends the program quietly
  with exit code 141, what a shell reports for a tool killed by SIGPIPE;
* a stdout that cannot take the output is an error that names it, exit 1:
  ``npxception: error: cannot write to stdout: No space left on device`` (a full
  disk, ``> /dev/full``), ``...: it is closed`` (``>&-``, where the reader never existed);
* text the stdout encoding cannot hold (a file name under ``LANG=C``) is
  printed escaped (``\\u72ac``), never an error that stops the run;
* Ctrl-C keeps what was already printed and exits 130 (128 + SIGINT); SIGTERM
  likewise, exit 143, where a command streams results (predict);
* progress and notices go to stderr, never stdout, so ``> results.txt`` holds
  results only.

This module imports nothing heavy: it runs before any command decides what it needs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import sys
import threading

EXIT_ERROR = 1  # the command failed (a bad file, a bad value)
EXIT_USAGE = 2  # argparse's code for a wrong command line; also "nothing to do"
EXIT_DIFFER = 3  # compare ran and the two sides differ (1 is kept for "could not run", as for every command)
EXIT_SIGPIPE = 128 + 13  # what a shell reports for `yes | head -1`'s `yes`
EXIT_INTERRUPTED = 128 + 2  # 128 + SIGINT, as shells report Ctrl-C


class CLIError(Exception):
    """An error already phrased for the user; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


# Names printed from files (a layer name, a dump key, an HDF5 attribute, a path a checkpoint names): a Keras
# name is under 100 characters and a file path rarely past a few hundred (Linux's PATH_MAX is 4,096), so a
# word (a run without spaces) past MAX_SHOWN_WORD is cut, with its length; a 1 MB layer name once made a
# 1,000,308-byte error line. A whole text past MAX_SHOWN_TEXT (a compare report of 134 layers is ~20 kB) is cut
# in its middle.
MAX_SHOWN_WORD = 1024  # characters
MAX_SHOWN_TEXT = 256 * 1024  # characters
_LONG_WORD = re.compile(rf"\S{{{MAX_SHOWN_WORD + 1},}}")


def _cut(match) -> str:
    word = match.group(0)
    return f"{word[:400]}...{word[-100:]} ({len(word):,} characters)"


def shown(text) -> str:
    """``text`` as a terminal may show it: control and format characters escaped on each line (ANSI escapes,
    carriage returns, bidi overrides: labels.printable; the line breaks kept), long words cut
    (:data:`MAX_SHOWN_WORD`), the whole at most :data:`MAX_SHOWN_TEXT` characters. Text from files may be
    hostile: an escape sequence in a layer name could rewrite the terminal, a carriage return forge a line."""
    from .labels import printable  # numpy's import: this module stays light until text is shown

    text = "\n".join(_LONG_WORD.sub(_cut, printable(line)) for line in str(text).split("\n"))
    if len(text) > MAX_SHOWN_TEXT:
        head, tail = MAX_SHOWN_TEXT // 2, MAX_SHOWN_TEXT // 4
        text = f"{text[:head]} ... ({len(text) - head - tail:,} characters not shown) ... {text[-tail:]}"
    return text


def one_line(exc: BaseException) -> str:
    """An exception as the one line the CLI prints (long multi-part messages keep their lines), made
    :func:`shown`: every error of both programs passes here, whatever file its names came from."""
    text = shown(str(exc).strip() or type(exc).__name__)
    return " ".join(text.split("\n")) if len(text) < 400 else text


class StdoutError(Exception):
    """Writing the output to stdout failed (not a closed pipe): a full disk, ``/dev/full``, a closed fd 1.

    Not an OSError, so that no command's handler for a file it reads takes it for that file's error.
    """


class _NamedStdout:
    """``sys.stdout`` while a command runs: a write or flush that fails raises StdoutError, naming stdout.

    Everything else (``buffer``, ``fileno``, ``isatty``...) is the stream's own.
    """

    def __init__(self, stream):
        self._stream = stream

    def _named(self, method, *args):
        try:
            return method(*args)
        except BrokenPipeError:
            if not _closed_at_start:
                raise  # the reader went away: quiet_pipe ends quietly
            raise StdoutError("cannot write to stdout: it is closed") from None
        except OSError as exc:
            raise StdoutError(f"cannot write to stdout: {exc.strerror or exc}") from None

    def write(self, text):
        return self._named(self._stream.write, text)

    def flush(self):
        return self._named(self._stream.flush)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _stdout_failed(prog: str, exc: StdoutError) -> int:
    """Say that stdout failed, then point fd 1 at /dev/null so that exiting does not fail on it again."""
    print(f"{prog}: error: {exc}", file=sys.stderr)
    _closed_pipe()
    return EXIT_ERROR


def run(prog: str, command, args, *, debug: bool) -> int:
    """Run ``command(args)`` with the CLI's contract; return the exit code.

    prog: the program name that starts every error line (the same name as in
    the usage line). debug: re-raise instead of printing one line.
    """
    try:
        with _notices(prog):
            code = command(args)
        sys.stdout.flush()  # a closed pipe shows up here when the output was small
        return code
    except BrokenPipeError:
        raise  # not an error to report: quiet_pipe, around the whole main(), ends quietly
    except StdoutError as exc:
        if debug:
            raise
        return _stdout_failed(prog, exc)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CLIError as exc:
        if debug:
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return exc.code
    except MemoryError as exc:  # a reader that should have refused first: still say which file, and why
        if debug:
            raise
        detail = " ".join(shown(exc).split())
        print(f"{prog}: error: {_inputs(args)}: reading it needed more memory than this process may take"
              f"{f' ({detail})' if detail else ''}; a valid file of its kind fits in far less: a hostile or "
              "corrupt file? (please report it)", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the CLI's contract: one line, no traceback
        if debug:
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


# The arguments of both programs' commands that name input files (convert's src, compare's --against, ...).
_INPUT_ARGS = ("src", "against", "config", "weights", "names", "image", "images", "files")


def _inputs(args) -> str:
    """The input files ``args`` names (those that exist), for an error no reader phrased."""
    found = []
    for key in _INPUT_ARGS:
        value = getattr(args, key, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and os.path.lexists(item):
                found.append(item)
    return ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "") or "the input"


def quiet_pipe(main):
    """Decorate a CLI's ``main``: a closed pipe anywhere (even in ``--help``) ends it quietly; a stdout
    that fails otherwise (full, closed) is named in an error, exit 1 (even for ``--version``)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        prog = kwargs.get("prog") or main.__globals__.get("PROG", "npxception")
        try:
            if sys.stdout is None:  # started with stdout closed (`npxception ... >&-`)
                _stdout_as_closed_pipe()
            errors = _escape_unencodable(sys.stdout)
            real = sys.stdout
            sys.stdout = named = _NamedStdout(real)
            try:
                return main(*args, **kwargs)
            finally:  # also after argparse's SystemExit (--help): its output is still buffered
                try:
                    sys.stdout.flush()  # through the proxy: a failure names stdout
                finally:
                    if sys.stdout is named:
                        sys.stdout = real
                    if errors is not None:  # restored for an in-process caller (tests)
                        _escape_unencodable(sys.stdout, errors)
        except BrokenPipeError:
            if _closed_at_start:
                return _stdout_failed(prog, StdoutError("cannot write to stdout: it is closed"))
            return _closed_pipe()
        except StdoutError as exc:  # argparse's --help/--version output, outside run()
            return _stdout_failed(prog, exc)

    return wrapper


_closed_at_start = False  # stdout was closed when the program started (`>&-`): set once, never reset


def _stdout_as_closed_pipe() -> None:
    """Give a closed stdout (Python then sets ``sys.stdout`` to None) a pipe whose reader is gone.

    Its first write (or flush) raises BrokenPipeError, which :class:`_NamedStdout` turns into
    "cannot write to stdout: it is closed" (exit 1): no reader ever existed, so ending quietly
    with EXIT_SIGPIPE, as after ``| head``, would hide that nothing was written. Holding fd 1
    also keeps a file we open later from becoming fd 1, where a stray write
    (ours or a child's) would land in it.
    """
    read_end, write_end = os.pipe()
    if write_end != 1:
        os.dup2(write_end, 1)  # closes read_end first if it was given fd 1
        os.close(write_end)
    if read_end != 1:
        os.close(read_end)
    global _closed_at_start
    _closed_at_start = True
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives as long as the process


def _escape_unencodable(stream, errors: str = "backslashreplace") -> str | None:
    """Set ``stream``'s error handler; return the previous one (None if it cannot be set).

    A file name or label the stdout encoding cannot hold (``犬.png`` under
    PYTHONIOENCODING=latin-1 or LANG=C) is printed escaped (``\\u72ac.png``)
    instead of aborting the run at that file, as stderr already does by default.
    """
    previous = getattr(stream, "errors", None)
    if previous is None or not hasattr(stream, "reconfigure"):
        return None
    try:
        stream.reconfigure(errors=errors)
    except (ValueError, OSError):  # closed, or a stream that cannot change now
        return None
    return previous


def _closed_pipe() -> int:
    """The reader went away: stop quietly, as a tool killed by SIGPIPE does.

    Python would otherwise report the unflushed stdout again at exit
    ("Exception ignored ... BrokenPipeError"), so stdout is pointed at
    /dev/null first (the recipe of the Python docs, "Note on SIGPIPE").
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (e.g. captured): nothing to silence
        pass
    return EXIT_SIGPIPE


class _Interrupts:
    """How many times Ctrl-C (or SIGTERM) arrived while ``interrupt_requested`` was active, and the last one."""

    count = 0
    signum = signal.SIGINT

    def __bool__(self):
        return self.count > 0

    @property
    def code(self) -> int:
        """The exit code: 128 + the signal, as a shell reports a tool it killed (130, 143)."""
        return 128 + int(self.signum)

    @property
    def verb(self) -> str:
        return "terminated" if self.signum == signal.SIGTERM else "interrupted"


@contextlib.contextmanager
def interrupt_requested():
    """The first Ctrl-C or SIGTERM only asks to stop; the caller checks at a safe point. A second interrupts.

    A KeyboardInterrupt raised at an arbitrary bytecode can land inside a
    ``try/except BaseException`` that closes a file descriptor, or between
    printing a result and counting it. Checking a flag between results keeps
    what was printed whole and the count exact: `predict --json` killed by
    SIGTERM (`kill`, `timeout`, a job scheduler) printed no closing ``]``
    (review 17). Outside the main thread signals cannot be handled, and the
    flag stays unset.
    """
    flag = _Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag.count += 1
        flag.signum = signum
        if flag.count > 1:  # asked twice: stop now, wherever we are
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _ShownFormatter(logging.Formatter):
    """Notices may quote a file's names: :func:`shown`, as errors are."""

    def format(self, record):
        return shown(super().format(record))


class _notices:
    """While a command runs, npxception's notices (e.g. "compiling kernels once") reach stderr.

    The Python API stays quiet: the package logs to ``logging.getLogger("npxception")``
    and only the CLI attaches this handler, as ``PROG: message`` lines.
    """

    def __init__(self, prog: str):
        self.handler = logging.StreamHandler(sys.stderr)
        self.handler.setFormatter(_ShownFormatter(f"{prog}: %(message)s"))
        self.logger = logging.getLogger("npxception")

    def __enter__(self):
        self.level = self.logger.level
        self.logger.addHandler(self.handler)
        if self.logger.level == logging.NOTSET or self.logger.level > logging.INFO:
            self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)
        return False


class Progress:
    """``[#####.....] 3/10`` on stderr, redrawn in place; only when stderr is a terminal.

    Whatever stdout is: ``npxception predict DIR > results.txt`` still shows it.
    Lines printed to stdout in between are kept readable by clearing the bar
    first (``clear``) and redrawing it after (``draw``).
    """

    WIDTH = 30

    def __init__(self, total: int, enabled: bool = True):
        self.total = total
        self.done = 0
        self.enabled = enabled and total > 0 and _isatty(sys.stderr)
        self.shown = False

    def advance(self, n: int = 1) -> None:
        self.done += n
        self.draw()

    def draw(self) -> None:
        if not self.enabled:
            return
        filled = int(self.WIDTH * self.done / self.total)
        print(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total}", end="",
              file=sys.stderr, flush=True)
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
            self.shown = False

    def close(self) -> None:
        if self.shown:
            print(file=sys.stderr, flush=True)
            self.shown = False


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False
