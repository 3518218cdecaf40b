"""Compare another Xception implementation with npxception, layer by layer, and explain it.

``compare(model, other, x)`` runs our model on ``x`` capturing every layer, gets
the other side's activations for the same input, and reports per layer (in
network order):

* the *accumulated* error, ours against theirs (max abs, max relative, 1 - cosine);
* the *local* error: our layer run on *their* inputs against their output, the
  error the layer itself introduces; the layers where it exceeds tolerance (or,
  on a failing row, float32's round-off in that layer: :mod:`.roundoff`) are
  the **sources**, all of them, in order;
* for each source, the cause: a catalogue of named hypotheses (BN epsilon,
  pooling padding, kernel layouts, activations, input preprocessing, logits...)
  is tested against their input and output, and the one that reproduces their
  output is reported with its fitted parameter and residual
  (:mod:`npxception.compare.hypotheses`, docs/discrepancies.md);
* a per-stage summary, and for a classifier the prediction agreement.

``other`` may be:

* a ``keras.Model`` (TensorFlow is imported only then, by the model itself);
* a path to a ``.keras`` / ``.h5`` model (loaded with Keras, so TensorFlow is
  needed) or an ``.onnx`` file (onnxruntime; intermediate tensors are matched
  to our names by Keras scopes, torch module scopes or the ``names`` map;
  ``layout="NCHW"`` feeds a PyTorch export its NCHW input);
* a ``dict`` or ``.npz`` of ``{layer_name: activation}`` dumped by anything,
  which needs no framework, optionally with its input under ``"__input__"``.
  NCHW dumps are accepted with ``layout="NCHW"`` (or detected when unambiguous).
  A Keras dump's auto-named residual layers and adds (``conv2d_60``,
  ``batch_normalization_62``, ``add_180``) are matched to ours by order when the
  dump determines it (:func:`npxception.compare.names.match_auto_names`).

The report says whether every layer of ours was compared (``Report.complete``,
``Report.not_compared``); a verdict that left some out begins ``PARTIAL``.

``names=`` maps their names to ours: a dict, a JSON file, or a known port's
name (``"timm.legacy_xception"``). Tolerances are in
:data:`npxception.compare.precision.DEFAULT_RTOL` with their reasons; a float16
or bfloat16 port is compared in float32 with its own. ``oracle=True`` also
runs our model in float64 and reports how far each side is from it.
"""

from __future__ import annotations

from .cli import cli_compare, cli_input, cli_inputs
from .core import compare
from .hypotheses import CATALOGUE, Diagnosis
from .names import KNOWN_PORTS
from .precision import DEFAULT_RTOL
from .report import Agreement, Report, Row, agreement
from .sides import INPUT_KEY, Other
from .summary import summarize
from .torch_dump import dump_torch_activations

__all__ = ["compare", "summarize", "Report", "Row", "Agreement", "Diagnosis", "Other", "agreement",
           "CATALOGUE", "KNOWN_PORTS", "INPUT_KEY", "DEFAULT_RTOL", "cli_compare", "cli_input", "cli_inputs",
           "dump_torch_activations"]
