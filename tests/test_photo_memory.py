"""A large photo predicted at its own size costs about its Pillow image, proven by a resource limit.

A model converted from ``Input((None, None, 3))`` with a ``Resizing`` takes each
photo at its own size (npxception/input_stage.py). Its stage reads only the rows
and columns the resize needs, and converts and preprocesses only those
(``apply_gathered``), so a 6000x6000 JPEG (36 Mpx) must cost about Pillow's RGB
image (4 bytes per pixel, 144 MB) on top of what the process already holds.

How the limit is chosen (the pattern of test_hostile.py, relative to a measured
baseline): the child warms up on a small photo, through ``npxception.predict``
and the CLI (kernels compiled or loaded, thread pools and malloc arenas started,
the model loaded and cached), reads the address space it then holds (``VmSize``)
and sets ``RLIMIT_AS`` to that plus ``MARGIN``: three uint8 copies of the photo
(324 MB). Measured deltas of the big prediction (``VmPeak - VmSize``, 2026-11-29):
145 MB after the change in float32 and float64; before it, when the whole photo
went through float32 copies, a full-size finiteness mask and (float64 models) a
float64 copy, 981 MB in float32 and 1,835 MB in float64: a MemoryError under
this limit. The limit is address space, which is at least the resident memory.
The peak RSS figures are in docs/performance.md (benchmarks/photo_peak.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

import npxception
from npxception.model import XceptionModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {"big.jpg": (6000, 6000), "strip.jpg": (60000, 140)}  # (width, height)


def margin(photo: str) -> int:
    """Three uint8 copies of the photo; see the module docstring."""
    w, h = SIZES[photo]
    return 3 * w * h * 3

# The child: warm up on the small photo (API and CLI), hold that address space plus MARGIN, then the big one.
CHILD = """
import resource, sys
import npxception
from npxception.cli import main

weights, small, big, margin = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
npxception.predict(small, weights=weights)
assert main(["predict", "--weights", weights, small]) == 0
held = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (held + margin, held + margin))
print("api classes:", len(npxception.predict(big, weights=weights)))
sys.exit(main(["predict", "--weights", weights, big]))
"""


def smooth_photo(path, width: int, height: int) -> None:
    """A photo-like JPEG of smooth gradients (0.8 MB at 6000x6000), built by Pillow without a NumPy copy."""
    g = Image.linear_gradient("L").resize((width, height), Image.Resampling.BILINEAR)
    Image.merge("RGB", [g, g.transpose(Image.Transpose.FLIP_LEFT_RIGHT), g.transpose(Image.Transpose.FLIP_TOP_BOTTOM)]
                ).save(path, quality=90)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name, (w, h) in SIZES.items():
        smooth_photo(folder / name, w, h)
    smooth_photo(folder / "small.jpg", 100, 100)
    return folder


# strip.jpg: every row is read (the photo is less than twice the input's height), so the rows are one run;
# read as one band it cost the whole photo twice more (crop + array): VmPeak - VmSize 111 MB against 49 MB
# read in bands of images.BAND_BYTES (2026-11-29), against a limit of 76 MB.
@pytest.mark.parametrize("photo, dtype", [("big.jpg", "float32"), ("big.jpg", "float64"), ("strip.jpg", "float32")])
def test_a_large_photo_at_its_own_size_costs_its_pillow_image(photos, tmp_path, photo, dtype):
    base = npxception.Xception(classes=3, input_shape=(71, 71, 3), seed=0, dtype=dtype)
    resize = {"kind": "resizing", "name": "resizing", "height": 71, "width": 71, "keras": "keras3"}
    model = XceptionModel(base.weights, variant=base.variant, head=base.head, input_shape=(71, 71, 3),
                          input_stage=[resize], source_input_shape=(None, None, 3))
    weights = model.save(tmp_path / "variable.npz")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", CHILD, str(weights), str(photos / "small.jpg"), str(photos / photo),
                          str(margin(photo))],
                         capture_output=True, text=True, env=env, cwd=REPO)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "MemoryError" not in text, text[-3000:]
    # the API's three classes, then the CLI's lines for the big photo (after the warm-up's for the small one)
    assert "api classes: 3" in out.stdout and photo in out.stdout, out.stdout
