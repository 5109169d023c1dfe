"""Learned priors over a level's code indices.

``ContextPrior`` models ``p(z_l | c_l)`` where ``c_l`` is the decoder's prediction of
level ``l`` from the level above (absent at the top level, which makes it
unconditional). Positions are split into ``phase**dims`` interleaved groups on a
regular grid (a checkerboard-style context model, He et al., CVPR 2021, Fig. 3):
the first group is coded from ``c_l`` alone, each later group also sees the codes
of the groups already coded. Every group is one parallel network call, so decoding
costs ``phase**dims`` calls per level, not one per position.

The prior returns logits; turning them into integer tables is the entropy coder's
job (:mod:`hvqc.entropy`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ResBlock, conv

__all__ = ["ContextPrior", "phase_masks"]


def _phase_order(phase: int, dims: int) -> list[tuple[int, ...]]:
    """Grid offsets in coding order. For a 2x2 grid: anchor, its diagonal, then the rest."""
    if phase == 1:
        return [(0,) * dims]
    if dims == 1:
        return [(i,) for i in range(phase)]
    order = [(0, 0), (1, 1), (0, 1), (1, 0)] if phase == 2 else []
    order += [(i, j) for i in range(phase) for j in range(phase) if (i, j) not in order]
    return order


def phase_masks(shape: tuple[int, ...], phase: int) -> torch.Tensor:
    """Boolean masks ``[G, *shape]``, one per coding group, that partition the grid."""
    offsets = _phase_order(phase, len(shape))
    grids = torch.meshgrid(*[torch.arange(n) % phase for n in shape], indexing="ij")
    return torch.stack([torch.stack([g == o for g, o in zip(grids, off)]).all(0)
                        for off in offsets])


class ContextPrior(nn.Module):
    """Group-wise autoregressive prior over code indices.

    Args:
        num_codes: codebook size K.
        cond_channels: channels of the conditioning prediction (0 at the top level).
        dims: 1 or 2 spatial dimensions.
        embed: embedding width of the already-coded indices.
        hidden: width of the network.
        blocks: residual blocks.
        phase: grid period; ``phase**dims`` coding groups.
    """

    def __init__(self, num_codes: int, cond_channels: int = 0, dims: int = 2, embed: int = 32,
                 hidden: int = 128, blocks: int = 2, phase: int = 2):
        super().__init__()
        self.num_codes, self.cond_channels, self.dims, self.phase = num_codes, cond_channels, dims, phase
        self.embed = nn.Embedding(num_codes, embed)
        cin = embed + 1 + cond_channels
        self.net = nn.Sequential(
            conv(dims, cin, hidden, 3), *[ResBlock(dims, hidden) for _ in range(blocks)],
            nn.SiLU(), conv(dims, hidden, num_codes, 1))

    def masks(self, shape: tuple[int, ...], device=None) -> torch.Tensor:
        return phase_masks(tuple(shape), self.phase).to(device)

    def logits(self, indices: torch.Tensor, known: torch.Tensor,
               cond: torch.Tensor | None) -> torch.Tensor:
        """Logits ``[B, K, *S]`` given the codes at ``known`` positions.

        Args:
            indices: ``[B, *S]`` int64; values where ``known`` is False are ignored.
            known: ``[*S]`` bool, the positions already coded.
            cond: ``[B, C, *S]`` conditioning prediction, or None at the top level.
        """
        k = known.to(self.embed.weight.dtype)
        e = self.embed(indices.clamp(0, self.num_codes - 1)).movedim(-1, 1) * k
        parts = [e, k.expand(indices.shape[0], 1, *indices.shape[1:])]
        if self.cond_channels:
            parts.append(cond.to(e.dtype))
        return self.net(torch.cat(parts, 1))

    def group_logits(self, indices: torch.Tensor, cond: torch.Tensor | None):
        """Yield ``(mask, logits)`` per coding group, each from the codes of earlier groups.

        Used both in training (all groups at once) and by the codec's encoder; the
        decoder calls :meth:`logits` group by group as codes arrive.
        """
        masks = self.masks(indices.shape[1:], indices.device)
        known = torch.zeros_like(masks[0])
        for m in masks:
            yield m, self.logits(indices, known, cond)
            known = known | m

    def forward(self, indices: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Mean code length in bits per position (cross-entropy of the true codes)."""
        total = indices.new_zeros((), dtype=torch.float32)
        for m, lg in self.group_logits(indices, cond):
            ce = F.cross_entropy(lg, indices, reduction="none")
            total = total + (ce * m).sum()
        return total / (indices.numel() * math.log(2))
