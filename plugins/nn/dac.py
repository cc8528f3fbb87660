"""Descript-audio-codec building blocks: Snake, weight-normed convolutions, residual units, encoder and decoder.

Kumar et al., "High-Fidelity Audio Compression with Improved RVQGAN" (DAC, arXiv 2306.06546), with the changes
X-Codec (Ye et al., arXiv 2408.17175) made to its copy of DAC: ``output_padding = stride % 2`` on the transposed
convolutions (so odd strides such as 5 upsample exactly) and no final tanh. Both are settings here.

The module trees mirror DAC's ``nn.Sequential`` layout (``block.N`` / ``model.N``), so a DAC or X-Codec state dict
maps onto these modules by renaming ``weight_g``/``weight_v`` only. Weight norm is
``torch.nn.utils.parametrizations.weight_norm`` (state-dict keys ``parametrizations.weight.original0/1``).

Shared by the X-Codec acoustic encoder and generator and by other adversarial recipes (SACodec).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from codecfw.core.types import ChunkPolicy


def WNConv1d(*args, **kwargs) -> nn.Conv1d:
    """``nn.Conv1d`` under weight norm (norm over every dimension but the output channels)."""
    return weight_norm(nn.Conv1d(*args, **kwargs))


def WNConvTranspose1d(*args, **kwargs) -> nn.ConvTranspose1d:
    """``nn.ConvTranspose1d`` under weight norm (norm over every dimension but dim 0, as DAC does)."""
    return weight_norm(nn.ConvTranspose1d(*args, **kwargs))


def WNConv2d(*args, **kwargs) -> nn.Conv2d:
    return weight_norm(nn.Conv2d(*args, **kwargs))


def remove_weight_norm(module: nn.Module) -> nn.Module:
    """Fold every weight-norm parametrization under ``module`` into a plain weight (faster inference, export)."""
    for m in module.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return module


def cached_weights(module: nn.Module) -> contextlib.AbstractContextManager:
    """Compute each weight-normed weight once per call instead of once per use; only outside training, where the
    cache would otherwise hide the gradient path through ``g`` and ``v``."""
    return parametrize.cached() if not module.training else contextlib.nullcontext()


class Snake1d(nn.Module):
    """Snake activation ``x + sin²(αx)/α`` with a learned per-channel ``α`` (Ziyin et al., 2020).

    x : Tensor[B x C x T] (any trailing shape)
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x = x.reshape(shape[0], shape[1], -1)
        # the 1e-9 keeps α = 0 finite; the exact expression matches DAC so converted weights give identical outputs
        x = x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)
        return x.reshape(shape)


class ResidualUnit(nn.Module):
    """Snake → dilated WN-conv(k) → Snake → WN-conv(1), plus the input.

    x : Tensor[B x dim x T] → Tensor[B x dim x T]
    """

    def __init__(self, dim: int, dilation: int = 1, kernel_size: int = 7) -> None:
        super().__init__()
        pad = ((kernel_size - 1) * dilation) // 2
        self.block = nn.Sequential(
            Snake1d(dim),
            WNConv1d(dim, dim, kernel_size=kernel_size, dilation=dilation, padding=pad),
            Snake1d(dim),
            WNConv1d(dim, dim, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        # an even kernel would shorten y; crop x symmetrically as DAC does
        crop = (x.shape[-1] - y.shape[-1]) // 2
        if crop > 0:
            x = x[..., crop:-crop]
        return x + y


class EncoderBlock(nn.Module):
    """Residual units at ``dim // 2`` channels, then a strided WN-conv to ``dim`` channels (``stride``× fewer frames).

    x : Tensor[B x dim/2 x T] → Tensor[B x dim x T/stride]
    """

    def __init__(self, dim: int, stride: int, dilations: Sequence[int] = (1, 3, 9), kernel_size: int = 7) -> None:
        super().__init__()
        self.block = nn.Sequential(
            *(ResidualUnit(dim // 2, dilation=d, kernel_size=kernel_size) for d in dilations),
            Snake1d(dim // 2),
            WNConv1d(dim // 2, dim, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DACEncoder(nn.Module):
    """DAC's convolutional encoder: WN-conv(7), one :class:`EncoderBlock` per stride (channels double each time),
    Snake, WN-conv(3) to ``latent_dim``.

    Strides (8, 5, 4, 2) give a hop of 320 samples, i.e. 50 frames/s at 16 kHz (X-Codec); stock DAC uses (2, 4, 8, 8).

    waveform : Tensor[B x 1 x N] → Tensor[B x latent_dim x N/hop] (exactly when ``N`` is a multiple of the hop)
    """

    compile_target = True  # train.compile compiles it whole (core.training.trainer.compile_marked_modules)

    def __init__(self, channels: int = 64, strides: Sequence[int] = (8, 5, 4, 2), latent_dim: int = 256,
                 dilations: Sequence[int] = (1, 3, 9), kernel_size: int = 7, in_channels: int = 1) -> None:
        super().__init__()
        self.strides = tuple(strides)
        self.hop_length = math.prod(self.strides)
        layers: list[nn.Module] = [WNConv1d(in_channels, channels, kernel_size=7, padding=3)]
        dim = channels
        for stride in self.strides:
            dim *= 2
            layers.append(EncoderBlock(dim, stride, dilations, kernel_size))
        layers += [Snake1d(dim), WNConv1d(dim, latent_dim, kernel_size=3, padding=1)]
        self.block = nn.Sequential(*layers)
        self.output_dim = dim
        self.latent_dim = latent_dim

    def forward(self, waveform: Tensor) -> Tensor:
        with cached_weights(self):
            return self.block(waveform)


class DecoderBlock(nn.Module):
    """Snake, a transposed WN-conv upsampling ``stride``× (``input_dim`` → ``output_dim``), then residual units.

    ``odd_output_padding`` adds ``stride % 2`` output padding so odd strides upsample exactly (X-Codec's change;
    stock DAC has none and never uses odd strides).

    x : Tensor[B x input_dim x T] → Tensor[B x output_dim x T·stride]
    """

    def __init__(self, input_dim: int, output_dim: int, stride: int, dilations: Sequence[int] = (1, 3, 9),
                 kernel_size: int = 7, odd_output_padding: bool = True) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(input_dim),
            WNConvTranspose1d(input_dim, output_dim, kernel_size=2 * stride, stride=stride,
                              padding=math.ceil(stride / 2), output_padding=stride % 2 if odd_output_padding else 0),
            *(ResidualUnit(output_dim, dilation=d, kernel_size=kernel_size) for d in dilations),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DACDecoder(nn.Module):
    """DAC's generator: WN-conv(7) to ``channels``, one :class:`DecoderBlock` per rate (channels halve each time),
    Snake, WN-conv(7) to ``out_channels`` and an optional tanh.

    latent : Tensor[B x input_dim x T] → Tensor[B x out_channels x T·prod(rates)]
    """

    compile_target = True  # train.compile compiles it whole (core.training.trainer.compile_marked_modules)

    def __init__(self, input_dim: int = 256, channels: int = 1024, rates: Sequence[int] = (8, 5, 4, 2),
                 dilations: Sequence[int] = (1, 3, 9), kernel_size: int = 7, out_channels: int = 1,
                 tanh: bool = False, odd_output_padding: bool = True) -> None:
        super().__init__()
        self.rates = tuple(rates)
        self.hop_length = math.prod(self.rates)
        layers: list[nn.Module] = [WNConv1d(input_dim, channels, kernel_size=7, padding=3)]
        output_dim = channels
        for i, stride in enumerate(self.rates):
            input_dim_i, output_dim = channels // 2**i, channels // 2 ** (i + 1)
            layers.append(DecoderBlock(input_dim_i, output_dim, stride, dilations, kernel_size, odd_output_padding))
        layers += [Snake1d(output_dim), WNConv1d(output_dim, out_channels, kernel_size=7, padding=3)]
        if tanh:
            layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)

    def forward(self, latent: Tensor) -> Tensor:
        with cached_weights(self):
            return self.model(latent)


def convolutional_chunk_policy(sample_rate: int, hop_length: int, context_seconds: float = 1.0) -> ChunkPolicy:
    """Chunking for the DAC encoder/generator: ``context_seconds`` of neighbouring audio on each side covers their
    receptive field (about 0.55 s each side at hop 320), so chunked outputs equal whole-file ones up to float rounding.
    """
    context = math.ceil(context_seconds * sample_rate / hop_length) * hop_length
    return ChunkPolicy(context=context, align=hop_length, exact=True)
