"""The whole main job with no deep-learning framework importable.

One subprocess starts with a meta-path finder (tests/framework_block.py) that
makes every import of tensorflow, keras, tf_keras, torch and jax fail as on a
machine where they are not installed, before anything else is imported. In it:
convert a Keras-written ``.keras`` file with weights_tools, load a saved
random-weight ``.npz``, run ``npxception.predict`` on the sample photos, the
step-by-step API (``load_image``, ``preprocess_input``, ``Xception(weights=path)``,
``decode_predictions``), ``model.summary()``, and the ``npxception predict`` and
``summary`` commands through ``npxception.cli.main``. At the end none of the
blocked modules may be in ``sys.modules``.

The subprocess's answers are then compared (in this process, which has Keras)
with Keras' own pipeline on the same photos: probabilities to 1e-5 absolute,
for the reasons given in test_predict.py (same decoded pixels; only float32
summation order differs).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from framework_block import BLOCKED, BLOCKER, LEAKED
from npxception.labels import imagenet_labels
from predict_reference import SAMPLES, keras_reference, top_indices

REPO = pathlib.Path(__file__).resolve().parent.parent
PROB_ATOL = 1e-5
WNID_INDEX = {wnid: i for i, (wnid, _) in enumerate(imagenet_labels())}

JOB = BLOCKER + textwrap.dedent("""
    import contextlib, importlib, io, json, sys

    job = json.load(open(sys.argv[1]))
    res = {"blocked": {}}
    for name in job["blocked"]:  # the block works: each framework is "not installed"
        try:
            importlib.import_module(name)
            res["blocked"][name] = "imported"
        except ImportError as exc:
            res["blocked"][name] = type(exc).__name__

    import numpy as np
    import npxception
    from npxception import weights_tools
    from npxception.cli import main

    samples = job["samples"]

    # Convert a Keras-written file.
    converted = weights_tools.convert(job["keras_file"], job["converted"])
    res["inspect"] = weights_tools.inspect(job["keras_file"]).splitlines()[-1]

    # predict() on the photos, from the saved random-weight .npz and from the conversion.
    res["predict_npz"] = npxception.predict(samples, weights=job["npz"], top=5)
    res["predict_converted"] = npxception.predict(samples, weights=str(converted), top=5)
    res["predict_single"] = npxception.predict(samples[0], model=npxception.load(job["npz"]), top=5)

    # The same step by step.
    model = npxception.Xception(weights=job["npz"])
    x = np.stack([npxception.load_image(p, target_size=(299, 299)) for p in samples])
    before = x.copy()
    probs = model(npxception.preprocess_input(x))
    res["preprocess_left_input_alone"] = bool(np.array_equal(x, before))
    np.save(job["probs"], probs)
    res["decoded"] = npxception.decode_predictions(probs, top=5)
    lines = []
    res["summary_returned"] = repr(model.summary(print_fn=lines.append))
    res["summary_printed"] = "\\n".join(lines)

    # The command line, in this process.
    for key, argv in job["cli"].items():
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
        res[key] = {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}

    res["predict_after_cli"] = npxception.predict(samples[1], weights=job["npz"], top=1)
    res["leaked"] = """ + LEAKED + """
    # default=float: predict's scores are numpy scalars (np.float32), as Keras' decode_predictions gives
    json.dump(res, open(sys.argv[2], "w"), default=float)
""")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    ref = keras_reference(tmp_path_factory)
    work = tmp_path_factory.mktemp("framework_free")
    spec = {
        "blocked": list(BLOCKED),
        "samples": [str(p) for p in SAMPLES],
        "keras_file": str(ref.keras_file()),
        "converted": str(work / "converted.npz"),
        "npz": str(ref.npz),
        "probs": str(work / "probs.npy"),
        "cli": {
            "cli_predict": ["predict", "--json", "--top", "5", "--weights", str(ref.npz), *map(str, SAMPLES),
                            str(work / "missing.png")],
            "cli_summary": ["summary", "--variant", "article", "--input-size", "71"],
        },
    }
    (work / "job.json").write_text(json.dumps(spec))
    env = dict(os.environ, NPXCEPTION_OFFLINE="1", NPXCEPTION_HOME=str(work / "home"),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", JOB, str(work / "job.json"), str(work / "result.json")],
                          cwd=str(work), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"the framework-free job failed:\n{proc.stdout}\n{proc.stderr}"
    res = json.loads((work / "result.json").read_text())
    res["probs"] = np.load(work / "probs.npy")
    res["missing"] = spec["cli"]["cli_predict"][-1]
    return ref, res


def _check_against_keras(rows, probs):
    """predict() rows (JSON lists) against Keras' probabilities: same top-5, scores within PROB_ATOL."""
    assert len(rows) == len(probs)
    for row, p in zip(rows, probs):
        idx = [WNID_INDEX[wnid] for wnid, _, _ in row]
        assert idx == top_indices(p[None], 5)[0]
        assert [name for _, name, _ in row] == [imagenet_labels()[i][1] for i in idx]
        assert np.allclose([s for _, _, s in row], p[idx], rtol=0, atol=PROB_ATOL)


def test_frameworks_were_blocked_and_never_imported(job):
    _, res = job
    assert res["blocked"] == {name: "ModuleNotFoundError" for name in BLOCKED}
    assert res["leaked"] == []


def test_predict_without_framework_equals_keras(job):
    ref, res = job
    _check_against_keras(res["predict_npz"], ref.probs)
    _check_against_keras(res["predict_converted"], ref.probs)  # the .keras file converted without Keras
    _check_against_keras([res["predict_single"]], ref.probs[:1])
    assert res["predict_after_cli"][0][0] == res["predict_npz"][1][0][0]


def test_step_by_step_api_without_framework(job):
    ref, res = job
    assert res["preprocess_left_input_alone"]
    assert np.allclose(res["probs"], ref.probs, rtol=0, atol=PROB_ATOL)
    _check_against_keras(res["decoded"], ref.probs)
    assert [[r[:2] for r in row] for row in res["decoded"]] == [[r[:2] for r in row] for row in res["predict_npz"]]
    assert "Total params: 22,910,480" in res["summary_printed"]
    assert res["summary_returned"] == "None"  # printed once, not also returned (Keras returns None)
    assert "detected architecture: Xception variant=keras" in res["inspect"]


def test_cli_without_framework(job):
    ref, res = job
    cli = res["cli_predict"]
    assert cli["rc"] == 1  # the missing file fails; the photos are still predicted
    missing = res["missing"]
    assert [line for line in cli["stderr"].strip().splitlines() if not line.startswith("npxception: compiling ")] \
        == [f"npxception: {missing}: no such file"]
    data = json.loads(cli["stdout"])
    assert data.pop() == {"file": missing, "error": "no such file"}  # every input has its place
    assert [d["file"] for d in data] == [str(p) for p in SAMPLES]
    _check_against_keras([[(p["label"], p["name"], p["score"]) for p in d["predictions"]] for d in data], ref.probs)
    summary = res["cli_summary"]
    assert summary["rc"] == 0 and "Total params: 22,910,480" in summary["stdout"]
