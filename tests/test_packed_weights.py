"""Kernels held only packed (npxception/params.py, npxception/fast/direct.py ``PackedKernel``): once a float32
plan runs a kernel on the AVX-512 microkernel, the model holds it in the microkernel's layout only, and every
reader of the weights (``weights``, the reference path, capture, ``run_layer``, ``astype``, ``save``, the
counts, compare's folded-BN check) gets the array it was given back, bit for bit: unpacking is a permutation.

Equality here is exact (bits, not values): the same arrays go through the same NumPy ops, so nothing may
differ by even one ulp. Where the microkernel is not used (float64, no AVX-512, a failed probe) nothing is
packed: tests/test_fast_direct.py.
"""

from __future__ import annotations

import gc
import mmap
import weakref

import numpy as np
import pytest

import npxception
from npxception.compare.folded_bn import _ours_oihw
from npxception.fast import ConvBN, SepConvBN, direct, packing
from npxception.network import XceptionModel
from npxception.photo_memory import fast_plan_bytes

packs = pytest.mark.skipif(not direct.worth_packing(np.float32),
                           reason="no AVX-512 (or the microkernel did not compile): nothing is held packed here")
LAYERS = ["block1_conv2_act", "block4_sepconv2_bn", "block12_add", "block14_sepconv2_act", "predictions"]


def bits(a):
    """The array's bytes as unsigned integers: -0.0 and 0.0, or two NaNs, differ here."""
    return a.view({4: np.uint32, 8: np.uint64}[a.itemsize])


def assert_same_bits(ours, theirs, what):
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, (what, ours.shape, theirs.shape)
    assert np.array_equal(bits(ours), bits(theirs)), f"{what}: ours {ours.ravel()[:3]} theirs {theirs.ravel()[:3]}"


@pytest.fixture(scope="module")
def case():
    """A 71x71 five-class float32 model whose plan has run (kernels held packed), what it held before, a
    weak reference to each array it was built with, and its reference pass from before the plan."""
    model = npxception.Xception(classes=5, input_shape=(71, 71, 3), seed=7)  # random BN statistics
    before = {k: a.copy() for k, a in model.weights.items()}
    refs = {k: weakref.ref(a) for k, a in model._params._store.items()}
    x = np.random.default_rng(3).uniform(-1, 1, (2, 71, 71, 3)).astype(np.float32)
    reference = model.forward(x, capture=LAYERS, impl="reference")
    model(x)  # builds the plan
    gc.collect()
    return model, before, refs, x, reference


def kernel_keys(plan):
    return {s.label: f"{s.conv}/kernel" if isinstance(s, ConvBN) else f"{s.sepconv}/pointwise_kernel"
            for s in plan.steps if isinstance(s, (ConvBN, SepConvBN)) and s.label in plan.packed}


@packs
def test_each_packed_kernel_is_held_once(case):
    """Every pointwise and 1x1 kernel (and block1's 3x3 ones) is packed, its Keras array released: the model
    holds the panels the plan reads, and nothing else of it; the other weights are the arrays it was given."""
    model, before, refs, _, _ = case
    plan = model._fast
    keys = kernel_keys(plan)
    steps = [s for s in plan.steps if isinstance(s, ConvBN) or (plan.fused and isinstance(s, SepConvBN))]
    assert len(keys) == len(steps) == (40 if plan.fused else 6)  # Xception: 6 convolutions, 34 separable ones
    store = model._params._store
    for label, key in keys.items():
        assert isinstance(store[key], packing.PackedKernel), key
        assert plan.packed[label] is store[key].panels, key  # the plan's panels are the model's
        assert refs[key]() is None, f"{key}: the unpacked array is still alive"
    for key in set(before) - set(keys.values()):
        assert store[key] is refs[key](), key


def test_every_reader_sees_the_weights_it_was_given(case):
    """``weights``, reading by key, the counts, the summary, compare's view of a kernel and the photo memory
    estimate are those of a model built from copies of the same arrays and never run (nothing packed)."""
    model, before, _, _, _ = case
    fresh = XceptionModel({k: a.copy() for k, a in before.items()}, head=model.head, input_shape=model.input_shape)
    weights = model.weights
    assert list(weights) == list(before)
    for key, a in before.items():
        assert_same_bits(weights[key], a, key)
        read = model._params[key]
        assert_same_bits(read, a, key)
        assert not read.flags.writeable
    assert (model.count_params(), model.count_trainable_params()) == (fresh.count_params(),
                                                                      fresh.count_trainable_params())
    assert model.count_params() == sum(a.size for a in before.values())
    lines = []
    model.summary(print_fn=lines.append)
    fresh.summary(print_fn=lines.append)
    assert lines[0] == lines[1]
    for conv in ("block1_conv1", "block2_sepconv1", "block13_residual_conv", "block14_sepconv2"):
        assert_same_bits(_ours_oihw(model, conv), _ours_oihw(fresh, conv), conv)
    assert fast_plan_bytes(model, 299, 299) == fast_plan_bytes(fresh, 299, 299)


def test_reference_capture_and_run_layer_are_unchanged(case):
    """The reference pass gives the bits it gave before the plan packed the kernels; the per-op kernels with
    capture and ``run_layer`` give what they give on a never-packed copy."""
    model, before, _, x, (out, acts) = case
    now_out, now_acts = model.forward(x, capture=LAYERS, impl="reference")
    assert_same_bits(now_out, out, "output")
    for name in LAYERS:
        assert_same_bits(now_acts[name], acts[name], name)
    fresh = XceptionModel({k: a.copy() for k, a in before.items()}, head=model.head, input_shape=model.input_shape)
    ours, theirs = (m.forward(x, capture=["block13_sepconv2_bn"], impl="fast")[1]["block13_sepconv2_bn"]
                    for m in (model, fresh))
    assert_same_bits(ours, theirs, "block13_sepconv2_bn, per-op kernels")
    a = acts["block1_conv2_act"]
    assert_same_bits(model.run_layer("block2_sepconv1", [a]), fresh.run_layer("block2_sepconv1", [a]),
                     "run_layer block2_sepconv1")


@pytest.mark.filterwarnings("ignore::npxception.golden.NoGoldenWarning")  # saved without one: not the point here
def test_astype_and_save_give_the_weights_back(case, tmp_path):
    """The float64 oracle holds the float32 weights widened; a float32 copy holds them unpacked; a saved file
    holds them as given."""
    model, before, _, _, _ = case
    oracle = model.astype("float64")
    copy = model.astype("float32")
    loaded = npxception.load(model.save(tmp_path / "m.npz", golden=False), verify=False)
    for key, a in before.items():
        assert_same_bits(oracle._params[key], a.astype(np.float64), key)
        assert isinstance(copy._params._store[key], np.ndarray)  # a new model, its own arrays, nothing packed
        assert_same_bits(copy._params[key], a, key)
        assert_same_bits(loaded._params[key], a, key)


@packs
def test_a_loaded_model_shares_what_its_golden_check_packed(case, tmp_path):
    """load()'s golden check runs a headless twin's plan on the file's weights: the twin shares the model's
    weights, so its plan packs them for the model too (one copy, not the twin's packed beside the model's
    Keras arrays), and the model's own plan then reads those same panels; a model without the top made from
    it shares them as well."""
    model, before, _, x, _ = case
    path = model.save(tmp_path / "golden.npz")
    loaded = npxception.load(path)  # verify=True: the golden check has run
    store = loaded._params._store
    packed = {k for k, held in store.items() if isinstance(held, packing.PackedKernel)}
    assert packed == set(kernel_keys(model._fast).values())
    loaded(x)
    assert all(loaded._fast.packed[label] is store[key].panels for label, key in kernel_keys(loaded._fast).items())
    headless = npxception.model._adapt(loaded, where="test", variant="keras", include_top=False, pooling="avg",
                                       classes=5, classifier_activation=None, input_shape=None,
                                       dtype=loaded.dtype)
    assert headless._params._store is store
    for key in headless.weights:
        assert_same_bits(headless._params[key], before[key], key)


def _root(a):
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a


def _thp_offered() -> bool:
    """Whether Linux offers transparent huge pages to madvise (its setting reads ``[always]`` or ``[madvise]``)."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def _vm_flags(address):
    """The VmFlags of the mapping holding ``address`` in /proc/self/smaps (Linux), or None."""
    flags = None
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "VmFlags:":
                flags = line.split()[1:]
    return flags


@packs
def test_a_plan_packs_its_kernels_in_one_slab(case):
    """A plan cuts every kernel it packs from one block (packing.Slab): 64-byte aligned, no two overlapping,
    asked for in 2 MB pages (``madvise(MADV_HUGEPAGE)``: the mapping's ``hg`` flag, where Linux shows it);
    the model's output is the same bits as a model whose kernels are packed one allocation each."""
    model, before, _, x, _ = case
    panels = list(model._fast.packed.values())
    roots = {id(_root(p)) for p in panels}
    assert len(roots) == 1, "the packed kernels are not in one block"
    spans = sorted((p.ctypes.data, p.ctypes.data + p.nbytes) for p in panels)
    assert all(lo % packing.ALIGN == 0 for lo, _ in spans)
    assert all(hi <= lo2 for (_, hi), (lo2, _) in zip(spans, spans[1:])), "two packed kernels overlap"
    root = _root(panels[0])
    # huge_block's mapping where the OS took madvise(MADV_HUGEPAGE); where it refused (a kernel without
    # transparent huge pages: review 31, R4) the block is an ordinary aligned array, as the code intends
    if isinstance(root, memoryview) and isinstance(root.obj, mmap.mmap):
        assert spans[0][0] % packing.HUGE_PAGE == 0  # the block starts on a huge page
        flags = _vm_flags(spans[0][0])
        assert flags is None or "hg" in flags, flags  # None: no smaps (not Linux) to show it
    else:
        assert not hasattr(mmap, "MADV_HUGEPAGE") or not _thp_offered(), "a THP host fell back to 4 KB pages"
    one_each = XceptionModel({k: a.copy() for k, a in before.items()}, head=model.head,
                             input_shape=model.input_shape)
    packing.SLAB = False
    try:
        want = one_each(x)
    finally:
        packing.SLAB = True
    assert _root(next(iter(one_each._fast.packed.values()))) is not _root(panels[0])
    assert_same_bits(model(x), want, "output, one slab against one allocation a kernel")


def test_slab_cuts_zeroed_aligned_arrays_and_refuses_past_its_end(monkeypatch):
    """Slab.take gives zeroed ALIGN-aligned arrays of the dtype asked, each rounded up to ALIGN, and refuses a
    request past the bytes it was made for; without MADV_HUGEPAGE (not Linux) it is ordinary memory, the same."""
    import mmap

    for huge in (True, False):
        if not huge:
            monkeypatch.delattr(mmap, "MADV_HUGEPAGE", raising=False)
        sizes = [(5, np.float32), (16, np.float64), (1, np.float32)]
        slab = packing.Slab(sum(packing.Slab.room(n, d) for n, d in sizes))
        got = [slab.take(n, d) for n, d in sizes]
        for a, (n, d) in zip(got, sizes):
            assert a.dtype == d and a.shape == (n,) and a.ctypes.data % packing.ALIGN == 0
            assert not a.any()
            a[...] = 1  # writable
        assert [a.ctypes.data - got[0].ctypes.data for a in got] == [0, 64, 192]
        with pytest.raises(ValueError, match="no room"):
            slab.take(1, np.float32)
