"""``npxception verify FILE...``: run each weight file's golden test case on every path.

For each file: the golden's source, then per checked layer the deviation of the
fused fast path (``model(x)``), the fast kernels op by op and the reference ops,
each in the file's dtype (npxception.golden). Exit 0 when every file passes.
``--report OUT.json`` adds the machine (versions, CPU flags, threading layer,
GEMM) for a bug report; ``--add`` gives files without a golden one.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import warnings

import llvmlite.binding as llvm
import numba
import numpy as np

from . import __version__
from . import blas
from . import golden as gold
from .model import load
from .untrusted import atomic_write, check_output_dir

PATHS = ("fused", "fast", "reference")


@dataclasses.dataclass
class FileResult:
    file: str
    golden: gold.Golden | None = None
    checks: list = dataclasses.field(default_factory=list)  # of golden.PathCheck
    error: str | None = None  # the file could not be read, or has no golden
    added: bool = False  # --add wrote a golden into it

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        g = self.golden
        return {
            "file": self.file, "passed": self.passed, "error": self.error, "golden_added": self.added,
            "golden": None if g is None else {
                "source": g.source, "precision": g.precision, "rtol": g.rtol, "written_by": g.written_by,
                "input_shape": list(g.pixels.shape), "layers": g.layers},
            "paths": [{"path": c.path, "dtype": c.dtype, "passed": c.passed,
                       "first_failure": c.first_failure.layer if c.first_failure else None,
                       "layers": [{"layer": r.layer, "deviation": r.deviation, "tolerance": r.tolerance,
                                   "passed": r.passed} for r in c.rows]} for c in self.checks],
        }


def verify_file(path, *, paths=PATHS, add=False) -> FileResult:
    """Check one file on each of ``paths``; with ``add``, first give a file without a golden one."""
    result = FileResult(str(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", gold.NoGoldenWarning)
            model = load(path, verify=False)
        if model.golden is None and add:
            model.save(path)  # computes the reference golden; the rewrite is atomic
            result.added = True
        if model.golden is None:
            result.error = "no golden test case (an older file): `npxception verify --add FILE` adds one"
            return result
        result.golden = model.golden
        result.checks = [gold.run_path(model, model.golden, p) for p in paths]
    except (ValueError, TypeError, OSError) as exc:  # unreadable, damaged, or its golden was altered
        result.error = str(exc)
    return result


def describe(result: FileResult) -> str:
    """The text ``npxception verify`` prints for one file."""
    if result.error is not None or result.golden is None:  # no check ran to completion: say why
        return f"{result.file}: FAIL: {result.error}"
    g = result.golden
    h, w = g.pixels.shape[1:3]
    written = ", ".join(f"{k} {v}" for k, v in g.written_by.items())
    lines = [f"{result.file}: golden from {g.source}" + (" (just added)" if result.added else ""),
             f"  input {h}x{w}, computed in {g.precision}, written by {written}"]
    by_path = {c.path: {r.layer: r for r in c.rows} for c in result.checks}
    lines.append(f"  {'layer':<24}" + "".join(f"{p + ' ' + c.dtype:>20}" for p, c in
                                             zip(by_path, result.checks)))
    for layer in g.layers:
        cells = []
        for p in by_path:
            r = by_path[p].get(layer)
            cells.append(f"{'-':>20}" if r is None else
                         f"{f'{r.deviation:.2e}' + ('' if r.passed else ' FAIL'):>20}")
        lines.append(f"  {layer:<24}" + "".join(cells))
    lines.append(f"  {'tolerance':<24}" + "".join(f"{c.rows[0].tolerance:>20.0e}" for c in result.checks))
    if result.passed:
        lines.append("  ok: every path agrees with the golden")
    else:
        lines.append("  FAIL: " + failure_message(result))
    return "\n".join(lines)


def failure_message(result: FileResult) -> str:
    """The earliest disagreement over all paths, and what the paths together say about its cause."""
    order = {layer: i for i, layer in enumerate(result.golden.layers)}
    failed = [c for c in result.checks if not c.passed]
    first = min(failed, key=lambda c: order[c.first_failure.layer])
    reference = next((c for c in result.checks if c.path == "reference"), None)
    if reference is not None and reference.passed:
        advice = ("The reference ops agree with the golden and the fast path does not: the fast kernels "
                  "miscompute on this machine. Please report it with `npxception verify --report "
                  "report.json {where}`; meanwhile model(x, impl='reference') is correct.")
    elif reference is not None:
        advice = ("The reference ops disagree as well, so the file's weights or its golden differ from what "
                  "was written: it is damaged, or was converted with a since-fixed bug. Re-convert it from "
                  "its source (or restore a good copy).")
    else:
        advice = gold.REPORT_ADVICE
    return gold.mismatch_message(result.file, result.golden, first, advice=advice)


def cli_verify(args) -> int:
    if args.report:  # before the work: not a directory, not one of the files it checks
        check_output_dir(args.report, inputs=args.files)
    results = []
    for path in args.files:
        result = verify_file(path, add=args.add)
        results.append(result)
        print(describe(result), file=sys.stdout if result.passed else sys.stderr)
    if args.report:
        report = {"environment": environment(), "passed": all(r.passed for r in results),
                  "files": [r.to_dict() for r in results]}
        text = json.dumps(report, indent=2) + "\n"
        atomic_write(args.report, lambda f: f.write(text.encode()))
        print(f"report written to {args.report}", file=sys.stderr)
    failed = [r.file for r in results if not r.passed]
    if failed:
        print(f"npxception verify: {len(failed)} of {len(results)} files failed: {', '.join(failed)}",
              file=sys.stderr)
    return 1 if failed else 0


def environment() -> dict:
    """Versions, CPU, threading layer and BLAS: what a kernel bug report needs."""
    env = {"npxception": __version__, "numpy": np.__version__, "numba": numba.__version__,
           "python": sys.version.split()[0], "platform": platform.platform(),
           "machine": platform.machine(), "numba_threads": numba.get_num_threads()}
    try:
        env["threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet in this process
        env["threading_layer"] = None
    try:
        env["cpu"] = llvm.get_host_cpu_name()
        env["cpu_flags"] = sorted(f[1:] for f in llvm.get_host_cpu_features().flatten().split(",")
                                  if f.startswith("+"))
    except Exception as exc:  # noqa: BLE001 - a report without CPU flags beats no report
        env["cpu_flags"] = f"unavailable ({type(exc).__name__})"
    env["gemm"] = blas.WHERE if blas.AVAILABLE else f"numpy.matmul ({blas.WHERE})"
    return env
