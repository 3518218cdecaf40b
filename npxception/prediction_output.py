"""How ``npxception predict`` prints its results: a table, one JSON array, JSON lines, or CSV.

Each writer streams: ``start()``, ``write(result)`` per file as its batch finishes, ``end()``
(called even on Ctrl-C, so that a JSON array stays valid). A file that failed keeps its place,
with its error instead of predictions. Every text a weight file or a file name brings is escaped
(:func:`npxception.labels.printable`, :func:`~npxception.labels.unicode_text`): no control
character reaches the terminal, no lone surrogate a JSON reader. File names in the table and CSV
also have their backslashes doubled (:func:`~npxception.labels.printable_name`), so that a name
holding a newline and one holding a backslash and an ``n`` print differently.

Function-level imports: npxception.labels (NumPy) is imported when a result is written, so that
the command's ``--help``, which names the CSV columns, stays light (tests/test_import.py).
"""

from __future__ import annotations

import csv
import json
import os
import sys

CSV_COLUMNS = ("file", "rank", "index", "label", "name", "score", "error")


def _json(result) -> str:
    # Strict JSON: predict_files reports non-finite scores as failures, and
    # allow_nan=False makes sure no NaN/Infinity token is ever printed.
    return json.dumps(_entry(result), allow_nan=False)


def _entry(result) -> dict:
    """One file's JSON object: ``{"file", "predictions"}``, or ``{"file", "error"}`` if it failed.

    Every text is valid Unicode (labels.unicode_text): a file name that is not UTF-8 shows its
    bytes escaped (``b\\xff.jpg``), as the table does, rather than lone surrogates. That escape reads
    the same as a file really named ``b\\xff.jpg``, so such a name also gets ``"file_hex"``, its
    bytes in hex (``bytes.fromhex``), and only such a name (review 24, F10).
    """
    from .labels import unicode_text

    def text(value):
        return None if value is None else unicode_text(value)

    file = {"file": text(result.path)}
    if file["file"] != str(result.path):  # escaped: not UTF-8
        file["file_hex"] = os.fsencode(result.path).hex()
    if result.error is not None:
        return {**file, "error": text(result.error)}
    return {**file, "predictions": [_prediction(p, text) for p in result.predictions]}


def _prediction(p, text) -> dict:
    """One prediction's JSON object. A one-unit head's (prediction.Prediction: ``index`` is the decided
    class) also says what ``score`` is (``"output"``: "logit", "probability") and when the class is 1
    (``"class_1_when"``: "logit > 0"; null for an activation with no yes/no rule)."""
    out = {"index": p.index, "label": text(p.label), "name": text(p.name), "score": float(p.score)}  # JSON: a float
    if p.output is not None:
        out.update(output=p.output, class_1_when=p.rule)
    return out


class _Table:
    def start(self):
        pass

    def write(self, result):
        from .labels import printable, printable_name

        print(printable_name(result.path))
        if result.error is not None:
            print(f"  error: {printable(result.error)}")
            return
        for rank, p in enumerate(result.predictions, 1):
            # Labels come from the weight file: escape control characters (ANSI, newlines).
            tag = " ".join(printable(t) for t in (p.label, p.name) if t is not None and t != p.index)
            if p.rule is not None:  # a one-unit head: its value, and the class Keras decides by it
                print(f"  {p.output} {p.score:.4f} -> class {p.index}{' ' + tag if tag else ''}  "
                      f"(one-unit head: class 1 when {p.rule}, else class 0)")
            elif p.output is not None:  # one unit whose activation has no yes/no rule
                print(f"  {p.output} {p.score:.4f}{'  ' + tag if tag else ''}  "
                      f"(one-unit head: no yes/no rule for this activation; the value as it is)")
            else:
                print(f"  {rank}. {p.score:8.4f}  {tag or p.index}  (class {p.index})")

    def end(self):
        pass


class _JSONArray:
    """One JSON array, written element by element so that it streams; closed even on Ctrl-C."""

    def start(self):
        self.first = True
        print("[", end="")

    def write(self, result):
        print(("\n  " if self.first else ",\n  ") + _json(result), end="")
        self.first = False

    def end(self):
        print("\n]")


class _JSONLines:
    def start(self):
        pass

    def write(self, result):
        print(_json(result))

    def end(self):
        pass


class _CSV:
    """One row per (file, rank); a file that failed has one row with only ``file`` and ``error``."""

    def start(self):
        self.writer = csv.writer(sys.stdout, lineterminator="\n")
        self.writer.writerow(CSV_COLUMNS)

    def write(self, result):
        from .labels import printable, printable_name

        def text(value):  # control characters escaped, as the table does: no \x1b reaches the terminal
            return "" if value is None else printable(value)

        name = printable_name(result.path)  # backslashes doubled: every escape reads one way
        if result.error is not None:
            self.writer.writerow([name, "", "", "", "", "", text(result.error)])
            return
        for rank, p in enumerate(result.predictions, 1):
            self.writer.writerow([name, rank, p.index, text(p.label), text(p.name), repr(float(p.score)), ""])

    def end(self):
        pass


WRITERS = {"table": _Table, "json": _JSONArray, "jsonl": _JSONLines, "csv": _CSV}
