"""DAC-style acoustic encoder, fusion with the semantic latent, and an EMA residual VQ (X-Codec's acoustic path).

X-Codec (Ye et al., arXiv 2408.17175) concatenates the DAC encoder's latent with the semantic encoder's latent
(acoustic first), mixes them with one linear layer (``fc_prior``) and quantizes the result with an EnCodec-style
residual VQ: EMA codebooks (decay 0.99), k-means initialisation on the first batch (50 iterations), dead-code
revival (EMA count < 2), straight-through gradients, and a random bandwidth per training step from
0.5/1/1.5/2/4 kbps (1/2/3/4/8 quantizers at 50 Hz × 10 bits).

The codebooks are ``vector_quantize_pytorch.ResidualVQ``'s ``VectorQuantize`` layers (``rotation_trick=False``: STE
as in the reference); the residual loop is written out here because X-Codec subtracts the straight-through output
(so only the first layer's commitment loss reaches the encoder) and picks the depth per step from a bandwidth list.
Under DDP the codebooks all-reduce their EMA statistics and gather k-means/dead-code samples across ranks
(``sync_codebook``), and the per-step bandwidth is broadcast from rank 0, so every rank runs the same layers.

Token streams: ``rvq0`` .. ``rvq{n-1}``, one per quantizer of the largest bandwidth.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import CodebookSize, PluginConfig
from codecfw.core.types import AcousticOutput, AcousticQuantizer, BuildContext, SemanticOutput, TokenStream

from codecfw.plugins.nn.dac import DACEncoder


class DACRVQConfig(PluginConfig):
    """DAC encoder → concat with the semantic latent → linear fusion → EMA residual VQ."""

    kind: Literal["dac_rvq"] = "dac_rvq"
    encoder_channels: int = Field(64, gt=0, description="width of the first encoder conv; doubles at each stride")
    strides: list[int] = Field(default_factory=lambda: [8, 5, 4, 2], min_length=1,
                               description="encoder strides; their product is the hop (320 → 50 Hz at 16 kHz)")
    latent_dim: int = Field(256, gt=0, description="acoustic latent width D")
    dilations: list[int] = Field(default_factory=lambda: [1, 3, 9], min_length=1)
    concat_order: Literal["acoustic_first", "semantic_first"] = Field(
        "acoustic_first", description="X-Codec: acoustic first; X-Codec 2.0: semantic first")
    quantizer_dim: int | None = Field(None, gt=0, description="fusion output / codebook width; default D + semantic")
    codebook_size: CodebookSize = Field(1024)
    bandwidths: list[float] = Field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0, 4.0], min_length=1,
                                    description="kbps; the largest sets the number of quantizers")
    bits_per_codebook: float | None = Field(None, gt=0, description="bits a token for the bandwidth arithmetic; "
                                                                   "default log2(codebook_size) (X-Codec: 10)")
    bandwidth_dropout: bool = Field(True, description="draw a bandwidth from `bandwidths` every training step")
    inference_bandwidth: float | None = Field(None, gt=0, description="kbps outside training; default: the largest")
    decay: float = Field(0.99, gt=0, lt=1, description="EMA decay of the codebooks")
    kmeans_init: bool = Field(True, description="initialise each codebook by k-means on its first batch")
    kmeans_iters: int = Field(50, gt=0)
    threshold_ema_dead_code: float = Field(2.0, ge=0, description="revive codes whose EMA count falls below this")
    sync_codebook: bool | None = Field(None, description="all-reduce codebook statistics across DDP ranks; default: "
                                                         "on when a process group exists when the codec is built")

    @model_validator(mode="after")
    def _check(self) -> DACRVQConfig:
        if self.inference_bandwidth is not None and self.inference_bandwidth > max(self.bandwidths):
            raise ValueError(f"inference_bandwidth {self.inference_bandwidth} exceeds the largest bandwidth "
                             f"{max(self.bandwidths)}")
        return self


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class DACResidualQuantizer(AcousticQuantizer):
    """waveform : Tensor[B x 1 x N], semantic.features : Tensor[B x S x T] → AcousticOutput with
    ``quantized : Tensor[B x (D+S) x T]`` (the fused latent after RVQ; the decoder splits it) and tokens
    ``rvq{i} : LongTensor[B x T]`` for the quantizers used, ``T = ceil(N / hop)``."""

    decodes_stream_prefix = True

    def __init__(self, cfg: DACRVQConfig, ctx: BuildContext) -> None:
        super().__init__()
        from vector_quantize_pytorch import ResidualVQ

        self.cfg = cfg
        self.encoder = DACEncoder(cfg.encoder_channels, cfg.strides, cfg.latent_dim, cfg.dilations)
        self.hop_length = self.encoder.hop_length
        self.frame_rate = ctx.sample_rate / self.hop_length
        semantic = ctx.semantic
        self.semantic_dim = int(getattr(semantic, "feature_dim", 0) or 0)
        if self.semantic_dim and not math.isclose(semantic.frame_rate, self.frame_rate):
            raise ValueError(f"acoustic.strides: the encoder runs at {self.frame_rate:g} frames/s (hop "
                             f"{self.hop_length}) but the semantic front-end at {semantic.frame_rate:g}; "
                             f"they must match")
        self.latent_dim = cfg.latent_dim
        fused = cfg.latent_dim + self.semantic_dim
        self.quantized_dim = cfg.quantizer_dim or fused
        self.fusion = nn.Linear(fused, self.quantized_dim)

        self.bits_per_codebook = cfg.bits_per_codebook or math.log2(cfg.codebook_size)
        self.kbps_per_quantizer = self.bits_per_codebook * self.frame_rate / 1000
        self.bandwidths = sorted(cfg.bandwidths)
        self.num_quantizers = self.quantizers_for(self.bandwidths[-1])
        self.inference_bandwidth = cfg.inference_bandwidth or self.bandwidths[-1]
        sync = _distributed() if cfg.sync_codebook is None else cfg.sync_codebook
        self.quantizer = ResidualVQ(
            dim=self.quantized_dim, num_quantizers=self.num_quantizers, codebook_size=cfg.codebook_size,
            decay=cfg.decay, kmeans_init=cfg.kmeans_init, kmeans_iters=cfg.kmeans_iters,
            threshold_ema_dead_code=cfg.threshold_ema_dead_code, rotation_trick=False, commitment_weight=1.0,
            sync_codebook=sync, sync_kmeans=True)
        self._synced = sync

    # -- accounting --------------------------------------------------------------------------------------------
    def quantizers_for(self, kbps: float) -> int:
        """Quantizers that fit ``kbps`` (X-Codec: ``max(1, floor(kbps / kbps_per_quantizer))``)."""
        return max(1, int(math.floor(kbps / self.kbps_per_quantizer + 1e-9)))

    def streams(self) -> list[TokenStream]:
        return [TokenStream(f"rvq{i}", self.frame_rate, self.cfg.codebook_size) for i in range(self.num_quantizers)]

    # -- helpers -----------------------------------------------------------------------------------------------
    def _training_quantizers(self, device: torch.device) -> int:
        if not self.cfg.bandwidth_dropout:
            return self.num_quantizers
        choice = torch.randint(len(self.bandwidths), (1,), device=device)
        if _distributed():  # every rank must run the same layers: the codebooks all-reduce per layer
            dist.broadcast(choice, src=0)
        return self.quantizers_for(self.bandwidths[int(choice)])

    def _check_sync(self) -> None:
        if _distributed() and not self._synced:
            raise RuntimeError("acoustic: training under DDP, but the codec was built before the process group "
                               "existed, so the codebooks would drift apart across ranks; build the codec after "
                               "init_process_group() or set acoustic.sync_codebook: true")

    def encode_latent(self, waveform: Tensor, semantic: SemanticOutput) -> Tensor:
        """The fused pre-quantizer latent, Tensor[B x T x (D+S)] (channels last, as the codebooks take it)."""
        n = waveform.shape[-1]
        frames = math.ceil(n / self.hop_length)
        x = nn.functional.pad(waveform, (0, frames * self.hop_length - n))
        acoustic = self.encoder(x)
        parts = [acoustic]
        if self.semantic_dim:
            sem = semantic.features
            if sem is None or sem.shape[1] != self.semantic_dim:
                raise ValueError(f"acoustic: expected semantic features Tensor[B x {self.semantic_dim} x T], got "
                                 f"{None if sem is None else tuple(sem.shape)}")
            if sem.shape[-1] != acoustic.shape[-1]:
                raise ValueError(f"acoustic: the semantic front-end gave {sem.shape[-1]} frames for {n} samples, "
                                 f"the acoustic encoder {acoustic.shape[-1]}")
            parts = [acoustic, sem] if self.cfg.concat_order == "acoustic_first" else [sem, acoustic]
        return self.fusion(torch.cat(parts, 1).transpose(1, 2))

    def quantize(self, latent: Tensor, num_quantizers: int) -> tuple[Tensor, Tensor, Tensor]:
        """latent : Tensor[B x T x C] → (quantized Tensor[B x T x C], codes LongTensor[n x B x T], commitment).

        The residual subtracts each layer's straight-through output, as EnCodec/X-Codec do."""
        residual, out = latent, torch.zeros_like(latent)
        codes, losses = [], []
        if not self.training:
            # inference: plain nearest-code search on the EMA codebooks (the codebook layers would only add
            # bookkeeping here); ‖x‖² − 2x·e + ‖e‖² as in the reference, so ties break the same way
            for layer in self.quantizer.layers[:num_quantizers]:
                embed = layer.codebook.to(residual.dtype)
                dist = residual.pow(2).sum(-1, keepdim=True) - 2 * residual @ embed.t() + embed.pow(2).sum(-1)
                indices = dist.argmin(-1)
                quantized = F.embedding(indices, embed)
                residual = residual - quantized
                out = out + quantized
                codes.append(indices)
            return out, torch.stack(codes), latent.new_zeros(())
        for layer in self.quantizer.layers[:num_quantizers]:
            quantized, indices, loss = layer(residual)
            residual = residual - quantized
            out = out + quantized
            codes.append(indices)
            losses.append(loss.reshape(()))
        return out, torch.stack(codes), torch.stack(losses).mean()

    # -- slot API ----------------------------------------------------------------------------------------------
    def forward(self, waveform: Tensor, semantic: SemanticOutput) -> AcousticOutput:
        latent = self.encode_latent(waveform, semantic)
        if self.training:
            self._check_sync()
            n_q = self._training_quantizers(latent.device)
        else:
            n_q = self.quantizers_for(self.inference_bandwidth)
        quantized, codes, commitment = self.quantize(latent, n_q)
        with torch.no_grad():
            used = codes[0].flatten().unique().numel() / self.cfg.codebook_size
        metrics = {"bandwidth_kbps": latent.new_tensor(n_q * self.kbps_per_quantizer),
                   "codebook_usage_rvq0": latent.new_tensor(used)}
        return AcousticOutput(quantized=quantized.transpose(1, 2),
                              tokens={f"rvq{i}": c for i, c in enumerate(codes)},
                              losses={"commitment": commitment} if self.training else {},
                              metrics=metrics, extras={"num_quantizers": n_q})

    def from_tokens(self, tokens: dict[str, Tensor], semantic: SemanticOutput) -> AcousticOutput:
        """Sum the codebook vectors of ``rvq0..rvq{k-1}``; any leading prefix of the streams decodes (lower bitrate)."""
        names = [s.name for s in self.streams()]
        k = 0
        while k < len(names) and names[k] in tokens:
            k += 1
        stray = sorted(set(tokens) - set(names[:k]))
        if k == 0 or stray:
            raise KeyError(f"acoustic: expected a prefix of the streams {', '.join(names)}; got {', '.join(tokens)}")
        quantized = sum(layer.get_codes_from_indices(tokens[name].long())
                        for layer, name in zip(self.quantizer.layers, names[:k]))
        return AcousticOutput(quantized=quantized.transpose(1, 2), extras={"num_quantizers": k})


@hookimpl
def register_acoustic_quantizers(register):
    register("dac_rvq", DACRVQConfig, DACResidualQuantizer)
