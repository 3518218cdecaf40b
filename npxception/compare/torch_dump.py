"""Dump a PyTorch module's activations to ``.npz`` with forward hooks, for ``compare``.

torch is imported inside the function only: it is never a dependency of
npxception, and nothing else here needs it. See docs/discrepancies.md.

Every hooked output is *cloned* at the moment the hook runs: timm's Xception
(like many ports) uses ``ReLU(inplace=True)`` and ``x += skip``, which overwrite
the very tensor a previous module returned, so a hook that kept a reference
would save the BN output after the next ReLU ran on it.
"""

from __future__ import annotations

import numpy as np

from ..untrusted import atomic_write
from .sides import INPUT_KEY


def dump_torch_activations(module, x, path, *, names=None):
    """Run ``module`` on ``x`` (an NCHW torch tensor or array) and save every hooked output.

    ``names``: the module paths to hook (default: every named submodule). The
    input is saved under ``"__input__"`` so compare can check both sides saw it.
    Keys are module paths (``block4.rep.4``); compare them with
    ``compare(model, path, layout="NCHW", names="timm.legacy_xception")``.
    The file is written to a temporary name and renamed when complete.
    """
    import torch  # the caller's own torch, never our dependency: only this function needs it

    x = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    wanted = set(names) if names is not None else None
    acts, handles = {}, []

    def hook(name):
        def save(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                acts[name] = output.detach().clone().cpu().numpy()  # clone: in-place ops follow
        return save

    for name, sub in module.named_modules():
        if name and (wanted is None or name in wanted):
            handles.append(sub.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            module.eval()
            module(x)
    finally:
        for h in handles:
            h.remove()
    acts[INPUT_KEY] = x.detach().cpu().numpy()
    return atomic_write(path, lambda f: np.savez(f, **acts))
