"""compare against timm legacy_xception ports as users have them (reviewer 20): headless and fine-tuned
models under the built-in map, logits that timm returns by design, an NCHW graph's layout read from its
input, and bugs inside a folded export located *and* named.

The ports are NCHW ONNX graphs written with onnx.helper as ``torch.onnx.export`` writes timm's
``legacy_xception`` (tests/onnx_port.py), of 75x75 models with random BN statistics.

Tolerances: compare's float32 default (rtol 1e-4 of max|theirs|, tests/test_onnx_exports.py): a correct
port's layers differ by float32 round-off (< 1e-6), a planted bug by > 1e-3 at its layer.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from ports import PORT_SIZE

import npxception
from npxception.compare import compare
from npxception.network import XceptionModel

CORRECT = dict(epsilon=1e-3, pool_pads="same")  # Keras' conventions in a timm-shaped NCHW graph
SHAPE = (PORT_SIZE, PORT_SIZE, 3)
TIMM = "timm.legacy_xception"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = [os.path.join(REPO, "examples", name) for name in ("chelsea.png", "coffee.png")]


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).uniform(-1, 1, (1, *SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def top():
    return npxception.Xception(input_shape=SHAPE, classes=10, seed=3)


@pytest.fixture(scope="module")
def port(top, tmp_path_factory):
    """port(name, model=top, **build options) -> path of that graph, built once per module."""
    from onnx_port import build

    folder, built = tmp_path_factory.mktemp("timm"), {}

    def make(name, model=None, **options):
        if name not in built:
            built[name] = folder / f"{name}.onnx"
            build(model or top, built[name], **options)
        return built[name]
    return make


def test_headless_model_under_the_builtin_map(port, x):
    """A headless model (tf_keras' include_top=False, pooling="avg" names its pooling
    global_average_pooling2d) against timm's num_classes=0 export: the built-in map was refused outright
    ("'global_pool' maps to 'avg_pool', which is not one of our layer names"), a map the user never wrote.
    Now timm's global_pool is compared as the model's own pooling, and fc is named as not compared, with
    why. A hand-written map keeps its typo check."""
    base = npxception.Xception(input_shape=SHAPE, include_top=False, pooling="avg", seed=3)
    model = XceptionModel(dict(base.weights), head=[{"kind": "global_avg_pool", "name": "global_average_pooling2d"}],
                          input_shape=SHAPE)
    report = compare(model, port("notop", model=model, head="none", **CORRECT), x, layout="NCHW", names=TIMM)
    assert report.ok and not report.sources, str(report)
    assert report.rows[-1].layer == "global_average_pooling2d" and report.rows[-1].passed
    text = str(report)
    assert "their global_pool is compared as our global_average_pooling2d" in text
    assert "their fc not compared: the model has no classifier after its pooling (include_top=False)" in text
    with pytest.raises(ValueError, match="'global_pool' maps to 'avg_pool', which is not one of our layer names"):
        compare(model, port("notop", model=model, head="none", **CORRECT), x, layout="NCHW",
                names={"global_pool": "avg_pool"})


def test_fine_tuned_head_and_logits(top, port):
    """A fine-tuned head named otherwise (gap, dense_1) against timm's export, which returns logits by
    design: the map re-targets global_pool and fc, and the classifier row compares softmax(theirs) with
    ours, so a correct port passes (its predictions row was FAIL SOURCE, exit 1, even when stated linear)."""
    w = {k.replace("predictions/", "dense_1/"): v for k, v in top.weights.items()}
    model = XceptionModel(w, head=[{"kind": "global_avg_pool", "name": "gap"},
                                   {"kind": "dense", "name": "dense_1", "units": 10, "activation": "softmax",
                                    "use_bias": True}], input_shape=SHAPE)
    # with images= and no x (it raised "x: an input batch is needed", though the docs say images= stands for
    # --image): the two photos are loaded as --image loads them, one batch of two
    report = compare(model, port("logits", **CORRECT), layout="NCHW", names=TIMM, images=PHOTOS)
    assert report.ok and not report.sources and report.rows[0].shape_ours[0] == 2, str(report)
    last = report.rows[-1]
    assert last.layer == "dense_1" and last.passed and "compared as logits, which their side states" in last.note, str(report)
    assert report.agreement.images == 2 and report.agreement.max_dp < 1e-6


def test_images_of_different_sizes_for_an_any_size_model_say_how():
    """images= for a model that takes any size: each photo at its own size, which do not stack into one
    batch; refused naming the sizes and what to pass (x from npxception.load_image)."""
    from npxception.compare.core import photos_batch

    model = npxception.Xception(input_shape=(None, None, 3), include_top=False, pooling="avg", seed=3)
    assert photos_batch(model, PHOTOS[:1]).shape == (1, *npxception.load_image(PHOTOS[0]).shape)
    with pytest.raises(ValueError, match=r"different sizes .*load_image\(path, target_size=\(H, W\)\)"):
        photos_batch(model, [PHOTOS[0], PHOTOS[1]])


def test_missing_relu_behind_a_folded_convolution_is_named(port, top, x):
    """timm's default export folds each BN into its convolution, so compare fills the convolution a BN row
    reads; a ReLU the port drops before it (block8_sepconv2_act) is then a gap behind that gap, and the
    row was "unexplained" (explained only unfolded, where the convolution is exposed). Named now."""
    path = port("norelu", fold_bn=True, drop_relu=("block8_sepconv2_act",), **CORRECT)
    report = compare(top, path, x, layout="NCHW", names=TIMM)
    assert [r.layer for r in report.sources] == ["block8_sepconv2_bn"], str(report)
    d = report.sources[0].diagnosis
    assert d is not None and d.cause == "skipped_layer" and d.parameter == "block8_sepconv2_act", str(report)
    assert "their port has no block8_sepconv2_act: block8_sepconv2" in d.explanation


def _swap_out(k):
    """Output channels 3 and 4 of an HWIO kernel swapped."""
    k = k.copy()
    k[..., [3, 4]] = k[..., [4, 3]]
    return k


def _swap_taps(d):
    """Taps (0, 1) and (1, 0) of a depthwise kernel's channel 5 swapped."""
    d = d.copy()
    d[0, 1, 5], d[1, 0, 5] = d[1, 0, 5].copy(), d[0, 1, 5].copy()
    return d


def test_weight_bugs_are_named_from_their_weights(port, top, x):
    """Bugs in the weights a port map pairs with ours were located but "unexplained" (folded, the warning
    only said "fused kernel is not ours times a per-channel scale"; unfolded, nothing). Their initializers,
    read from the graph, are checked against ours directly, and named when our layer run with them
    reproduces their output: output channels permuted, depthwise taps swapped, and a strided 1x1 residual
    convolution padded [1, 1, 0, 0] (sampling the odd pixels of the 35x35 map, where SAME samples the even)."""
    bugs = dict(kernel_bug=("block7_sepconv2", _swap_out), depthwise_bug=("block7_sepconv1", _swap_taps),
                conv_pads={"block2_residual_conv": (1, 1, 0, 0)})
    report = compare(top, port("weights", fold_bn=True, **bugs, **CORRECT), x, layout="NCHW", names=TIMM)
    found = {r.layer: r.diagnosis for r in report.sources}
    assert sorted(found) == ["block2_residual_bn", "block7_sepconv1_bn", "block7_sepconv2_bn"], str(report)
    assert all(d is not None and d.cause == "their_weights" for d in found.values()), str(report)
    assert ("differs from our block7_sepconv2 kernel (up to the per-channel scale of the BN folded into it): "
            "output channels permuted (their 3 is our 4, their 4 is our 3)") in found["block7_sepconv2_bn"].explanation
    assert "taps (0, 1) and (1, 0) swapped in channel 5 of our block7_sepconv1 depthwise kernel" in found[
        "block7_sepconv1_bn"].explanation
    assert ("pads 1/0 top/bottom and 1/0 left/right where ours pads 0/0 and 0/0 on the 35x35 map: it samples the "
            "other pixel phase") in found["block2_residual_bn"].explanation
    # unfolded, the convolution is exposed: its own row, named the same way (it had no weights check at all)
    report = compare(top, port("swap_unfolded", kernel_bug=("block7_sepconv2", _swap_out), **CORRECT), x,
                     layout="NCHW", names=TIMM)
    assert [(r.layer, r.diagnosis and r.diagnosis.cause) for r in report.sources] == [
        ("block7_sepconv2", "their_weights")], str(report)
    assert "output channels permuted (their 3 is our 4, their 4 is our 3)" in report.sources[0].diagnosis.explanation


# ---- a confident classifier returning logits (review 22, finding 1) --------------------------------

@pytest.fixture(scope="module")
def confident(top, x):
    """``top`` with a realistic classifier: logits spread over ~10 units (top logit ~20 above the rest, p of
    the top class 1 - 1e-9), where the seeded model's are near-uniform; rescaled as a trained head's are.
    The suite missed finding 1 because a seeded head's softmax never saturates."""
    model = XceptionModel(dict(top.weights), head=top.head, input_shape=SHAPE)
    _, a = model.forward(x, capture=["avg_pool"])
    k = model.get_layer("predictions").get_weights()[0]
    k = (k - k.mean()) * (10.0 / (np.asarray(a["avg_pool"])[0] @ k).std())
    model.get_layer("predictions").set_weights([k.astype(np.float32), np.zeros(10, np.float32)])
    assert model(x).max() > 1 - 1e-6  # saturated: what hid the port's logits
    return model


def _edited(src, dst, edit):
    """The ONNX graph at ``src`` with ``edit(name, array) -> array or None`` applied to its initializers."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(src))
    for i, t in enumerate(g.graph.initializer):
        new = edit(t.name, numpy_helper.to_array(t).copy())
        if new is not None:
            g.graph.initializer[i].CopyFrom(numpy_helper.from_array(new, t.name))
    onnx.save(g, str(dst))
    return dst


def test_confident_logits_are_compared_as_logits(confident, port, x, tmp_path):
    """timm's fc returns logits; ours ends with softmax, saturated (p = 1 - 1e-9). Their logits were put
    through our softmax before the row was compared and diagnosed: one class's bias off by 3.0 passed
    ("no divergence: 133 layers agree", with top-5 overlap 80%), and permuted classes were "explained by
    dense kernel (out, in) read as (in, out)". Compared as logits: the bias is the source, the permutation
    is named with the permutation (classes_permuted, new). Tolerance: compare's float32 default; a correct port's logits differ
    by float32 round-off (the correct graph passes, asserted first)."""
    good = port("confident", model=confident, **CORRECT)
    assert compare(confident, good, x, layout="NCHW", names=TIMM).ok
    runner_up = int(np.argsort(-confident(x)[0])[1])

    def bias_off(name, a):
        if name == "fc.bias":
            a[(runner_up + 1) % 10] += 3.0
            return a

    report = compare(confident, _edited(good, tmp_path / "bias.onnx", bias_off), x, layout="NCHW", names=TIMM)
    assert not report.ok and [r.layer for r in report.sources] == ["predictions"], str(report)
    assert "compared as logits" in report.rows[-1].note
    perm = np.random.default_rng(0).permutation(10)

    def permuted(name, a):
        return a[perm] if name in ("fc.weight", "fc.bias") else None

    report = compare(confident, _edited(good, tmp_path / "perm.onnx", permuted), x, layout="NCHW", names=TIMM)
    d = report.sources[-1].diagnosis
    assert [r.layer for r in report.sources] == ["predictions"] and d is not None, str(report)
    assert d.cause == "classes_permuted" and d.parameter == perm.tolist(), str(report)


def test_saturated_probabilities_with_other_rankings_do_not_pass(confident, port, x, tmp_path):
    """Both sides softmax (their graph ends in Softmax), saturated: a non-top class's bias off by 3.0 moves
    its probability by ~1e-8, within rtol 1e-4 of max|p| = 1, and reorders the top 5. A passing verdict
    never coexists with rankings that differ: the row fails, saying so, and ok is False."""
    good = port("confident_softmax", model=confident, softmax=True, **CORRECT)
    assert compare(confident, good, x, layout="NCHW", names=TIMM).ok  # a correct port: no ranking flips
    p = confident(x)[0].astype(np.float64)
    order = np.argsort(-p)

    def raised(name, a):  # the 7th class's logit 1.0 above the runner-up's: into the top 5, second
        if name == "fc.bias":
            a[order[6]] += np.log(p[order[1]]) - np.log(p[order[6]]) + 1.0
            return a

    report = compare(confident, _edited(good, tmp_path / "rank.onnx", raised), x, layout="NCHW", names=TIMM)
    assert report.agreement.top5_overlap < 1
    last = report.rows[-1]
    assert not report.ok and not last.passed and "class rankings differ" in last.note, str(report)
    # the command line's summary over all its photos says so too, and a report carrying it never passes
    from npxception.compare.summary import summarize

    summary = summarize(confident, tmp_path / "rank.onnx", x, layout="NCHW", names=TIMM)
    assert summary.rankings_differ.startswith("image 0: ours ranks class"), summary
    assert not summarize(confident, good, x, layout="NCHW", names=TIMM).rankings_differ  # no near-tie flagged
    passing = compare(confident, good, x, layout="NCHW", names=TIMM)
    passing.agreement = summary
    assert not passing.ok and passing.verdict.startswith("first divergence: predictions (class rankings differ)")


def test_our_logits_against_their_probabilities_are_compared_as_probabilities(top, port, x):
    """Ours returns logits (classifier_activation=None), their graph ends in Softmax: the row compared
    their probabilities with our logits and reported a source (output_probabilities). Now their activation
    is applied to ours, as the row says, and a correct port passes."""
    head = [dict(h) for h in top.head]
    head[-1]["activation"] = None
    model = XceptionModel(dict(top.weights), head=head, input_shape=SHAPE)
    report = compare(model, port("softmax", softmax=True, **CORRECT), x, layout="NCHW", names=TIMM)
    assert report.ok and "compared as probabilities" in report.rows[-1].note, str(report)


# ---- tensors whose shape is neither reading of ours (review 22, finding 2) -------------------------

@pytest.mark.parametrize("fold", [False, True], ids=["bn_nodes", "folded"])
def test_stem_padded_by_pytorch_is_read_in_the_graph_layout(port, top, x, fold):
    """``nn.Conv2d(3, 32, 3, 2, padding=1)`` for Keras' VALID stem: every map after it is one pixel larger,
    so no tensor's shape is either reading of ours and each stayed NCHW: without --layout the row blamed
    "channels differ (32 vs 38)" and then "gamma must have shape (38,)" (BN nodes), or compare crashed
    with "operands could not be broadcast" (folded BN, torch.onnx.export's default). Read by their
    channels now, as the graph's NCHW input says; the padding is named at the stem."""
    path = port(f"stem_pad_{fold}", fold_bn=fold, conv_pads={"block1_conv1": (1, 1, 1, 1)}, **CORRECT)
    report = compare(top, path, x, names=TIMM)  # no layout: detected
    first = report.sources[0]
    assert first.layer == ("block1_conv1_bn" if fold else "block1_conv1"), str(report)
    assert first.shape_theirs == (1, 38, 38, 32) and "spatial size differs (37x37 vs 38x38)" in first.note
    # at 75x75 padding 1/1 is what SAME pads here (conv_same_padding); at an even size, 1 on every side
    assert first.diagnosis is not None and first.diagnosis.cause == "conv_same_padding", str(report)
    assert first.diagnosis.explanation.startswith("padding=1 (SAME at this size) instead of VALID")


def test_a_dump_made_on_another_size_is_named(x):
    """A hook dump (NCHW) of a port fed its own pipeline's 83x83 crop, compared on a 75x75 batch: its
    __input__ stayed NCHW (its shape fits neither reading of ours) and the user's x was blamed ("x:
    expected shape (N, H, W, 3), found (1, 3, 83, 83)"). Now the input row says their side ran on another
    size; for a fixed-size model, which cannot run the dump's input, the dump is named."""
    model = npxception.Xception(input_shape=(None, None, 3), include_top=False, pooling="avg", seed=3)
    xt = np.random.default_rng(2).uniform(-1, 1, (1, 83, 83, 3)).astype(np.float32)
    _, acts = model.forward(xt, capture=["block1_conv1"])
    dump = {"block1_conv1": np.asarray(acts["block1_conv1"]).transpose(0, 3, 1, 2), "__input__": xt.transpose(0, 3, 1, 2)}
    report = compare(model, dump, x)
    assert not report.ok and report.rows[0].layer == "input"
    assert "their input is 83x83, ours 75x75: their side ran on another input size" in report.rows[0].note
    assert "spatial size differs (37x37 vs 41x41)" in report.rows[1].note, str(report)
    fixed = npxception.Xception(input_shape=SHAPE, include_top=False, pooling="avg", seed=3)
    with pytest.raises(ValueError, match=r"activation dict: the input the dump carries \(key '__input__', "
                                         r"\(1, 83, 83, 3\) as NHWC.*the dump was made on another input"):
        compare(fixed, dump, x)


def test_one_extra_class_is_named_and_dropped_for_the_predictions(confident, port, tmp_path):
    """Their classifier has a background class at index 0 (1001-style: 11 outputs for our 10). With several
    images the predictions summary crashed ("operands could not be broadcast together with shapes (2,10)
    (2,11)", exit 1); with one, the row said "channels differ (10 vs 11)", unexplained. Now the cause is
    named with the index, and the predictions are compared with that class dropped, as the note says."""
    from npxception.compare.summary import summarize

    def background(name, a):
        if name in ("fc.weight", "fc.bias"):  # Gemm with transB: weight rows are classes
            return np.concatenate([np.zeros_like(a[:1]), a])

    path = _edited(port("confident", model=confident, **CORRECT), tmp_path / "bg.onnx", background)
    report = compare(confident, path, layout="NCHW", names=TIMM, images=PHOTOS)
    d = report.sources[-1].diagnosis
    assert report.sources[-1].layer == "predictions" and d is not None, str(report)
    assert d.cause == "extra_class" and d.parameter == 0 and "(11 vs 10), at index 0" in d.explanation
    assert report.agreement.images == 2 and report.agreement.top1 == 1.0, report.agreement
    assert "read without their class 0" in report.agreement.note
    x2 = np.concatenate([npxception.load_image(p, SHAPE[:2])[None] for p in PHOTOS]) / 127.5 - 1
    summary = summarize(confident, path, x2.astype(np.float32), layout="NCHW", names=TIMM)  # the CLI's path
    assert summary.top1 == 1.0 and "read without their class 0" in summary.note


def _fixed_input(src, dst, dims):
    """The graph at ``src`` with its input declared ``dims`` (torch.onnx.export without dynamic_axes)."""
    import onnx

    g = onnx.load(str(src))
    for d, v in zip(g.graph.input[0].type.tensor_type.shape.dim, dims):
        d.ClearField("dim_param")
        d.dim_value = v
    onnx.save(g, str(dst))
    return dst


def test_a_graph_of_batch_one_is_fed_one_image_at_a_time(port, top, tmp_path):
    """torch.onnx.export without dynamic_axes (its default) fixes the batch at 1: with two photos compare
    refused ("its input 'x' is declared (1, 3, 75, 75), and the NCHW float32 input is (2, 3, 75, 75)"). Fed
    one image at a time now, as for any batch. An any-size model of ours against a graph of one size is
    refused with the size to pass (--size HxW), which it did not say."""
    path = _fixed_input(port("logits", **CORRECT), tmp_path / "fixed.onnx", (1, 3, *SHAPE[:2]))
    report = compare(top, path, names=TIMM, images=PHOTOS)
    assert report.ok and report.rows[0].shape_ours[0] == 2 and report.agreement.images == 2, str(report)
    anysize = XceptionModel(dict(top.weights), head=top.head, input_shape=(None, None, 3))
    x = np.zeros((1, 80, 80, 3), np.float32)
    with pytest.raises(ValueError, match=r"declared \(1, 3, 75, 75\).*the graph takes 75x75 images only: "
                                         r"compare at that size \(--size 75x75"):
        compare(anysize, path, x, names=TIMM)


def test_command_line_codes_for_port_and_layout(port, top, tmp_path, capsys):
    """`--port timm.nope` exited 1 naming compare's Python parameter ("names: expected..."): a value not one
    of the choices is a bad command line, exit 2, named as --port. `--layout NHWC` on an NCHW graph exited 1:
    a value the graph cannot take, exit 2. A comparison that runs and differs exits 3, not the 1 of
    "could not run" (README's exit codes)."""
    from npxception import cli

    weights = top.save(tmp_path / "ours.npz")
    graph = port("logits", **CORRECT)
    base = ["compare", "--weights", str(weights), "--against", str(graph)]
    with pytest.raises(SystemExit, match="^2$"):
        cli.main([*base, "--port", "timm.nope"])
    assert "argument --port: not a known port: 'timm.nope'; expected one of timm.legacy_xception" in capsys.readouterr().err
    assert cli.main([*base, "--port", TIMM, "--layout", "NHWC"]) == 2
    assert "its input is NCHW: pass layout='NCHW' (--layout NCHW)" in capsys.readouterr().err
    pytorch = port("pytorch_eps", epsilon=1e-5, pool_pads="same")  # PyTorch's BN epsilon: the ports differ
    assert cli.main(["compare", "--weights", str(weights), "--against", str(pytorch), "--port", TIMM]) == 3


def test_bfloat16_weights_with_pytorchs_epsilon_are_named_together(port, top, x, tmp_path):
    """A bfloat16 checkpoint loaded into a float32 port with BatchNorm2d's epsilon 1e-5: each fault alone
    was named, together all BN layers were "unexplained" (each cause leaves the other's difference over
    the tolerance). Named as both, the epsilon fitted on the rounded weights; the convolutions as rounded."""
    from npxception.compare.hypotheses.rounding import rounded

    def bf16(name, a):
        return rounded(a, "bfloat16") if a.dtype == np.float32 else None

    path = _edited(port("pytorch_eps_bn", epsilon=1e-5, pool_pads="same"), tmp_path / "bf16.onnx", bf16)
    report = compare(top, path, x, layout="NCHW", names=TIMM)
    bn = [r for r in report.sources if r.layer.endswith("_bn")]
    assert len(bn) == 40 and all(r.diagnosis is not None for r in report.sources), "\n".join(report.source_lines())
    assert {r.diagnosis.cause for r in bn} == {"bn_epsilon_weights_rounded"}
    assert all(r.diagnosis.parameter["rounded_to"] == "bfloat16" for r in bn)
    assert all(abs(r.diagnosis.parameter["epsilon"] - 1e-5) < 2e-6 for r in bn)  # the fit, to float32 noise
