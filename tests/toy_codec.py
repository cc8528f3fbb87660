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


# -- a tiny diffusion-objective decoder (training-loop tests) --------------------------------------------------


class ToyDiffusionDecoderConfig(PluginConfig):
    kind: Literal["toy_diffusion"] = "toy_diffusion"
    sampling_steps: int = Field(4, gt=0)


class ToyDiffusionDecoder(Decoder):
    """ε-prediction on the waveform itself, conditioned on the upsampled latents (DDPM with ᾱ(t) = 1 − t,
    deterministic DDIM sampling). Training draws t and ε from torch's RNG, so resume tests check RNG restoring."""

    objective = "diffusion"

    def __init__(self, cfg: ToyDiffusionDecoderConfig, ctx: BuildContext) -> None:
        super().__init__()
        hop = ctx.semantic.hop
        self.steps = cfg.sampling_steps
        self.cond = nn.ConvTranspose1d(ctx.semantic.quantized_dim + ctx.acoustic.quantized_dim, 4, hop, stride=hop)
        self.net = nn.Conv1d(1 + 4 + 1, 1, 3, padding=1)

    def _condition(self, semantic: SemanticOutput, acoustic: AcousticOutput, n: int) -> Tensor:
        c = self.cond(torch.cat([semantic.quantized, acoustic.quantized], 1))
        return F.pad(c, (0, max(0, n - c.shape[-1])))[..., :n]

    def _eps(self, x_t: Tensor, cond: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x_t, cond, t.view(-1, 1, 1).expand_as(x_t)], 1))

    def training_output(self, semantic: SemanticOutput, acoustic: AcousticOutput, waveform: Tensor) -> DecoderOutput:
        cond = self._condition(semantic, acoustic, waveform.shape[-1])
        t = torch.rand(waveform.shape[0], device=waveform.device)
        noise = torch.randn_like(waveform)
        a = (1 - t).clamp(min=1e-3).view(-1, 1, 1)
        x_t = a.sqrt() * waveform + (1 - a).sqrt() * noise
        return DecoderOutput(losses={"diffusion": F.mse_loss(self._eps(x_t, cond, t), noise)})

    def forward(self, semantic: SemanticOutput, acoustic: AcousticOutput, num_samples: int) -> Tensor:
        cond = self._condition(semantic, acoustic, num_samples)
        x = torch.randn(cond.shape[0], 1, num_samples, device=cond.device)
        ts = torch.linspace(1, 0, self.steps + 1, device=cond.device)
        for t, t_next in zip(ts[:-1], ts[1:]):
            a, a_next = (1 - t).clamp(min=1e-3), (1 - t_next).clamp(min=1e-3)
            eps = self._eps(x, cond, t.expand(x.shape[0]))
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return x


@hookimpl(specname="register_decoders")
def register_toy_diffusion_decoder(register):
    register("toy_diffusion", ToyDiffusionDecoderConfig, ToyDiffusionDecoder)
