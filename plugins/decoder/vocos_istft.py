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

``harmonic_source: true`` adds a source-filter branch (NSF, Wang et al., arXiv 1810.11946; DDSP, Engel et al.,
arXiv 2001.04643): the backbone also predicts an F0 per frame (supervised on the input's YIN contour, the decoder's
``f0`` loss) and a gain per STFT bin; the STFT of a band-limited pulse train that follows the predicted F0 (its phase
integrated sample by sample, ``plugins/nn/pitch.py``) is shaped by that gain and added to the head's spectrum before
the iSTFT. The head alone must learn each frame's phase so that consecutive frames add up coherently; at a 20 ms hop
and low bitrate it rendered voiced speech as noise (docs/training.md), the excitation brings the coherent phase in::

    log f0 = F0Proj(h)                                [B x uT]          loss: |log2 f0 − log2 f0_YIN|, voiced frames
    E = STFT(pulse_train(f0.detach()))                [B x F x uT]      same framing as the iSTFT
    S = S_head + scale · Gain(h) · E                  [B x F x uT]      Gain: linear, signed, 0 at initialisation

When the acoustic quantizer transmits the pitch (``acoustic.pitch_stream``: ``extras["pitch"]``), the excitation
follows that F0 instead of the predicted one, at training and synthesis alike, and is silent on unvoiced frames: a
pitch inferred from acoustic tokens did not generalise to unseen voices (docs/training.md).
``voiced_head_cutoff`` then fades the head's spectrum out below that frequency on those voiced frames, so the
excitation alone renders the voiced low band (a harmonic-plus-noise split)::

    S = fade_voiced(S_head) + scale · Gain(h) · E · voiced

The backbone and head are the ``vocos`` package's own modules (``pip install 'codecfw[vocos]'``). The generator and
discriminators train through the shared loop exactly as ``dac_generator`` does (same discriminators, GAN and
feature-matching losses, reconstruction-loss plugins).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import PluginConfig
from codecfw.core.types import AcousticOutput, BuildContext, ChunkPolicy, Decoder, DecoderOutput, SemanticOutput
from codecfw.plugins.nn.pitch import harmonic_excitation, yin


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
    harmonic_source: bool = Field(False, description="add the F0-driven harmonic excitation branch (module docstring)")
    f0_min: float = Field(50.0, gt=0, description="harmonic_source: lowest F0 (Hz) predicted and tracked")
    f0_max: float = Field(1000.0, gt=0, description="harmonic_source: highest F0 (Hz) predicted and tracked")
    yin_threshold: float = Field(0.15, gt=0, lt=1, description="harmonic_source: YIN voicing threshold of the "
                                                                "F0 targets (lower: fewer, surer voiced frames)")
    harmonic_scale: float = Field(0.01, gt=0, description="harmonic_source: amplitude of each harmonic at gain 1 "
                                                             "(speech's harmonics are ~0.01-0.05 at full scale)")
    f0_teacher_forcing: float = Field(0.5, ge=0, le=1, description="harmonic_source: probability per training "
                                      "batch that the excitation follows the input's F0 on its voiced frames instead "
                                      "of the predicted one (the gain learns on right harmonics while F0 is learnt)")
    voiced_head_cutoff: float | None = Field(None, gt=0, description="harmonic_source with a pitch stream: on "
                                             "voiced frames the head's spectrum fades out below this frequency (Hz), "
                                             "so the excitation alone renders the voiced low band (harmonic plus "
                                             "noise); None: the head is never faded")
    voiced_head_crossover: float = Field(1000.0, gt=0, description="width (Hz) of the fade, centred on the cut-off")


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
        self.f0_proj: nn.Linear | None = None
        self.harmonic_gain: nn.Linear | None = None
        if cfg.harmonic_source:
            if not cfg.f0_min < cfg.f0_max < ctx.sample_rate / 2:
                raise ValueError(f"decoder.f0_min/f0_max: need f0_min < f0_max < Nyquist ({ctx.sample_rate / 2} "
                                 f"Hz), got {cfg.f0_min} and {cfg.f0_max}")
            if cfg.voiced_head_cutoff is not None and cfg.voiced_head_cutoff >= ctx.sample_rate / 2:
                raise ValueError(f"decoder.voiced_head_cutoff: {cfg.voiced_head_cutoff} Hz is not below Nyquist "
                                 f"({ctx.sample_rate / 2} Hz)")
            if cfg.padding != "same":
                raise ValueError("decoder.harmonic_source needs padding: same (the excitation's STFT is framed "
                                 "like the iSTFT's 'same' frames)")
            self.f0_proj = nn.Linear(cfg.dim, 1)
            self.harmonic_gain = nn.Linear(cfg.dim, n_fft // 2 + 1)
            # Gain 1 renders every harmonic at amplitude `harmonic_scale` (the iSTFT inverts the excitation's STFT).
            # The gain is the linear layer's output itself (signed: −1 is the same harmonic at opposite phase),
            # started at exactly 0: the branch adds nothing to a trained head at first, and its gradient (∝ the
            # excitation) does not vanish there. An exp(·) gain, as the head's magnitudes use, has a gradient ∝ the
            # gain: started small it was shut by the first steps' loss spike and never reopened. The scale keeps
            # Adam's first steps (~0.05 of gain each) at a fraction of speech's level: unscaled, they opened unit
            # harmonics within ~20 steps and the mel loss tripled (docs/training.md).
            with torch.no_grad():
                self.harmonic_gain.weight.zero_()
                self.harmonic_gain.bias.zero_()
                start = math.log(150.0 / cfg.f0_min) / math.log(cfg.f0_max / cfg.f0_min)
                self.f0_proj.bias.fill_(math.log(start / (1 - start)))
        # torch's periodic Hann window is a view into an (n_fft + 1)-long storage, which safetensors refuses to save
        self.head.istft.window = self.head.istft.window.clone()

    def forward(self, semantic: SemanticOutput, acoustic: AcousticOutput, num_samples: int) -> Tensor:
        return self._synthesize(acoustic, num_samples)[0]

    def _synthesize(self, acoustic: AcousticOutput, num_samples: int, forced_f0: tuple[Tensor, Tensor] | None = None
                    ) -> tuple[Tensor, Tensor | None]:
        """→ (waveform Tensor[B x 1 x num_samples], log2 F0 Tensor[B x uT] or None without the harmonic branch).

        forced_f0 : (log2 F0, voiced mask), each Tensor[B x uT]: the excitation follows it where voiced."""
        x = acoustic.quantized
        if self.upsampler is not None:
            x = self.upsampler(x)
        h = self.backbone(x)
        log_f0 = None
        if self.f0_proj is None:
            y = self.head(h)
        else:
            log_f0 = self._log2_f0(h)
            source, mask = log_f0.detach(), None
            stream = acoustic.extras.get("pitch")  # a pitch stream: the excitation follows it, silent when unvoiced
            if stream is not None:  # at the codec's frame rate: repeated to the iSTFT's
                forced_f0 = tuple(t.repeat_interleave(self.cfg.upsample, -1) for t in stream)
            if forced_f0 is not None:
                n = source.shape[-1]  # the forced contour cropped or padded (unvoiced) to the head's frames
                target, voiced = (F.pad(t, (0, max(0, n - t.shape[-1])))[..., :n] for t in forced_f0)
                source = torch.where(voiced, target, source)
                mask = voiced.float() if stream is not None else None
            y = self.head.istft(self._faded(self._head_spectrum(h), mask) + self._harmonic_spectrum(h, source, mask))
        y = y.unsqueeze(1)  # B x 1 x (frames · hop)
        if y.shape[-1] >= num_samples:
            return y[..., :num_samples], log_f0
        return F.pad(y, (0, num_samples - y.shape[-1])), log_f0

    def _head_spectrum(self, h: Tensor) -> Tensor:
        """vocos's ``ISTFTHead.forward`` up to the iSTFT: h : Tensor[B x T x dim] → complex Tensor[B x F x T]."""
        mag, phase = self.head.out(h).transpose(1, 2).chunk(2, dim=1)
        return torch.exp(mag).clip(max=1e2) * torch.complex(torch.cos(phase), torch.sin(phase))

    def _faded(self, head: Tensor, voiced: Tensor | None) -> Tensor:
        """The head's spectrum (Tensor[B x F x T]) with its band below ``voiced_head_cutoff`` faded out on voiced
        frames (``voiced`` : Tensor[B x T], 0/1): a linear ramp over ``voiced_head_crossover`` Hz."""
        cutoff = self.cfg.voiced_head_cutoff
        if cutoff is None or voiced is None:
            return head
        freq = torch.arange(head.shape[1], device=head.device) * (self.sample_rate / self.n_fft)
        kept = ((freq - cutoff) / self.cfg.voiced_head_crossover + 0.5).clamp(0, 1)  # 0 below, 1 above the fade
        v = voiced[:, None, :head.shape[-1]].to(kept.dtype)
        return head * (1 - v * (1 - kept[None, :, None]))

    def _log2_f0(self, h: Tensor) -> Tensor:
        lo, hi = math.log2(self.cfg.f0_min), math.log2(self.cfg.f0_max)
        return lo + (hi - lo) * torch.sigmoid(self.f0_proj(h)[..., 0])

    def _harmonic_spectrum(self, h: Tensor, log_f0: Tensor, voiced: Tensor | None = None) -> Tensor:
        """The pulse train following ``2^log_f0``, analysed with the iSTFT's own framing, times the predicted gain
        (and ``voiced`` : Tensor[B x T], 0/1 per frame, when given)."""
        with torch.no_grad():
            excitation = harmonic_excitation(2.0 ** log_f0.float(), self.istft_hop, self.sample_rate)
            pad = (self.n_fft - self.istft_hop) // 2
            spec = torch.stft(F.pad(excitation, (pad, pad)), self.n_fft, self.istft_hop, self.n_fft,
                              self.head.istft.window, center=False, return_complex=True)
        gain = self.cfg.harmonic_scale * self.harmonic_gain(h).float().transpose(1, 2)
        if voiced is not None:
            gain = gain * voiced[:, None, :gain.shape[-1]]
        return gain * spec[..., :gain.shape[-1]]

    def chunk_policy(self):
        """Chunks need the backbone's receptive field on each side: the embedding conv and every ConvNeXt block
        see ±3 frames, the iSTFT window ±n_fft/2 samples (rounded up to whole hops)."""
        frames = 3 * (self.cfg.num_layers + 1)
        samples = frames * self.istft_hop + self.n_fft
        context = math.ceil(samples / self.hop_length) * self.hop_length
        if self.f0_proj is not None:  # the excitation's phase is integrated from each window's start
            return ChunkPolicy(context=context, overlap=5 * self.hop_length, align=self.hop_length, exact=False,
                               note="the harmonic excitation's phase restarts in each window: windows are "
                                    "cross-faded over 5 frames")
        return ChunkPolicy(context=context, align=self.hop_length, exact=True)

    def training_output(self, semantic: SemanticOutput, acoustic: AcousticOutput, waveform: Tensor) -> DecoderOutput:
        if self.f0_proj is None:
            return DecoderOutput(waveform=self(semantic, acoustic, waveform.shape[-1]))
        f0, voiced = yin(waveform.reshape(-1, waveform.shape[-1]), self.sample_rate, self.istft_hop,
                         self.cfg.f0_min, self.cfg.f0_max, self.cfg.yin_threshold)
        target = torch.log2(f0.clamp(self.cfg.f0_min, self.cfg.f0_max))
        forced = None  # a pitch stream (acoustic.extras['pitch']) takes precedence inside _synthesize
        if "pitch" not in acoustic.extras and self.training and float(torch.rand(())) < self.cfg.f0_teacher_forcing:
            forced = (target, voiced)
        y, log_f0 = self._synthesize(acoustic, waveform.shape[-1], forced)
        n = min(f0.shape[-1], log_f0.shape[-1])
        voiced = voiced[..., :n]
        error = (log_f0[..., :n] - target[..., :n]).abs()
        loss = (error * voiced).sum() / voiced.sum().clamp(min=1)
        return DecoderOutput(waveform=y, losses={"f0": loss},
                             metrics={"voiced_fraction": voiced.float().mean().detach(),
                                      "f0_error_cents": (1200 * loss).detach()})


@hookimpl
def register_decoders(register):
    register("vocos_istft", VocosISTFTConfig, VocosISTFTDecoder)
