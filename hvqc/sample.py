"""Drawing new signals from the learned priors, top level down.

The top level's codes are drawn group by group from its unconditional prior; each
lower level is either drawn from its prior conditioned on the prediction from the
level above, or decoded deterministically (HQA's re-quantizing descent). Sampling
is seeded by a ``torch.Generator``: the same seed gives the same samples.
"""
from __future__ import annotations

import torch

from .hierarchy import HierarchicalVQVAE

__all__ = ["draw_level", "sample_codes", "sample", "sample_batches"]


@torch.no_grad()
def draw_level(model: HierarchicalVQVAE, level: int, shape: tuple[int, ...], n: int,
               cond: torch.Tensor | None, temperature: float, gen: torch.Generator) -> torch.Tensor:
    """Draw ``[n, *shape]`` codes of one level (0-based) from its prior, group by group."""
    prior = model.levels[level].prior
    idx = torch.zeros((n, *shape), dtype=torch.long)
    known = torch.zeros(shape, dtype=torch.bool)
    for mask in prior.masks(shape):
        logits = prior.logits(idx, known, cond)                    # [n, K, *shape]
        rows = logits.movedim(1, -1)[:, mask] / temperature        # [n, m, K]
        draws = torch.multinomial(torch.softmax(rows.reshape(-1, rows.shape[-1]).float(), -1),
                                  1, generator=gen).view(n, -1)
        idx[:, mask] = draws
        known = known | mask
    return idx


@torch.no_grad()
def sample_codes(model: HierarchicalVQVAE, size: tuple[int, ...], n: int, temperature: float = 1.0,
                 seed: int = 0, lowest: int = 0, lower: str = "prior",
                 top: str = "prior") -> dict[int, torch.Tensor]:
    """Codes of every level for ``n`` samples of a signal of ``size`` (a multiple of the top stride).

    Args:
        lowest: finest level (0-based) drawn from a prior; below it the descent is deterministic.
        lower: "prior" draws levels below the top from their conditional priors (down to
            ``lowest``); "decode" decodes every level below the top deterministically.
        top: "prior" draws the top level from its learned prior; "uniform" draws each
            top code uniformly (what the HQA notebook does), to show what the prior adds.
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    if lower not in ("prior", "decode"):
        raise ValueError(f"lower must be 'prior' or 'decode', got {lower!r}")
    if top not in ("prior", "uniform"):
        raise ValueError(f"top must be 'prior' or 'uniform', got {top!r}")
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    shapes = [tuple(s // cfg.stride(l) for s in size) for l in range(model.num_levels)]
    t = model.num_levels - 1
    if top == "uniform":
        k = model.levels[t].quantizer.num_codes
        codes = {t: torch.randint(k, (n, *shapes[t]), generator=gen)}
    else:
        codes = {t: draw_level(model, t, shapes[t], n, None, temperature, gen)}
    floor = t if lower == "decode" else lowest
    for l in range(t - 1, floor - 1, -1):
        cond = model.predict(l + 1, codes[l + 1])
        codes[l] = draw_level(model, l, shapes[l], n, cond, temperature, gen)
    codes.update(model.descend(floor, codes[floor]))
    return codes


@torch.no_grad()
def sample(model: HierarchicalVQVAE, size: tuple[int, ...], n: int, **kw) -> torch.Tensor:
    """``[n, C, *size]`` signals drawn from the priors (see :func:`sample_codes`)."""
    return model.predict(0, sample_codes(model, size, n, **kw)[0])


@torch.no_grad()
def sample_batches(model: HierarchicalVQVAE, width: int, height: int, n: int, seed: int = 0,
                   batch: int = 16, progress: bool = False, **kw) -> torch.Tensor:
    """``[n, C, height, width]`` samples in [0, 1], drawn ``batch`` at a time on a grid padded
    to the top stride and cropped; batch ``b`` uses seed ``seed * 1000003 + b``."""
    import math

    from tqdm import tqdm
    stride = model.config.stride(model.num_levels - 1)
    size = (math.ceil(height / stride) * stride, math.ceil(width / stride) * stride)
    parts = []
    for b in tqdm(range(0, n, batch), desc="sample", disable=None if progress and n > batch else True,
                  leave=False):
        x = sample(model, size, min(batch, n - b), seed=seed * 1000003 + b, **kw)
        parts.append(x[..., :height, :width].clamp(0, 1))
    return torch.cat(parts)
