"""Test-local plugins for the training loop: a tiny multi-scale discriminator, an L1 reconstruction loss and an
acoustic quantizer with vector-quantize-pytorch's EMA codebook (k-means init, dead-code revival) for the DDP tests.

They follow the contracts the loop defines (see ``codecfw.core.training.objectives``): a discriminator returns one
``(logits, [feature maps])`` per sub-discriminator, a loss has a ``weight`` and ``forward(y_hat, y) -> scalar``.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import PluginConfig
from codecfw.core.types import AcousticOutput, AcousticQuantizer, BuildContext, SemanticOutput, TokenStream


class ToyDiscriminatorConfig(PluginConfig):
    kind: Literal["toy_discriminator"] = "toy_discriminator"
    channels: int = Field(4, gt=0)
    scales: int = Field(2, gt=0)


class ToyDiscriminator(nn.Module):
    """``scales`` conv stacks on the waveform average-pooled by 1, 2, 4, ... (MelGAN's multi-scale idea)."""

    def __init__(self, cfg: ToyDiscriminatorConfig) -> None:
        super().__init__()
        c = cfg.channels
        self.stacks = nn.ModuleList(
            nn.ModuleList([nn.Conv1d(1, c, 5, stride=2, padding=2), nn.Conv1d(c, c, 5, stride=2, padding=2),
                           nn.Conv1d(c, 1, 3, padding=1)]) for _ in range(cfg.scales))

    def forward(self, y: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        out = []
        for i, stack in enumerate(self.stacks):
            x = F.avg_pool1d(y, 2 ** i) if i else y
            maps = []
            for conv in stack[:-1]:
                x = F.leaky_relu(conv(x), 0.1)
                maps.append(x)
            out.append((stack[-1](x), maps))
        return out


class ToyL1Config(PluginConfig):
    kind: Literal["toy_l1"] = "toy_l1"
    weight: float = Field(1.0, ge=0)
    start_step: int = Field(0, ge=0)


class ToyL1(nn.Module):
    def forward(self, y_hat: Tensor, y: Tensor) -> Tensor:
        return F.l1_loss(y_hat, y)


class ToyEMAQuantizerConfig(PluginConfig):
    kind: Literal["toy_ema_vq"] = "toy_ema_vq"
    dim: int = Field(8, gt=0)
    codebook_size: int = Field(16, gt=1)
    decay: float = 0.8
    kmeans_init: bool = True
    threshold_ema_dead_code: float = 1.0
    sync_codebook: bool | None = None  # None: vector-quantize-pytorch's default (on when distributed)


class ToyEMAQuantizer(AcousticQuantizer):
    """Strided conv + ``vector_quantize_pytorch.VectorQuantize`` with an EMA codebook (buffers, not parameters)."""

    def __init__(self, cfg: ToyEMAQuantizerConfig, ctx: BuildContext) -> None:
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize

        sem = ctx.semantic
        self.frame_rate, self.quantized_dim, self.size = sem.frame_rate, cfg.dim, cfg.codebook_size
        self.down = nn.Conv1d(1, cfg.dim, sem.hop, stride=sem.hop)
        self.vq = VectorQuantize(cfg.dim, cfg.codebook_size, decay=cfg.decay, kmeans_init=cfg.kmeans_init,
                                 kmeans_iters=2, threshold_ema_dead_code=cfg.threshold_ema_dead_code,
                                 sync_codebook=cfg.sync_codebook, channel_last=False)

    def streams(self) -> list[TokenStream]:
        return [TokenStream("acoustic", self.frame_rate, self.size)]

    def forward(self, waveform: Tensor, semantic: SemanticOutput) -> AcousticOutput:
        q, idx, loss = self.vq(self.down(waveform))
        return AcousticOutput(quantized=q, tokens={"acoustic": idx}, losses={"commitment": loss.sum()})

    def from_tokens(self, tokens: dict[str, Tensor], semantic: SemanticOutput) -> AcousticOutput:
        return AcousticOutput(quantized=self.vq.get_output_from_indices(tokens["acoustic"]))  # B D T (channel first)


@hookimpl
def register_discriminators(register):
    register("toy_discriminator", ToyDiscriminatorConfig, lambda cfg, ctx: ToyDiscriminator(cfg))


@hookimpl
def register_losses(register):
    register("toy_l1", ToyL1Config, lambda cfg, ctx: ToyL1())


@hookimpl
def register_acoustic_quantizers(register):
    register("toy_ema_vq", ToyEMAQuantizerConfig, ToyEMAQuantizer)
