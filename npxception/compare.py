"""Compare another Xception implementation with npxception, layer by layer.

``compare(model, other, x)`` runs our model on ``x`` capturing every layer, gets
the other side's activations for the same input, and reports per layer (in
network order) the shapes, the max absolute error, the max relative error, the
cosine similarity and pass/fail. The first failing layer is where to look.

``other`` may be:

* a ``keras.Model`` (TensorFlow is imported only then, by the model itself);
* a path to a ``.keras`` / ``.h5`` model (loaded with Keras, so TensorFlow is
  needed) or an ``.onnx`` file (onnxruntime; intermediate tensors are matched
  to our layer names where the exported graph keeps Keras' scopes, otherwise
  only the final output is compared);
* a ``dict`` or ``.npz`` of ``{layer_name: activation}`` dumped by anything,
  which needs no framework. NCHW dumps are accepted with ``layout="NCHW"``
  (or detected when unambiguous).

Default tolerances, by the lower precision of the two sides, relative to the
largest magnitude of the other side's activation (``|ours - theirs| <= atol +
rtol * max|theirs|``):

* float32: rtol 1e-4. float32 round-off (6e-8) times reduction lengths up to
  9 * 2048, compounded over 36 layers, stays below ~3e-5 for a correct port;
  a wrong BN epsilon (1e-5 for 1e-3) moves a BN output by ~1e-3 relative.
* float64: rtol 1e-10 (summation order only).

``oracle=True`` also runs our model in float64 and reports, per layer, how far
each float32 side is from it: who is closer to exact.
"""

from __future__ import annotations

import importlib
import json
import pathlib
import sys
from dataclasses import asdict, dataclass, field

import numpy as np

DEFAULT_RTOL = {"float32": 1e-4, "float64": 1e-10}


@dataclass
class Row:
    layer: str
    shape_ours: tuple | None
    shape_theirs: tuple | None
    max_abs: float | None = None
    max_rel: float | None = None  # max |ours - theirs| / max |theirs|
    cosine: float | None = None
    passed: bool = False
    note: str = ""
    ours_vs_oracle: float | None = None  # max relative error against the float64 oracle
    theirs_vs_oracle: float | None = None


@dataclass
class Report:
    rows: list[Row]
    rtol: float
    atol: float
    other: str = ""
    skipped: list[str] = field(default_factory=list)  # our layers the other side does not expose

    @property
    def first_divergence(self) -> str | None:
        for row in self.rows:
            if not row.passed:
                return row.layer
        return None

    @property
    def ok(self) -> bool:
        return self.first_divergence is None and bool(self.rows)

    def to_json(self) -> str:
        return json.dumps({
            "other": self.other, "rtol": self.rtol, "atol": self.atol,
            "first_divergence": self.first_divergence, "compared": len(self.rows),
            "skipped": self.skipped,
            "rows": [{**asdict(r), "shape_ours": list(r.shape_ours) if r.shape_ours else None,
                      "shape_theirs": list(r.shape_theirs) if r.shape_theirs else None} for r in self.rows],
        }, indent=2)

    def __str__(self) -> str:
        first = self.first_divergence
        oracle = any(r.ours_vs_oracle is not None for r in self.rows)
        head = f"{'layer':<28}{'shape':<22}{'max abs':>11}{'max rel':>11}{'cosine':>11}  "
        if oracle:
            head += f"{'ours~f64':>10}{'theirs~f64':>11}  "
        lines = [f"compare against {self.other} (rtol={self.rtol:g}, atol={self.atol:g})", head + "result"]

        def num(v, w=11):
            return f"{'-':>{w}}" if v is None else f"{v:>{w}.3g}"

        for r in self.rows:
            mark = "ok" if r.passed else "FAIL"
            if r.layer == first:
                mark += "  <-- first divergence"
            line = (f"{r.layer:<28}{str(r.shape_ours):<22}{num(r.max_abs)}{num(r.max_rel)}"
                    f"{num(r.cosine)}  ")
            if oracle:
                line += f"{num(r.ours_vs_oracle, 10)}{num(r.theirs_vs_oracle)}  "
            lines.append(line + mark + (f" ({r.note})" if r.note else ""))
        if self.skipped:
            lines.append(f"({len(self.skipped)} of our layers have no counterpart on the other side)")
        lines.append(f"first divergence: {first}" if first else
                     f"no divergence: {len(self.rows)} layers agree")
        return "\n".join(lines)

    def plot(self, path):
        """Error against depth on a log scale (needs matplotlib, the ``plot`` extra)."""
        require_matplotlib()
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [r for r in self.rows if r.max_rel is not None]
        fig, ax = plt.subplots(figsize=(12, 4.5))
        depth = range(len(rows))
        ax.semilogy(depth, [max(r.max_rel, 1e-17) for r in rows], ".-", label="max rel error (ours vs theirs)")
        if any(r.ours_vs_oracle is not None for r in rows):
            ax.semilogy(depth, [max(r.ours_vs_oracle or 0, 1e-17) for r in rows], "--", label="ours vs float64")
            ax.semilogy(depth, [max(r.theirs_vs_oracle or 0, 1e-17) for r in rows], ":", label="theirs vs float64")
        ax.axhline(self.rtol, color="red", lw=0.8, label=f"rtol {self.rtol:g}")
        first = self.first_divergence
        if first:
            i = [r.layer for r in rows].index(first)
            ax.axvline(i, color="red", ls="--", lw=0.8)
            ax.annotate(first, (i, self.rtol), rotation=90, fontsize=8, va="bottom")
        ticks = [i for i, r in enumerate(rows) if r.layer.endswith(("_add", "avg_pool", "predictions"))]
        ax.set_xticks(ticks, [rows[i].layer for i in ticks], rotation=90, fontsize=7)
        ax.set_ylabel("max |ours - theirs| / max |theirs|")
        ax.set_title(f"npxception vs {self.other}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return pathlib.Path(path)


# ---------------------------------------------------------------------------

def _is_keras_model(obj) -> bool:
    mod = type(obj).__module__
    return hasattr(obj, "get_layer") and hasattr(obj, "layers") and mod.split(".")[0] in ("keras", "tf_keras", "tensorflow")


def _keras_activations(model, kmodel, x):
    """Activations of every Keras layer matched to ours by the converter's graph walk."""
    from weights_tools.from_keras import keras_layers
    from weights_tools.mapping import match_names

    names = match_names(keras_layers(kmodel), variant=model.variant)
    ours = [n for n in model.layer_names if n in names]
    outputs = [kmodel.get_layer(names[n]).output for n in ours]
    framework = importlib.import_module(type(kmodel).__module__.split(".")[0])  # keras or tf_keras
    probe = framework.Model(kmodel.inputs, outputs)
    values = probe(x.astype(_keras_dtype(kmodel)), training=False)
    if not isinstance(values, (list, tuple)):
        values = [values]
    return {n: np.asarray(v) for n, v in zip(ours, values)}


def _keras_dtype(kmodel):
    w = kmodel.weights[0]
    return np.dtype(w.dtype if isinstance(w.dtype, str) else w.dtype.name)


# The ONNX op that ends each of our layer kinds in a tf2onnx export. A scope's last
# node is only that layer's output when it is this op: tf2onnx folds BatchNorm into
# the convolution before it and leaves the pointwise half of a separable
# convolution unscoped ("Conv__434"), so "block2_sepconv1/.../depthwise" is the
# depthwise half only and must not be compared with our whole layer.
_ONNX_FINAL_OPS = {
    "conv": {"Conv"}, "sepconv": set(), "bn": {"BatchNormalization"}, "relu": {"Relu"},
    "maxpool": {"MaxPool"}, "add": {"Add", "Sum"}, "global_avg_pool": {"GlobalAveragePool", "ReduceMean"},
    "global_max_pool": {"GlobalMaxPool", "ReduceMax"}, "dense": {"Gemm", "MatMul", "Add"},
    "batch_norm": {"BatchNormalization"}, "activation": {"Softmax", "Relu", "Sigmoid", "Tanh"},
}


def _onnx_scopes(graph):
    """{scope name: (last output in that scope, its node's op type)}; nodes are topologically sorted."""
    last = {}
    for node in graph.node:
        for out in node.output:
            for part in out.replace(":", "/").split("/")[:-1]:  # the last part is the op, not a scope
                last[part] = (out, node.op_type)
    return last


def _onnx_scope_of(theirs: str, scopes: dict, keras_names: set, suffixed: bool) -> str | None:
    """The scope holding Keras layer ``theirs``: its name or, when ``suffixed`` (Keras 3 traced
    by tf.function names scopes "block1_conv1_act_1"), its name + "_1". A suffixed name that
    is also another layer's name ("add" + "_1" is "add_1") is ambiguous: TensorFlow
    de-duplicates such scopes further ("add_1_2"), so those layers are left out rather than
    risk comparing the wrong tensor."""
    if not suffixed:
        return theirs if theirs in scopes else None
    scope = f"{theirs}_1"
    return scope if scope in scopes and scope not in keras_names else None


def _onnx_activations(model, path, x):
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise ImportError("comparing against an ONNX file needs onnx and onnxruntime "
                          "(pip install 'npxception[bench]')") from None
    proto = onnx.load(str(path))
    graph = proto.graph
    inputs = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if len(inputs) != 1:
        raise ValueError(f"{path}: expected one image input, found {len(inputs)}: {inputs}")
    final = graph.output[0].name  # before we add the intermediate outputs
    scopes = _onnx_scopes(graph)
    src_names = model.source_layer_names or {}
    keras_names = set(src_names.values()) | set(model.layer_names)
    kinds = {layer.name: layer.kind for layer in model.layers} | {h["name"]: h["kind"] for h in model.head}
    theirs_names = [src_names.get(n, n) for n in model.layer_names]
    suffixed = (sum(f"{n}_1" in scopes for n in theirs_names)
                > sum(n in scopes for n in theirs_names))
    wanted = {}
    for ours in model.layer_names:
        scope = _onnx_scope_of(src_names.get(ours, ours), scopes, keras_names, suffixed)
        if scope is not None:
            tensor, op = scopes[scope]
            if op in _ONNX_FINAL_OPS[kinds[ours]]:
                wanted[ours] = tensor
    existing = {o.name for o in graph.output}
    for name in sorted(set(wanted.values()) - existing):
        graph.output.append(onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = session.run(None, {inputs[0]: x.astype(np.float32)})
    by_name = dict(zip([o.name for o in session.get_outputs()], outs))
    acts = {ours: by_name[n] for ours, n in wanted.items() if n in by_name}
    acts[model.layer_names[-1]] = by_name[final]
    return acts


def _load_dump(path):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _to_nhwc(acts, ours, layout):
    out = {}
    for name, a in acts.items():
        a = np.asarray(a)
        if a.ndim == 4 and name in ours:
            mine = ours[name].shape
            lay = layout
            if lay is None:  # detect only when unambiguous
                if a.shape == mine:
                    lay = "NHWC"
                elif (a.shape[0], a.shape[2], a.shape[3], a.shape[1]) == mine:
                    lay = "NCHW"
            if lay == "NCHW":
                a = a.transpose(0, 2, 3, 1)
        out[name] = a
    return out


def _explain_shapes(ours, theirs) -> str:
    if ours is None or theirs is None:
        return "missing on one side"
    if len(ours) == 4 and len(theirs) == 4 and (theirs[0], theirs[2], theirs[3], theirs[1]) == ours:
        return "shapes differ; theirs looks NCHW: pass layout='NCHW'"
    if len(ours) == len(theirs) == 4 and ours[-1] == theirs[-1] and ours[1:3] != theirs[1:3]:
        return (f"spatial size differs ({ours[1]}x{ours[2]} vs {theirs[1]}x{theirs[2]}): "
                "different padding or stride, or a different input size")
    if ours[-1:] != theirs[-1:]:
        return f"channels differ ({ours[-1]} vs {theirs[-1]}): a different layer, or a different layout"
    return f"shape ours {ours} vs theirs {theirs}"


def _errors(a, b):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    diff = np.abs(a64 - b64)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(b64).max()) if b64.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    cosine = float(np.dot(a64.ravel(), b64.ravel()) / (na * nb)) if na > 0 and nb > 0 else float(na == nb)
    return max_abs, max_rel, cosine, scale


def compare(model, other, x, *, rtol=None, atol=None, oracle=False, layout=None) -> Report:
    """Compare ``model`` with ``other`` on input batch ``x``; see the module docstring."""
    from .model import XceptionModel

    if not isinstance(model, XceptionModel):
        raise TypeError(f"model: expected an npxception model, found {type(model).__name__}")
    if layout not in (None, "NHWC", "NCHW"):
        raise ValueError(f"layout: expected 'NHWC', 'NCHW' or None, found {layout!r}")
    x = np.asarray(x)
    if _is_keras_model(other):
        label = f"keras model {other.name!r}"
        theirs = _keras_activations(model, other, x)
        their_dtype = _keras_dtype(other)
    elif isinstance(other, dict):
        label = "activation dict"
        theirs = dict(other)
        their_dtype = None
    elif isinstance(other, (str, pathlib.Path)):
        path = pathlib.Path(other)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        label = str(path)
        suffix = path.suffix.lower()
        if suffix == ".npz":
            theirs = _load_dump(path)
            their_dtype = None
        elif suffix == ".onnx":
            theirs = _onnx_activations(model, path, x)
            their_dtype = np.dtype("float32")
            # tf2onnx keeps some tensors NHWC and turns others NCHW around its
            # Conv nodes, so the layout is detected tensor by tensor.
            layout = None
        elif suffix in (".keras", ".h5", ".hdf5"):
            try:
                import keras
            except ImportError:
                raise ImportError(f"{path}: running a Keras file needs TensorFlow/Keras; without a "
                                  "framework, dump its activations to .npz and compare with that") from None
            kmodel = keras.models.load_model(path, compile=False)
            theirs = _keras_activations(model, kmodel, x)
            their_dtype = _keras_dtype(kmodel)
        else:
            raise ValueError(f"{path}: expected a .keras, .h5, .onnx or .npz file")
    else:
        raise TypeError(f"other: expected a keras.Model, a path or a dict of activations, "
                        f"found {type(other).__name__}")

    ours_out, ours = model.forward(x, capture="all")
    theirs = _to_nhwc(theirs, ours, layout)
    unknown = [k for k in theirs if k not in ours]
    precision = "float64" if model.dtype == np.float64 and their_dtype in (None, np.dtype("float64")) else "float32"
    if their_dtype is None and any(np.asarray(v).dtype == np.float32 for v in theirs.values()):
        precision = "float32"
    rtol = DEFAULT_RTOL[precision] if rtol is None else float(rtol)
    atol = 0.0 if atol is None else float(atol)

    oracle_acts = None
    if oracle:
        _, oracle_acts = model.astype("float64").forward(x.astype(np.float64), capture="all")

    rows, skipped = [], []
    for name in model.layer_names:
        if name not in theirs:
            skipped.append(name)
            continue
        a, b = ours[name], np.asarray(theirs[name])
        if a.shape != b.shape:
            rows.append(Row(name, a.shape, b.shape, passed=False, note=_explain_shapes(a.shape, b.shape)))
            continue
        if not np.isfinite(b).all():
            rows.append(Row(name, a.shape, b.shape, passed=False, note="theirs contains NaN or Inf"))
            continue
        max_abs, max_rel, cosine, scale = _errors(a, b)
        row = Row(name, a.shape, b.shape, max_abs, max_rel, cosine, passed=max_abs <= atol + rtol * scale)
        if oracle_acts is not None:
            row.ours_vs_oracle = _errors(a, oracle_acts[name])[1]
            row.theirs_vs_oracle = _errors(b, oracle_acts[name])[1]
        rows.append(row)
    if unknown:
        skipped += [f"(theirs only) {k}" for k in unknown]
    if not rows:
        raise ValueError(f"{label}: no layer in common with npxception's names "
                         f"(theirs: {sorted(theirs)[:5]}...; ours: {model.layer_names[:3]}...)")
    return Report(rows, rtol, atol, other=label, skipped=skipped)


# ---------------------------------------------------------------------------

def cli_input(model, image=None) -> np.ndarray:
    """The batch ``npxception compare`` feeds both sides: ``image`` preprocessed, or
    (without one) a uniform [-1, 1] batch from seed 0, in the model's input size."""
    from .images import load_image, preprocess_input

    h, w = model.input_shape[:2] if model.input_shape[0] else (299, 299)
    if image is not None:
        x = preprocess_input(load_image(image, target_size=(h, w)))[None]
    else:
        x = np.random.default_rng(0).uniform(-1, 1, (1, h, w, 3))
    return x.astype(model.dtype)


def require_matplotlib() -> None:
    """ImportError saying how to install matplotlib, before any work that would need it."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError("plotting needs matplotlib: pip install 'npxception[plot]'")


def cli_compare(args) -> int:
    from .model import Xception
    from .weights import load

    if args.plot:
        require_matplotlib()  # before the comparison, not after minutes of it
    against = pathlib.Path(args.against)
    if not against.is_file():
        raise FileNotFoundError(f"{against}: no such file")
    if args.weights:
        model = Xception("imagenet") if args.weights == "imagenet" else load(args.weights)
    elif against.suffix.lower() in (".keras", ".h5", ".hdf5"):
        import weights_tools

        model = weights_tools.read(against)
    else:
        raise ValueError("--weights is needed to compare against an .onnx file or an activation dump")
    report = compare(model, str(against), cli_input(model, args.image), oracle=args.oracle,
                     layout=args.layout)
    if args.plot:
        report.plot(args.plot)
    verdict = (f"first divergence: {report.first_divergence}" if report.first_divergence
               else f"no divergence: {len(report.rows)} layers agree")
    if args.json:
        # stdout stays one JSON document; the verdict line goes to stderr
        print(report.to_json())
        print(verdict, file=sys.stderr)
    else:
        print(report)  # its last line is the verdict
    return 0 if report.ok else 1
