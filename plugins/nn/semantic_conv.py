"""X-Codec's semantic convolution stacks (``modules/semantic_module.py`` of the reference).

The encoder turns teacher features into the semantic half of the pre-quantizer latent; the decoder is the semantic
reconstruction head after the quantizer. Plain ``nn.Conv1d`` with ELU residual units, no weight norm, no temporal
resampling at the default strides (1, 1). Module names follow ``transformers.XcodecModel`` (the reference wraps each
conv in one more ``.conv`` level; the X-Codec converter strips it).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field
from torch import Tensor, nn

from codecfw.core.config import StrictModel


class SemanticConvConfig(StrictModel):
    """Shape of X-Codec's semantic conv stacks (encoder and reconstruction head); defaults are the reference's 2
    blocks of 2 ELU residual units at stride 1."""

    channels: int | None = Field(None, gt=0, description="stack width; default: the teacher's hidden size")
    channel_ratios: list[float] = Field(default_factory=lambda: [1.0, 1.0], min_length=1)
    strides: list[int] = Field(default_factory=lambda: [1, 1], min_length=1)
    kernel_size: int = Field(3, gt=0)
    block_dilations: list[int] = Field(default_factory=lambda: [1, 1], min_length=1)
    unit_kernel_size: int = Field(3, gt=0)


class ConvResidualUnit(nn.Module):
    """``x + conv1x1(ELU(conv_k(ELU(x))))``, both convolutions without bias.

    x : Tensor[B x C x T] → Tensor[B x C x T]
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        self.activation = nn.ELU()
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2 * dilation,
                               dilation=dilation, bias=False)
        self.conv2 = nn.Conv1d(channels, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.activation(self.conv1(self.activation(x))))


class SemanticEncoderBlock(nn.Module):
    """Residual units, then a conv (kernel 3 at stride 1, else ``2·stride``) to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dilations: Sequence[int],
                 unit_kernel_size: int) -> None:
        super().__init__()
        self.res_units = nn.ModuleList(ConvResidualUnit(in_channels, unit_kernel_size, d) for d in dilations)
        kernel = 3 if stride == 1 else 2 * stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, padding=(kernel - 1) // 2)

    def forward(self, x: Tensor) -> Tensor:
        for unit in self.res_units:
            x = unit(x)
        return self.conv(x)


class SemanticEncoder(nn.Module):
    """conv(k) without bias, then one :class:`SemanticEncoderBlock` per stride.

    features : Tensor[B x in_channels x T] → Tensor[B x out_channels x T / prod(strides)]
    """

    def __init__(self, in_channels: int = 768, channels: int = 768, channel_ratios: Sequence[float] = (1, 1),
                 strides: Sequence[int] = (1, 1), kernel_size: int = 3, block_dilations: Sequence[int] = (1, 1),
                 unit_kernel_size: int = 3) -> None:
        super().__init__()
        if len(channel_ratios) != len(strides):
            raise ValueError(f"semantic encoder: channel_ratios {list(channel_ratios)} and strides {list(strides)} "
                             f"must have the same length")
        self.conv = nn.Conv1d(in_channels, channels, kernel_size, padding=kernel_size // 2, bias=False)
        blocks, dim = [], channels
        for ratio, stride in zip(channel_ratios, strides):
            out = int(channels * ratio)
            blocks.append(SemanticEncoderBlock(dim, out, stride, block_dilations, unit_kernel_size))
            dim = out
        self.conv_blocks = nn.ModuleList(blocks)
        self.out_channels = dim

    def forward(self, features: Tensor) -> Tensor:
        x = self.conv(features)
        for block in self.conv_blocks:
            x = block(x)
        return x


class SemanticDecoderBlock(nn.Module):
    """A conv (kernel 3) at stride 1 or a transposed conv (kernel ``2·stride``) otherwise, then residual units."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dilations: Sequence[int],
                 unit_kernel_size: int) -> None:
        super().__init__()
        if stride == 1:
            self.conv: nn.Module = nn.Conv1d(in_channels, out_channels, 3, padding=1)
        else:
            self.conv = nn.ConvTranspose1d(in_channels, out_channels, 2 * stride, stride, padding=(stride + 1) // 2,
                                           output_padding=stride % 2)
        self.res_units = nn.ModuleList(ConvResidualUnit(out_channels, unit_kernel_size, d) for d in dilations)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        for unit in self.res_units:
            x = unit(x)
        return x


class SemanticDecoder(nn.Module):
    """The semantic reconstruction head: conv(k) without bias, one :class:`SemanticDecoderBlock` per stride, conv(k)
    without bias to ``out_channels``.

    latent : Tensor[B x in_channels x T] → Tensor[B x out_channels x T · prod(strides)]
    """

    def __init__(self, in_channels: int = 768, out_channels: int = 768, channels: int = 768,
                 channel_ratios: Sequence[float] = (1, 1), strides: Sequence[int] = (1, 1), kernel_size: int = 3,
                 block_dilations: Sequence[int] = (1, 1), unit_kernel_size: int = 3) -> None:
        super().__init__()
        if len(channel_ratios) != len(strides):
            raise ValueError(f"semantic decoder: channel_ratios {list(channel_ratios)} and strides {list(strides)} "
                             f"must have the same length")
        self.conv1 = nn.Conv1d(in_channels, int(channels * channel_ratios[0]), kernel_size, padding=kernel_size // 2,
                               bias=False)
        blocks = []
        for i, stride in enumerate(strides):
            dim = int(channels * channel_ratios[i])
            out = int(channels * channel_ratios[i + 1]) if i + 1 < len(channel_ratios) else channels
            blocks.append(SemanticDecoderBlock(dim, out, stride, block_dilations, unit_kernel_size))
        self.conv_blocks = nn.ModuleList(blocks)
        self.conv2 = nn.Conv1d(channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, latent: Tensor) -> Tensor:
        x = self.conv1(latent)
        for block in self.conv_blocks:
            x = block(x)
        return self.conv2(x)
