"""Peak RSS of ``npxception.predict`` on one large photo: a fixed-size model, and one that takes it at its own size.

    python benchmarks/photo_peak.py [--side 8000] [--runs 3] [--input 299]

Writes a smooth ``side x side`` JPEG and four small weight files (random weights,
1000 classes, the backbone at ``--input``) into a temporary directory:

* ``fixed``: ``input_shape=(input, input, 3)``: ``load_img`` resizes the photo (nearest);
* ``variable``: ``Input((None, None, 3))`` then ``Resizing(input, input)`` (bilinear, Keras 3):
  the photo is staged at its own size (npxception/input_stage.py),

each in float32 and float64. Every configuration runs ``--runs`` times in a fresh
process (``/usr/bin/time -f %M``, which reads the child's own peak: a child's
``ru_maxrss`` would start from its parent's), after one unmeasured run that fills
Numba's kernel cache; the medians are printed in MB (10^6 bytes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = "import sys, npxception; npxception.predict(sys.argv[2], model=npxception.load(sys.argv[1], verify=False))"


def smooth_jpeg(path, side: int) -> None:
    """A photo-like JPEG (smooth gradients: a few MB at 8000x8000), written row band by band in memory."""
    from PIL import Image

    y = np.linspace(0, 1, side, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, side, dtype=np.float32)[None, :]
    rgb = np.empty((side, side, 3), np.uint8)
    rgb[..., 0] = (255 * x * y).astype(np.uint8)
    rgb[..., 1] = (127.5 + 127.5 * np.sin(6 * x + 3 * y)).astype(np.uint8)
    rgb[..., 2] = (255 * (1 - y) * np.ones_like(x)).astype(np.uint8)
    Image.fromarray(rgb).save(path, quality=90)


def models(folder, size: int) -> dict:
    from npxception import Xception
    from npxception.model import XceptionModel

    base = Xception(classes=1000, input_shape=(size, size, 3), seed=0)
    resize = {"kind": "resizing", "name": "resizing", "height": size, "width": size, "keras": "keras3"}
    variable = XceptionModel(base.weights, variant=base.variant, head=base.head, input_shape=base.input_shape,
                             input_stage=[resize], source_input_shape=(None, None, 3))
    out = {}
    for dtype in ("float32", "float64"):
        for name, model in (("fixed", base), ("variable", variable)):
            out[name, dtype] = model.astype(dtype).save(os.path.join(folder, f"{name}-{dtype}.npz"), golden=False)
    return out


def peak_mb(weights, photo) -> float:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-c", CHILD, str(weights), str(photo)],
                         capture_output=True, text=True, env=env, check=True)
    return int(out.stderr.strip().splitlines()[-1]) * 1024 / 1e6  # %M is in KiB


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=8000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--input", type=int, default=299, help="the backbone's input size")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        photo = os.path.join(folder, "photo.jpg")
        smooth_jpeg(photo, args.side)
        print(f"{args.side}x{args.side} JPEG, {os.path.getsize(photo) / 1e6:.1f} MB; "
              f"backbone {args.input}x{args.input}")
        for (name, dtype), weights in models(folder, args.input).items():
            peak_mb(weights, photo)  # fills the kernel cache: a compile's peak is not a prediction's
            runs = [peak_mb(weights, photo) for _ in range(args.runs)]
            print(f"{name:8} {dtype}: median {statistics.median(runs):7.0f} MB  runs {[round(r) for r in runs]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
