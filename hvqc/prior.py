"""Learned priors over a level's code indices.

``ContextPrior`` models ``p(z_l | c_l)`` where ``c_l`` is the decoder's prediction of
level ``l`` from the level above (absent at the top level, which makes it
unconditional). Positions are split into ``phase**dims`` interleaved groups on a
regular grid (a checkerboard-style context model, He et al., CVPR 2021, Fig. 3):
the first group is coded from ``c_l`` alone, each later group also sees the codes
of the groups already coded. Every group is one parallel network call, so decoding
costs ``phase**dims`` calls per level, not one per position.

Training scores every group on the whole grid (:meth:`ContextPrior.group_logits`).
The codec only needs each group's own positions, so it uses
:meth:`ContextPrior.logits_at`: the conditioning's share of the first convolution is
computed once per level (:meth:`ContextPrior.cond_term`), and the last residual block
and the output layer run only on the group's sub-grid (a strided convolution). Same
function, about half the arithmetic.

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


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding,
          stride: int = 1) -> torch.Tensor:
    return (F.conv1d if x.dim() == 3 else F.conv2d)(x, weight, bias, stride, padding)


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

    def sent(self, shape: tuple[int, ...], groups: int, device=None) -> torch.Tensor:
        """The positions ``[*shape]`` that the first ``groups`` coding groups hold (a
        refinement's sent codes)."""
        return self.masks(tuple(shape), device)[:groups].any(0)

    def offsets(self) -> list[tuple[int, ...]]:
        """Grid offset of each coding group, in the order of :meth:`masks`: group ``g``
        holds the positions ``offsets()[g] + phase * n`` along every axis."""
        return _phase_order(self.phase, self.dims)

    @property
    def _context_channels(self) -> int:
        return self.embed.embedding_dim + 1

    def _context(self, indices: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """The first layer's input channels that carry coded indices: ``[B, embed + 1, *S]``
        (the rest are the conditioning). With ``known`` a stack of masks ``[G, *S]``, one
        context per mask, stacked group-major on the batch axis: ``[G * B, embed + 1, *S]``."""
        shape = indices.shape[1:]
        k = known.to(self.embed.weight.dtype)
        k = (k if known.dim() > len(shape) else k[None]).unsqueeze(1).unsqueeze(1)   # [G, 1, 1, *S]
        e = self.embed(indices.clamp(0, self.num_codes - 1)).movedim(-1, 1)       # [B, E, *S]
        return torch.cat([e.unsqueeze(0) * k, k.expand(-1, indices.shape[0], -1, *shape)],
                         2).flatten(0, 1)

    def logits(self, indices: torch.Tensor, known: torch.Tensor,
               cond: torch.Tensor | None) -> torch.Tensor:
        """Logits ``[B, K, *S]`` given the codes at ``known`` positions.

        Args:
            indices: ``[B, *S]`` int64; values where ``known`` is False are ignored.
            known: ``[*S]`` bool, the positions already coded.
            cond: ``[B, C, *S]`` conditioning prediction, or None at the top level.
        """
        base = self.cond_term(cond, tuple(indices.shape[1:]), indices.shape[0])
        return self.net[1:](self._first(indices, known, base))

    def cond_term(self, cond: torch.Tensor | None, shape: tuple[int, ...], batch: int = 1) -> torch.Tensor:
        """The first convolution's response to the conditioning plus its bias,
        ``[B, hidden, *S]``: the part of its output that no coding group changes."""
        first = self.net[0]
        if not self.cond_channels:
            return first.bias.view(1, -1, *[1] * self.dims).expand(batch, -1, *shape)
        return _conv(cond.to(first.weight.dtype), first.weight[:, self._context_channels:], first.bias,
                     first.padding)

    def logits_at(self, indices: torch.Tensor, known: torch.Tensor, base: torch.Tensor,
                  offset: tuple[int, ...]) -> torch.Tensor:
        """:meth:`logits` on one coding group's sub-grid only (positions ``offset + phase * n``):
        ``[B, K, *sub]``, equal to ``logits(...)`` sliced there up to float rounding.

        ``base`` is :meth:`cond_term` of the level's conditioning. The residual blocks
        but the last run on the whole grid (their outputs reach the group through
        the 3x3 kernels); the last block's convolution runs strided from ``offset``.
        """
        return self._head(*self._trunk(self._first(indices, known, base)), offset)

    def _first(self, indices: torch.Tensor, known: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """The first convolution's output: ``base`` (:meth:`cond_term`) plus the coded
        indices' share, skipped while nothing is known (those channels are all zeros)."""
        if not known.any():
            return base
        return base + self._first_context(self._context(indices, known))

    def _first_context(self, ctx: torch.Tensor) -> torch.Tensor:
        first = self.net[0]
        return _conv(ctx, first.weight[:, :self._context_channels], None, first.padding)

    def _trunk(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The residual blocks but the last, on the whole grid, and the padded activation
        the last block's convolution reads (None without blocks)."""
        blocks = self.net[1:-2]
        if not len(blocks):
            return h, None
        for block in blocks[:-1]:
            h = block(h)
        act, mid = blocks[-1].body[:2]
        return h, F.pad(act(h), (mid.padding[0],) * 2 * self.dims)

    def _head(self, h: torch.Tensor, a: torch.Tensor | None, offset: tuple[int, ...]) -> torch.Tensor:
        """Logits on the sub-grid at ``offset`` from :meth:`_trunk`'s outputs: the last
        block's convolution strided from there, then the output layer."""
        sub = (..., *[slice(o, None, self.phase) for o in offset])
        h = h[sub]
        if a is not None:
            _, mid, act2, proj = self.net[-3].body
            a = a[(..., *[slice(o, None) for o in offset])]
            h = h + proj(act2(_conv(a, mid.weight, mid.bias, 0, self.phase)))
        return self.net[-1](F.silu(h))

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

    def log_probs(self, indices: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """``log p(k | context)`` ``[B, K, *S]`` at every position, each position's from the
        context its coding group sees (the codes of earlier groups).

        Training and the search call this: every group's pass runs in one batch (groups
        stacked on the batch axis), so a step launches each layer once rather than once
        per group. Equal to :meth:`logits_at` group by group (what the coder uses) up to
        float rounding.
        """
        shape = tuple(indices.shape[1:])
        b = indices.shape[0]
        masks = self.masks(shape, indices.device)
        known = torch.cat([torch.zeros_like(masks[:1]), masks.cumsum(0)[:-1] > 0])
        groups = [g for g in range(len(masks)) if masks[g].any()]
        base = self.cond_term(cond, shape, b)
        h = base.repeat(len(groups), *[1] * (base.dim() - 1)) + self._first_context(
            self._context(indices, known[groups]))
        h, a = self._trunk(h)
        out = base.new_empty((b, self.num_codes, *shape))
        offsets = self.offsets()
        for j, g in enumerate(groups):
            rows, offset = slice(j * b, (j + 1) * b), offsets[g]
            sub = (..., *[slice(o, None, self.phase) for o in offset])
            out[sub] = F.log_softmax(self._head(h[rows], None if a is None else a[rows], offset), 1)
        return out

    def forward(self, indices: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Mean code length in bits per position (cross-entropy of the true codes)."""
        lp = self.log_probs(indices, cond).gather(1, indices.unsqueeze(1))
        return -lp.sum() / (indices.numel() * math.log(2))
