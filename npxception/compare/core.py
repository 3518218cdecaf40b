"""compare(): ours against theirs, layer by layer, with local errors and diagnoses."""

from __future__ import annotations

import pathlib
from itertools import chain

import numpy as np

from ..blas import single_threaded
from .. import input_stage as stage
from ..head import activation
from ..model import XceptionModel, _with_activation
from ..overflow import ActivationOverflow
from ..prediction import feed, load_photo
from . import hypotheses
from .local import Local, local_pass, nodes
from .metrics import FLOAT16_MAX, errors, non_finite
from .names import AUTO_NAME_PATTERN, ByOrder, TfliteNames, by_counter, match_auto_names, match_tflite_names
from .ranking import ranking_difference, scores
from .precision import DEFAULT_RTOL, HALF, UNIT_ROUNDOFF, as_float32, their_precision
from .report import PROBABILITIES, UNKNOWN, Report, Row, agreement, output_activation
from .roundoff import RoundOff
from .summary import _agreement as summary_agreement
from .sides import INPUT_KEY, Other, open_other, squeezed, stated_activation, to_nhwc


def _explain_shapes(ours, theirs) -> str:
    if ours is None or theirs is None:
        return "missing on one side"
    if len(ours) == 4 and len(theirs) == 4 and (theirs[0], theirs[2], theirs[3], theirs[1]) == ours:
        return "shapes differ; theirs looks NCHW: pass layout='NCHW'"
    if len(ours) == len(theirs) == 4 and ours[-1] == theirs[-1] and ours[1:3] != theirs[1:3]:
        return (f"spatial size differs ({ours[1]}x{ours[2]} vs {theirs[1]}x{theirs[2]}): "
                "different padding or stride, or a different input size")
    if len(ours) == len(theirs) == 2 and ours[0] == theirs[0]:
        return f"outputs differ ({ours[1]} vs {theirs[1]} per image): a classifier with other classes, or another layer"
    if ours[-1:] != theirs[-1:]:
        return f"channels differ ({ours[-1]} vs {theirs[-1]}): a different layer, or a different layout"
    return f"shape ours {ours} vs theirs {theirs}"


def compare(model, other, x=None, *, rtol=None, atol=None, oracle=False, layout=None, names=None,
            explain=True, config=None, images=None, their_activation=None) -> Report:
    """Compare ``model`` with ``other`` on input batch ``x``; see the package docstring.

    ``x`` may be None when ``other`` is a dump that carries its input (key ``"__input__"``), or when
    ``images`` are given: they are then loaded as ``npxception compare --image`` loads them (:func:`photos_batch`).
    ``names``: ``{their name: our name}``, a JSON file, or a known port (``"timm.legacy_xception"``).
    ``explain``: compute local errors and test the hypothesis catalogue at every source.
    ``config``: the architecture (``.keras`` or ``config.json``) of a weights-only Keras file ``other``.
    ``images``: the photo files ``x`` was loaded from, one per image (``npxception compare --image``):
    an input that differs is then also tested against other resizes of them (bilinear, bicubic, timm's).
    ``their_activation``: the activation their final output ends with, by its Keras name (``"softmax"``,
    ``"sigmoid"``, ``"linear"`` for logits), for a dump, which cannot say: the predictions are then read by
    it (:func:`~npxception.compare.sides.stated_activation`). Never guessed when not given.
    """
    # Our side runs op by op (every activation is kept), one BLAS call per layer between
    # Numba kernels; with OpenBLAS' own threads also waking for each, that path ran 3x
    # slower at 299x299 (3.6 s against 1.2 s, docs/performance.md), as the fast path found.
    with single_threaded():
        return _compare(model, other, x, rtol=rtol, atol=atol, oracle=oracle, layout=layout, names=names,
                        explain=explain, config=config, images=images, their_activation=their_activation)


def _compare(model, other, x, *, rtol, atol, oracle, layout, names, explain, config=None, images=None,
             their_activation=None) -> Report:
    if not isinstance(model, XceptionModel):
        raise TypeError(f"model: expected an npxception model, found {type(model).__name__}")
    if layout not in (None, "NHWC", "NCHW"):
        raise ValueError(f"layout: expected 'NHWC', 'NCHW' or None, found {layout!r}")
    side = other if isinstance(other, Other) else open_other(model, other, layout=layout, names=names,
                                                             config=config)
    side = stated_activation(side, their_activation)
    own_act = output_activation(model.head)
    model, reading = _on_their_terms(model, side.activation)
    if side.no_names:  # an ONNX graph's final output is always found: alone, it says nothing of where
        raise ValueError(f"{side.label}: no layer in common with npxception's names but the final output: "
                         f"{side.no_names}")
    if x is None and images:  # the photos, sized and preprocessed as `npxception compare --image` feeds them
        x = photos_batch(model, images)
    if x is None and not side.fixed:
        raise ValueError(f"x: an input batch is needed to run {side.label}: pass x, or images=[photo paths] "
                         "(or x=npxception.load_image(path, target_size=(H, W))[None], preprocessed)")
    raw = side(None if x is None else np.asarray(x))
    their_input = raw.pop(INPUT_KEY, None)
    if their_input is not None:
        ours_in = {} if x is None else {INPUT_KEY: np.shape(x)}
        their_input = as_float32(to_nhwc({INPUT_KEY: their_input}, ours_in, side.layout, model.channels)[INPUT_KEY])
        if their_input.dtype.kind in "fc" and not np.isfinite(their_input).all():
            raise ValueError(f"{side.label}: entry {INPUT_KEY!r} contains NaN or Inf; expected the finite input "
                             "batch its activations were computed from")
    from_dump = x is None
    if x is None:
        if their_input is None:
            raise ValueError(f"{side.label}: no input given and the dump carries none "
                             f"(key {INPUT_KEY!r}); pass x")
        x = their_input
    x = np.asarray(x)

    try:
        ours_out, ours = model.forward(x, capture="all")
    except ActivationOverflow as exc:  # our side overflowed on their input: name where that input came from
        if not from_dump:
            raise
        raise exc.naming([f"{side.label}'s {INPUT_KEY!r} image {r}" for r in range(len(x))]) from None
    by_order, tflite = ByOrder(), TfliteNames()
    if side.fixed:  # a TFLite dump's tensors are named by the fused op's scopes: its first one's output
        tflite = match_tflite_names({k: np.shape(v) for k, v in raw.items() if k not in ours},
                                    {n.name: (n.kind, ours[n.name].shape) for n in nodes(model)}, side.layout)
        found = tflite.matched
        raw = {found.get(k, k): v for k, v in raw.items() if k not in found or found[k] not in raw}
    if side.fixed or side.names:  # Keras' auto-names, the dump's own or given by a map: mapped when determined
        given = set(side.names.values()) | set(tflite.matched.values())
        auto = [k for k in raw if k not in ours and AUTO_NAME_PATTERN.fullmatch(k)]
        keys = [k for k in auto if k not in given] + by_counter([k for k in auto if k in given])
        # a layer their scopes name (a BN fused into its convolution) is not one Keras left unnamed
        by_order = match_auto_names({k: np.shape(raw[k]) for k in keys},
                                    [(n.name, n.kind, ours[n.name].shape) for n in nodes(model)
                                     if n.name not in raw and n.name not in tflite.seen], side.layout)
        raw = {by_order.matched.get(k, k): v for k, v in raw.items()}
    theirs = to_nhwc(raw, {k: v.shape for k, v in ours.items()}, side.layout, model.channels)
    # compared, and fed to the next layer's local run, squeezed: a (N, C, 1, 1) pool is our (N, C)
    theirs, extra_ones = squeezed(theirs, {k: v.shape for k, v in ours.items()})
    unknown = [k for k in theirs if k not in ours] + side.theirs_only
    precision, how = their_precision(model.dtype, side.dtype, theirs, side.dtype_how)
    theirs = {k: as_float32(v) for k, v in theirs.items()}  # a float16 port is compared in float32
    rtol = DEFAULT_RTOL[precision] if rtol is None else float(rtol)
    atol = 0.0 if atol is None else float(atol)
    if rtol < 0 or atol < 0 or not np.isfinite(rtol + atol):
        raise ValueError(f"rtol, atol: expected finite numbers >= 0, found {rtol!r}, {atol!r}")

    # A Keras model computing in 16 bits (mixed precision) compounds its rounding over the layers, past one
    # layer's tolerance (docs/keras-recipe.md#mixed-precision); the oracle tells whose that difference is.
    attribute = precision in HALF and side.dtype_how is not None and explain
    oracle_acts = None
    if oracle or attribute:
        _, oracle_acts = model.astype("float64").forward(x.astype(np.float64), capture="all")

    rows, not_compared, warnings = [], [], list(side.notes)
    if precision in HALF:
        warnings.append(f"theirs is {precision} ({how}): compared in float32 with rtol {rtol:g}, as {precision}'s "
                        f"round-off ({UNIT_ROUNDOFF[precision]:.2g} per operation) allows; a difference smaller than "
                        "that, such as a BN epsilon of 1e-5 for 1e-3, cannot be seen at this precision")
    if their_input is not None:
        rows.append(_input_row(model, x, their_input, rtol, atol, explain, images))
        if not rows[0].passed:
            warnings.append("the two sides' inputs differ: every accumulated error below includes that")
    x_stage = None
    their_stage = side.stage(x) if side.stage is not None and their_input is None and x is not None else None
    if their_stage is not None:  # their in-graph preprocessing, layer by layer
        stage_rows, x_stage = _stage_rows(model, their_stage, x, rtol, atol, explain)
        rows.extend(stage_rows)
    by_name, weighted = {}, set()
    order = {n: i for i, n in enumerate(model.layer_names)}
    # What the backbone's first layer reads: the input after the model's in-graph preprocessing.
    x_backbone = None if x is None else model.backbone_input(x)
    # What their first layer read: their own input when the dump carries it (a port that preprocesses
    # inside, handed the same batch as ours, shows its BGR or caffe input at that layer), else ours.
    x_first = x_backbone if their_input is None else _their_backbone_input(model, their_input, x, side.label)
    if x_stage is not None:  # what their backbone read: their input stage's output (their Rescaling...)
        x_first = x_stage
    # on a failing row, a float32 layer under the tolerance is held to float32's round-off (roundoff.py),
    # unless the user loosened the tolerance (--rtol 5e-3 to accept PyTorch's BN epsilon): then that is
    # what a layer may add
    loosened = rtol > DEFAULT_RTOL["float32"] or atol > 0
    roundoff = RoundOff(model, theirs, x_first) if precision == "float32" and not loosened else None
    for loc in (local_pass(model, theirs, x_first) if explain else _no_local(model)):
        name = loc.node.name
        if name not in theirs:
            not_compared.append(name)
            continue
        a, b = ours[name], np.asarray(theirs[name])
        row = Row(name, a.shape, b.shape, flow=loc.node.flow)
        if reading and name == model.layer_names[-1]:
            row.note = reading
        if name in extra_ones:
            row.note = f"theirs {extra_ones[name]} compared as {a.shape} (their extra size-1 dimensions dropped)"
        if a.shape != b.shape:
            row.note = _explain_shapes(a.shape, b.shape)
        elif bad := non_finite(b):
            row.non_finite = bad
            row.note = f"theirs holds {row.non_finite}"
        else:
            row.max_abs, row.max_rel, row.one_minus_cos, scale = errors(a, b)
            row.passed = row.max_abs <= atol + rtol * scale
            if oracle_acts is not None:
                row.ours_vs_oracle = errors(a, oracle_acts[name])[1]
                row.theirs_vs_oracle = errors(b, oracle_acts[name])[1]
            inherited = [by_name[i].max_rel for i in loc.node.inputs if i in by_name and by_name[i].max_rel]
            if inherited and row.max_rel is not None:
                row.amplification = row.max_rel / max(inherited)
        if explain:
            causes = {i: by_name[i].diagnosis.cause for i in loc.node.inputs if i in by_name and by_name[i].diagnosis}
            _judge_locally(model, row, loc, b, theirs, order, x_first, rtol, atol, precision, causes, images, x,
                           roundoff, side.convs)
        by_name[name] = row
        rows.append(row)
        if loc.node.kind in _WEIGHTED or loc.skipped:  # its weights, or a convolution's we filled (fused)
            weighted.add(name)
    if not any(r.flow != "input" for r in rows):
        raise ValueError(f"{side.label}: no layer in common with npxception's names "
                         f"(theirs: {sorted(theirs)[:5]}...; ours: {model.layer_names[:3]}...); "
                         "map their names with names= (--names FILE.json, or --port for a known port)")
    if attribute:
        _attribute_rounding(rows, precision, rtol, warnings)
    if explain and (hint := _eight_bit_hint(rows, weighted)):
        warnings.append(hint)
    report = Report(rows, rtol, atol, other=side.label, not_compared=not_compared, warnings=warnings,
                    theirs_only=unknown, unmatched_names=by_order.refused,
                    matched_by_order={ours_name: key for key, ours_name in by_order.matched.items()})
    last = model.layer_names[-1]
    if (model.classes and last in theirs and theirs[last].shape != ours[last].shape and not non_finite(theirs[last])
            and by_name.get(last) and by_name[last].diagnosis and by_name[last].diagnosis.cause == "extra_class"):
        act = output_activation(model.head)  # their one extra class dropped, as the row's diagnosis says
        report.agreement = summary_agreement(ours[last], theirs[last], {"ours_activation": act,
                                                                        "theirs_activation": side.activation})
    if (model.classes and last in theirs and theirs[last].shape == ours[last].shape
            and not non_finite(theirs[last])):
        act = output_activation(model.head)  # what the row compared: ours put on their terms
        ours_pred, ours_act = ours[last], act
        if act is None and own_act in PROBABILITIES:  # ours read as logits: its predictions are its own probabilities
            ours_pred, ours_act = activation(ours[last].astype(np.float64), own_act, "reference"), own_act
        report.agreement = agreement(ours_pred, theirs[last], ours_activation=ours_act,
                                     theirs_activation=side.activation)
        _rankings_must_agree(by_name.get(last), ours[last], theirs[last], act, rtol)
    return report


def photos_batch(model, images) -> np.ndarray:
    """``images=`` without ``x``: the photos as one batch, each loaded and preprocessed as ``npxception
    compare --image`` and ``predict`` feed it (:func:`npxception.prediction.load_photo`, then ``feed``: the
    model's fixed input size, else each at its own size). Photos of different sizes, for a model that takes
    any size, do not stack: refused, naming the sizes."""
    if isinstance(images, (str, pathlib.Path)):
        images = [images]
    photos = [load_photo(model, p)[None] for p in images]
    sizes = sorted({ph.shape[1:3] for ph in photos})
    if len(sizes) > 1:
        raise ValueError(f"images: the photos are of different sizes ({', '.join(f'{h}x{w}' for h, w in sizes)}) "
                         "and the model takes any size, so they do not stack into one batch: pass one size, "
                         "x=npxception.load_image(path, target_size=(H, W))[None] preprocessed, or compare "
                         "the photos one at a time")
    return feed(model, np.concatenate(photos))


def _on_their_terms(model, theirs):
    """``(model, note)``: ours with its classifier read as their side states theirs, so that the two final
    outputs are the same kind of values, and the note the classifier row carries; ``(model, "")`` unchanged
    otherwise (a dump states nothing: its output is compared as it is, and tested for a missing softmax).

    Their logits (a graph ending in Gemm, timm's ``fc``, ``their_activation="linear"``) against our softmax
    or sigmoid: ours is compared *before* its activation, as logits, and so is every hypothesis tested at
    the classifier. Never their logits put through our softmax: a confident classifier's softmax is 1 - 1e-9
    for its top class, and a tolerance of 1e-4 of that hides any change of the other logits (a bias off by
    3.0 passed; a permutation of the classes was "explained" by any cause that kept the top class).
    Their probabilities against our logits: logits cannot be recovered from probabilities, so their
    activation is applied to ours (the same weights, the head's last activation replaced, as Keras'
    ``classifier_activation`` does)."""
    ours = output_activation(model.head)
    if theirs == UNKNOWN or theirs == ours or not model.classes:
        return model, ""
    if ours in PROBABILITIES and theirs is None:
        if ours == "softmax" and model.classes == 1:  # a softmax over one unit is 1 whatever the logit
            return model, ""
        note = (f"compared as logits, which their side states: ours before its {ours} (a classifier's "
                f"{ours} hides differences of its logits where it saturates)")
    elif ours is None and theirs in PROBABILITIES:
        note = f"compared as probabilities, which their side states: {theirs} applied to our logits"
    else:
        return model, ""
    try:
        head = _with_activation(model.head, theirs, "compare")
    except ValueError:  # a head ending in a layer other than a Dense or an Activation: compared as it is
        return model, ""
    other = XceptionModel(model._params, variant=model.variant, head=head, input_shape=model.input_shape,
                          labels=model.labels, source=model.source, input_stage=model.input_stage,
                          source_input_shape=model.source_input_shape,
                          source_data_format=model.source_data_format,
                          source_dtype_policy=model.source_dtype_policy)
    other.name, other.source_layer_names = model.name, dict(model.source_layer_names)
    return other, note


def _rankings_must_agree(row, ours, theirs, act, rtol) -> None:
    """A classifier row within the tolerance whose class rankings differ (beyond near-ties:
    :mod:`npxception.compare.ranking`) does not pass: a saturated output hides it."""
    if row is None or not row.passed:
        return
    differs = ranking_difference(scores(ours, act), scores(theirs, act), max(rtol, DEFAULT_RTOL["float32"]))
    if differs:
        row.passed = False
        _add_note(row, f"within the tolerance, but the class rankings differ ({differs}): a saturated output "
                       "hides it")


_WEIGHTED = ("conv", "sepconv", "dense")
# 8-bit weights (TFLite dynamic-range quantization, int8 per output channel: a step of 2^-8 of each channel's
# range) leave local errors of 5e-4 to 1e-2 at every layer with weights on a 75x75 Xception (all 39 of its
# sources), where float16 weights leave 1e-4 to 4e-4 and are named (fused_weights_rounded); a port with one
# bug has one or a few sources. The hint needs this many unexplained sources, all in that band.
_EIGHT_BIT_BAND = (3e-4, 3e-2)
_EIGHT_BIT_SOURCES = 8


def _eight_bit_hint(rows, weighted) -> str:
    """A word on weights quantized to 8 bits, when every unexplained source looks like it: many, each a
    layer with weights (or one a fused convolution feeds), each with a local error the size 8-bit
    rounding leaves; compare cannot reproduce a quantized kernel's arithmetic, so it only says so."""
    open_ = [r for r in rows if r.source and r.diagnosis is None]
    lo, hi = _EIGHT_BIT_BAND
    if (len(open_) < _EIGHT_BIT_SOURCES or any(r.layer not in weighted or r.local_rel is None
                                               or not lo <= r.local_rel <= hi for r in open_)):
        return ""
    errs = [r.local_rel for r in open_]
    return (f"{len(open_)} sources unexplained, every one a layer with weights (or fed by a convolution their "
            f"side fused), with local errors {min(errs):.2g} to {max(errs):.2g}: the size 8-bit weights leave "
            "(int8 per channel, 2^-8 of each channel's range; TFLite's dynamic-range quantization, "
            "Optimize.DEFAULT). If theirs is quantized, compare the float model it was quantized from")


def _no_local(model):
    for node in nodes(model):
        yield Local(node, [], None, {})


def _attribute_rounding(rows, precision, rtol, warnings) -> None:
    """Mark as passed the layers whose accumulated difference is their 16-bit rounding, compounded: where no
    layer is a source (each of theirs, run by ours on their inputs, agrees within ``rtol``) and ours is within
    float32's tolerance of the float64 oracle, the difference is theirs alone, and the report says so."""
    if any(r.source for r in rows):
        return  # a layer introduces error itself: nothing is attributed
    exact = DEFAULT_RTOL["float32"]
    compounded = [r for r in rows if not r.passed and r.max_rel is not None and r.ours_vs_oracle is not None
                  and r.ours_vs_oracle <= exact]
    if not compounded:
        return
    for r in compounded:
        r.passed = True
        _add_note(r, f"their {precision} rounding, accumulated")
    local = max((r.local_rel for r in rows if r.local_rel is not None), default=0.0)
    ours = max((r.ours_vs_oracle for r in rows if r.ours_vs_oracle is not None), default=0.0)
    warnings.append(f"{len(compounded)} layers differ by more than rtol {rtol:g} (up to "
                    f"{max(r.max_rel for r in compounded):.2g}): their {precision} rounding, accumulated over the "
                    f"layers before them, not a difference in what they compute: no layer's local error exceeds "
                    f"rtol (the largest is {local:.2g}) and ours is within {ours:.2g} of the float64 oracle at every "
                    "layer")


def _merged(ours, theirs) -> list[str]:
    """Two sequences of layer names as one, in order: common names once, each side's own where it sits."""
    out, i, j = [], 0, 0
    while i < len(ours) or j < len(theirs):
        if i < len(ours) and j < len(theirs) and ours[i] == theirs[j]:
            out.append(ours[i])
            i, j = i + 1, j + 1
        elif j < len(theirs) and theirs[j] not in ours:
            out.append(theirs[j])
            j += 1
        elif i < len(ours):
            out.append(ours[i])
            i += 1
        else:
            out.append(theirs[j])
            j += 1
    return list(dict.fromkeys(out))


def _stage_rows(model, theirs_stage, x, rtol, atol, explain) -> tuple[list[Row], np.ndarray | None]:
    """Rows for the input-stage layers of both sides (their Keras model's Rescaling, Normalization...; ours
    from the converted model's input stage), in order, and what their backbone read (their stage's
    output; None when neither side has a stage). Before, local runs started from *our* stage's output and
    the stage layers were no rows: a Rescaling that differs made block1_conv1 the unexplained source.

    A layer one side lacks passes its input unchanged there, and its row says so; each row's local error is
    our layer (or, for theirs only, the identity) on their input to it, and a source gets the catalogue's
    input transforms and a fitted per-channel affine map of its own input (hypotheses.input_affine)."""
    fed = model._check_input(x)
    ours_list = [(step["name"], out) for step, out in stage.each_step(model.input_stage, fed)]
    theirs_list = [(name, as_float32(np.asarray(a))) for name, a in theirs_stage]
    if not ours_list and not theirs_list:
        return [], None
    steps = {step["name"]: step for step in model.input_stage}
    renamed = {}
    if len(ours_list) == len(theirs_list) and [n for n, _ in ours_list] != [n for n, _ in theirs_list]:
        # as many layers on each side, named otherwise (Keras numbers a second Rescaling "rescaling_1"):
        # paired in order, as the converter pairs a stage with the backbone it feeds
        renamed = {o: t for (o, _), (t, _) in zip(ours_list, theirs_list)}
        theirs_list = [(o, a) for (o, _), (_, a) in zip(ours_list, theirs_list)]
    ov, tv = dict(ours_list), dict(theirs_list)
    prev_o = prev_t = fed
    rows = []
    for i, name in enumerate(_merged(list(ov), list(tv))):
        o, t = ov.get(name, prev_o), tv.get(name, prev_t)
        row = Row(name, o.shape, t.shape, flow="input")
        expected = stage.apply([steps[name]], prev_t) if name in ov else prev_t  # ours on their input to it
        if o.shape != t.shape:
            row.note = _explain_shapes(o.shape, t.shape)
            row.source = expected.shape != t.shape
        elif bad := non_finite(t):
            row.non_finite, row.note, row.source = bad, f"theirs holds {bad}", True
        else:
            row.max_abs, row.max_rel, row.one_minus_cos, scale = errors(o, t)
            row.passed = row.max_abs <= atol + rtol * scale
            if expected.shape == t.shape:
                max_abs, row.local_rel, _, scale = errors(expected, t)
                row.source = max_abs > atol + rtol * scale
        if renamed.get(name, name) != name:
            _add_note(row, f"theirs {renamed[name]}, paired in order")
        if name not in ov:
            _add_note(row, "theirs only: our model has no such layer (its input passes unchanged)")
        elif name not in tv:
            _add_note(row, "ours only: their model has no such layer (their input passes unchanged)")
        if row.source and explain and not row.non_finite and prev_t.shape == t.shape:
            raw = model.takes_pixels and i == 0  # the first layer reads what both were fed: pixels
            row.diagnosis = hypotheses.best_of(
                [hypotheses.input_affine(prev_t, t, tf_mode=not model.takes_pixels and i == 0, geometry=False,
                                         raw=raw, what=f"their {renamed.get(name, name)} maps its input", var="x")],
                t, rtol, atol)
        rows.append(row)
        prev_o, prev_t = o, t
    return rows, prev_t


def _their_backbone_input(model, their_input, x, label):
    """What their first layer read: their own input (the dump's) through our input stage. An input our model
    refuses (a fixed-size model, a dump made on another size) is the dump's, named as such: the user's x
    is not what is wrong."""
    try:
        return model.backbone_input(their_input)
    except ValueError as exc:
        ours = "" if x is None else f", where the batch compared is {np.shape(x)}"
        raise ValueError(f"{label}: the input the dump carries (key {INPUT_KEY!r}, {their_input.shape} as NHWC"
                         f"{ours}) is not one the model takes: {exc}; the dump was made on another input: "
                         "dump the port on the batch compared") from None


def _input_row(model, x, their_input, rtol, atol, explain, images) -> Row:
    """The input itself, when the other side says what it ran on."""
    row = Row("input", x.shape, their_input.shape, flow="input")
    if x.shape != their_input.shape:
        row.note = _explain_shapes(x.shape, their_input.shape)
        if len(x.shape) == len(their_input.shape) == 4 and x.shape[3] == their_input.shape[3]:
            row.note = (f"their input is {their_input.shape[1]}x{their_input.shape[2]}, ours "
                        f"{x.shape[1]}x{x.shape[2]}: their side ran on another input size (their pipeline "
                        "resizes or crops to it, or the dump was made on another image); every layer below "
                        "differs in size for that reason: compare on the same input (x=None compares ours on "
                        "the dump's own input)")
    elif bad := non_finite(their_input):
        row.non_finite = bad
        row.note = f"theirs holds {row.non_finite}: the input itself is broken"
        row.source = True
        return row
    else:
        row.max_abs, row.max_rel, row.one_minus_cos, scale = errors(x, their_input)
        row.passed = row.max_abs <= atol + rtol * scale
        row.local_rel = row.max_rel
    row.source = not row.passed
    if row.source and explain:
        row.diagnosis = (hypotheses.best_of(chain(hypotheses.input_candidates(x),
                                                  hypotheses.resize_candidates(images, x, model)),
                                            their_input, rtol, atol)
                         or hypotheses.best_of([hypotheses.input_affine(x, their_input, tf_mode=not model.takes_pixels)],
                                               their_input, rtol, atol))
    return row


def _non_finite_cause(theirs_out, precision) -> str:
    """The likely reason a layer's output holds Inf or NaN when its inputs do not."""
    finite = np.abs(theirs_out[np.isfinite(theirs_out)])
    top = f" (their largest finite |value| here is {finite.max():.3g})" if finite.size else ""
    if precision == "float16" or (finite.size and finite.max() > FLOAT16_MAX / 4):
        return (f"likely a float16 overflow: float16's largest value is {FLOAT16_MAX:g}{top}; "
                "run this layer in float32 or bfloat16")
    return (f"an overflow or an invalid operation (0/0, Inf - Inf, the square root of a negative "
            f"variance); in float16 any value past {FLOAT16_MAX:g} overflows{top}")


def _add_note(row, text):
    row.note = (row.note + "; " if row.note else "") + text


def _judge_locally(model, row, loc, theirs_out, theirs, order, x, rtol, atol, precision, input_causes,
                   images=None, x_input=None, roundoff=None, their_convs=None):
    """Local error of one layer; a source gets the catalogue's diagnosis.

    A source: its local error is over the tolerance or, on a row that fails, under it but over
    float32's round-off in this layer (:mod:`npxception.compare.roundoff`); its causes are then
    tested at that scale.

    Inf and NaN are never measured nor diagnosed: every candidate cause would "reproduce" them (an
    error of Inf is not above a tolerance of Inf) or be compared with noise. A layer whose inputs
    are finite and whose output is not is the source, with the likely reason; a layer that reads
    their Inf or NaN is not run (:func:`npxception.compare.local.local_pass`).
    """
    y = loc.output
    if loc.non_finite_input:
        _add_note(row, f"not run locally: {loc.error}")
        return
    if row.non_finite:
        row.source = True  # finite inputs, non-finite output: this layer (or a gap before it) made them
        _add_note(row, _non_finite_cause(theirs_out, precision))
        return
    if y is None:
        _add_note(row, f"local run impossible: {loc.error}")
        return
    if y.shape == theirs_out.shape:
        max_abs, row.local_rel, _, scale = errors(y, theirs_out)
        row.source = max_abs > atol + rtol * scale
        if not row.source and not row.passed and roundoff is not None and max_abs > 0:
            beyond = roundoff.beyond(loc.node, y, theirs_out)
            row.local_vs_roundoff = beyond.ratio
            if beyond.source:
                row.source = True
                rtol, atol = beyond.rtol, 0.0
                _add_note(row, f"local error under the tolerance but {beyond.ratio:.3g}x float32's round-off "
                               "in this layer (RMS, against our layer in float64 on their inputs): not round-off")
    else:
        row.source = True
    if not row.source:
        return
    node = loc.node
    earlier = {n: a for n, a in theirs.items() if order.get(n, len(order)) < order[node.name]}
    readers = {n.name: theirs[n.name] for n in nodes(model) if node.name in n.inputs and n.name in theirs}
    reader_inputs = {n.name: [theirs[i] for i in n.inputs] for n in nodes(model)
                     if n.name in readers and all(i in theirs for i in n.inputs)}
    case = hypotheses.Case(model, node.name, node.kind, node.spec, node.inputs, loc.inputs, theirs_out, y,
                           x_ours=x if "input" in node.inputs else None,
                           skipped=loc.skipped, gaps=loc.gaps, earlier=earlier, readers=readers,
                           reader_inputs=reader_inputs,
                           input_causes=input_causes,
                           images=images, x_input=x_input, their_convs=their_convs)
    row.diagnosis = hypotheses.diagnose(case, rtol, atol)
    if row.passed:
        # Its output agrees with ours: this layer adds no error, and a passing row is never a source
        # (docs/discrepancies.md). Ours run on their inputs as their side shows them does not agree: what
        # they show is not what it read (a dump overwritten in place). Said on the row, with the cause.
        row.source = False
        why = (f"{row.diagnosis.explanation}" if row.diagnosis
               else "no hypothesis of the catalogue says why")
        by = f" by {row.local_rel:.3g}" if row.local_rel is not None else f" in shape ({y.shape})"
        _add_note(row, f"not a source: its output agrees with ours, but ours run on their inputs as shown "
                       f"differs{by}: {why}")
