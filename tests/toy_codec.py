"""A tiny codec for tests: strided-conv semantic stub, conv encoder + nearest-neighbour VQ, transposed-conv decoder.

It exercises the slot contracts without any pretrained model; the framework's tests (training loop, token files,
encode/decode, evaluation) register this module by hand with ``registry.register_module(toy_codec)``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import PluginConfig
from codecfw.core.types import (AcousticOutput, AcousticQuantizer, BuildContext, Decoder, DecoderOutput,
                                SemanticFrontend, SemanticOutput, TokenStream)


class _VQ(nn.Module):
    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        self.codebook = nn.Parameter(torch.randn(size, dim) * 0.1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z : Tensor[B x D x T] → (quantized, indices[B x T], commitment loss)."""
        flat = z.transpose(1, 2)  # B T D
        dist = torch.cdist(flat, self.codebook.expand(flat.shape[0], -1, -1))
        idx = dist.argmin(-1)
        q = self.codebook[idx].transpose(1, 2)
        loss = F.mse_loss(z, q.detach()) + F.mse_loss(q, z.detach())
        return z + (q - z).detach(), idx, loss

    def lookup(self, idx: Tensor) -> Tensor:
        return self.codebook[idx].transpose(1, 2)


class ToySemanticConfig(PluginConfig):
    kind: Literal["toy_semantic"] = "toy_semantic"
    hop: int = Field(160, gt=0)
    dim: int = Field(8, gt=0)
    codebook_size: int = Field(16, gt=1)


class ToySemantic(SemanticFrontend):
    def __init__(self, cfg: ToySemanticConfig, sample_rate: int) -> None:
        super().__init__()
        self.hop = cfg.hop
        self.frame_rate = sample_rate / cfg.hop
        self.feature_dim = self.quantized_dim = cfg.dim
        self.size = cfg.codebook_size
        self.conv = nn.Conv1d(1, cfg.dim, cfg.hop, stride=cfg.hop)
        self.vq = _VQ(cfg.dim, cfg.codebook_size)

    def streams(self) -> list[TokenStream]:
        return [TokenStream("semantic", self.frame_rate, self.size)]

    def forward(self, waveform: Tensor) -> SemanticOutput:
        features = self.conv(waveform)
        q, idx, loss = self.vq(features)
        return SemanticOutput(features=features, quantized=q, tokens={"semantic": idx}, losses={"semantic_commit": loss})

    def from_tokens(self, tokens: dict[str, Tensor]) -> SemanticOutput:
        return SemanticOutput(quantized=self.vq.lookup(tokens["semantic"]))

    def extract_features(self, waveform: Tensor) -> Tensor:
        return self.conv(waveform)


class ToyAcousticConfig(PluginConfig):
    kind: Literal["toy_vq"] = "toy_vq"
    dim: int = Field(8, gt=0)
    codebook_size: int = Field(32, gt=1)


class ToyAcoustic(AcousticQuantizer):
    def __init__(self, cfg: ToyAcousticConfig, ctx: BuildContext) -> None:
        super().__init__()
        sem = ctx.semantic
        self.hop = sem.hop
        self.frame_rate = sem.frame_rate
        self.quantized_dim = cfg.dim
        self.size = cfg.codebook_size
        self.conv = nn.Conv1d(1 + sem.quantized_dim, cfg.dim, 1)
        self.down = nn.Conv1d(1, 1, self.hop, stride=self.hop)
        self.vq = _VQ(cfg.dim, cfg.codebook_size)

    def streams(self) -> list[TokenStream]:
        return [TokenStream("acoustic", self.frame_rate, self.size)]

    def forward(self, waveform: Tensor, semantic: SemanticOutput) -> AcousticOutput:
        z = self.conv(torch.cat([self.down(waveform), semantic.quantized], 1))
        q, idx, loss = self.vq(z)
        return AcousticOutput(quantized=q, tokens={"acoustic": idx}, losses={"commitment": loss})

    def from_tokens(self, tokens: dict[str, Tensor], semantic: SemanticOutput) -> AcousticOutput:
        return AcousticOutput(quantized=self.vq.lookup(tokens["acoustic"]))


class ToyDecoderConfig(PluginConfig):
    kind: Literal["toy_decoder"] = "toy_decoder"


class ToyDecoder(Decoder):
    objective = "adversarial"

    def __init__(self, cfg: ToyDecoderConfig, ctx: BuildContext) -> None:
        super().__init__()
        hop = ctx.semantic.hop
        self.up = nn.ConvTranspose1d(ctx.semantic.quantized_dim + ctx.acoustic.quantized_dim, 1, hop, stride=hop)

    def forward(self, semantic: SemanticOutput, acoustic: AcousticOutput, num_samples: int) -> Tensor:
        y = self.up(torch.cat([semantic.quantized, acoustic.quantized], 1))
        return F.pad(y, (0, max(0, num_samples - y.shape[-1])))[..., :num_samples]

    def training_output(self, semantic: SemanticOutput, acoustic: AcousticOutput, waveform: Tensor) -> DecoderOutput:
        return DecoderOutput(waveform=self(semantic, acoustic, waveform.shape[-1]))


@hookimpl
def register_semantic_frontends(register):
    register("toy_semantic", ToySemanticConfig, lambda cfg, ctx: ToySemantic(cfg, ctx.sample_rate))


@hookimpl
def register_acoustic_quantizers(register):
    register("toy_vq", ToyAcousticConfig, ToyAcoustic)


@hookimpl
def register_decoders(register):
    register("toy_decoder", ToyDecoderConfig, ToyDecoder)


TOY_RECIPE = {
    "name": "toy",
    "sample_rate": 16000,
    "semantic": {"kind": "toy_semantic"},
    "acoustic": {"kind": "toy_vq"},
    "decoder": {"kind": "toy_decoder"},
}
