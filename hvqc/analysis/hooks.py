"""Per-layer activations of a model, collected by forward hooks on named modules.

:func:`collect` works for any ``nn.Module``: give it module names (as in
``model.named_modules()``) and a callable that runs the model. :func:`layer_names`
and :func:`activations` name the layers of an hvqc hierarchy, bottom level first:

* ``L{l}.block{j}``: the output of residual block ``j`` of level ``l``'s encoder;
* ``L{l}.latent``: the level's pre-quantization latent (the encoder output);
* ``L{l}.quantized``: the codewords the quantizer picks (deterministic argmax);
* ``L{l}.codes``: the code indices, ``[B, *S]`` (int64).

Activations are ``[B, C, *S]`` tensors (``S`` = time for speech, ``H, W`` for
images); nothing is pooled or aligned here.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterable

import torch
from torch import nn

__all__ = ["collect", "module_names", "layer_names", "activations"]


def collect(model: nn.Module, run: Callable[[], object], names: Iterable[str]) -> "OrderedDict[str, torch.Tensor]":
    """Run ``run()`` with forward hooks on the named modules of ``model``; their outputs.

    Args:
        model: any module.
        run: runs the model (e.g. ``lambda: model.encode(x)``).
        names: module names from ``model.named_modules()``.

    Returns:
        ``{name: output}`` (detached) in the order of ``names``; a module called
        several times keeps its last output.

    Raises:
        KeyError: a name that is not a module of ``model``.
    """
    names = list(names)
    mods = dict(model.named_modules())
    missing = [n for n in names if n not in mods]
    if missing:
        raise KeyError(f"no module named {missing[0]!r} in {type(model).__name__}")
    out: dict[str, torch.Tensor] = {}
    handles = []
    for n in names:
        def hook(_m, _inp, output, n=n):
            out[n] = (output[0] if isinstance(output, (tuple, list)) else output).detach()
        handles.append(mods[n].register_forward_hook(hook))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return OrderedDict((n, out[n]) for n in names if n in out)


def _is_hierarchy(model: nn.Module) -> bool:
    levels = getattr(model, "levels", None)
    return isinstance(levels, nn.ModuleList) and all(
        hasattr(lv, "encoder") and hasattr(lv, "quantizer") for lv in levels)


def module_names(model: nn.Module) -> "OrderedDict[str, str]":
    """``{layer name: module name}`` of the hooked layers of an hvqc hierarchy
    (encoder blocks and encoder outputs)."""
    if not _is_hierarchy(model):
        raise TypeError(f"{type(model).__name__} is not an hvqc hierarchy: pass module names "
                        f"to collect() instead")
    from ..layers import ResBlock
    names: OrderedDict[str, str] = OrderedDict()
    for i, lv in enumerate(model.levels):
        j = 0
        for k, m in enumerate(lv.encoder.net):
            if isinstance(m, ResBlock):
                j += 1
                names[f"L{i + 1}.block{j}"] = f"levels.{i}.encoder.net.{k}"
        names[f"L{i + 1}.latent"] = f"levels.{i}.encoder"
    return names


def layer_names(model: nn.Module) -> list[str]:
    """All layer names :func:`activations` returns, bottom level first."""
    out = []
    hooked = module_names(model)
    for i in range(len(model.levels)):
        out += [k for k in hooked if k.startswith(f"L{i + 1}.")]
        out += [f"L{i + 1}.quantized", f"L{i + 1}.codes"]
    return out


def activations(model: nn.Module, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
    """Every layer of an hvqc hierarchy for a batch ``x`` ``[B, C, *S]``.

    Runs the deterministic encoding path (:meth:`HierarchicalVQVAE.latents`, each
    level encoding the normalised latent of the level below) with hooks on the
    encoder blocks; quantized latents and codes come from each level's quantizer.
    """
    hooked = module_names(model)
    got = collect(model, lambda: model.latents(x), hooked.values())
    by_module = {v: k for k, v in hooked.items()}
    acts = {by_module[m]: t for m, t in got.items()}
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    with torch.no_grad():
        for i, lv in enumerate(model.levels):
            pre = f"L{i + 1}."
            out.update((k, v) for k, v in acts.items() if k.startswith(pre))
            codes = lv.quantizer.encode(acts[pre + "latent"])
            out[pre + "quantized"] = lv.quantizer.decode(codes)
            out[pre + "codes"] = codes
    return out
