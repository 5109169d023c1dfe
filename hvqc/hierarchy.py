"""The hierarchy of VQ levels, after HQA (Williams et al., NeurIPS 2020).

Level 0 encodes the signal; level ``l > 0`` encodes the (pre-quantization) latent of
level ``l - 1`` at half its resolution and its decoder reconstructs that latent.
Decoding from level ``l`` goes down the chain: the prediction of the level below is
re-quantized with that level's codebook (or replaced by its transmitted codes) and
decoded again, down to the signal. Each level carries a :class:`ContextPrior`
conditioned on the prediction from the level above (the top one unconditional).

Modality-agnostic: the image and speech paths only choose ``dims`` and channels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Decoder, Encoder
from .prior import ContextPrior
from .quantize import GumbelQuantizer

__all__ = ["LevelSpec", "HierarchyConfig", "Level", "LevelStats", "HierarchyOutput",
           "HierarchicalVQVAE"]


@dataclass
class LevelSpec:
    """Hyper-parameters of one level."""

    codes: int = 256
    dim: int = 64
    hidden: int = 128
    down: int = 1
    blocks: int = 2
    prior_hidden: int = 128
    prior_blocks: int = 2
    prior_phase: int = 2
    kl_weight: float = 1e-3
    commit_weight: float = 0.25


@dataclass
class HierarchyConfig:
    """Everything needed to rebuild a model; stored inside its weights file."""

    dims: int = 2
    channels: int = 3
    levels: list[LevelSpec] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HierarchyConfig":
        return cls(dims=d["dims"], channels=d["channels"],
                   levels=[LevelSpec(**lv) for lv in d["levels"]])

    def stride(self, level: int) -> int:
        """Signal samples per latent position along each axis at ``level`` (0-based)."""
        return 2 ** sum(lv.down for lv in self.levels[: level + 1])


class Level(nn.Module):
    """Encoder, quantizer, decoder and prior of one level."""

    def __init__(self, spec: LevelSpec, dims: int, cin: int, cond: int):
        super().__init__()
        self.encoder = Encoder(dims, cin, spec.dim, spec.hidden, spec.down, spec.blocks)
        self.quantizer = GumbelQuantizer(spec.codes, spec.dim, spec.kl_weight, spec.commit_weight)
        self.decoder = Decoder(dims, spec.dim, cin, spec.hidden, spec.down, spec.blocks)
        self.prior = ContextPrior(spec.codes, cond, dims, hidden=spec.prior_hidden,
                                  blocks=spec.prior_blocks, phase=spec.prior_phase)


@dataclass
class LevelStats:
    """Training quantities of one level (all scalars)."""

    recon: torch.Tensor       # MSE of the reconstruction of the level below / its spread
    quant: torch.Tensor       # KL + commitment
    bits: torch.Tensor        # prior cross-entropy, bits per position
    perplexity: torch.Tensor


@dataclass
class HierarchyOutput:
    x_hat: torch.Tensor             # level-0 reconstruction of the signal
    levels: list[LevelStats]
    latents: list[torch.Tensor]     # pre-quantization latents per level
    indices: list[torch.Tensor]
    x_hat_levels: list[torch.Tensor] = field(default_factory=list)  # signal from each level l > 0


def _spread(target: torch.Tensor) -> torch.Tensor:
    """Normaliser of a level's latent MSE: the target's variance across the batch (what
    differs between signals), at least 1/20 of its total variance. Normalising by the
    total variance instead lets a latent's constant part (often over 90 % of it on the
    small top grids) make the batch-mean prediction look good enough, and the level
    collapses to it."""
    total = target.var()
    if len(target) < 2:                               # a batch of one: the floor
        return (0.05 * total).clamp_min(1e-6)
    return torch.maximum(target.var(0).mean(), 0.05 * total).clamp_min(1e-6)


class HierarchicalVQVAE(nn.Module):
    """A stack of VQ levels; level 0 is the finest.

    Verbs: :meth:`encode` (signal -> indices per level), :meth:`decode` (indices of
    some levels -> signal, HQA's descent), :meth:`decode_mean` (one level's indices ->
    signal through the priors' mean codewords; :meth:`signal_mean` from codewords),
    :meth:`predict` (one level's codes -> prediction of the level below),
    :meth:`forward` (training).
    """

    def __init__(self, config: HierarchyConfig):
        super().__init__()
        self.config = config
        specs = config.levels
        self.levels = nn.ModuleList(
            Level(s, config.dims, config.channels if i == 0 else specs[i - 1].dim,
                  0 if i == len(specs) - 1 else s.dim)
            for i, s in enumerate(specs))

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    def latents(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Pre-quantization latents of every level, bottom first. Each level encodes the
        l2-normalised latent of the level below (what that level's quantizer sees)."""
        out, h = [], x
        for lv in self.levels:
            z = lv.encoder(h)
            out.append(z)
            h = F.normalize(z, dim=1)
        return out

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, gather=None) -> None:
        """k-means-initialise every codebook not yet initialised from its level's encoder
        outputs on ``x`` (a random codebook collapses: every input picks one code).
        ``gather(z)`` may pool the outputs of every process of a distributed run."""
        for lv, z in zip(self.levels, self.latents(x)):
            if not bool(lv.quantizer.initialised):
                lv.quantizer.init_from(z if gather is None else gather(z))

    def encode(self, x: torch.Tensor, lowest: int = 0) -> list[torch.Tensor | None]:
        """Deterministic (argmax) code indices of every level, bottom first; with
        ``lowest``, None below that level (each level encodes the latent below it, not
        its codes, so a coarse cut needs none of theirs)."""
        return [lv.quantizer.encode(z) if l >= lowest else None
                for l, (lv, z) in enumerate(zip(self.levels, self.latents(x)))]

    def predict(self, level: int, indices: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Decode one level's codes into a prediction of the level below (or the signal)."""
        lv = self.levels[level]
        return lv.decoder(lv.quantizer.decode(indices, dtype))

    def descend(self, level: int, indices: torch.Tensor,
                given: dict[int, torch.Tensor] | None = None) -> dict[int, torch.Tensor]:
        """Codes of every level below ``level``: transmitted ones from ``given``, the
        rest by re-quantizing the prediction from above (HQA's decoding)."""
        given = dict(given or {})
        codes = {level: indices}
        for l in range(level, 0, -1):
            if l - 1 in given:
                codes[l - 1] = given[l - 1]
            else:
                codes[l - 1] = self.levels[l - 1].quantizer.encode(self.predict(l, codes[l]))
        return codes

    def decode(self, level: int, indices: torch.Tensor,
               given: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Signal from the codes of ``level`` (and any transmitted lower levels)."""
        return self.predict(0, self.descend(level, indices, given)[0])

    def expected(self, level: int, cond: torch.Tensor | None, indices: torch.Tensor | None = None,
                 known: torch.Tensor | None = None) -> torch.Tensor:
        """The mean codeword of ``level`` (0-based) under its prior, ``sum_k p(k | ...) e_k``,
        at every position: ``[B, D, *S]``.

        Args:
            cond: the prediction from the level above (None at the top level).
            indices, known: codes ``[B, *S]`` of the level already known at the
                positions ``known`` ``[*S]`` (default: none; the prior's first coding
                group then gives the distribution everywhere).
        """
        prior = self.levels[level].prior
        if indices is None:
            indices = torch.zeros((cond.shape[0], *cond.shape[2:]), dtype=torch.long, device=cond.device)
        if known is None:
            known = torch.zeros(indices.shape[1:], dtype=torch.bool, device=indices.device)
        # codes off ``known`` unused; codes last: no copy where the logits are
        # channels-last already (the codec's model, :func:`hvqc.zoo.load`)
        p = torch.softmax(prior.logits(indices, known, cond).movedim(1, -1), -1)
        return (p @ self.levels[level].quantizer.codewords(p.dtype)).movedim(-1, 1)

    def decode_mean(self, level: int, indices: torch.Tensor, known: torch.Tensor | None = None,
                    upper: torch.Tensor | None = None) -> torch.Tensor:
        """Signal from the codes of ``level``, each level below it replaced by its prior's
        mean codeword given the prediction from above (:meth:`expected`). HQA's
        :meth:`descend` re-quantizes that prediction instead, i.e. picks one code where
        the prior still spreads its mass over many; the mean is the better guess in
        squared error (photo, eight BSDS500 test images: +0.23 dB / +0.014 MS-SSIM from
        level 2, +0.33 dB / +0.026 from level 3).

        With ``known`` ``[*S]``, only those positions of ``level`` hold codes (a
        refinement); the others take the prior's mean given them and ``upper``, the
        codes of the level above (None at the top level).
        """
        return self.signal_mean(level, self.codewords(level, indices, known, upper))

    def codewords(self, level: int, indices: torch.Tensor, known: torch.Tensor | None = None,
                  upper: torch.Tensor | None = None) -> torch.Tensor:
        """Codewords ``[B, D, *S]`` of ``level``'s codes; with ``known``, the prior's mean
        codeword off those positions (as :meth:`decode_mean`)."""
        q = self.levels[level].quantizer.decode(indices)
        if known is not None:
            cond = None if upper is None else self.predict(level + 1, upper)
            q = torch.where(known, q, self.expected(level, cond, indices, known))
        return q

    def signal_mean(self, level: int, q: torch.Tensor) -> torch.Tensor:
        """Signal from codewords ``q`` ``[B, D, *S]`` of ``level`` (0-based), each level below
        it replaced by its prior's mean codeword given the prediction from above;
        differentiable in ``q`` (the encoder's search, :mod:`hvqc.search`, descends it)."""
        return self.levels[0].decoder(self.mean_codewords(level, q))

    def mean_codewords(self, level: int, q: torch.Tensor) -> torch.Tensor:
        """Level 0's input from codewords ``q`` of ``level``: each level below replaced by
        its prior's mean codeword given the prediction from above (``q`` itself at level 0)."""
        for l in range(level, 0, -1):
            q = self.expected(l - 1, self.levels[l].decoder(q))
        return q

    def decoder_inputs(self, x: torch.Tensor, groups: list[int] | None = None,
                       codes: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """What level 0's decoder is fed when a file of ``x`` is decoded, one tensor per
        cut: each level's codewords (hard at level 0, :meth:`mean_codewords` above), then,
        for each level ``l`` with ``groups[l]`` > 0, the refinement that holds only its first
        ``groups[l]`` coding groups (the rest the prior's mean given them, as
        :meth:`decode_mean`). Every input is ``[B, D_0, *S_0]``; ``codes`` are ``x``'s
        (default: :meth:`encode`). Differentiable in the priors and the decoders above
        level 0 (the decode stage trains them), so plain use wants ``torch.no_grad()``."""
        if codes is None:
            with torch.no_grad():
                codes = self.encode(x)
        out = [self.mean_codewords(l, self.codewords(l, codes[l])) for l in range(self.num_levels)]
        for l, g in enumerate(groups or []):
            if g:
                known = self.levels[l].prior.sent(codes[l].shape[1:], g, x.device)
                upper = codes[l + 1] if l + 1 < self.num_levels else None
                out.append(self.mean_codewords(l, self.codewords(l, codes[l], known, upper)))
        return out

    def bits(self, codes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each level's prior cross-entropy of its codes ``codes[l]`` (bits per position)
        given the prediction from the codes of the level above: what a file pays for them.
        Differentiable in the priors and in the decoders above level 0 that condition them."""
        return [lv.prior(codes[i], self.predict(i + 1, codes[i + 1]) if i + 1 < self.num_levels else None)
                for i, lv in enumerate(self.levels)]

    def forward(self, x: torch.Tensor, tau: float = 1.0, signal_levels: bool = False) -> HierarchyOutput:
        """Training pass. Each level learns to reconstruct the (detached) latent of the
        level below; priors learn on detached codes and predictions.

        With ``signal_levels``, each level ``l > 0`` is also decoded all the way to the
        signal through the decoders below (its prediction fed down continuously, on the
        sphere), so a loss in signal space can train the upper levels.
        """
        stats, latents, indices, recs = [], [], [], []
        target, h, x_hat = x, x, None
        for i, lv in enumerate(self.levels):
            z = lv.encoder(h)
            q = lv.quantizer(z, tau)
            rec = lv.decoder(q.quantized)
            if i == 0:
                x_hat = rec
                recon = F.mse_loss(rec, target)
            else:
                recon = F.mse_loss(rec, target) / _spread(target)
            stats.append(LevelStats(recon, q.loss, torch.zeros(()), q.perplexity))
            recs.append(rec)
            latents.append(z)
            indices.append(q.indices)
            target = h = F.normalize(z.detach(), dim=1)   # what the quantizer sees
        # The priors learn the codes a file carries (the quantizer's argmax indices),
        # each conditioned on the prediction from the codes of the level above.
        for i, lv in enumerate(self.levels):
            cond = None
            if i + 1 < self.num_levels:
                with torch.no_grad():
                    cond = self.predict(i + 1, indices[i + 1])
            stats[i].bits = lv.prior(indices[i], cond)
        x_levels = []
        if signal_levels:
            for i in range(1, self.num_levels):
                h = recs[i]
                for k in range(i - 1, -1, -1):
                    h = self.levels[k].decoder(F.normalize(h, dim=1))
                x_levels.append(h)
        return HierarchyOutput(x_hat, stats, latents, indices, x_levels)
