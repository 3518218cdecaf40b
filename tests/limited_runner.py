"""``main(args)`` of a module in a child process under ``RLIMIT_AS`` (and ``RLIMIT_CPU``), forked from a server
that has imported the module once.

The hostile-input tests run every case in its own process under a resource limit. A fresh
``python -c "... from npxception.cli import main"`` per case spent ~1.5 s of CPU importing numpy, numba and
npxception (``python -X importtime``: numba alone 1.7 s of wall time on the loaded CI-sized host) before the
case's few milliseconds of reading, on ~100 cases. Here a server process per (module, environment) imports the
module once and forks one child per case; the child, never touched by another case, sets the limits and runs
``main(args)`` exactly as the ``python -c`` runner did:

* the same interpreter, working directory, environment (a server per distinct environment, so anything read
  at import sees the case's), ``sys.argv`` (``["-c", *args]``) and ``sys.path``;
* the same limits, set before the case runs: ``RLIMIT_AS`` counts the whole address space, the imported
  modules included, as in the ``python -c`` child (which imported them under the limit); ``RLIMIT_CPU`` counts
  the child's own CPU time, which starts at zero;
* stdout and stderr are pipes, as ``capture_output=True`` gives (so the same buffering), stdin /dev/null;
* the exit as the interpreter's: ``sys.exit(main(args))``'s status; an uncaught exception prints its traceback
  (what the tests' ``BAD_SIGNS`` look for) and exits 1; atexit handlers run; a signal is ``-signum``.

The server stays clean: it imports the module and nothing else, and runs nothing of it itself.
"""

from __future__ import annotations

import atexit
import json
import locale
import os
import subprocess
import sys
import threading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SERVER = r'''
import json, os, resource, selectors, sys
module = sys.argv[1]
main = __import__(module, fromlist=["main"]).main
proto_in = os.fdopen(os.dup(0), "r")
proto_out = os.dup(1)
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)
os.dup2(null, 1)


def child(req, out_w, err_w):
    import atexit, traceback
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    for fd in (out_w, err_w, proto_out, null):
        os.close(fd)
    proto_in.close()
    sys.argv = ["-c", *req["args"]]
    resource.setrlimit(resource.RLIMIT_AS, (req["limit"], req["limit"]))
    if req["cpu"]:
        resource.setrlimit(resource.RLIMIT_CPU, (req["cpu"], req["cpu"]))
    try:
        try:
            code = main(req["args"])
        except SystemExit as exc:
            code = exc.code
        if code is None:
            rc = 0
        elif isinstance(code, int):
            rc = code & 0xFF
        else:
            print(code, file=sys.stderr)
            rc = 1
    except BaseException:
        traceback.print_exc()
        rc = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(rc)


for line in proto_in:
    req = json.loads(line)
    (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        os.close(err_r)
        child(req, out_w, err_w)
    os.close(out_w)
    os.close(err_w)
    data = {out_r: bytearray(), err_r: bytearray()}
    sel = selectors.DefaultSelector()
    for fd in data:
        sel.register(fd, selectors.EVENT_READ)
    while sel.get_map():
        for key, _ in sel.select():
            chunk = os.read(key.fd, 1 << 16)
            if chunk:
                data[key.fd] += chunk
            else:
                sel.unregister(key.fd)
                os.close(key.fd)
    _, status = os.waitpid(pid, 0)
    reply = {"status": status, "stdout": data[out_r].hex(), "stderr": data[err_r].hex()}
    os.write(proto_out, (json.dumps(reply) + "\n").encode())
'''

_servers: dict = {}
_lock = threading.Lock()


def _server(module: str, env: dict) -> subprocess.Popen:
    key = (module, tuple(sorted(env.items())))
    proc = _servers.get(key)
    if proc is None or proc.poll() is not None:
        proc = subprocess.Popen([sys.executable, "-c", SERVER, module], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=REPO, text=True)
        _servers[key] = proc
    return proc


def _text(data: bytes) -> str:
    """As ``subprocess.run(..., text=True)`` decodes a pipe: the locale's encoding, universal newlines."""
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


def run(module: str, args, *, limit: int, cpu: int, env: dict) -> subprocess.CompletedProcess:
    """``sys.exit(main(args))`` of ``module`` in a forked child under the limits: a CompletedProcess as
    ``subprocess.run(..., capture_output=True, text=True)`` gives."""
    args = [str(a) for a in args]
    # pytest names the running test in PYTEST_CURRENT_TEST: kept, it would key a new server (its imports, and a
    # process left idle until exit) for every test; no module run here reads it
    env = {k: v for k, v in env.items() if k != "PYTEST_CURRENT_TEST"}
    with _lock:
        proc = _server(module, env)
        proc.stdin.write(json.dumps({"args": args, "limit": limit, "cpu": cpu}) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the limited runner's server for {module} ended (exit {proc.wait()})")
    reply = json.loads(line)
    return subprocess.CompletedProcess([sys.executable, "-c", module, *args],
                                       os.waitstatus_to_exitcode(reply["status"]),
                                       _text(bytes.fromhex(reply["stdout"])), _text(bytes.fromhex(reply["stderr"])))


@atexit.register
def _close():
    for proc in _servers.values():
        try:
            proc.stdin.close()
            proc.wait(timeout=10)
        except Exception:
            proc.kill()
