"""compare explains: every source of error in a port, each with its cause, and nothing else.

The ports are built here without any framework (tests/ports.py): our own ops,
run over the architecture table with another implementation's conventions
planted one at a time or together. The model is 75x75 with a 10-class top: the
smallest size at which, as at 299, block3_pool is the only max-pool whose input
is even (18x18; 299 gives 74x74), so symmetric padding changes that pool alone.

Tolerances: compare's float32 default, rtol 1e-4 of max|theirs| (see
npxception/compare/core.py). A correct port's local errors are one layer's
float32 round-off (measured < 1e-6 here); each planted cause moves its layer's
local error by > 2e-4 (BN epsilon 1e-5 vs 1e-3 with variances in [0.5, 2]:
~(1e-3 - 1e-5) / (2 var) >= 2.5e-4), the others by 1e-2 or more.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from ports import PYTORCH, Conventions, run_port

import npxception
from npxception import architecture as arch
from npxception.compare import INPUT_KEY, compare, summarize

SIZE = 75


@pytest.fixture(scope="module")
def model():
    return npxception.Xception(input_shape=(SIZE, SIZE, 3), classes=10, seed=3)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).uniform(-1, 1, (1, SIZE, SIZE, 3)).astype(np.float32)


def causes(report) -> dict[str, str | None]:
    """{source layer: the cause compare names, or None when unexplained}."""
    return {r.layer: r.diagnosis.cause if r.diagnosis else None for r in report.sources}


BN_LAYERS = [layer.name for layer in arch.backbone() if layer.kind == "bn"]


def test_correct_port_has_no_source(model, x):
    report = compare(model, run_port(model, x), x)
    assert report.ok and not report.sources, str(report)
    # a correct port's local error is one layer's float32 round-off
    assert max(r.local_rel for r in report.rows) < 1e-5
    assert report.agreement.top1 == 1.0


# ---- the headline: PyTorch's two defaults, planted together --------------------------------

def test_pytorch_conventions_port(model, x):
    report = compare(model, run_port(model, x, PYTORCH), x)
    sources = [r.layer for r in report.sources]
    assert sources == [n for n in model.layer_names if n in set(BN_LAYERS) | {"block3_pool"}], sources
    for r in report.sources:
        d = r.diagnosis
        assert d is not None, r.layer
        if r.layer == "block3_pool":
            assert d.cause == "pool_symmetric_padding" and "padding" in d.explanation
        else:
            assert d.cause == "bn_epsilon", (r.layer, d)
            assert "epsilon ≈ 1e-05" in d.explanation
            assert d.parameter == pytest.approx(1e-5, rel=0.05)
        assert d.residual < 1e-5  # what is left after the fix is round-off
    text = str(report)
    assert "block3_pool (local" in text and "explained by epsilon ≈ 1e-05" in text
    # the pool's local error is two orders above a BN's: the larger bug is visible
    pool = next(r for r in report.rows if r.layer == "block3_pool")
    assert pool.local_rel > 100 * max(r.local_rel for r in report.sources if r.layer != "block3_pool")
    # every layer fails accumulated from the first BN on, yet only these are sources
    assert report.first_divergence == "block1_conv1_bn"
    assert sum(not r.passed for r in report.rows) > len(sources)


# ---- the catalogue of docs/discrepancies.md: each entry planted alone -------------------------

MIDDLE_ADDS = [f"block{b}_add" for b in arch.MIDDLE_FLOW_BLOCKS]
CATALOGUE = {
    "bn_epsilon": (Conventions(bn_epsilon=1e-5), {n: "bn_epsilon" for n in BN_LAYERS}),
    "symmetric_pool_padding": (Conventions(pool_padding="symmetric"), {"block3_pool": "pool_symmetric_padding"}),
    "bgr_input": (Conventions(channels="bgr"), {"block1_conv1": "input_bgr"}),
    "caffe_preprocessing": (Conventions(preprocessing="caffe"), {"block1_conv1": "input_caffe"}),
    "hwio_read_as_oihw": (Conventions(oihw_reshaped=frozenset({"block1_conv2", "block6_sepconv2"})),
                          {"block1_conv2": "kernel_read_as_oihw", "block6_sepconv2": "kernel_read_as_oihw"}),
    "kernel_hw_swapped": (Conventions(hw_swapped=frozenset({"block1_conv2"})), {"block1_conv2": "kernel_hw_swapped"}),
    "logits": (Conventions(logits=True), {"predictions": "output_logits"}),
    "article_same_stem": (Conventions(variant=arch.Variant(same_stem=True)),
                          {"block1_conv1": "conv_same_padding", "block1_conv2": "conv_same_padding"}),
    "article_chained_residuals": (Conventions(variant=arch.Variant(chained_residuals=True)),
                                  {"block3_residual_conv": "wrong_input", "block4_residual_conv": "wrong_input"}),
    "article_relu_before_middle_add": (Conventions(variant=arch.Variant(relu_before_middle_add=True)),
                                       {n: "extra_relu_before" for n in MIDDLE_ADDS}),
    "article_no_final_relu": (Conventions(variant=arch.Variant(no_final_relu=True)), {"avg_pool": "skipped_layer"}),
}


@pytest.mark.parametrize("entry", sorted(CATALOGUE))
def test_catalogue_entry(model, x, entry):
    conventions, expected = CATALOGUE[entry]
    report = compare(model, run_port(model, x, conventions), x)
    assert causes(report) == expected, "\n".join(report.source_lines())


def test_catalogue_parameters(model, x):
    """The fitted parameters name the exact planted difference."""
    report = compare(model, run_port(model, x, Conventions(variant=arch.Variant(chained_residuals=True))), x)
    assert {r.layer: r.diagnosis.parameter for r in report.sources} == {
        "block3_residual_conv": "block2_residual_bn", "block4_residual_conv": "block3_residual_bn"}
    report = compare(model, run_port(model, x, Conventions(variant=arch.Variant(no_final_relu=True))), x)
    assert report.sources[0].diagnosis.parameter == "block14_sepconv2_act"


def test_article_port_all_four(model, x):
    """The article's model against ours: its four departures, at their layers, nothing else."""
    report = compare(model, run_port(model, x, Conventions(variant="article")), x)
    expected = {}
    for entry in ("article_same_stem", "article_chained_residuals", "article_relu_before_middle_add",
                  "article_no_final_relu"):
        expected.update(CATALOGUE[entry][1])
    assert causes(report) == expected, "\n".join(report.source_lines())
    # its extra ReLUs have no counterpart here and are listed as theirs only
    assert "(theirs only) block5_sepconv3_bn_act" in report.skipped


def test_input_carried_by_the_dump(model, x):
    """With the input under the reserved key, a BGR port is caught at the input itself."""
    bgr = run_port(model, x, Conventions(channels="bgr"))
    report = compare(model, {**bgr, INPUT_KEY: x[..., ::-1]}, x)
    assert causes(report) == {"input": "input_bgr"}
    assert any("inputs differ" in w for w in report.warnings)
    # the dump's own input is used when none is given
    assert compare(model, {**run_port(model, x), INPUT_KEY: x}).ok


# ---- names, layouts, summary ---------------------------------------------------------------------

def test_timm_module_names_and_nchw(model, x):
    from npxception.compare.names import timm_legacy_xception

    theirs = {v: k for k, v in timm_legacy_xception().items()}
    acts = run_port(model, x, PYTORCH)
    dump = {theirs[k]: (v.transpose(0, 3, 1, 2) if v.ndim == 4 else v) for k, v in acts.items()}
    dump[INPUT_KEY] = x.transpose(0, 3, 1, 2)
    with pytest.raises(ValueError, match="no layer in common.*names="):
        compare(model, dump, x)
    report = compare(model, dump, names="timm.legacy_xception", layout="NCHW")
    assert [r.layer for r in report.sources] == [n for n in model.layer_names
                                                 if n in set(BN_LAYERS) | {"block3_pool"}]


def test_timm_map_covers_every_layer(model):
    from npxception.compare.names import timm_legacy_xception

    m = timm_legacy_xception()
    assert sorted(m.values()) == sorted(model.layer_names)  # one module per layer, each layer once
    assert m["block4.rep.4"] == "block5_sepconv2"  # the example
    assert m["block1.rep.5"] == "block2_pool" and m["block12.rep.6"] == "block13_pool"
    assert m["fc"] == "predictions"


def test_names_file_and_errors(model, x, tmp_path):
    acts = run_port(model, x)
    path = tmp_path / "map.json"
    path.write_text(json.dumps({f"theirs.{k}": k for k in acts}))
    report = compare(model, {f"theirs.{k}": v for k, v in acts.items()}, x, names=path)
    assert report.ok and len(report.rows) == len(model.layer_names)
    with pytest.raises(ValueError, match="'a' maps to 'block99_conv'"):
        compare(model, acts, x, names={"a": "block99_conv"})
    with pytest.raises(ValueError, match="timm.legacy_xception"):
        compare(model, acts, x, names="timm.legacy-xception")


def test_multi_image_summary(model):
    xs = np.random.default_rng(5).uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
    acts = run_port(model, xs, Conventions(logits=True))
    s = summarize(model, {"predictions": acts["predictions"], INPUT_KEY: xs})
    assert s.images == 3 and s.top1 == 1.0 and s.top5_overlap == 1.0
    assert "theirs looked like logits" in s.note and s.max_dp < 1e-5
    wrong = acts["predictions"][:, ::-1].copy()  # a class order reversed
    s = summarize(model, {"predictions": wrong, INPUT_KEY: xs})
    assert s.top1 < 1.0 and s.max_dp > 0.1


def test_report_json_stages_plot(model, x, tmp_path):
    from PIL import Image

    report = compare(model, run_port(model, x, PYTORCH), x, rtol=1e-4, atol=0)
    data = json.loads(report.to_json())
    assert [s["layer"] for s in data["sources"]] == [r.layer for r in report.sources]
    assert data["sources"][0]["diagnosis"]["cause"] == "bn_epsilon"
    stages = report.stages()
    assert set(stages) == {"entry", "middle", "exit"}
    assert stages["entry"]["sources"] == 12 and stages["middle"]["sources"] == 24  # 11 BN + pool; 8x3 BN
    assert "1-cos" in str(report) and "per stage: entry" in str(report)
    out = report.plot(tmp_path / "p.png")
    with Image.open(out) as img:
        assert img.format == "PNG"
    # a looser tolerance than the BN effect (~8e-4) leaves only the pool
    loose = compare(model, run_port(model, x, PYTORCH), x, rtol=5e-3)
    assert [r.layer for r in loose.sources] == ["block3_pool"]
