"""Test helper: copy an npxception weight file with edits, as a damaged or doctored file would be."""

from __future__ import annotations

import json
import re

import numpy as np

from npxception import weights as wfile


def rewrite(src, dst, edit):
    """Copy a weight file, letting ``edit(arrays, manifest)`` change it (np.savez writes fresh CRCs)."""
    with np.load(src, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    manifest = json.loads(str(arrays.pop(wfile.MANIFEST_KEY)))
    edit(arrays, manifest)
    arrays[wfile.MANIFEST_KEY] = np.array(json.dumps(manifest))
    np.savez(dst, **arrays)
    return dst


def conversion_refused(src, first, *fragments, **kw):
    """``weights_tools.read(src, **kw)``'s ConversionError text, which must contain ``first`` (the
    ``pytest.raises`` match) and every one of ``fragments``."""
    import pytest

    from npxception import weights_tools

    with pytest.raises(weights_tools.ConversionError, match=re.escape(first)) as exc:
        weights_tools.read(src, **kw)
    for fragment in fragments:
        assert fragment in str(exc.value), str(exc.value)
    return str(exc.value)
