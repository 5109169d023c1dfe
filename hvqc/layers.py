"""Convolutional building blocks shared by every modality.

Everything here is parameterised by ``dims`` (1 for speech, 2 for images), so the
image and speech paths build their encoders and decoders from the same blocks and
never import each other.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["conv", "ResBlock", "Encoder", "Decoder"]


def conv(dims: int, cin: int, cout: int, kernel: int = 3, stride: int = 1,
         transpose: bool = False) -> nn.Module:
    """A 1-D or 2-D (transposed) convolution with "same"-style padding.

    Stride-2 layers use kernel 4 and padding 1, so each halves (or doubles) the
    length of every spatial axis exactly. ``stride=0`` is the resolution-keeping
    stand-in for one of them (:class:`Encoder` with ``down=0``): kernel 4, stride 1,
    "same" padding (one more sample after than before), the same parameters.
    """
    if stride == 0:
        return (_SameConv1d if dims == 1 else _SameConv2d)(cin, cout, 4)
    if transpose:
        cls = nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d
        return cls(cin, cout, 4, stride=2, padding=1)
    cls = nn.Conv1d if dims == 1 else nn.Conv2d
    if stride == 2:
        return cls(cin, cout, 4, stride=2, padding=1)
    return cls(cin, cout, kernel, stride=1, padding=kernel // 2)


class _SameConv1d(nn.Conv1d):
    """Stride-1 convolution of an even kernel padded as PyTorch's ``padding="same"``
    (``(k - 1) // 2`` zeros before, the rest after), padded explicitly (no warning)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size[0]
        return super().forward(F.pad(x, ((k - 1) // 2, k // 2)))


class _SameConv2d(nn.Conv2d):
    """2-D version of :class:`_SameConv1d`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        return super().forward(F.pad(x, ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)))


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv1x1(act(conv3x3(act(x))))."""

    def __init__(self, dims: int, channels: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or channels
        self.body = nn.Sequential(
            nn.SiLU(), conv(dims, channels, hidden, 3),
            nn.SiLU(), conv(dims, hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Encoder(nn.Module):
    """Downsample by ``2**down`` along every spatial axis, then map to ``cout`` channels.

    Args:
        dims: 1 or 2 spatial dimensions.
        cin: input channels.
        cout: output (latent) channels.
        hidden: width of the residual trunk.
        down: number of stride-2 stages.
        blocks: number of residual blocks after downsampling.

    Shapes: ``[B, cin, *S] -> [B, cout, *(S / 2**down)]``.

    ``down=0`` keeps the resolution with the layers of ``down=1`` (its stride-2
    convolution replaced by a stride-1 one of the same kernel, :func:`conv` with
    ``stride=0``), so a level with and one without downsampling have the same
    parameters (the speech study compares them at equal size).
    """

    def __init__(self, dims: int, cin: int, cout: int, hidden: int, down: int, blocks: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        stages = max(down, 1)
        widths = [max(hidden // 2 ** (stages - 1 - i), 32) if i < stages - 1 else hidden
                  for i in range(stages)]
        c = cin
        for w in widths:
            layers += [conv(dims, c, w, stride=2 if down else 0), nn.SiLU()]
            c = w
        layers += [ResBlock(dims, c) for _ in range(blocks)]
        layers += [nn.SiLU(), conv(dims, c, cout, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Mirror of :class:`Encoder`: ``[B, cin, *S] -> [B, cout, *(S * 2**up)]``
    (``up=0``: the layers of ``up=1`` at stride 1, as for the encoder)."""

    def __init__(self, dims: int, cin: int, cout: int, hidden: int, up: int, blocks: int = 2):
        super().__init__()
        layers: list[nn.Module] = [conv(dims, cin, hidden, 3)]
        layers += [ResBlock(dims, hidden) for _ in range(blocks)]
        stages = max(up, 1)
        widths = [max(hidden // 2 ** (i + 1), 32) if i < stages - 1 else max(hidden // 2 ** stages, 32)
                  for i in range(stages)]
        c = hidden
        for w in widths:
            layers += [nn.SiLU(), conv(dims, c, w, transpose=True) if up else conv(dims, c, w, stride=0)]
            c = w
        layers += [nn.SiLU(), conv(dims, c, cout, 3)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
