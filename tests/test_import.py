"""``import npxception`` (and ``npxception.ops``) is light: no deep-learning framework, and no
Numba kernel compiled at import (they compile lazily, on first call).

How long the import takes is a benchmark figure (``npxception bench``, docs/performance.md:
under 1 ms for ``npxception``, about 0.25 s with Numba loaded), not a timed test: a busy CI
machine must not fail a build over wall-clock time."""

from __future__ import annotations

import json
import subprocess
import sys

FRAMEWORKS = {"tensorflow", "keras", "tf_keras", "torch", "jax", "jaxlib", "onnxruntime", "tf2onnx"}

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import npxception
import npxception.ops
seconds = time.perf_counter() - t0
from numba.core.registry import CPUDispatcher
kernels = {f"{mod.__name__}.{name}": obj for mod in list(sys.modules.values())
           if getattr(mod, "__name__", "").startswith("npxception.ops")
           for name, obj in vars(mod).items() if isinstance(obj, CPUDispatcher)}
print(json.dumps({"seconds": seconds, "modules": sorted(sys.modules), "kernels": sorted(kernels),
                  "compiled": sorted(name for name, k in kernels.items() if k.signatures)}))
"""


def _probe():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_is_light_and_lazy():
    report = _probe()
    loaded = {m.split(".")[0] for m in report["modules"]}
    assert not loaded & FRAMEWORKS, f"import npxception pulled in {sorted(loaded & FRAMEWORKS)}"
    assert len(report["kernels"]) >= 6, report["kernels"]  # the kernels exist...
    assert report["compiled"] == [], f"compiled at import: {report['compiled']}"  # ...but none is compiled yet


# What `import npxception` and the console script's module may not load: Numba and NumPy cost
# ~0.3 s, h5py and Pillow are loaded by the commands that read weight files and images.
HEAVY = {"numpy", "numba", "llvmlite", "h5py", "PIL", "matplotlib", "npxception.weights_tools"}

LIGHT_PROBE = r"""
import json, sys
import npxception
package = sorted(m for m in sys.modules if m.split(".")[0] in {"npxception", *HEAVY})
import npxception.cli
cli = sorted({"npxception.weights_tools" if m.startswith("npxception.weights_tools") else m.split(".")[0]
              for m in sys.modules} & HEAVY)
print(json.dumps({"package": package, "cli": cli}))
""".replace("HEAVY", repr(HEAVY))


def test_package_and_cli_import_load_no_heavy_module():
    out = subprocess.run([sys.executable, "-c", LIGHT_PROBE], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["package"] == ["npxception"], f"import npxception loaded {report['package']}"
    # npxception/cli.py's function-level imports exist for this: --help and usage errors stay light.
    assert report["cli"] == [], f"import npxception.cli loaded {report['cli']}"


def test_public_names():
    import npxception.ops as ops

    expected = {"conv2d", "depthwise_conv2d", "pointwise_conv2d", "separable_conv2d", "batch_norm", "relu", "add",
                "max_pool2d", "global_avg_pool2d", "global_max_pool2d", "dense", "softmax", "same_padding",
                "output_size"}
    assert expected <= set(ops.__all__)
    for name in expected:
        assert callable(getattr(ops, name)), name
        assert getattr(ops, name).__doc__, f"{name} has no docstring"
