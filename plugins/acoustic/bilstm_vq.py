"""BiLSTM acoustic encoder + EMA vector quantizer (SemantiCodec, Liu et al., 2024, arXiv:2405.00233, §3.2).

The acoustic path encodes what the k-means semantic tokens leave out: a bidirectional LSTM reads, per 10.24 s
window, the concatenation ``[continuous AudioMAE feature, its semantic centroid]`` (rows after the trailing-silence
cutoff set to -1), a bias-free linear layer projects ``4F → F`` and an 8192-entry Euclidean EMA codebook
(``vector_quantize_pytorch.VectorQuantize``, decay 0.9, commitment weight 1) quantizes each row.

Module names match the reference's ``AudioMAEConditionQuantResEncoder`` (``encoder`` = the LSTM,
``encoder_output_linear``, ``quantizer._codebook.*``), so the official ``encoder.ckpt`` tensors load under the
prefix ``acoustic.``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import CodebookSize, PluginConfig
from codecfw.core.types import AcousticOutput, AcousticQuantizer, BuildContext, SemanticOutput, TokenStream

#: LSTM depth of the official checkpoints per stack factor K (``config.py`` of the reference).
REFERENCE_LSTM_LAYERS = {1: 4, 2: 3, 4: 2}


class BiLSTMEMAVQConfig(PluginConfig):
    """Defaults are the official SemantiCodec acoustic encoder (the LSTM depth follows the semantic K)."""

    kind: Literal["bilstm_ema_vq"] = "bilstm_ema_vq"
    lstm_layers: int | None = Field(None, gt=0, description="default: 4, 3, 2 for K = 1, 2, 4 (reference)")
    bidirectional: bool = True
    codebook_size: CodebookSize = Field(8192)
    decay: float = Field(0.9, gt=0, lt=1, description="EMA decay of the codebook")
    commitment_weight: float = Field(1.0, ge=0)
    eps: float = Field(1e-5, gt=0, description="Laplace smoothing of the EMA cluster sizes")
    kmeans_init: bool = Field(False, description="initialise the codebook by k-means on the first batch")
    threshold_ema_dead_code: int = Field(0, ge=0, description="replace codes whose EMA usage falls below this")
    rotation_trick: bool = Field(False, description="rotation-trick gradients instead of the straight-through "
                                                    "estimator the original training used")
    mark_padding: bool = Field(True, description="-1 rows after the semantic front-end's padding cutoff")
    max_batch_windows: int = Field(16, gt=0, description="10.24 s windows per LSTM call (memory bound)")
    mask_padding_in_training: bool = Field(True, description="exclude padding rows from the EMA update and the "
                                                             "commitment loss (the reference ships no training code)")


class BiLSTMEMAVQ(AcousticQuantizer):
    """BiLSTM over ``[features, quantized]`` of the semantic front-end, linear, EMA VQ.

    feature_dim : int
        F, the width of the semantic front-end's ``features`` and ``quantized``.
    segment_tokens : int | None
        Rows per 10.24 s window; the LSTM runs on each window on its own, as the reference does.
    """

    def __init__(self, cfg: BiLSTMEMAVQConfig, feature_dim: int, frame_rate: float, lstm_layers: int,
                 segment_tokens: int | None = None) -> None:
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize

        self.cfg = cfg
        self.feature_dim = self.quantized_dim = feature_dim
        self.frame_rate = frame_rate
        self.segment_tokens = segment_tokens
        self.encoder = nn.LSTM(2 * feature_dim, 2 * feature_dim, num_layers=lstm_layers, bias=True,
                               batch_first=True, bidirectional=cfg.bidirectional)
        self.encoder_output_linear = nn.Linear((4 if cfg.bidirectional else 2) * feature_dim, feature_dim, bias=False)
        self.quantizer = VectorQuantize(
            dim=feature_dim, codebook_size=cfg.codebook_size, decay=cfg.decay, eps=cfg.eps,
            commitment_weight=cfg.commitment_weight, codebook_dim=None, use_cosine_sim=False,
            kmeans_init=cfg.kmeans_init, threshold_ema_dead_code=cfg.threshold_ema_dead_code,
            rotation_trick=cfg.rotation_trick)

    def streams(self) -> list[TokenStream]:
        return [TokenStream("acoustic", self.frame_rate, self.cfg.codebook_size)]

    def encode_rows(self, rows: Tensor) -> Tensor:
        """rows : Tensor[W x T_s x 2F] (one window per item) → VQ input Tensor[W x T_s x F]."""
        return torch.cat([self.encoder_output_linear(self.encoder(chunk)[0])
                          for chunk in rows.split(self.cfg.max_batch_windows)])

    def forward(self, waveform: Tensor, semantic: SemanticOutput) -> AcousticOutput:
        """``semantic.features``/``quantized`` : Tensor[B x F x T] → AcousticOutput with ``quantized``
        Tensor[B x F x T] (padding rows -1), ``tokens["acoustic"]`` LongTensor[B x T'] (T' =
        ``extras["num_tokens"]``) and ``losses["commitment"]``; ``extras["latent"]`` is the VQ input."""
        if semantic.features is None or semantic.quantized is None:
            raise ValueError("bilstm_ema_vq needs a semantic front-end that returns both features and quantized")
        x = torch.cat([semantic.features, semantic.quantized], 1).transpose(1, 2)  # B T 2F, continuous first
        b, t, _ = x.shape
        valid = semantic.extras.get("valid") if self.cfg.mark_padding else None
        if valid is not None:
            x = torch.where(valid[..., None], x, -1.0)
        window = self.segment_tokens if self.segment_tokens and t % self.segment_tokens == 0 else t
        latent = self.encode_rows(x.reshape(-1, window, x.shape[-1])).reshape(b, t, self.feature_dim)
        mask = valid if (self.training and self.cfg.mask_padding_in_training and valid is not None) else None
        quantized, indices, commitment = self.quantizer(latent, mask=mask)
        if valid is not None:
            quantized = torch.where(valid[..., None], quantized, -1.0)
        num_tokens = semantic.extras.get("num_tokens", t)
        tokens = indices[:, :num_tokens]
        usage = torch.unique(tokens).numel() / self.cfg.codebook_size
        return AcousticOutput(quantized=quantized.transpose(1, 2), tokens={"acoustic": tokens},
                              losses={"commitment": commitment.sum()},
                              metrics={"acoustic_codebook_usage": torch.tensor(usage)},
                              extras={"latent": latent, "valid": valid})

    def from_tokens(self, tokens: dict[str, Tensor], semantic: SemanticOutput) -> AcousticOutput:
        """``{"acoustic": LongTensor[B x T]}`` → ``quantized`` Tensor[B x F x T] (codebook rows)."""
        indices = tokens["acoustic"]
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.cfg.codebook_size):
            raise ValueError(f"acoustic token out of range for a {self.cfg.codebook_size}-entry codebook: "
                             f"min {int(indices.min())}, max {int(indices.max())}")
        quantized = self.quantizer.get_output_from_indices(indices)
        return AcousticOutput(quantized=quantized.transpose(1, 2))


def build_bilstm_ema_vq(cfg: BiLSTMEMAVQConfig, ctx: BuildContext) -> BiLSTMEMAVQ:
    semantic = ctx.semantic
    if semantic is None or not semantic.quantized_dim or not semantic.feature_dim:
        raise ValueError("bilstm_ema_vq needs a semantic front-end with features and quantized outputs "
                         "(e.g. audiomae_kmeans)")
    if semantic.feature_dim != semantic.quantized_dim:
        raise ValueError(f"bilstm_ema_vq: semantic feature_dim {semantic.feature_dim} != quantized_dim "
                         f"{semantic.quantized_dim}")
    layers = cfg.lstm_layers
    if layers is None:
        k = getattr(semantic, "stack_factor", None)
        if k not in REFERENCE_LSTM_LAYERS:
            raise ValueError("bilstm_ema_vq: set lstm_layers (the semantic front-end has no stack_factor "
                             "to take the reference depth from)")
        layers = REFERENCE_LSTM_LAYERS[k]
    return BiLSTMEMAVQ(cfg, semantic.quantized_dim, semantic.frame_rate, layers,
                       getattr(semantic, "segment_tokens", None))


@hookimpl
def register_acoustic_quantizers(register):
    register("bilstm_ema_vq", BiLSTMEMAVQConfig, build_bilstm_ema_vq)
