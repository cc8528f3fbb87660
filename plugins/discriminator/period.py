"""Multi-period discriminator (HiFi-GAN, Kong et al., arXiv 2010.05646; as in DAC and X-Codec 2.0).

Each sub-discriminator folds the waveform into ``Tensor[B x 1 x N/p x p]`` and runs 2-D convolutions along time only,
so it sees every ``p``-th sample: periodic structure at periods 2, 3, 5, 7, 11 by default.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import PluginConfig
from codecfw.plugins.nn.dac import WNConv2d


class MultiPeriodDiscriminatorConfig(PluginConfig):
    kind: Literal["multi_period"] = "multi_period"
    periods: list[int] = Field(default_factory=lambda: [2, 3, 5, 7, 11], min_length=1)
    channels: list[int] = Field(default_factory=lambda: [32, 128, 512, 1024, 1024], min_length=1,
                                description="conv widths; all but the last stride 3 along time")
    kernel_size: int = Field(5, gt=0)
    stride: int = Field(3, gt=0)
    negative_slope: float = Field(0.1, ge=0)


class PeriodDiscriminator(nn.Module):
    """y : Tensor[B x 1 x N] → (logits Tensor[B x 1 x T' x p], feature maps)."""

    def __init__(self, period: int, channels: list[int], kernel_size: int, stride: int, slope: float) -> None:
        super().__init__()
        self.period, self.slope = period, slope
        widths = [1, *channels]
        self.convs = nn.ModuleList(
            WNConv2d(widths[i], widths[i + 1], (kernel_size, 1), (stride if i < len(channels) - 1 else 1, 1),
                     padding=(kernel_size // 2, 0))
            for i in range(len(channels)))
        self.conv_post = WNConv2d(widths[-1], 1, (3, 1), padding=(1, 0))

    def forward(self, y: Tensor) -> tuple[Tensor, list[Tensor]]:
        n = y.shape[-1]
        y = F.pad(y, (0, (-n) % self.period), mode="reflect")
        x = y.reshape(y.shape[0], 1, -1, self.period)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.slope)
            features.append(x)
        return self.conv_post(x), features


class MultiPeriodDiscriminator(nn.Module):
    """y : Tensor[B x 1 x N] → one (logits, feature maps) per period."""

    def __init__(self, cfg: MultiPeriodDiscriminatorConfig) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            PeriodDiscriminator(p, cfg.channels, cfg.kernel_size, cfg.stride, cfg.negative_slope) for p in cfg.periods)

    def forward(self, y: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        return [d(y) for d in self.discriminators]


@hookimpl
def register_discriminators(register):
    register("multi_period", MultiPeriodDiscriminatorConfig, lambda cfg, ctx: MultiPeriodDiscriminator(cfg))
