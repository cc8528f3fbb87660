"""Vocos-style decoder: ConvNeXt backbone at the token frame rate + iSTFT head (adversarial objective).

Vocos (Siuzdak, 2023, arXiv 2306.00814) keeps the whole network at the frame rate of its conditioning and predicts
the complex STFT of the output (log-magnitude and phase per bin); one inverse STFT makes the waveform. A DAC-style
generator instead upsamples 320× through transposed convolutions, so most of its compute runs at the sample rate.
At 50 Hz conditioning and 16 kHz output the iSTFT hop equals the codec's hop (320 samples) and no upsampling is
needed: the same configuration as Vocos's EnCodec model (hop 320, ``n_fft`` = 4 × hop = 1280, "same" padding, so
``T`` frames give exactly ``T × 320`` samples). ``upsample`` > 1 optionally raises the frame rate first with a
transposed convolution (iSTFT hop = hop / upsample: finer time resolution for twice the backbone cost).

::

    x = acoustic.quantized                            [B x C x T]       (C = the quantized latent's channels)
    x = Upsample(x)  (only when upsample > 1)         [B x C x uT]
    h = VocosBackbone(x)                              [B x uT x dim]    embed conv(7) → N × ConvNeXt → LayerNorm
    y = ISTFTHead(h)                                  [B x uT·hop/u]    Linear → (log|S|, φ) → iSTFT

The backbone and head are the ``vocos`` package's own modules (``pip install 'codecfw[vocos]'``). The generator and
discriminators train through the shared loop exactly as ``dac_generator`` does (same discriminators, GAN and
feature-matching losses, reconstruction-loss plugins).
"""

from __future__ import annotations

import math
from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import PluginConfig
from codecfw.core.types import AcousticOutput, BuildContext, ChunkPolicy, Decoder, DecoderOutput, SemanticOutput


class VocosISTFTConfig(PluginConfig):
    """ConvNeXt backbone (width ``dim``, ``num_layers`` blocks) + iSTFT head; defaults sized for 16 kHz speech."""

    kind: Literal["vocos_istft"] = "vocos_istft"
    dim: int = Field(384, gt=0, description="backbone width (Vocos: 512 at 24 kHz)")
    intermediate_dim: int = Field(1152, gt=0, description="ConvNeXt inverted-bottleneck width (Vocos: 3 × dim)")
    num_layers: int = Field(8, gt=0, description="ConvNeXt blocks (Vocos: 8)")
    layer_scale_init: float | None = Field(None, gt=0, description="ConvNeXt layer scale; default 1 / num_layers")
    upsample: int = Field(1, gt=0, description="frame-rate multiplier before the backbone (transposed conv); "
                                                "the iSTFT hop is the codec's hop / upsample")
    n_fft: int | None = Field(None, gt=0, description="FFT size of the head; default 4 × the iSTFT hop "
                                                      "(Vocos's EnCodec model: 1280 at hop 320)")
    padding: Literal["same", "center"] = Field("same", description="iSTFT padding; 'same' gives T × hop samples")


class VocosISTFTDecoder(Decoder):
    """acoustic.quantized : Tensor[B x C x T] → waveform Tensor[B x 1 x num_samples]."""

    objective = "adversarial"

    def __init__(self, cfg: VocosISTFTConfig, ctx: BuildContext) -> None:
        super().__init__()
        try:
            from vocos.heads import ISTFTHead
            from vocos.models import VocosBackbone
        except ImportError as exc:  # optional dependency
            raise ImportError("decoder.kind 'vocos_istft' needs the 'vocos' package, which is unavailable "
                              f"({exc}); install it with: pip install 'codecfw[vocos]'") from None
        self.cfg = cfg
        self.sample_rate = ctx.sample_rate
        acoustic = ctx.acoustic
        in_dim = int(acoustic.quantized_dim)
        hop = getattr(acoustic, "hop_length", None)
        if hop is None:
            frame_rate = getattr(acoustic, "frame_rate", None)
            if not frame_rate:
                raise ValueError("decoder.kind 'vocos_istft': the acoustic quantizer exposes neither hop_length nor "
                                 "frame_rate, so the iSTFT hop is unknown")
            hop = ctx.sample_rate / frame_rate
        if hop != int(hop) or int(hop) % cfg.upsample:
            raise ValueError(f"decoder.upsample: the codec's hop is {hop} samples, which upsample={cfg.upsample} "
                             f"does not divide into a whole iSTFT hop")
        self.hop_length = int(hop)
        self.istft_hop = self.hop_length // cfg.upsample
        n_fft = cfg.n_fft or 4 * self.istft_hop
        if cfg.padding == "same" and (n_fft - self.istft_hop) % 2:
            raise ValueError(f"decoder.n_fft: 'same' padding needs n_fft − hop even, got n_fft={n_fft}, "
                             f"hop={self.istft_hop}")
        if n_fft < self.istft_hop:
            raise ValueError(f"decoder.n_fft: {n_fft} is shorter than the iSTFT hop {self.istft_hop}: the frames "
                             f"would not overlap")
        self.n_fft = n_fft
        self.upsampler: nn.Module | None = None
        if cfg.upsample > 1:  # non-overlapping transposed conv: T frames → exactly upsample × T frames
            self.upsampler = nn.ConvTranspose1d(in_dim, in_dim, cfg.upsample, stride=cfg.upsample)
        self.backbone = VocosBackbone(input_channels=in_dim, dim=cfg.dim, intermediate_dim=cfg.intermediate_dim,
                                      num_layers=cfg.num_layers, layer_scale_init_value=cfg.layer_scale_init)
        self.head = ISTFTHead(dim=cfg.dim, n_fft=n_fft, hop_length=self.istft_hop, padding=cfg.padding)
        # torch's periodic Hann window is a view into an (n_fft + 1)-long storage, which safetensors refuses to save
        self.head.istft.window = self.head.istft.window.clone()

    def forward(self, semantic: SemanticOutput, acoustic: AcousticOutput, num_samples: int) -> Tensor:
        x = acoustic.quantized
        if self.upsampler is not None:
            x = self.upsampler(x)
        y = self.head(self.backbone(x)).unsqueeze(1)  # B x 1 x (frames · hop)
        if y.shape[-1] >= num_samples:
            return y[..., :num_samples]
        return F.pad(y, (0, num_samples - y.shape[-1]))

    def chunk_policy(self):
        """Chunks need the backbone's receptive field on each side: the embedding conv and every ConvNeXt block
        see ±3 frames, the iSTFT window ±n_fft/2 samples (rounded up to whole hops)."""
        frames = 3 * (self.cfg.num_layers + 1)
        samples = frames * self.istft_hop + self.n_fft
        context = math.ceil(samples / self.hop_length) * self.hop_length
        return ChunkPolicy(context=context, align=self.hop_length, exact=True)

    def training_output(self, semantic: SemanticOutput, acoustic: AcousticOutput, waveform: Tensor) -> DecoderOutput:
        return DecoderOutput(waveform=self(semantic, acoustic, waveform.shape[-1]))


@hookimpl
def register_decoders(register):
    register("vocos_istft", VocosISTFTConfig, VocosISTFTDecoder)
