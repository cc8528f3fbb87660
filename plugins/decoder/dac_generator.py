"""DAC-style generator with X-Codec's semantic reconstruction head (adversarial objective).

After the residual VQ, X-Codec (Ye et al., arXiv 2408.17175) projects the quantized fused latent twice:
``fc_post2`` to the acoustic width feeds the DAC decoder (X-Codec's copy: odd-stride output padding, no tanh), and
``fc_post1`` to the teacher width feeds a conv stack whose output regresses the teacher features with MSE (weight
×100 in the reference). Only the acoustic branch is needed to decode tokens.

The generator and discriminators train through the shared loop (LSGAN + feature matching there); this slot returns
the waveform and its own ``"semantic_reconstruction"`` loss.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import PluginConfig
from codecfw.core.types import AcousticOutput, BuildContext, ChunkPolicy, Decoder, DecoderOutput, SemanticOutput
from codecfw.plugins.nn.dac import DACDecoder, convolutional_chunk_policy
from codecfw.plugins.nn.semantic_conv import SemanticConvConfig, SemanticDecoder


class SemanticHeadConfig(SemanticConvConfig):
    """The semantic reconstruction head (X-Codec's ``decoder_semantic``): defaults are the reference's."""

    enabled: bool = Field(True, description="build the head and return its loss")
    loss: Literal["mse", "cosine"] = Field("mse", description="mse: X-Codec; cosine: 1 - cos per frame "
                                                              "(defined but unused in the reference)")


class DACGeneratorConfig(PluginConfig):
    """Linear projection of the quantized latent → DAC decoder; plus the semantic reconstruction head."""

    kind: Literal["dac_generator"] = "dac_generator"
    channels: int = Field(1024, gt=0, description="width after the first conv; halves at each rate")
    rates: list[int] = Field(default_factory=lambda: [8, 5, 4, 2], min_length=1,
                             description="upsampling rates; their product must equal the acoustic hop")
    dilations: list[int] = Field(default_factory=lambda: [1, 3, 9], min_length=1)
    latent_dim: int | None = Field(None, gt=0, description="width fed to the DAC decoder; default: the acoustic "
                                                          "quantizer's latent_dim (X-Codec's D)")
    tanh: bool = Field(False, description="final tanh (stock DAC); X-Codec removes it")
    odd_output_padding: bool = Field(True, description="output_padding = stride % 2 (X-Codec; needed for stride 5)")
    semantic_head: SemanticHeadConfig = Field(default_factory=SemanticHeadConfig)


class DACGenerator(Decoder):
    """acoustic.quantized : Tensor[B x C x T] → waveform Tensor[B x 1 x num_samples]; in training also
    ``losses["semantic_reconstruction"]`` against ``semantic.extras["teacher_features"] : Tensor[B x H x T]``."""

    objective = "adversarial"

    def __init__(self, cfg: DACGeneratorConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg = cfg
        self.sample_rate = ctx.sample_rate
        acoustic = ctx.acoustic
        in_dim = int(acoustic.quantized_dim)
        latent_dim = cfg.latent_dim or int(getattr(acoustic, "latent_dim", in_dim))
        hop = getattr(acoustic, "hop_length", None)
        self.acoustic_proj = nn.Linear(in_dim, latent_dim)
        self.generator = DACDecoder(latent_dim, cfg.channels, cfg.rates, cfg.dilations, tanh=cfg.tanh,
                                    odd_output_padding=cfg.odd_output_padding)
        if hop is not None and hop != self.generator.hop_length:
            raise ValueError(f"decoder.rates: upsample {self.generator.hop_length}× but the acoustic quantizer's hop "
                             f"is {hop}")
        head = cfg.semantic_head
        self.semantic_proj: nn.Linear | None = None
        self.semantic_head: SemanticDecoder | None = None
        if head.enabled:
            teacher_dim = getattr(ctx.semantic, "teacher_dim", None)
            if not teacher_dim:
                raise ValueError("decoder.semantic_head: the semantic front-end exposes no teacher features "
                                 "(teacher_dim); use an ssl_teacher front-end or set semantic_head.enabled: false")
            self.semantic_proj = nn.Linear(in_dim, teacher_dim)
            self.semantic_head = SemanticDecoder(teacher_dim, teacher_dim, head.channels or teacher_dim,
                                                 head.channel_ratios, head.strides, head.kernel_size,
                                                 head.block_dilations, head.unit_kernel_size)

    def forward(self, semantic: SemanticOutput, acoustic: AcousticOutput, num_samples: int) -> Tensor:
        latent = self.acoustic_proj(acoustic.quantized.transpose(1, 2)).transpose(1, 2)
        y = self.generator(latent)
        if y.shape[-1] >= num_samples:
            return y[..., :num_samples]
        return F.pad(y, (0, num_samples - y.shape[-1]))

    def chunk_policy(self) -> ChunkPolicy:
        return convolutional_chunk_policy(self.sample_rate, self.generator.hop_length)

    def reconstruct_semantic(self, acoustic: AcousticOutput) -> Tensor:
        """The head's estimate of the teacher features, Tensor[B x H x T]."""
        if self.semantic_head is None:
            raise RuntimeError("decoder: the semantic head is disabled (semantic_head.enabled: false)")
        return self.semantic_head(self.semantic_proj(acoustic.quantized.transpose(1, 2)).transpose(1, 2))

    def training_output(self, semantic: SemanticOutput, acoustic: AcousticOutput, waveform: Tensor) -> DecoderOutput:
        y_hat = self(semantic, acoustic, waveform.shape[-1])
        losses = {}
        if self.semantic_head is not None:
            target = semantic.extras.get("teacher_features")
            if target is None:
                raise ValueError("decoder: semantic.extras['teacher_features'] is missing; the semantic head needs "
                                 "the teacher's features as its target")
            estimate = self.reconstruct_semantic(acoustic)
            target = target.detach()
            if self.cfg.semantic_head.loss == "mse":
                losses["semantic_reconstruction"] = F.mse_loss(estimate, target)
            else:
                losses["semantic_reconstruction"] = (1 - F.cosine_similarity(estimate, target, dim=1)).mean()
        return DecoderOutput(waveform=y_hat, losses=losses)


@hookimpl
def register_decoders(register):
    register("dac_generator", DACGeneratorConfig, DACGenerator)
