"""Files as real projects leave them: trained with fit(), with optimizer state, augmentation and
preprocessing layers, nested backbones, weights-only files that do not say their head.

The corpus (tests/keras_corpus.py) is written by Keras 3 and tf_keras once per
module. Conversions, the converted models' forward passes and `npxception
predict` on photo files run in ONE subprocess in which tensorflow, keras and
tf_keras cannot be imported. `compare` runs in this process (it needs the
framework that wrote each file).

Tolerance: 1e-5 relative to the largest magnitude of Keras' output, in float32.
float32's unit round-off is 6e-8; the ~36 layers of sums of up to 9 * 2048
products, accumulated in a different order by TensorFlow's kernels and ours,
leave ~2e-6 relative at the logits (measured on these models: compare's max rel
column), so 1e-5 passes every correct conversion with a 5x margin while a wrong
pooling (average for max), a missing Rescaling (an input off by 127.5x) or a
preprocess_input applied twice move the output by far more than 1e-2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from framework_block import BLOCKER, LEAKED
from keras_corpus import REPO, build

RTOL = 1e-5

RUNNER = BLOCKER + textwrap.dedent("""
    import contextlib, io, json, sys
    import numpy as np
    import npxception
    from npxception.cli import main as cli
    from weights_tools.cli import main as weights_tools_cli

    jobs = json.load(open(sys.argv[1]))
    results = {}
    for job in jobs:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = (weights_tools_cli if job.get("tool") == "weights_tools" else cli)(job["argv"])
        res = {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}
        if rc == 0 and job.get("x"):
            model = npxception.load(job["output"])
            np.save(job["result"], model(np.load(job["x"])))
            res.update(takes_pixels=model.takes_pixels, input_shape=list(model.input_shape),
                       head=[h["kind"] for h in model.head], summary=model.summary(print_fn=None))
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                res["predict_rc"] = cli(["predict", "--weights", job["output"], "--json",
                                         "--top", str(model.classes), *job["photos"]])
            res["predict"] = out.getvalue()
        results[job["name"]] = res
    leaked = """ + LEAKED + """
    json.dump({"results": results, "leaked": leaked}, open(sys.argv[2], "w"))
""")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("corpus")))


@pytest.fixture(scope="module")
def converted(corpus, tmp_path_factory):
    """Every case converted, run and predicted, plus the refusals and inspections, without a framework."""
    work = tmp_path_factory.mktemp("corpus_out")
    jobs = []
    for name, case in corpus.items():
        np.save(work / f"{name}_x.npy", case.x)
        argv = ["convert", case.path, "-o", str(work / f"{name}.npz"), *case.options]
        if case.config:
            argv += ["--config", case.config]
        jobs.append({"name": name, "argv": argv, "output": str(work / f"{name}.npz"),
                     "x": str(work / f"{name}_x.npy"), "result": str(work / f"{name}_y.npy"),
                     "photos": case.photos})
    gmp = corpus["gmp160_weights_h5"].path
    (work / "refused").mkdir()
    jobs.append({"name": "gmp160_no_config", "argv": ["convert", gmp, "-o", str(work / "refused" / "x.npz")]})
    jobs.append({"name": "recipe_weights_no_config",
                 "argv": ["convert", corpus["recipe_weights_h5"].path, "-o", str(work / "refused" / "y.npz")]})
    for name in ("recipe_keras", "tf_keras_recipe_h5", "gmp160_weights_h5"):
        jobs.append({"name": f"inspect_{name}", "tool": "weights_tools", "argv": ["inspect", corpus[name].path]})
    jobs_file, results_file = work / "jobs.json", work / "results.json"
    jobs_file.write_text(json.dumps(jobs))
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(jobs_file), str(results_file)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"runner failed:\n{proc.stdout}\n{proc.stderr}"
    data = json.loads(results_file.read_text())
    assert data["leaked"] == [], f"frameworks imported: {data['leaked']}"
    return work, data["results"]


CASES = ["recipe_keras", "recipe_h5", "recipe_weights_h5", "normalization_keras", "two_dense_keras",
         "gmp160_weights_h5", "gmp160_weights_h5_flags", "tf_keras_recipe_h5"]
PIXEL_CASES = {"recipe_keras", "recipe_h5", "recipe_weights_h5", "normalization_keras", "tf_keras_recipe_h5"}


def _close(ours, theirs, what):
    assert ours.shape == theirs.shape, f"{what}: shape ours {ours.shape} vs keras {theirs.shape}"
    err = float(np.abs(ours.astype(np.float64) - theirs).max())
    scale = float(np.abs(theirs).max())
    assert err <= RTOL * scale, f"{what}: max |ours - keras| {err:.3g} > {RTOL:g} * {scale:.3g}; " \
                                f"ours {ours.ravel()[:4]} vs keras {theirs.ravel()[:4]}"


@pytest.mark.parametrize("name", CASES)
def test_converted_model_matches_keras_predict(corpus, converted, name):
    """npxception.load(...)(x) on the model's own kind of input (raw pixels where it rescales)."""
    work, results = converted
    res = results[name]
    assert res["rc"] == 0, f"{name}: {res['stderr']}"
    case = corpus[name]
    assert res["takes_pixels"] == (name in PIXEL_CASES) == case.pixels
    assert res["input_shape"] == [case.size, case.size, 3]
    _close(np.load(work / f"{name}_y.npy"), case.expected, name)


@pytest.mark.parametrize("name", CASES)
def test_npxception_predict_on_photos_matches_keras(corpus, converted, name):
    """`npxception predict --weights X.npz photo` gives Keras' scores on img_to_array(load_img(photo))."""
    res = converted[1][name]
    assert res["predict_rc"] == 0, res["stderr"]
    case = corpus[name]
    ours = np.zeros_like(case.photos_expected)
    for i, item in enumerate(json.loads(res["predict"])):
        assert item["file"] == case.photos[i]
        for p in item["predictions"]:
            ours[i, p["index"]] = p["score"]
    _close(ours, case.photos_expected, f"{name} on {[os.path.basename(p) for p in case.photos]}")


def test_heads_and_input_stage_are_recorded(converted):
    _, results = converted
    assert results["gmp160_weights_h5"]["head"] == ["global_max_pool", "dense"]
    assert results["gmp160_weights_h5_flags"]["head"] == ["global_max_pool", "dense"]
    assert results["two_dense_keras"]["head"] == ["global_avg_pool", "dense", "batch_norm", "dense"]
    recipe = results["recipe_keras"]["summary"]
    assert "input stage: rescaling (Rescaling): x * 0.00784314 + -1" in recipe
    assert "raw pixels" in recipe
    assert "(Normalization): (x - [" in results["normalization_keras"]["summary"]
    assert "input stage" not in results["two_dense_keras"]["summary"]


def _refusal(res, name):
    assert res["rc"] == 1, f"{name}: exit code {res['rc']}, stdout {res['stdout']!r}"
    err = res["stderr"].strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("name", ["gmp160_no_config", "recipe_weights_no_config"])
def test_weights_only_head_is_refused_not_guessed(converted, name):
    work, results = converted
    err = _refusal(results[name], name)
    for needed in ("pooling", "activation", "input size", "--config", "--pooling", "--input-shape",
                   "--classifier-activation"):
        assert needed in err, f"{name}: {needed!r} not in {err!r}"
    assert list((work / "refused").iterdir()) == []


def test_inspect_reports_training_state_and_what_is_determined(converted):
    _, results = converted
    keras3 = results["inspect_recipe_keras"]
    assert keras3["rc"] == 0, keras3["stderr"]
    # Adam on the one trainable Dense: iterations, learning rate, 2 moments x (kernel, bias)
    assert "optimizer state: 6 arrays, ignored" in keras3["stdout"]
    assert "the file determines: the layers, their wiring" in keras3["stdout"]
    assert "input stage: rescaling (Rescaling)" in keras3["stdout"]
    tk = results["inspect_tf_keras_recipe_h5"]
    assert tk["rc"] == 0 and "optimizer state: " in tk["stdout"] and "ignored" in tk["stdout"]
    gmp = results["inspect_gmp160_weights_h5"]
    assert gmp["rc"] == 0 and "does not record" in gmp["stdout"] and "not convertible" in gmp["stdout"]
    assert "optimizer state:" in gmp["stdout"]


@pytest.fixture(scope="module")
def compare_reports(corpus):
    """`npxception compare --against SRC` for every source file, in this process (it runs Keras)."""
    import weights_tools
    from npxception.compare import compare

    reports = {}
    for name, case in corpus.items():
        if case.options:  # the flags case converts the same file as gmp160_weights_h5
            continue
        model = weights_tools.read(case.path, config=case.config)  # the weights through our converter
        reports[name] = compare(model, case.path, case.x, config=case.config)
    return reports


@pytest.mark.parametrize("name", [c for c in CASES if c != "gmp160_weights_h5_flags"])
def test_compare_against_each_source_file_finds_no_divergence(compare_reports, name):
    report = compare_reports[name]
    assert report.ok, str(report)
    # every backbone layer, including those inside a nested backbone, is reached by its path
    assert len(report.rows) >= 132 and report.rows[0].layer == "block1_conv1"


def test_compare_cli_output_has_no_framework_noise(corpus, tmp_path):
    """The CLI run of compare on the recipe (nested backbone): the report, and no TF/absl/oneDNN lines."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "npxception", "compare", "--against",
                           corpus["recipe_keras"].path, "--image", corpus["recipe_keras"].photos[0]],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("no divergence")
    assert proc.stderr.strip() == "", f"noise on stderr: {proc.stderr[:500]}"
    for noise in ("oneDNN", "absl", "cuda", "structure of `inputs`"):
        assert noise not in proc.stdout
