"""Running the compiled plan: folded BN, a small arena of reused buffers, one fused kernel per step.

The steps come from npxception/fast/plan.py; this module knows how to run each
kind of step, and nothing about Xception. Two ways to run a convolution step:

* *fused* (NumPy's bundled OpenBLAS found, the default): one parallel region
  per step; each Numba thread takes its own rows through depthwise (or im2col)
  -> single-threaded GEMM -> epilogue (npxception/fast/fused.py);
* *between kernels* (any other BLAS, or ``NPXCEPTION_GEMM=numpy``): a Numba
  depthwise kernel, ``np.matmul(..., out=)`` on OpenBLAS' own threads, a Numba
  epilogue, tile by tile.

Where BN goes: it is folded into an affine epilogue applied to each GEMM
output tile (``y * scale + shift``), fused with the ReLU or the Add that
follows. Scaling the kernels instead would need a second copy of the 88 MB of
weights (the unfolded ones stay, for capture and the reference path), and a
prediction must fit in 300 MB (docs/performance.md). For the same reason a
kernel packed for the microkernel (npxception/fast/direct.py) is held by the
model in that form only (npxception/params.py), and the plan keeps no
unpacked view of it.
"""

from __future__ import annotations

import math
import time

import numba
import numpy as np

from .. import blas
from ..head import run_head
from ..ops.padding import window_geometry
from . import direct, packing
from .direct import reads_in_place, shares_panels
from .folding import folded_bn
from .fused import NOT_PACKED, conv_fused, sep_conv_by_panels, sep_conv_fused
from .kernels import affine_act, affine_add_residual, depthwise3x3_same_rows, im2col, maxpool_add
from .plan import INPUT, ConvBN, Head, PoolAdd, SepConvBN, Unsupported, compile_plan


class FastPlan:
    """One model's steps, their folded weights, and the arena of buffers they reuse."""

    # Tile sizes, in elements; the measurements behind them are in docs/performance.md.
    COLS_ELEMS = 1024 * 288  # im2col floats per chunk (1.2 MB; block1_conv2 whole would be 25 MB)
    TILE_ELEMS = 1024 * 1024  # depthwise tile between kernels (np.matmul path)
    IN_PLACE_SPLIT = 4  # tiles 4x smaller where a step overwrites its input: the memory peak
    FUSED_TILE_ELEMS = 256 * 1024  # per-thread tile of the fused path: stays in a core's L2

    def __init__(self, model):
        p = model._params
        self.dtype = model.dtype
        self.head = model.head
        self.model_params = p
        self.steps = compile_plan(model.layers, model.head, model.channels)
        # one parallel region per layer, GEMM inside it (npxception/blas.py); else np.matmul between kernels
        self.fused = blas.AVAILABLE
        # layer name -> (its kernel as a matrix, or None where only packed, *the folded BN), depthwise first
        self.folded = {}
        # layer name -> its kernel packed for the microkernel (npxception/fast/direct.py), which then runs it:
        # float32 or float64 on AVX-512; the model then holds that kernel only packed (p.packed), not twice
        self.packed = {}
        packs = direct.worth_packing(self.dtype)
        pack = self._packer(p, packs)
        for step in self.steps:
            if isinstance(step, ConvBN):
                key = f"{step.conv}/kernel"
                if packs:
                    self.packed[step.conv] = p.packed(key, pack).panels
                    self.folded[step.conv] = (None, *folded_bn(p, step.bn))
                else:
                    k = p[key]
                    self.folded[step.conv] = (k.reshape(-1, k.shape[-1]), *folded_bn(p, step.bn))  # a view, no copy
            elif isinstance(step, SepConvBN):
                dw = np.ascontiguousarray(p[f"{step.sepconv}/depthwise_kernel"][:, :, :, 0])  # (3, 3, C): a view
                key = f"{step.sepconv}/pointwise_kernel"
                if packs and self.fused:
                    self.packed[step.sepconv] = p.packed(key, pack).panels
                    self.folded[step.sepconv] = (dw, None, *folded_bn(p, step.bn))
                else:
                    self.folded[step.sepconv] = (dw, p[key][0, 0], *folded_bn(p, step.bn))
        # what a step with no packed kernel passes: NOT_PACKED shares the compiled kernel with the packed steps;
        # a plan that packs nothing (no AVX-512, float64, a microkernel that failed) never compiles the microkernel
        self.not_packed = NOT_PACKED.astype(self.dtype) if self.packed else direct.NO_MICROKERNEL
        self.arena: dict[str, np.ndarray] = {}
        # (role, shape) -> (the arena slot, its view): _buffer's answers, reused. Each step's Python (np.prod, a new
        # view, numba.get_num_threads()) cost ~0.1 ms a step under load (docs/performance.md, "Issue 15,
        # 2026-11-30 14:00-15:30 UTC")
        self._views: dict = {}
        self.threads = numba.get_num_threads()  # the threads every step shares: read once a pass, in _forward
        self.profile = None  # {step label: seconds} when set to a dict (npxception bench)
        self._t = 0.0

    def _packer(self, p, packs):
        """How this plan packs a kernel (``Params.packed``'s ``pack``): into one :class:`~npxception.fast.packing.Slab`
        sized for every kernel it will pack that is not packed yet (in 2 MB pages where the OS offers them)."""
        if not packs or not packing.SLAB:
            return packing.PackedKernel.of
        keys = [f"{s.conv}/kernel" for s in self.steps if isinstance(s, ConvBN)]
        if self.fused:
            keys += [f"{s.sepconv}/pointwise_kernel" for s in self.steps if isinstance(s, SepConvBN)]
        nbytes = 0
        for key in keys:
            if not p.is_packed(key):
                k = p[key]
                nbytes += packing.Slab.room(packing.packed_size(k.size // k.shape[-1], k.shape[-1], k.dtype), k.dtype)
        slab = packing.Slab(nbytes)
        return lambda kernel: packing.PackedKernel.of(kernel, slab)

    def _mark(self, label):
        """Charge the time since the last mark to ``label`` (only while profiling)."""
        if self.profile is not None:
            now = time.perf_counter()
            self.profile[label] = self.profile.get(label, 0.0) + now - self._t
            self._t = now

    def _buffer(self, role, shape):
        """A view of the arena slot ``role`` with ``shape``; slots grow to their largest use and are reused.

        Roles: "v0", "v1", ... hold the steps' outputs (slots from the plan);
        "dw0"/"dw1" depthwise tiles, "tile" a GEMM tile added into a residual,
        "cols" im2col chunks, "rows" the fused kernel's saved input rows.
        """
        buf = self.arena.get(role)
        key = (role, shape)
        hit = self._views.get(key)
        if hit is not None and hit[0] is buf:  # the same view as last time: no arithmetic, no new array object
            return hit[1]
        size = math.prod(shape)
        if buf is None or buf.size < size:
            buf = np.empty(size, self.dtype)
            self.arena[role] = buf
            self._views = {k: v for k, v in self._views.items() if k[0] != role}  # none keeps the old slot alive
        if len(self._views) > 256:  # inputs of many sizes (photos at their own size): start again
            self._views.clear()
        view = buf[:size].reshape(shape)
        self._views[key] = (buf, view)
        return view

    # ---- the network ----------------------------------------------------
    def __call__(self, x):
        if not self.fused:
            return self._forward(x)
        # our threads (fast/threads.py) call OpenBLAS, each on its own rows: one OpenBLAS thread each
        with blas.single_threaded():
            return self._forward(x)

    def _forward(self, x):
        self._t = time.perf_counter()
        self.threads = numba.get_num_threads()
        values = {INPUT: x}
        for step in self.steps:
            if isinstance(step, ConvBN):
                y = self.conv_bn(step, values[step.source])
            elif isinstance(step, SepConvBN):
                y = self.sep_bn(step, values[step.source], values.get(step.residual))
            elif isinstance(step, PoolAdd):
                y = self.pool_add(step, values[step.source], values[step.residual])
            else:
                return self.run_head(step, values[step.source])
            values[step.output] = y
            self._mark(step.label)
        raise AssertionError("fast plan: no head step")  # pragma: no cover - compile_plan appends one

    # ---- one method per kind of step ------------------------------------
    @classmethod
    def cols_shape(cls, n, ho, wo, k, threads):
        """The fused convolution's im2col tiles: (threads, rows * wo, k), whole output rows, at least one a thread."""
        rows_per_tile = max(1, min(-(-n * ho // threads), cls.COLS_ELEMS // (wo * k)))
        return threads, rows_per_tile * wo, k

    def conv_bn(self, step: ConvBN, x):
        """Convolution + folded BN (+ ReLU): im2col in row chunks, one GEMM each. -> (N, Ho, Wo, C_out)."""
        w2, scale, shift = self.folded[step.conv]
        n, h, w, c = x.shape
        kh, stride, cout = step.kernel_size, step.strides, step.channels
        ho, pad_t = window_geometry(h, kh, stride, step.padding)
        wo, pad_l = window_geometry(w, kh, stride, step.padding)
        out = self._buffer(f"v{step.slot}", (n * ho * wo, cout))
        if step.conv in self.packed and reads_in_place(step, h, w):
            direct.conv_direct(x, self.packed[step.conv], kh, stride, ho, wo, scale, shift, step.relu_out, out,
                               self.threads)
            return out.reshape(n, ho, wo, cout)
        if w2 is None:  # held only packed, and padded taps at this size: unpacked for this call
            w2 = self.model_params[f"{step.conv}/kernel"].reshape(-1, cout)
        if self.fused:
            threads = self.threads
            cols = self._buffer("cols", self.cols_shape(n, ho, wo, kh * kh * c, threads))
            rows_per_tile = cols.shape[1] // wo
            conv_fused(x, w2, kh, stride, pad_t, pad_l, ho, wo, scale, shift, step.relu_out, out, cols,
                       rows_per_tile)
            return out.reshape(n, ho, wo, cout)
        rows_per_chunk = max(1, self.COLS_ELEMS // (wo * kh * kh * c))  # whole output rows per chunk
        for n0 in range(n):
            for r0 in range(0, ho, rows_per_chunk):
                r1 = min(ho, r0 + rows_per_chunk)
                cols = self._buffer("cols", ((r1 - r0) * wo, kh * kh * c))
                im2col(x[n0:n0 + 1], kh, kh, stride, pad_t - r0 * stride, pad_l, r1 - r0, wo, cols)
                start = (n0 * ho + r0) * wo
                np.matmul(cols, w2, out=out[start:start + (r1 - r0) * wo])
        affine_act(out, scale, shift, step.relu_out)
        return out.reshape(n, ho, wo, cout)

    def sep_bn(self, step: SepConvBN, x, residual):
        """ReLU? -> depthwise 3x3 -> pointwise GEMM -> folded BN (+ ReLU) (+ Add), in row tiles.

        x (N, H, W, C_in) -> (N, H, W, C_out): the step's slot, x itself when
        ``step.in_place``, or ``residual`` with the result added into it.
        """
        dw, pw, scale, shift = self.folded[step.sepconv]
        n, h, w, c = x.shape
        cout = step.channels
        if pw is None and not self.fused:  # held only packed, and this plan switched off the fused path since
            pw = self.model_params[f"{step.sepconv}/pointwise_kernel"][0, 0]
        rows = n * h
        if step.residual is not None:
            target = residual.reshape(rows * w, cout)
        elif step.in_place:
            target = x.reshape(rows * w, c)
        else:
            target = self._buffer(f"v{step.slot}", (rows * w, cout))
        packed = self.packed.get(step.sepconv)
        if self.fused and packed is not None and shares_panels(rows * w, cout, self.threads):
            sep_conv_by_panels(x, dw, scale, shift, step.relu_in, step.relu_out, target, step.residual is not None,
                               self._buffer("dw0", (rows * w, c)), packed, self.threads)
        elif self.fused:
            threads = self.threads
            rows_per_tile = max(1, min(-(-rows // threads), self.FUSED_TILE_ELEMS // (w * max(c, cout))))
            scratch = self._buffer("dw0", (threads, rows_per_tile * w, c))
            saved = self._buffer("rows", (threads, 3, w, c))
            if step.residual is not None:
                out = self._buffer("tile", (threads * rows_per_tile * w, cout))
                res = target
            else:
                out, res = target, np.empty((0, cout), self.dtype)
            if pw is None:  # held only packed: the fused kernel reads the panels, and no row of this
                pw = np.empty((0, cout), self.dtype)
            sep_conv_fused(x, dw, pw, scale, shift, step.relu_in, step.relu_out, out, res, scratch,
                           rows_per_tile, saved, self.packed.get(step.sepconv, self.not_packed))
        elif step.in_place:
            self._sep_bn_in_place(x, dw, pw, scale, shift, step, target)
        else:
            tiles = -(-rows * w * max(c, cout) // self.TILE_ELEMS)
            step_rows = -(-rows // tiles)  # whole rows per tile, tiles of equal size
            for r0 in range(0, rows, step_rows):
                r1 = min(rows, r0 + step_rows)
                tile_in = self._buffer("dw0", ((r1 - r0) * w, c))
                depthwise3x3_same_rows(x, dw, tile_in, step.relu_in, r0, r1)
                dest = target[r0 * w:r1 * w]
                if step.residual is None:
                    np.matmul(tile_in, pw, out=dest)
                    affine_act(dest, scale, shift, step.relu_out)
                    continue
                tile = self._buffer("tile", ((r1 - r0) * w, cout))
                np.matmul(tile_in, pw, out=tile)
                if step.relu_out:  # a ReLU before the Add
                    affine_act(tile, scale, shift, True)
                    dest += tile
                else:
                    affine_add_residual(tile, scale, shift, dest)
        return target.reshape(n, h, w, cout)

    def _sep_bn_in_place(self, x, dw, pw, scale, shift, step, out):
        """Between kernels, overwriting the input: software-pipelined so that no tile is copied.

        The depthwise of tile k+1 runs before the GEMM of tile k overwrites tile
        k's rows, and it is the last reader of them (the 3x3 window reaches back
        one row); tile k+2's window starts at tile k+1's last row.
        """
        n, h, w, c = x.shape
        rows = n * h
        tiles = -(-rows * w * c * self.IN_PLACE_SPLIT // self.TILE_ELEMS)
        step_rows = -(-rows // tiles)
        bounds = [(r0, min(rows, r0 + step_rows)) for r0 in range(0, rows, step_rows)]

        def depthwise(k):
            r0, r1 = bounds[k]
            tile_in = self._buffer(f"dw{k % 2}", ((r1 - r0) * w, c))
            depthwise3x3_same_rows(x, dw, tile_in, step.relu_in, r0, r1)
            return tile_in

        nxt = depthwise(0)
        for k, (r0, r1) in enumerate(bounds):
            tile_in = nxt
            if k + 1 < len(bounds):
                nxt = depthwise(k + 1)
            tile = out[r0 * w:r1 * w]
            np.matmul(tile_in, pw, out=tile)
            affine_act(tile, scale, shift, step.relu_out)

    def pool_add(self, step: PoolAdd, x, residual):
        """Max-pool + the residual Add in one kernel. -> (N, H', W', C)."""
        n, h, w, c = x.shape
        k, s = step.kernel_size, step.strides
        ho, pad_t = window_geometry(h, k, s, step.padding)
        wo, pad_l = window_geometry(w, k, s, step.padding)
        out = self._buffer(f"v{step.slot}", (n, ho, wo, c))
        maxpool_add(x, residual.reshape(n, ho, wo, c), k, s, pad_t, pad_l, out, self.threads)
        return out

    # the head's dense layers: "fast" is the op's NumPy matmul (BLAS); "reference" its einsum, which does not
    # use BLAS and is slower from batch 8 (docs/performance.md, "Issue 15, 2026-11-30 02:00-03:40 UTC")
    HEAD_DENSE = "fast"

    def run_head(self, step: Head, features):
        """The head, by npxception/head.py.

        In NumPy: the ops' reference forms (``impl="reference"``), at most a
        (N, H', W', 2048) pooling and a softmax, where two more Numba kernels
        would add their compile to the first call (docs/performance.md); the
        dense layers by the op's matmul, which is NumPy too.
        """
        out = run_head(self.head, self.model_params, features, "reference", dense_impl=self.HEAD_DENSE)
        if np.shares_memory(out, features):  # no head: the arena is reused by the next call
            out = out.copy()
        self._mark(step.label)
        return out


def fast_forward(model, x):
    """Run ``model`` on a checked, contiguous batch ``x`` with its compiled plan (built once).

    Returns None when the model's table holds a layer sequence no fused step
    implements (:class:`~npxception.fast.plan.Unsupported`): the caller then runs it op by op.
    """
    with model._lock:
        if model._fast is None:
            try:
                model._fast = FastPlan(model)
            except Unsupported as exc:
                model._fast = exc
        if isinstance(model._fast, Unsupported):
            return None
        return model._fast(x)
