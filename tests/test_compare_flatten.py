"""compare against a port of a Flatten head that flattens in PyTorch's order.

The fine-tuning tutorials' head, ``Flatten() -> Dense(16, relu) -> Dense(n, softmax)`` on a fixed-size
backbone (tests/test_flatten_head.py measures our Flatten against Keras), ported to PyTorch: the port's map
is NCHW, and ``x.view(N, -1)`` orders each image's features (C, H, W) where Keras' Flatten orders them
(H, W, C), so the Dense after it reads every weight row against another feature. The ports are our ops
with that one convention changed (tests/ports.py); compare must name the cause at the flatten, or, when the
dump holds no flatten output (``x.view`` is no module: a hook dump of the port holds none), at the Dense
that reads it. A port that flattens in Keras' order passes.

71x71 (a 3x3x2048 map, 18,432 features), two images; our model is built once for the module.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from ports import Conventions, run_port

import npxception
from npxception.compare import compare
from npxception.network import XceptionModel

SIZE = 71
MAP = [3, 3, 2048]  # 71 -> 35 -> 33 -> 17 -> 9 -> 5 -> 3 (architecture.trace)
HEAD = [{"kind": "flatten", "name": "flatten", "map_shape": MAP, "order": "hwc"},
        {"kind": "dense", "name": "fc", "units": 16, "activation": "relu", "use_bias": True},
        {"kind": "dense", "name": "predictions", "units": 3, "activation": "softmax", "use_bias": True}]
PYTORCH_VIEW = Conventions(flatten="torch_view")


@pytest.fixture(scope="module")
def model():
    base = npxception.Xception(include_top=False, input_shape=(SIZE, SIZE, 3), seed=4)
    p = dict(base.weights)
    rng = np.random.default_rng(5)
    features = base.forward(_x(), capture=["block14_sepconv2_act"])[1]["block14_sepconv2_act"].reshape(2, -1)
    fc = rng.normal(size=(features.shape[1], 16)).astype(np.float32)
    fc *= 4 / np.abs(features @ fc).max()  # hidden units of size ~4, half of them on after the ReLU
    p.update({"fc/kernel": fc, "fc/bias": np.zeros(16, np.float32),
              # logits of size ~2: probabilities not saturated, so a wrong order moves them (asserted)
              "predictions/kernel": rng.normal(scale=0.5, size=(16, 3)).astype(np.float32),
              "predictions/bias": np.zeros(3, np.float32)})
    return XceptionModel(p, head=HEAD, input_shape=(SIZE, SIZE, 3))


def _x():
    return np.random.default_rng(1).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)


def causes(report) -> dict:
    return {r.layer: r.diagnosis.cause if r.diagnosis else None for r in report.sources}


def test_a_port_that_flattens_in_pytorch_order_is_named_at_the_flatten(model):
    x = _x()
    correct = compare(model, run_port(model, x), x)  # the port that flattens as Keras does passes
    assert correct.ok and not correct.sources and correct.agreement.top1 == 1.0, str(correct)
    dump = run_port(model, x, PYTORCH_VIEW)
    # the planted difference reaches the predictions: what a user sees, and why compare must say where
    assert np.abs(dump["predictions"] - model(x)).max() > 1e-2
    report = compare(model, dump, x)
    assert causes(report) == {"flatten": "flatten_order"}, str(report)
    assert report.first_divergence == "flatten"
    row = next(r for r in report.sources)
    assert row.diagnosis.parameter == "chw" and row.diagnosis.residual == 0.0  # a reordering computes nothing
    assert re.search(r"\n  flatten \(local 0\.\d+\): explained by their Flatten orders features \(C, H, W\); "
                     r"Keras \(H, W, C\); residual 0\n", str(report)), str(report)
    # the Dense layers after it run right on what they are given: they only carry the error on
    assert {r.layer: r.passed for r in report.rows[-2:]} == {"fc": False, "predictions": False}


def test_without_the_flatten_in_the_dump_it_is_named_at_the_dense(model):
    """A hook dump of the port: no flatten output. Our flatten fills the gap, from their map, and the Dense
    that reads it is the source; the same cause is found there."""
    x = _x()
    dump = run_port(model, x, PYTORCH_VIEW)
    del dump["flatten"]
    report = compare(model, dump, x)
    assert causes(report) == {"fc": "flatten_order"}, str(report)
    assert report.not_compared == ["flatten"]
    assert re.search(r"\n  fc \(local [\d.]+\): explained by their Flatten orders features \(C, H, W\); Keras "
                     r"\(H, W, C\) \(their side shows no flatten output: seen at fc\); residual \d", str(report)), str(report)


def test_a_port_whose_dense_rows_follow_its_flatten_order_is_consistent(model):
    """A converter that reordered the Dense's rows for ``x.view(N, -1)``: the flatten differs by a permutation,
    the Dense is found consistent with it, and every output after it agrees with ours."""
    x = _x()
    report = compare(model, run_port(model, x, Conventions(flatten="torch_view_rows")), x)
    # fc's output agrees with ours, so it is no source (a passing row never is); its row says why ours on
    # their flatten differs
    assert causes(report) == {"flatten": "flatten_order"}, str(report)
    fc = next(r for r in report.rows if r.layer == "fc")
    assert fc.diagnosis.cause == "dense_rows_follow_flatten" and not fc.source, str(report)
    assert re.search(r"fc .* ok \(not a source: its output agrees with ours, but ours run on their inputs as shown "
                     r"differs by [\d.]+: its kernel's rows follow their Flatten's \(C, H, W\) order: consistent "
                     r"with it", str(report)), str(report)
    assert {r.layer: r.passed for r in report.rows[-2:]} == {"fc": True, "predictions": True}
    assert report.agreement.max_dz < 1e-5  # float32 sums of the same 18,432 products in another order
