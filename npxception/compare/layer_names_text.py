"""Layer names shortened for one line of a report: ``block{2..13}_add``.

Its own module because the report and the hypotheses' explanations (folded_bn) both print name lists,
and the report imports the hypotheses: here neither imports the other to print a name.
"""

from __future__ import annotations

import re

from ..untrusted import COUNTER


def _numbers(ns: list[int]) -> str:
    """``[2, 3, 4, 13]`` -> ``2,3,4,13``; a run of four or more -> ``5..12``."""
    parts, i = [], 0
    while i < len(ns):
        j = i
        while j + 1 < len(ns) and ns[j + 1] == ns[j] + 1:
            j += 1
        parts += [f"{ns[i]}..{ns[j]}"] if j - i >= 3 else [str(n) for n in ns[i:j + 1]]
        i = j + 1
    return ",".join(parts)


def compact_names(names: list[str]) -> str:
    """Layer names, shortened for a line of text only: ``block2_add``..``block13_add`` ->
    ``block{2..13}_add``, ``block{2,3,4,13}_residual_bn``; other names as they are, in order."""
    groups: dict[str, list[int]] = {}  # suffix (or a whole other name) -> block numbers, first seen first
    for name in names:
        m = re.fullmatch(rf"block({COUNTER})_(.+)", name)
        groups.setdefault(m.group(2) if m else f"={name}", []).append(int(m.group(1)) if m else 0)
    out = []
    for key, ns in groups.items():
        if key.startswith("="):
            out += [key[1:]] * len(ns)
        else:
            out.append(f"block{ns[0]}_{key}" if len(ns) == 1 else f"block{{{_numbers(ns)}}}_{key}")
    return ", ".join(out)
