"""A third-party acoustic quantizer: strided conv encoder + FSQ (Mentzer et al., 2023) from vector-quantize-pytorch.

This is what a plugin package looks like: a config class next to its module, and one hook that registers it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import PluginConfig
from codecfw.core.types import AcousticOutput, AcousticQuantizer, BuildContext, SemanticOutput, TokenStream


class FSQQuantizerConfig(PluginConfig):
    kind: Literal["example_fsq"] = "example_fsq"
    levels: list[int] = Field(default_factory=lambda: [8, 5, 5, 5], min_length=1)
    channels: int = Field(32, gt=0)


class FSQQuantizer(AcousticQuantizer):
    """waveform : Tensor[B x 1 x N] → one token stream at the semantic front-end's frame rate."""

    def __init__(self, cfg: FSQQuantizerConfig, ctx: BuildContext) -> None:
        super().__init__()
        from vector_quantize_pytorch import FSQ

        self.frame_rate = ctx.semantic.frame_rate
        hop = round(ctx.sample_rate / self.frame_rate)
        self.encoder = nn.Conv1d(1, cfg.channels, kernel_size=hop, stride=hop)
        self.fsq = FSQ(levels=list(cfg.levels), dim=cfg.channels)
        self.quantized_dim = cfg.channels
        self.codebook_size = math.prod(cfg.levels)

    def streams(self) -> list[TokenStream]:
        return [TokenStream("fsq", self.frame_rate, self.codebook_size)]

    def forward(self, waveform: Tensor, semantic: SemanticOutput) -> AcousticOutput:
        z = self.encoder(waveform).transpose(1, 2)  # B T D
        q, idx = self.fsq(z)
        return AcousticOutput(quantized=q.transpose(1, 2), tokens={"fsq": idx.long()})

    def from_tokens(self, tokens: dict[str, Tensor], semantic: SemanticOutput) -> AcousticOutput:
        q = self.fsq.indices_to_codes(tokens["fsq"])
        return AcousticOutput(quantized=q.transpose(1, 2), tokens=dict(tokens))


@hookimpl
def register_acoustic_quantizers(register):
    register("example_fsq", FSQQuantizerConfig, FSQQuantizer)
