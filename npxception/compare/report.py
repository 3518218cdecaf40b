"""What compare returns: one row per layer, the sources of error with their causes,
a per-stage summary, and (for a batch of images) the agreement of the predictions.

Per row, ``accumulated`` is ours against theirs on the same image: the error a
layer inherits plus the error it adds. ``local`` is *our* layer run on *their*
inputs against their output: the error the layer itself introduces.
``amplification`` is the accumulated error over the largest accumulated error
among its inputs: how much the layer grows the error it inherits. A layer whose
local error exceeds tolerance is a **source**, and so is a layer of a failing row
whose local error, under the tolerance, is over float32's round-off in that layer
(``roundoff.py``); a layer that only propagates upstream error is not.
"""

from __future__ import annotations

import json
import pathlib
import re
from dataclasses import asdict, dataclass, field

import numpy as np

from ..console import shown
from ..head import activation
from ..head_schema import decision_rule, output_activation  # noqa: F401 (output_activation: compare's own name for it)
from ..untrusted import atomic_write
from .hypotheses import Diagnosis
from .layer_names_text import compact_names


@dataclass
class Row:
    """One layer compared (or the input, or an input-stage layer: ``flow == "input"``).

    ``passed``: ours and theirs agree within ``atol + rtol * max|theirs|`` (accumulated: each side on its
    own input). ``local_rel``: our layer run on *their* inputs against their output, relative: the error
    this layer adds itself. ``source``: it introduces error (local error over the tolerance, or over
    float32's round-off on a failing row); a source carries ``diagnosis`` (:class:`Diagnosis`: ``cause``,
    ``explanation``, ``parameter``, ``residual``) or None, "unexplained". ``note``: what else the row
    says (shapes that differ and why, how the classifier was read)."""

    layer: str
    shape_ours: tuple | None
    shape_theirs: tuple | None
    max_abs: float | None = None
    max_rel: float | None = None  # accumulated: max |ours - theirs| / max |theirs|
    one_minus_cos: float | None = None  # 1 - cosine similarity: 0 for parallel outputs
    passed: bool = False
    note: str = ""
    ours_vs_oracle: float | None = None  # max relative error against the float64 oracle
    theirs_vs_oracle: float | None = None
    flow: str = ""  # entry / middle / exit / input
    local_rel: float | None = None  # our layer on their inputs vs their output
    amplification: float | None = None  # accumulated / the largest accumulated error of its inputs
    source: bool = False  # the layer itself introduces error: over tolerance, or over round-off on a failing row
    local_vs_roundoff: float | None = None  # RMS local error / float32 round-off's, where measured (roundoff.py)
    diagnosis: Diagnosis | None = None  # the catalogue's explanation of a source, if any
    non_finite: str = ""  # "1 Inf of 23328 values" when theirs holds Inf or NaN (never diagnosed)

    @property
    def cosine(self) -> float | None:
        return None if self.one_minus_cos is None else 1.0 - self.one_minus_cos


UNKNOWN = "unknown"  # a side whose output activation nothing states (a bare dump): never guessed
PROBABILITIES = ("softmax", "sigmoid")


@dataclass
class Agreement:
    """Prediction agreement over a batch: what a user reports upstream.

    Read by the heads' known activations (:func:`agreement`): class rankings for several outputs,
    yes/no decisions for one output unit or per label of a sigmoid head, |Δp| between probabilities,
    |Δ| between logits or values of unknown kind. A field that does not apply is None.
    """

    images: int
    top1: float | None = None  # fraction of images with the same top-1 class (several outputs)
    top5_overlap: float | None = None  # mean |top-5 ours ∩ top-5 theirs| / 5
    max_dp: float | None = None  # largest |p_ours - p_theirs|, when both are probabilities
    note: str = ""  # how the outputs were read: each side's activation, and what was applied
    decisions: float | None = None  # fraction of equal yes/no decisions (one unit; per label for sigmoid)
    flips: int | None = None  # how many of those decisions differ
    max_dz: float | None = None  # largest |Δ| of logits, or of values whose activation is not known
    per_label_dp: list | None = None  # a sigmoid multi-label head: max |Δp| of each label
    rankings_differ: str = ""  # where the class rankings differ beyond near-ties (compare.ranking), else ""

    def __str__(self):
        parts = []
        if self.top1 is not None:
            parts += [f"top-1 agreement {self.top1:.1%}", f"top-5 overlap {self.top5_overlap:.1%}"]
        if self.decisions is not None:
            what = "label decisions" if self.per_label_dp else "decisions"
            parts.append(f"{what} agree {self.decisions:.1%} ({self.flips} flipped)")
        if self.per_label_dp and len(self.per_label_dp) <= 10:
            parts.append("max |Δp| per label " + ", ".join(f"{v:.3g}" for v in self.per_label_dp))
        elif self.max_dp is not None:
            parts.append(f"max |Δp| {self.max_dp:.3g}")
        if self.max_dz is not None:
            parts.append(f"max |Δ| {self.max_dz:.3g}")
        differ = f"; class rankings differ: {self.rankings_differ}" if self.rankings_differ else ""
        return f"{self.images} image(s): " + ", ".join(parts) + (f" ({self.note})" if self.note else "") + differ


def _describe(act) -> str:
    return {None: "logits", UNKNOWN: "activation unknown"}.get(act, act)


def _reading(ours_act, theirs_act):
    """(how both outputs are read, which side gets which activation applied, a note): never a guess.

    Equal activations are read as they are. Logits on one side and probabilities on the other: the
    logits get the other head's activation (both heads say so). Otherwise (an unknown side, or two
    different activations) only what every monotonic activation keeps is compared: the rankings,
    and |Δ| of the values as they are.
    """
    if ours_act == theirs_act == UNKNOWN:
        return UNKNOWN, {}, "neither side's activation known: the values compared as they are"
    if ours_act == theirs_act:
        return ours_act, {}, f"both {_describe(ours_act)}"
    for logits, other, act in (("ours", "theirs", theirs_act), ("theirs", "ours", ours_act)):
        if {"ours": ours_act, "theirs": theirs_act}[logits] is None and act in PROBABILITIES:
            return act, {logits: act}, f"{logits} logits, {other} {act}: {act} applied to {logits}"
    return UNKNOWN, {}, (f"ours {_describe(ours_act)}, theirs {_describe(theirs_act)}: no activation applied, "
                         "the values compared as they are")


def agreement(ours, theirs, *, ours_activation=UNKNOWN, theirs_activation=UNKNOWN) -> Agreement:
    """How two ``(N, outputs)`` batches of predictions agree, read by each head's activation.

    ``*_activation``: the activation the side's last layer ends with (``"softmax"``, ``"sigmoid"``,
    None for logits, ...) or :data:`UNKNOWN` (a dump): unknown is never guessed (:func:`_reading`).

    * several outputs: top-1 agreement and top-5 overlap (rankings: the same under any monotonic
      activation); softmax: max |Δp|; sigmoid (multi-label): each label's yes/no at p > 0.5 and
      its max |Δp|; logits or unknown: max |Δ| of the values;
    * one output unit (a binary head): the yes/no decision, p > 0.5 for a sigmoid, z > 0 for a logit,
      and max |Δp| or |Δ|. A softmax over one column is always 1: never applied. Unknown: no decision.
    """
    z = {"ours": np.asarray(ours, dtype=np.float64), "theirs": np.asarray(theirs, dtype=np.float64)}
    z = {k: v.reshape(len(v), -1) for k, v in z.items()}
    ours_activation = None if ours_activation == "linear" else ours_activation
    theirs_activation = None if theirs_activation == "linear" else theirs_activation
    act, applied, note = _reading(ours_activation, theirs_activation)
    n, width = z["ours"].shape
    if width == 1 and "softmax" in applied.values():  # a softmax over one unit is 1.0 whatever the logit
        act, applied = None, {}
        note = f"one unit: ours {_describe(ours_activation)}, theirs {_describe(theirs_activation)}; compared as logits"
    v = {k: activation(a, applied[k], "reference") if k in applied else a for k, a in z.items()}
    p, q = v["ours"], v["theirs"]
    out = Agreement(n, note=note)
    diff = np.abs(p - q)
    if act in PROBABILITIES:
        out.max_dp = float(diff.max())
    else:
        out.max_dz = float(diff.max())
    if width > 1:
        k = min(5, width)
        top_p, top_q = np.argsort(-p, -1)[:, :k], np.argsort(-q, -1)[:, :k]
        out.top1 = float(np.mean(top_p[:, 0] == top_q[:, 0]))
        out.top5_overlap = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_p, top_q)]))
    rule = decision_rule(act) if act != UNKNOWN and (width == 1 or act == "sigmoid") else None
    if rule is not None:  # the rule predict decides by too (head_schema.decision_rule)
        same = (p > rule.threshold) == (q > rule.threshold)
        out.decisions, out.flips = float(same.mean()), int((~same).sum())
        out.note += f"; decided at {rule.text}"
        if width > 1:
            out.per_label_dp = [float(d) for d in diff.max(0)]
    elif width == 1 and act == "softmax":
        out.note += "; a softmax over one unit is always 1: no decision to compare"
    elif width == 1:
        out.note += "; no yes/no decision: its threshold depends on the activation"
    return out


@dataclass
class Report:
    """What :func:`npxception.compare.compare` returns.

    ``ok``: every layer compared agrees and no layer is a source (the command line exits 0, else 3).
    ``verdict``: one line, the first divergence or none, and whether every layer of ours was compared.
    ``rows``: a :class:`Row` per layer in network order; ``sources``: the rows that introduce error
    themselves, each with its ``diagnosis``; ``first_divergence``: the first row that does not pass.
    ``agreement``: the predictions' agreement (:class:`Agreement`) when the model has a classifier.
    ``not_compared`` / ``theirs_only``: our layers their side lacks, and their names none of ours match.
    ``warnings``: what the comparison could not judge. ``str(report)`` is the command line's table;
    ``to_json()`` the same as JSON."""

    rows: list[Row]
    rtol: float
    atol: float
    other: str = ""
    not_compared: list[str] = field(default_factory=list)  # our layers the other side does not expose
    warnings: list[str] = field(default_factory=list)
    agreement: Agreement | None = None
    theirs_only: list[str] = field(default_factory=list)  # their names that are none of ours
    matched_by_order: dict[str, str] = field(default_factory=dict)  # {our name: their Keras auto-name}
    unmatched_names: list[str] = field(default_factory=list)  # why auto-names were not matched by order
    input: str | None = None  # what both sides ran on, when the caller says (the command line does)

    @property
    def skipped(self) -> list[str]:
        """Ours not compared, then theirs only (marked): the older single list."""
        return self.not_compared + [f"(theirs only) {k}" for k in self.theirs_only]

    @property
    def compared(self) -> int:
        """How many of our layers were compared (the input row is not a layer)."""
        return sum(r.flow != "input" for r in self.rows)

    @property
    def complete(self) -> bool:
        """Every one of our layers was compared."""
        return not self.not_compared

    @property
    def verdict(self) -> str:
        """One line: the first divergence or none, and whether every layer of ours was compared."""
        first = self.first_divergence
        if self.complete:
            by_order = (f" ({len(self.matched_by_order)} of them matched to Keras auto-names by order)"
                        if self.matched_by_order else "")
            return f"first divergence: {first}" if first else f"no divergence: {len(self.rows)} layers agree{by_order}"
        total = self.compared + len(self.not_compared)
        missing = (f"{len(self.not_compared)} of our {total} layers not compared (no counterpart in theirs): "
                   f"{compact_names(self.not_compared)}")
        if first:
            return f"first divergence: {first} (PARTIAL: {missing})"
        return f"PARTIAL: no divergence in the {self.compared} of our {total} layers compared; {missing}"

    @property
    def first_divergence(self) -> str | None:
        for row in self.rows:
            if not row.passed:
                return row.layer
        if self.agreement is not None and self.agreement.rankings_differ:
            # every row within the tolerance, but the predictions of the batch rank the classes otherwise (the
            # command line's summary of all its photos): never a passing verdict (compare.ranking)
            return "predictions (class rankings differ)"
        return None

    @property
    def sources(self) -> list[Row]:
        """Every layer that introduces error itself, in network order."""
        return [r for r in self.rows if r.source]

    @property
    def ok(self) -> bool:
        return self.first_divergence is None and not self.sources and bool(self.rows)

    def stages(self) -> dict[str, dict]:
        """Per flow (entry, middle, exit): layers compared, failing, sources, largest error."""
        out = {}
        for r in self.rows:
            s = out.setdefault(r.flow or "?", {"layers": 0, "failing": 0, "sources": 0, "max_rel": 0.0})
            s["layers"] += 1
            s["failing"] += not r.passed
            s["sources"] += r.source
            if r.max_rel is not None:
                s["max_rel"] = max(s["max_rel"], r.max_rel)
        return out

    def to_json(self) -> str:
        def row(r):
            d = asdict(r)
            d["shape_ours"] = list(r.shape_ours) if r.shape_ours else None
            d["shape_theirs"] = list(r.shape_theirs) if r.shape_theirs else None
            return d

        return json.dumps({
            "other": self.other, "input": self.input, "rtol": self.rtol, "atol": self.atol,
            "first_divergence": self.first_divergence, "verdict": self.verdict, "compared": len(self.rows),
            "complete": self.complete, "layers_compared": self.compared, "not_compared": self.not_compared,
            "theirs_only": self.theirs_only, "matched_by_order": self.matched_by_order,
            "unmatched_names": self.unmatched_names,
            "sources": [{"layer": r.layer, "local_rel": r.local_rel,
                         "diagnosis": asdict(r.diagnosis) if r.diagnosis else None} for r in self.sources],
            "stages": self.stages(), "warnings": self.warnings,
            "agreement": asdict(self.agreement) if self.agreement else None,
            "skipped": self.skipped, "rows": [row(r) for r in self.rows],
        }, indent=2, default=float)

    def source_lines(self) -> list[str]:
        lines = []
        for r in self.sources:
            if r.local_rel is not None:
                local = f"local {r.local_rel:.2g}"
            elif r.non_finite:
                local = f"theirs holds {r.non_finite}"
            elif r.shape_ours != r.shape_theirs:
                local = "shape differs"
            else:
                local = "not run locally"
            if r.diagnosis:
                d = r.diagnosis
                why = f"explained by {d.explanation}; residual {d.residual:.1g}"
            elif r.non_finite:
                why = ("not diagnosed (no cause is tested on Inf or NaN): "
                       + r.note.removeprefix(f"theirs holds {r.non_finite}; "))
            else:
                why = "unexplained: no hypothesis of the catalogue reproduces their output"
                if r.shape_ours != r.shape_theirs and r.note:  # what the shapes themselves say
                    why += f" ({r.note})"
            lines.append(f"  {r.layer} ({local}): {why}")
        return lines

    def __str__(self) -> str:
        first = self.first_divergence
        oracle = any(r.ours_vs_oracle is not None for r in self.rows)
        head = (f"{'layer':<28}{'shape':<22}{'accum rel':>11}{'local rel':>11}{'ampl':>8}"
                f"{'1-cos':>10}  ")
        if oracle:
            head += f"{'ours~f64':>10}{'theirs~f64':>11}  "
        lines = [f"compare against {self.other} (rtol={self.rtol:g}, atol={self.atol:g})"]
        if self.input:
            lines.append(f"input: {self.input}")
        lines += [f"WARNING: {w}" for w in self.warnings]
        lines.append(head + "result")

        def num(v, w=11):
            text = "-" if v is None else f"{v:.3g}"
            return f"{text:>{w}}" if len(text) < w else " " + text  # a wide value keeps one space before it

        by_order = {ours: f"theirs {theirs}, matched by order" for ours, theirs in self.matched_by_order.items()}
        for r in self.rows:
            mark = "ok" if r.passed else "FAIL"
            if r.source:
                mark += "  SOURCE"
            if r.layer == first:
                mark += "  <-- first divergence"
            line = (f"{r.layer:<28}{str(r.shape_ours):<22}{num(r.max_rel)}{num(r.local_rel)}"
                    f"{num(r.amplification, 8)}{num(r.one_minus_cos, 10)}  ")
            if oracle:
                line += f"{num(r.ours_vs_oracle, 10)}{num(r.theirs_vs_oracle)}  "
            note = "; ".join(filter(None, [r.note, by_order.get(r.layer, "")]))
            lines.append(line + mark + (f" ({note})" if note else ""))
        if self.matched_by_order:
            kinds: dict[str, list[tuple[str, str]]] = {}  # conv2d / batch_normalization / add -> pairs
            for ours, theirs in self.matched_by_order.items():
                kinds.setdefault(re.sub(r"_\d+$", "", theirs), []).append((theirs, ours))
            lines.append(f"matched by order ({len(self.matched_by_order)} Keras auto-names; counts, Keras' counters "
                         "and every shape checked, values compared as any layer's): " + "; ".join(
                             f"{pairs[0][0]}" + (f"..{pairs[-1][0]}" if len(pairs) > 1 else "")
                             + f" = {compact_names([ours for _, ours in pairs])}" for pairs in kinds.values()))
        lines += [f"not matched by order: {why}" for why in self.unmatched_names]
        if self.not_compared:
            lines.append(f"not compared ({len(self.not_compared)} of our layers, no counterpart in theirs): "
                         f"{compact_names(self.not_compared)}")
        if self.theirs_only:
            listed = ", ".join(self.theirs_only[:8]) + (f" and {len(self.theirs_only) - 8} more"
                                                        if len(self.theirs_only) > 8 else "")
            lines.append(f"theirs only ({len(self.theirs_only)}, none of our names): {listed}")
        lines.append("per stage: " + "; ".join(
            f"{flow} {s['layers']} layers, {s['failing']} failing, {s['sources']} sources, max rel {s['max_rel']:.2g}"
            for flow, s in self.stages().items()))
        if self.agreement:
            lines.append(f"predictions: {self.agreement}")
        sources = self.sources
        lines.append(f"sources of error: {len(sources)}" + (":" if sources else ""))
        lines += self.source_lines()
        lines.append(self.verdict)
        return shown("\n".join(lines))  # their names (a dump's keys, a graph's tensors) come from a file

    def plot(self, path):
        """Accumulated and local error against depth on a log scale, sources marked and named
        (needs matplotlib, the ``plot`` extra)."""
        try:
            import matplotlib  # optional extra: matplotlib ('plot'), needed only to draw

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt  # optional extra, as above; after use("Agg"): no display
        except ImportError:
            raise ImportError("Report.plot needs matplotlib: pip install 'npxception[plot]'") from None
        rows = [r for r in self.rows if r.max_rel is not None or r.local_rel is not None]
        values = [v for r in rows for v in (r.max_rel, r.local_rel, r.ours_vs_oracle, r.theirs_vs_oracle)
                  if v is not None and v > 0]
        # An exact 0 has no logarithm; draw it one decade under the smallest error shown (or
        # under the tolerance), not at 1e-17, so the axis is spent on the errors.
        floor = min(values + [self.rtol]) / 10 if values else self.rtol / 10

        def y(v):
            return floor if v is None or v <= 0 else v

        fig, ax = plt.subplots(figsize=(12, 4.5))
        depth = range(len(rows))
        ax.semilogy(depth, [y(r.max_rel) for r in rows], ".-", label="accumulated (ours vs theirs)")
        ax.semilogy(depth, [y(r.local_rel) for r in rows], "x", ms=4, label="local (our layer on their inputs)")
        if any(r.ours_vs_oracle is not None for r in rows):
            ax.semilogy(depth, [y(r.ours_vs_oracle) for r in rows], "--", label="ours vs float64")
            ax.semilogy(depth, [y(r.theirs_vs_oracle) for r in rows], ":", label="theirs vs float64")
        ax.axhline(self.rtol, color="red", lw=0.8, label=f"rtol {self.rtol:g}")
        ax.set_ylim(bottom=floor / 2)
        sources = [i for i, r in enumerate(rows) if r.source]
        for i in sources:
            ax.axvline(i, color="red", ls="--", lw=0.6)
        if sources:
            ax.plot(sources, [y(rows[i].local_rel) for i in sources], "o", mfc="none", color="red",
                    label="source")
        ticks = sorted(set(sources) | {i for i, r in enumerate(rows)
                                       if r.layer.endswith(("_add", "avg_pool", "predictions"))})
        ax.set_xticks(ticks, [rows[i].layer for i in ticks], rotation=90, fontsize=7)
        for label, i in zip(ax.get_xticklabels(), ticks):
            if i in sources:
                label.set_color("red")
        ax.set_ylabel("max |ours - theirs| / max |theirs|")
        ax.set_title(f"npxception vs {self.other}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        # whole or absent, as every file we write; the format from the suffix, as savefig(path) picks it
        fmt = pathlib.Path(path).suffix[1:].lower() or "png"
        try:
            atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=110))
        finally:
            plt.close(fig)
        return pathlib.Path(path)
