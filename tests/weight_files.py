"""Test helper: copy an npxception weight file with edits, as a damaged or doctored file would be."""

from __future__ import annotations

import json

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
