"""The fast plan is compiled from the architecture table, and from nothing else.

Made-up variants (a new combination of the article's departures, and a table
edited by hand: a shorter middle flow, chained residuals) run through the
fast path unchanged and must agree with the op-by-op reference. Both sides
run float64, so they differ only in summation order: 1e-10 relative to the
output's largest magnitude, as in tests/test_model_keras.py.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest

import npxception
from npxception import architecture as arch
from npxception import head_schema
from npxception import fast
from npxception.forward import run as _run
from npxception.model import random_params
from npxception.params import Params

RTOL = 1e-10  # float64 on both sides (see the module docstring)


def table_model(layers, head, seed=0):
    """The pieces of a model the fast plan and the reference path read, for any table; the weights held as a
    model holds them (npxception/params.py: a float64 plan on AVX-512 holds its kernels packed there)."""
    return SimpleNamespace(layers=layers, head=head, _params=Params(random_params(layers, head, "float64", seed)),
                           dtype=np.dtype("float64"), channels=3, _fast=None, _lock=threading.Lock())


def check_fast_against_reference(model, size=71, batch=2):
    x = np.random.default_rng(1).uniform(-1, 1, (batch, size, size, 3))
    ours = fast.fast_forward(model, x)
    assert ours is not None, f"the fast path refused the table: {model._fast}"
    ref, _ = _run(model, x, set(), "reference")
    assert np.abs(ours - ref).max() <= RTOL * np.abs(ref).max(), (ours.ravel()[:4], ref.ravel()[:4])


@pytest.mark.parametrize("variant", ["keras", "article"])
def test_every_table_layer_is_consumed_exactly_once(variant):
    layers = arch.backbone(variant)
    head = head_schema.keras_head(True)
    steps = fast.compile_plan(layers, head, 3)
    consumed = [name for step in steps for name in step.layers]
    assert sorted(consumed) == sorted([layer.name for layer in layers] + [h["name"] for h in head])
    assert all(dataclasses.is_dataclass(s) and s.__dataclass_params__.frozen for s in steps)


def test_made_up_variant_of_flags():
    # A combination no registered variant has: the article's stem and its ReLU
    # before the middle adds, but Keras' residuals and final ReLU.
    variant = arch.Variant(same_stem=True, relu_before_middle_add=True)
    assert variant not in arch.VARIANTS.values()
    model = npxception.Xception(variant=variant, include_top=False, pooling="max", dtype="float64",
                                input_shape=(71, 71, 3), seed=5)
    x = np.random.default_rng(2).uniform(-1, 1, (1, 71, 71, 3))
    ours, ref = model(x), model(x, impl="reference")
    assert isinstance(model._fast, fast.FastPlan)  # the fast path ran, not the fallback
    assert np.abs(ours - ref).max() <= RTOL * np.abs(ref).max()


def shorter_middle_flow(variant, keep=2):
    """The table with only the first ``keep`` middle-flow blocks, the exit flow rewired to follow them."""
    dropped = {f"block{b}" for b in list(arch.MIDDLE_FLOW_BLOCKS)[keep:]}
    last_kept = f"block{arch.MIDDLE_FLOW_BLOCKS[keep - 1]}_add"
    first_dropped_input = f"block{arch.MIDDLE_FLOW_BLOCKS[keep]}_add"
    out = []
    for layer in arch.backbone(variant):
        if layer.name.split("_")[0] in dropped:
            continue
        inputs = tuple(last_kept if i == f"block{arch.MIDDLE_FLOW_BLOCKS[-1]}_add" else i for i in layer.inputs)
        out.append(dataclasses.replace(layer, inputs=inputs))
    assert all(first_dropped_input not in layer.inputs for layer in out)
    return out


@pytest.mark.parametrize("flags", [dict(chained_residuals=True, no_final_relu=True), {}])
def test_made_up_table_runs_fast_unchanged(flags):
    layers = shorter_middle_flow(arch.Variant(**flags))
    head = head_schema.keras_head(True, classes=7, classifier_activation=None)
    check_fast_against_reference(table_model(layers, head))


def test_table_the_steps_cannot_express_falls_back():
    # a 5x5 separable convolution: the fused depthwise kernel is 3x3 only
    layers = [dataclasses.replace(layer, kernel_size=5) if layer.name == "block14_sepconv1" else layer
              for layer in arch.backbone("keras")]
    head = head_schema.keras_head(False, "avg")
    with pytest.raises(fast.Unsupported, match=r"block14_sepconv1 is a 5x5"):
        fast.compile_plan(layers, head, 3)
    model = table_model(layers, head)
    x = np.zeros((1, 71, 71, 3))
    assert fast.fast_forward(model, x) is None  # the caller runs the table op by op
    assert isinstance(model._fast, fast.Unsupported)


def test_a_conv_without_its_bn_is_refused_by_name():
    layers = arch.backbone("keras")
    bn = next(layer for layer in layers if layer.name == "block1_conv2_bn")
    act = next(layer for layer in layers if layer.name == "block1_conv2_act")
    layers = [dataclasses.replace(act, inputs=("block1_conv2",)) if layer is act else layer
              for layer in layers if layer is not bn]
    with pytest.raises(fast.Unsupported, match="block1_conv2 .conv. is not followed by its own BatchNorm"):
        fast.compile_plan(layers, [], 3)


def test_fast_path_runs_from_a_thread_that_outlives_the_main_thread():
    """Python shuts concurrent.futures' pools down when the main thread ends; a server thread
    that calls the model after that must still get the same answer (the shares then run
    one after another on the calling thread), not "cannot schedule new futures"."""
    code = (
        "import threading, time, numpy as np, npxception\n"
        "m = npxception.Xception(include_top=False, pooling='avg', input_shape=(71, 71, 3))\n"
        "x = np.random.default_rng(0).uniform(-1, 1, (1, 71, 71, 3)).astype('float32')\n"
        "want = m(x)\n"
        "def late():\n"
        "    time.sleep(0.5)  # by now the main thread has returned\n"
        "    print('same' if np.array_equal(m(x), want) else 'different', flush=True)\n"
        "threading.Thread(target=late).start()\n"
    )
    env = {**os.environ, "NUMBA_NUM_THREADS": "2"}  # two shares per layer, whatever the machine
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "same", proc.stdout + proc.stderr


def test_the_dot_graph_clusters_a_renamed_table_by_the_tables_flows():
    """summary.to_dot reads each layer's stage from the table (``Layer.flow``), as everything that walks the
    network must (STYLE rule 12): a table whose layers are not named ``blockN_...`` is drawn, each layer in its
    own flow's cluster (the stage was read from the name's block number, and this table raised ValueError)."""
    from npxception.summary import to_dot

    table = arch.backbone("keras")
    new = {layer.name: f"layer{i}" for i, layer in enumerate(table)}
    renamed = [dataclasses.replace(layer, name=new[layer.name], inputs=tuple(new.get(i, i) for i in layer.inputs))
               for layer in table]
    dot = to_dot(renamed, head_schema.keras_head(False, "avg"), (71, 71, 3))
    clusters = {chunk.split(" ", 1)[0]: chunk for chunk in dot.split("subgraph cluster_")[1:]}
    for layer in renamed:
        here = [flow for flow, text in clusters.items() if f'"{layer.name}" [' in text.split("}")[0]]
        assert here == [layer.flow], (layer.name, here, layer.flow)
    assert {layer.flow for layer in renamed} == {"entry", "middle", "exit"}


def test_arena_views_follow_a_slot_that_grows():
    # The plan reuses its arena views per (slot, shape) (FastPlan._buffer): a larger input grows the slots,
    # and a later call at the first size must read the grown slots, not views of the freed ones, and no cached
    # view may keep a freed slot alive (the peak RSS budget, docs/performance.md).
    model = table_model(arch.backbone("keras"), [])
    small, large = (np.random.default_rng(s).uniform(-1, 1, (1, n, n, 3)) for s, n in ((1, 71), (2, 80)))
    first = fast.fast_forward(model, small).copy()
    fast.fast_forward(model, large)
    again = fast.fast_forward(model, small)
    assert np.array_equal(first, again)
    plan = model._fast
    assert plan._views and all(buf is plan.arena[role] for (role, _), (buf, _) in plan._views.items())
