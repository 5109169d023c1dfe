"""The encoder's search: per-item optimisation of the codes one level sends.

The trained encoder maps a signal to codes in one pass. It is an amortised
approximation (one network for every input, trained on a CPU budget), and the
codes nearest its outputs are not the codes that decode best. :func:`search_codes`
looks for better ones for a single item: it runs gradient descent on that level's
pre-quantization latent, quantized with a straight-through softmax over codeword
distances (:meth:`~hvqc.quantize.GumbelQuantizer.relax`; temperature annealed
from 1 to 0.1, the forward value always the nearest codeword), decoded as the
decoder will decode it, and scored by ``distortion + lam * bits / size``, the bits
being the level's prior cross-entropy given the codes of the level above. This is
the idea of Yang et al., "Improving Inference for Neural Image Compression"
(NeurIPS 2020), for scalar latents, with the rate term of entropy-constrained VQ
(Chou, Lookabaugh and Gray, 1989).

Only the encoder changes: decoders, the file format and every file's meaning stay
as they were, and the search keeps the best codes it scored (the encoder's own
codes are its first candidate), so under its objective it never does worse. The
search runs in float32, so its codes (not their decoding) may differ in the last
bits across thread counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .hierarchy import HierarchicalVQVAE

__all__ = ["SearchSettings", "search_codes"]


@dataclass(frozen=True)
class SearchSettings:
    """How hard the search looks.

    Attributes:
        steps: gradient steps (0: no search, the encoder's codes).
        lam: weight of the rate, in distortion units per bit per ``size`` unit (bpp for
            images); larger trades quality for bits.
        lr: Adam's step size on the latent.
        tau: softmax temperature at the first and the last step (geometric in between).
    """

    steps: int = 10
    lam: float = 1.0
    lr: float = 0.02
    tau: tuple[float, float] = (1.0, 0.1)

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"search steps must be 0 or more, got {self.steps}")
        if self.lam < 0:
            raise ValueError(f"the search's rate weight must be 0 or more, got {self.lam}")


def search_codes(model: HierarchicalVQVAE, x: torch.Tensor, codes: list[torch.Tensor], level: int,
                 distortion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], size: float,
                 settings: SearchSettings, crop: tuple[int, ...] | None = None,
                 groups: int = 0) -> list[torch.Tensor]:
    """Codes for ``x`` with level ``level`` (0-based) searched.

    Args:
        model: the hierarchy (float32); its weights are not changed.
        x: the (padded) signal ``[1, C, *S]`` that ``codes`` were encoded from.
        codes: the encoder's codes of every level, bottom first (``model.encode(x)``).
        level: the level to search; the levels above keep their codes (they condition
            its prior) and the levels below are not sent. Above level 0 the signal is
            decoded through the priors' means (:meth:`~HierarchicalVQVAE.signal_mean`),
            which is how a file cut there decodes when its model's descent is ``"mean"``.
        distortion: ``(x_hat, x) -> scalar`` on the unpadded signal.
        size: what the rate is counted per (pixels for bpp).
        settings: steps, rate weight, step size and temperatures.
        crop: the unpadded size ``*S`` (default: all of ``x``).
        groups: search for a refinement that sends only the level's first ``groups``
            coding groups (0: the whole level). Its other positions decode as the
            file's do, to the prior's mean codeword given the sent codes
            (:meth:`~HierarchicalVQVAE.codewords`), and only the sent groups' bits
            count; the returned codes are meant for that cut alone.

    Returns a new list: ``codes`` with ``codes[level]`` replaced by the best codes found.
    """
    if settings.steps == 0:
        return list(codes)
    lv = model.levels[level]
    region = (..., *[slice(0, c) for c in (crop or x.shape[2:])])
    target = x[region]
    with torch.no_grad():
        z = model.latents(x)[level]
        cond = model.predict(level + 1, codes[level + 1]) if level + 1 < model.num_levels else None
        known = lv.prior.sent(z.shape[2:], groups, z.device) if groups else None
    z = z.detach().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=settings.lr)
    best, best_idx = math.inf, codes[level]
    lp_idx = lp = fill = None
    t0, t1 = settings.tau
    with torch.enable_grad():
        for step in range(settings.steps + 1):
            tau = t0 * (t1 / t0) ** (step / max(1, settings.steps))
            q, w, idx = lv.quantizer.relax(z, tau)
            fresh = lp_idx is None or not torch.equal(idx, lp_idx)   # the context: the current codes
            lp_idx = idx
            if known is not None:                 # the unsent positions: the prior's mean given the sent
                if fresh:
                    with torch.no_grad():
                        fill = model.expected(level, cond, idx, known)
                q = torch.where(known, q, fill)
            y = lv.decoder(q) if level == 0 else model.signal_mean(level, q)
            loss = distortion(y[region], target)
            if settings.lam:
                if fresh:
                    with torch.no_grad():
                        lp = lv.prior.log_probs(idx, cond).movedim(1, -1).reshape(w.shape)
                        if known is not None:     # only the sent groups are paid for
                            lp = lp * known.reshape(-1, 1).to(lp.dtype)
                bits = -(w * lp).sum() / math.log(2)
                loss = loss + settings.lam * bits / size
            if loss.item() < best:                # the value is that of the hard codes
                best, best_idx = loss.item(), idx.detach().clone()
            if step == settings.steps:
                break
            (grad,) = torch.autograd.grad(loss, [z])
            z.grad = grad
            opt.step()
    out = list(codes)
    out[level] = best_idx
    return out
