"""Convert, inspect, run and predict in ONE subprocess in which no framework can be imported.

Each job is a dict: ``name``; ``argv`` for ``weights_tools.cli.main`` (``convert ...``
or ``inspect ...``); and, to run the converted model, ``output`` (the ``.npz``),
``x`` (a ``.npy`` batch) and ``result`` (where ``model(x)`` is saved), plus
``photos`` to run ``npxception predict --json`` on them. The subprocess imports
nothing of tensorflow, keras or tf_keras (framework_block.BLOCKER), which proves
that none of this needs a framework; :func:`run_jobs` asserts none leaked in.

Used by test_convert_files.py and test_real_world_files.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from framework_block import BLOCKER, LEAKED

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUNNER = BLOCKER + textwrap.dedent("""
    import contextlib, io, json, sys
    import numpy as np
    import npxception
    from npxception.cli import main as npxception_cli
    from npxception.weights_tools.cli import main

    def quietly(cli, argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli(argv)
        return rc, out.getvalue(), err.getvalue()

    jobs = json.load(open(sys.argv[1]))
    results = {}
    for job in jobs:
        rc, out, err = quietly(main, job["argv"])
        res = {"rc": rc, "stdout": out, "stderr": err}
        if rc == 0 and job.get("x"):
            try:
                model = npxception.load(job["output"])
                np.save(job["result"], model(np.load(job["x"])))
                summary = []
                model.summary(print_fn=summary.append)
                res.update(dtype=str(model.dtype), takes_pixels=model.takes_pixels,
                           input_shape=list(model.input_shape), head=[h["kind"] for h in model.head],
                           summary="\\n".join(summary))
                if job.get("photos"):
                    res["predict_rc"], res["predict"], res["predict_stderr"] = quietly(npxception_cli, [
                        "predict", "--weights", job["output"], "--json", "--top", str(model.classes),
                        *job["photos"]])
            except Exception as exc:  # reported by the test of this job, not fatal to the others
                res["run_error"] = f"{type(exc).__name__}: {exc}"
        results[job["name"]] = res
    leaked = """ + LEAKED + """
    json.dump({"results": results, "leaked": leaked}, open(sys.argv[2], "w"))
""")


def run_jobs(jobs: list[dict], work) -> dict:
    """``{job name: result}`` from one framework-free subprocess; ``work`` is a scratch folder."""
    jobs_file, results_file = work / "jobs.json", work / "results.json"
    jobs_file.write_text(json.dumps(jobs))
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(jobs_file), str(results_file)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"runner failed:\n{proc.stdout}\n{proc.stderr}"
    data = json.loads(results_file.read_text())
    assert data["leaked"] == [], f"frameworks imported: {data['leaked']}"
    return data["results"]
