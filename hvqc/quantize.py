"""The stochastic vector quantizer of HQA (Williams et al., NeurIPS 2020, Sec. 3).

Training draws a relaxed one-hot code from a Gumbel-softmax over the negative
squared distances between the encoder output and the codebook; the loss adds the
KL divergence of that posterior to a uniform prior and a probability-weighted
commitment term (relative to the spread of the codebook). At evaluation the code
is the argmax (nearest codeword), so the transmitted indices are deterministic.

Encoder outputs and codewords are compared on the unit sphere (both l2-normalised,
as in Yu et al., "Vector-quantized image modeling with improved VQGAN", ICLR 2022):
distances are bounded, so neither side can run away and the Gumbel posterior
stays genuinely stochastic at the start of training. ``sharpness`` scales the
negative distances into logits.

Codebooks are initialised from encoder outputs (k-means on a batch) and dead
codes are reset in bulk to recent encoder outputs: a codebook initialised at
random collapses on a small compute budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["QuantizeOutput", "GumbelQuantizer"]


@dataclass
class QuantizeOutput:
    """Result of :meth:`GumbelQuantizer.forward`.

    Attributes:
        quantized: ``[B, D, *S]`` codeword (soft mixture in training, hard at eval).
        indices: ``[B, *S]`` int64 argmax codes.
        loss: scalar, ``kl_weight * KL + commit_weight * commitment``.
        perplexity: scalar, ``exp(H)`` of the batch code histogram.
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    perplexity: torch.Tensor


def _to_rows(z: torch.Tensor) -> torch.Tensor:
    """``[B, D, *S] -> [B * prod(S), D]``, l2-normalised."""
    return F.normalize(z.movedim(1, -1).reshape(-1, z.shape[1]), dim=1)


class GumbelQuantizer(nn.Module):
    """Codebook quantizer with a Gumbel-softmax posterior over ``-||z - e_k||^2``.

    Args:
        num_codes: codebook size K.
        dim: codeword dimension D.
        kl_weight: weight of KL(q(k|z) || Uniform(K)).
        commit_weight: weight of ``sum_k q(k|z) ||z - e_k||^2`` divided by the mean
            squared distance between the batch's outputs and the codebook (scale-free).
        sharpness: logits are ``-sharpness * ||z - e_k||^2`` (distances lie in [0, 4]).
            Re-estimated from the data at initialisation and at every dead-code reset
            (:meth:`calibrate`) so that the posterior stays informative but stochastic.
    """

    def __init__(self, num_codes: int, dim: int, kl_weight: float = 1e-3,
                 commit_weight: float = 0.25, sharpness: float = 10.0):
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        self.kl_weight, self.commit_weight = kl_weight, commit_weight
        self.codebook = nn.Parameter(torch.randn(num_codes, dim) / math.sqrt(dim))
        self.register_buffer("usage", torch.zeros(num_codes))   # hits since the last reset
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.register_buffer("sharpness", torch.tensor(float(sharpness)))

    @torch.no_grad()
    def calibrate(self, z: torch.Tensor, nats: float = 8.0, momentum: float = 0.0) -> None:
        """Set ``sharpness`` so that, on ``z``, the mean gap between the nearest and the
        average codeword is ``nats`` in logit units (an EMA with ``momentum``)."""
        d = self.distances(_to_rows(z.detach()).float())
        gap = (d.mean(1) - d.min(1).values).mean().clamp_min(1e-4)
        self.sharpness.mul_(momentum).add_((1 - momentum) * nats / gap)

    def codewords(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The l2-normalised codebook ``[K, D]``."""
        cb = self.codebook if dtype is None else self.codebook.to(dtype)
        return F.normalize(cb, dim=1)

    def distances(self, rows: torch.Tensor) -> torch.Tensor:
        """Squared distances between normalised rows and codewords, ``[N, D] -> [N, K]``."""
        cb = self.codewords(rows.dtype)
        return (rows.pow(2).sum(1, keepdim=True) - 2 * rows @ cb.t()
                + cb.pow(2).sum(1)[None]).clamp_min(0)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest codeword indices: ``[B, D, *S] -> [B, *S]`` (int64)."""
        idx = self.distances(_to_rows(z)).argmin(1)
        return idx.view(z.shape[0], *z.shape[2:])

    def decode(self, indices: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Codewords for indices: ``[B, *S] -> [B, D, *S]``."""
        return F.embedding(indices, self.codewords(dtype)).movedim(-1, 1)

    def relax(self, z: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Straight-through quantization without noise, for optimising ``z`` itself
        (:mod:`hvqc.search`): the forward value is the nearest codeword, the gradient that of
        ``softmax(-sharpness * d / tau)`` over the codebook.

        Returns ``(quantized [B, D, *S], weights [B * prod(S), K], indices [B, *S])``; the
        weights are one-hot in value and soft in gradient.
        """
        d = self.distances(_to_rows(z))
        soft = torch.softmax(-self.sharpness.to(d.dtype) * d / tau, 1)
        idx = d.argmin(1)
        w = F.one_hot(idx, self.num_codes).to(soft.dtype) + soft - soft.detach()
        q = (w @ self.codewords(d.dtype)).view(z.shape[0], *z.shape[2:], self.dim).movedim(-1, 1)
        return q, w, idx.view(z.shape[0], *z.shape[2:])

    def forward(self, z: torch.Tensor, tau: float = 1.0) -> QuantizeOutput:
        """Quantize ``z`` (``[B, D, *S]``); stochastic and differentiable in training mode."""
        rows = _to_rows(z)
        d = self.distances(rows)
        logits = -self.sharpness * d
        indices = d.argmin(1)
        if self.training:
            soft = F.gumbel_softmax(logits, tau=tau, hard=False)
            # Relaxed sample forward; the encoder also gets the straight-through
            # gradient (identity), which a near-one-hot softmax alone would not give it.
            q_rows = soft @ self.codewords() + rows - rows.detach()
            log_q = F.log_softmax(logits, 1)
            q = log_q.exp()
            kl = (q * (log_q + math.log(self.num_codes))).sum(1).mean()
            # Commitment relative to the mean distance to the codebook: on the sphere,
            # with ``sharpness`` re-calibrated, an absolute term is minimised by shrinking
            # encoder outputs and codebook into one tiny cap, which carries no information
            # the decoder can use (the collapse seen on the 2x2 and 1x1 levels).
            commit = (q * d).sum(1).mean() / d.mean().detach().clamp_min(1e-6)
            loss = self.kl_weight * kl + self.commit_weight * commit
            with torch.no_grad():
                counts = torch.bincount(indices, minlength=self.num_codes).float()
                self.usage.add_(counts)
                hist = counts / len(indices)
        else:
            q_rows = self.codewords()[indices]
            loss = z.new_zeros(())
            hist = torch.bincount(indices, minlength=self.num_codes).float() / len(indices)
        quantized = q_rows.view(z.shape[0], *z.shape[2:], self.dim).movedim(-1, 1)
        ent = -(hist * hist.clamp_min(1e-12).log()).sum()
        return QuantizeOutput(quantized, indices.view(z.shape[0], *z.shape[2:]), loss, ent.exp())

    @torch.no_grad()
    def init_from(self, z: torch.Tensor, iters: int = 10) -> None:
        """k-means initialisation of the codebook from encoder outputs ``[B, D, *S]``."""
        rows = _to_rows(z.detach()).float()
        if len(rows) < self.num_codes:
            rows = rows.repeat(math.ceil(self.num_codes / len(rows)), 1)
            rows = rows + 1e-3 * rows.std() * torch.randn_like(rows)
        cb = rows[torch.randperm(len(rows))[: self.num_codes]].clone()
        for _ in range(iters):
            assign = (rows @ cb.t()).argmax(1)        # spherical k-means
            sums = torch.zeros_like(cb).index_add_(0, assign, rows)
            counts = torch.bincount(assign, minlength=self.num_codes).float()
            filled = counts > 0
            cb[filled] = F.normalize(sums[filled], dim=1)
        self.codebook.data.copy_(cb)
        self.usage.zero_()
        self.initialised.fill_(True)
        self.calibrate(z)

    @torch.no_grad()
    def reset_dead(self, z: torch.Tensor, threshold: float = 0.03) -> int:
        """Move every code hit fewer than ``threshold`` times its fair share since the
        last call onto a random encoder output from ``z`` (plus a little noise), all at
        once. Returns how many were reset."""
        fair = self.usage.sum() / self.num_codes
        dead = (self.usage < threshold * fair).nonzero().flatten()
        self.usage.zero_()
        if len(dead) == 0 or fair == 0:
            return 0
        rows = _to_rows(z.detach()).float()
        pick = rows[torch.randint(len(rows), (len(dead),), device=rows.device)]
        noise = 0.01 * rows.std() * torch.randn_like(pick)
        self.codebook.data[dead] = pick + noise
        return len(dead)
