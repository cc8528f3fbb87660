"""Semantic anchoring: SACodec's semantic path (Dong et al., 2025, arXiv 2512.20944).

Only SACodec's abstract is public: "a lightweight projector aligns acoustic features with a frozen, large-scale
mHuBERT codebook ... guaranteeing full codebook utilisation". codecfw's reading of it (every open choice is a
setting; docs/sacodec.md lists them with their defaults):

::

    z = DACEncoder(waveform)                        the codec's own encoder,              [B x D x T]
    p = Projector(z)                                lightweight MLP into teacher space,   [B x T x 768]
    k = argmin_j ‖A p − c_j‖²                        nearest frozen centroid (A: optional OPQ rotation)
    e = Aᵀ c_k  (straight-through or rotation trick to p)
    quantized = BackProjector(e)                    the anchor in encoder space,          [B x D x T]

Training adds the *anchoring loss* ``mse(p, h)`` between projected frames and the frozen teacher's features ``h``
for the same frames (mHuBERT-147 2nd iteration, layer 9 by default: the features its released k-means index was
built from), so the projector learns to land where the teacher's units live. Because the codebook is frozen and
was fitted on the teacher's own features, all codes stay reachable: utilisation is logged to check that claim.

The teacher is needed for training only: it is loaded on first use (the first training step, or clustering), kept
outside the module tree and never saved in checkpoints, so encoding and decoding neither run nor load it.

Licence: mHuBERT-147 weights and its faiss index are CC-BY-NC-SA-4.0 (non-commercial).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import CodebookSize, PluginConfig
from codecfw.core.types import FrozenPart, SemanticFrontend, SemanticOutput, TokenStream
from codecfw.plugins.nn.dac import DACEncoder, convolutional_chunk_policy
from codecfw.plugins.semantic.anchor_codebook import AnchorCodebook, load_codebook_file
from codecfw.plugins.semantic.ssl_teacher import HiddenStateReader, TeacherSettings, load_teacher

MHUBERT_ID = "utter-project/mHuBERT-147-base-2nd-iter"


class AnchorTeacherConfig(TeacherSettings):
    """The frozen SSL model whose features the projector is pulled towards (training and clustering only).
    Defaults: mHuBERT-147 2nd iteration, hidden state 9, per-utterance input normalisation."""

    model: str = Field(MHUBERT_ID, description="hub id or local folder of a transformers HubertModel-compatible model")
    layers: Literal["mean"] | int | list[int] = Field(9, description="hidden_states index (0 = embedding output); "
                                                                      "the released k-means index used layer 9")
    normalize: bool = Field(True, description="per-utterance zero-mean/unit-variance input (mHuBERT's do_normalize)")


class SemanticAnchoringConfig(PluginConfig):
    kind: Literal["semantic_anchoring"] = "semantic_anchoring"
    codebook: str | None = Field(None, description="centroids: codecfw cluster .safetensors, .npy [K x D] or the "
                                                   "mHuBERT faiss .index; None = random (tests, before clustering)")
    codebook_size: CodebookSize = Field(16384)
    teacher_dim: int = Field(768, gt=0, description="feature dimension of the teacher (mHuBERT base: 768)")
    codebook_dim: int | None = Field(None, gt=0, description="centroid dimension when they live in a rotated space "
                                                            "(64 for the mHuBERT faiss OPQ index); None = teacher_dim")
    encoder_channels: int = Field(64, gt=0)
    strides: list[int] = Field(default_factory=lambda: [8, 5, 4, 2], min_length=1)
    latent_dim: int = Field(256, gt=0, description="channels of the codec latent the decoder reads")
    projector_hidden: int = Field(512, ge=0, description="hidden width of the projector MLP; 0 = one linear layer")
    gradient: Literal["straight_through", "rotation_trick", "detach"] = Field(
        "straight_through", description="how the decoder's gradient reaches the projector through the frozen "
                                        "centroids; detach: it stops there, the projector learns the assignment "
                                        "from the anchoring loss only (the frozen codebook cannot follow a "
                                        "straight-through push, docs/sacodec.md)")
    normalize_latent: bool = Field(False, description="layer-normalise the encoder latent over its channels, per "
                                                      "frame and without affine parameters: fixes the scale of z, "
                                                      "which the decoder reaches only straight through the "
                                                      "quantizers and which can otherwise drift (docs/sacodec.md)")
    teacher: AnchorTeacherConfig | None = Field(default_factory=AnchorTeacherConfig,
                                                description="None disables the anchoring loss")


def rotate_to(source: Tensor, target: Tensor) -> Tensor:
    """The rotation trick (Fifty et al., 2024): ``target`` in value, gradients rotated from ``source``."""
    from vector_quantize_pytorch.vector_quantize_pytorch import rotate_to as _rotate_to

    shape = source.shape
    return _rotate_to(source.reshape(-1, shape[-1]), target.reshape(-1, shape[-1])).reshape(shape)


class SemanticAnchoringFrontend(SemanticFrontend):
    """See the module docstring. waveform : Tensor[B x 1 x N] → tokens LongTensor[B x N/hop]."""

    def __init__(self, cfg: SemanticAnchoringConfig, sample_rate: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = DACEncoder(cfg.encoder_channels, cfg.strides, cfg.latent_dim)
        self.hop_length = self.encoder.hop_length
        self.frame_rate = sample_rate / self.hop_length
        self.sample_rate = sample_rate
        self.feature_dim = self.quantized_dim = cfg.latent_dim
        hidden = cfg.projector_hidden
        self.projector = (nn.Sequential(nn.Linear(cfg.latent_dim, hidden), nn.GELU(), nn.Linear(hidden, cfg.teacher_dim))
                          if hidden else nn.Linear(cfg.latent_dim, cfg.teacher_dim))
        self.back_projector = nn.Linear(cfg.teacher_dim, cfg.latent_dim)
        self.codebook = AnchorCodebook(cfg.codebook_size, cfg.teacher_dim, cfg.codebook_dim)
        if cfg.codebook:
            self.codebook.load(load_codebook_file(cfg.codebook), source=cfg.codebook)
        # The teacher is held outside the module tree: it is frozen, reloadable from its source, and needed only for
        # the anchoring loss and clustering, so it is loaded on first use and never written into checkpoints. A
        # codec built for encode/decode therefore never reads the teacher's weights (nor needs them on disk).
        self._teacher: nn.Module | None = None
        self.reader: HiddenStateReader | None = None

    @property
    def teacher(self) -> nn.Module | None:
        """The frozen teacher (loaded on first access; ``None`` when ``semantic.teacher`` is null)."""
        cfg = self.cfg
        if cfg.teacher is None:
            return None
        if self._teacher is None:
            teacher = load_teacher(cfg.teacher)
            reader = HiddenStateReader(cfg.teacher, teacher, self.sample_rate)
            if reader.dim != cfg.teacher_dim:
                raise ValueError(f"semantic.teacher_dim is {cfg.teacher_dim} but the teacher {cfg.teacher.model!r} "
                                 f"has hidden size {reader.dim}")
            teacher.train(self.training and cfg.teacher.teacher_train_mode)
            self.__dict__["_teacher"], self.reader = teacher, reader  # __dict__: not a submodule (see __init__)
        return self._teacher

    def _teacher_features(self, waveform: Tensor) -> Tensor:
        teacher = self.teacher
        param = next(teacher.parameters(), None)
        if param is not None and param.device != waveform.device:
            teacher.to(waveform.device)
        return self.reader(teacher, waveform)

    def streams(self) -> list[TokenStream]:
        return [TokenStream("semantic", self.frame_rate, self.cfg.codebook_size)]

    def anchor(self, projected: Tensor) -> tuple[Tensor, Tensor]:
        """projected : Tensor[B x T x D_teacher] → (tokens[B x T], anchored[B x T x D_teacher] with gradients)."""
        tokens = self.codebook.assign(projected.detach())
        centroids = self.codebook.lookup(tokens).to(projected.dtype)
        if self.cfg.gradient == "rotation_trick" and self.training:
            return tokens, rotate_to(projected, centroids)
        if self.cfg.gradient == "detach":
            return tokens, centroids
        return tokens, projected + (centroids - projected).detach()

    def forward(self, waveform: Tensor) -> SemanticOutput:
        z = self.encoder(waveform)  # B D T
        if self.cfg.normalize_latent:  # per frame: chunked encoding stays equal to whole-file encoding
            z = F.layer_norm(z.transpose(1, 2), (z.shape[1],)).transpose(1, 2)
        projected = self.projector(z.transpose(1, 2))
        tokens, anchored = self.anchor(projected)
        quantized = self.back_projector(anchored).transpose(1, 2)
        losses, metrics = {}, {}
        counts = torch.bincount(tokens.flatten(), minlength=self.cfg.codebook_size).float()
        probs = counts / counts.sum()
        metrics["semantic_usage"] = (counts > 0).float().mean()
        metrics["semantic_perplexity"] = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
        if self.training and self.cfg.teacher is not None:
            target = self._teacher_features(waveform)  # B x D_teacher x T'
            target = F.interpolate(target, size=projected.shape[1], mode="linear", align_corners=False) \
                if target.shape[-1] != projected.shape[1] else target
            losses["anchoring"] = F.mse_loss(projected, target.transpose(1, 2).to(projected.dtype))
        return SemanticOutput(features=z, quantized=quantized, tokens={"semantic": tokens}, losses=losses,
                              metrics=metrics)

    def from_tokens(self, tokens: dict[str, Tensor]) -> SemanticOutput:
        anchored = self.codebook.lookup(tokens["semantic"])
        return SemanticOutput(quantized=self.back_projector(anchored).transpose(1, 2), tokens=dict(tokens))

    def extract_features(self, waveform: Tensor) -> Tensor:
        """The teacher's features, Tensor[B x D_teacher x T]: what ``codecfw cluster`` fits the frozen codebook on."""
        if self.cfg.teacher is None:
            raise ValueError("semantic.teacher is null: clustering needs the teacher whose units the codebook holds")
        return self._teacher_features(waveform)

    def pretrained_parts(self) -> list[FrozenPart]:
        """The anchoring codebook (``codebook: null`` = random) and the teacher, when there is one."""
        codebook = FrozenPart("codebook", "the anchor codebook (frozen centroids of the teacher's units)",
                              bool(self.cfg.codebook), "set semantic.codebook to the output of `codecfw cluster "
                              "RECIPE`, a .npy [K x D] or the mHuBERT faiss .index", feeds_features=False)
        return [codebook] + ([self.cfg.teacher.frozen_part("semantic.teacher")] if self.cfg.teacher else [])

    def chunk_policy(self):
        """Tokens depend on the conv encoder's receptive field only (the teacher never runs when encoding)."""
        return convolutional_chunk_policy(self.sample_rate, self.hop_length)

    def train(self, mode: bool = True) -> SemanticAnchoringFrontend:
        super().train(mode)
        if self._teacher is not None:  # the teacher is frozen: no dropout or masking on the anchoring target
            self._teacher.train(mode and self.cfg.teacher.teacher_train_mode)
        return self


@hookimpl
def register_semantic_frontends(register):
    register("semantic_anchoring", SemanticAnchoringConfig,
             lambda cfg, ctx: SemanticAnchoringFrontend(cfg, ctx.sample_rate))
