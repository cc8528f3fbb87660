"""Signal distances with no optional dependency: DAC-style mel and multi-scale STFT distances, waveform L1, SI-SDR.

The mel and STFT distances reproduce ``dac.nn.loss.MelSpectrogramLoss`` / ``MultiScaleSTFTLoss`` (Kumar et al.,
"High-Fidelity Audio Compression with Improved RVQGAN", 2023) on top of audiotools' STFT: per scale, a periodic
Hann window, hop = window / 4, ``torch.stft(center=True, pad_mode="reflect")``, magnitude, librosa (Slaney) mel
filters, then::

    log_weight * L1(log10(clamp(S_est, eps) ** pow), log10(clamp(S_ref, eps) ** pow)) + mag_weight * L1(S_est, S_ref)

summed over scales. Because the same name means different numbers under different settings (frameworks.md §2.6),
the settings are *named, pinned parameter sets*; the set's name goes into the column name unless it is the default.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from codecfw import hookimpl
from codecfw.core.metric import Metric, MetricConfig, resample

#: ``MelSpectrogramLoss`` parameter sets. ``dac_eval_default`` is the constructor default that DAC's
#: scripts/evaluate.py uses unless a config is loaded (and that Codec-SUPERB copies); ``dac_train_7scale`` is
#: DAC's conf/base.yml training loss.
MEL_PARAMETER_SETS: dict[str, dict] = {
    "dac_eval_default": dict(n_mels=[150, 80], window_lengths=[2048, 512], clamp_eps=1e-5, pow=2.0,
                             mag_weight=1.0, log_weight=1.0, mel_fmin=[0.0, 0.0], mel_fmax=[None, None]),
    "dac_train_7scale": dict(n_mels=[5, 10, 20, 40, 80, 160, 320], window_lengths=[32, 64, 128, 256, 512, 1024, 2048],
                             clamp_eps=1e-5, pow=1.0, mag_weight=0.0, log_weight=1.0, mel_fmin=[0.0] * 7,
                             mel_fmax=[None] * 7),
}

#: ``MultiScaleSTFTLoss`` parameter sets. DAC's conf/base.yml sets ``MultiScaleSTFTLoss.window_lengths: [2048, 512]``,
#: the constructor default, so its training and evaluation STFT distances coincide: one set.
STFT_PARAMETER_SETS: dict[str, dict] = {
    "dac_eval_default": dict(window_lengths=[2048, 512], clamp_eps=1e-5, pow=2.0, mag_weight=1.0, log_weight=1.0),
}


def stft_magnitude(x: Tensor, window_length: int) -> Tensor:
    """x : Tensor[N] → |STFT| : Tensor[F x T] (audiotools' ``AudioSignal.stft`` with match_stride=False)."""
    window = torch.hann_window(window_length, periodic=True, dtype=x.dtype, device=x.device)
    spec = torch.stft(x, n_fft=window_length, hop_length=window_length // 4, window=window, center=True,
                      pad_mode="reflect", return_complex=True)
    return spec.abs()


@lru_cache(maxsize=64)
def mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> Tensor:
    """librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax) (Slaney scale and area normalisation) : Tensor[n_mels x F]."""
    import torchaudio.functional as AF

    with warnings.catch_warnings():  # many mels on a short window leave empty filters, as in librosa: intended
        warnings.simplefilter("ignore")
        fb = AF.melscale_fbanks(n_fft // 2 + 1, f_min=float(fmin), f_max=float(fmax or sample_rate / 2),
                                n_mels=n_mels, sample_rate=sample_rate, norm="slaney", mel_scale="slaney")
    return fb.T.contiguous()


def _log_distance(x: Tensor, y: Tensor, eps: float, power: float, log_weight: float, mag_weight: float) -> Tensor:
    loss = log_weight * (x.clamp(eps).pow(power).log10() - y.clamp(eps).pow(power).log10()).abs().mean()
    return loss + mag_weight * (x - y).abs().mean()


class _SpectralConfig(MetricConfig):
    params: str = Field("dac_eval_default", description="named parameter set")
    sample_rate: int | None = Field(None, gt=0, description="resample both signals to this rate first (DAC "
                                                            "evaluates at 22050 and 44100); None: the eval rate")
    window_lengths: list[int] | None = Field(None, description="override the set's window lengths")
    clamp_eps: float | None = Field(None, gt=0)
    pow: float | None = Field(None, gt=0)
    mag_weight: float | None = Field(None, ge=0)
    log_weight: float | None = Field(None, ge=0)


class _SpectralDistance(Metric):
    higher_is_better = False
    parameter_sets: dict[str, dict] = {}

    def __init__(self, config: _SpectralConfig) -> None:
        if config.params not in self.parameter_sets:
            raise ValueError(f"{config.kind}: unknown parameter set {config.params!r}; known sets: "
                             f"{', '.join(self.parameter_sets)}")
        params = dict(self.parameter_sets[config.params])
        self.overridden = {k: v for k, v in config.model_dump().items() if k in params and v is not None}
        params.update(self.overridden)
        self.params = params
        self._check_params()
        super().__init__(config)

    def _check_params(self) -> None:
        pass

    @property
    def parameter_set(self) -> str:
        return self.config.params + ("+custom" if self.overridden else "")

    def default_name(self) -> str:
        name = self.config.kind
        if self.config.params != "dac_eval_default" or self.overridden:
            name += f"@{self.parameter_set}"
        if self.config.sample_rate:
            name += f"@{self.config.sample_rate // 1000 if self.config.sample_rate % 1000 == 0 else self.config.sample_rate / 1000:g}k"
        return name

    def settings(self) -> dict:
        return {"kind": self.config.kind, "parameter_set": self.parameter_set, **self.params,
                "sample_rate": self.config.sample_rate, "stft": "hann (periodic), hop=window/4, center=True, "
                "pad_mode=reflect", "reduction": "sum over scales of mean L1"}

    def _prepare(self, estimate: Tensor, reference: Tensor, sample_rate: int) -> tuple[Tensor, Tensor, int]:
        sr = self.config.sample_rate or sample_rate
        return (resample(estimate.float(), sample_rate, sr), resample(reference.float(), sample_rate, sr), sr)


class MelDistanceConfig(_SpectralConfig):
    kind: Literal["mel"] = "mel"
    n_mels: list[int] | None = Field(None, description="override the set's mel bands per scale")


class MelDistance(_SpectralDistance):
    """DAC's multi-scale mel distance. estimate, reference : Tensor[N]."""

    parameter_sets = MEL_PARAMETER_SETS

    def _check_params(self) -> None:
        if self.overridden.get("n_mels") is not None:
            self.params["n_mels"] = list(self.overridden["n_mels"])
        n = len(self.params["window_lengths"])
        for key in ("mel_fmin", "mel_fmax"):
            if len(self.params[key]) != n:  # window_lengths overridden: fmin 0, fmax Nyquist per scale
                self.params[key] = [0.0 if key == "mel_fmin" else None] * n
        if len(self.params["n_mels"]) != n:
            raise ValueError(f"mel: n_mels has {len(self.params['n_mels'])} entries but window_lengths has {n}")

    def __call__(self, estimate: Tensor, reference: Tensor, sample_rate: int, **meta) -> float:
        x, y, sr = self._prepare(estimate, reference, sample_rate)
        p = self.params
        total = x.new_zeros(())
        for n_mels, fmin, fmax, win in zip(p["n_mels"], p["mel_fmin"], p["mel_fmax"], p["window_lengths"]):
            fb = mel_filters(sr, win, n_mels, fmin, fmax).to(x)
            total = total + _log_distance(fb @ stft_magnitude(x, win), fb @ stft_magnitude(y, win), p["clamp_eps"],
                                          p["pow"], p["log_weight"], p["mag_weight"])
        return float(total)


class STFTDistanceConfig(_SpectralConfig):
    kind: Literal["stft"] = "stft"


class STFTDistance(_SpectralDistance):
    """DAC's multi-scale STFT distance. estimate, reference : Tensor[N]."""

    parameter_sets = STFT_PARAMETER_SETS

    def __call__(self, estimate: Tensor, reference: Tensor, sample_rate: int, **meta) -> float:
        x, y, _ = self._prepare(estimate, reference, sample_rate)
        p = self.params
        total = x.new_zeros(())
        for win in p["window_lengths"]:
            total = total + _log_distance(stft_magnitude(x, win), stft_magnitude(y, win), p["clamp_eps"], p["pow"],
                                          p["log_weight"], p["mag_weight"])
        return float(total)


class WaveformL1Config(MetricConfig):
    kind: Literal["l1"] = "l1"
    sample_rate: int | None = Field(None, gt=0, description="resample first; None: the eval rate")


class WaveformL1(Metric):
    """Mean absolute sample difference (DAC's ``L1Loss`` on ``audio_data``)."""

    higher_is_better = False

    def __call__(self, estimate: Tensor, reference: Tensor, sample_rate: int, **meta) -> float:
        sr = self.config.sample_rate or sample_rate
        x, y = resample(estimate.double(), sample_rate, sr), resample(reference.double(), sample_rate, sr)
        return float((x - y).abs().mean())


class SISDRConfig(MetricConfig):
    kind: Literal["si_sdr"] = "si_sdr"
    zero_mean: bool = Field(True, description="remove the mean of both signals first (DAC, asteroid); "
                                              "torchmetrics' default is False")


class SISDR(Metric):
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., "SDR – half-baked or well done?", 2019).

    Computed in float64 with torchmetrics' formula (``eps`` added to both sides of the projection and the ratio),
    so it equals ``torchmetrics.functional.audio.scale_invariant_signal_distortion_ratio`` on float64 input; the
    identity gives a large finite value instead of +inf.
    """

    higher_is_better = True

    def __call__(self, estimate: Tensor, reference: Tensor, sample_rate: int, **meta) -> float:
        x, s = estimate.double(), reference.double()
        eps = torch.finfo(torch.float64).eps
        if self.config.zero_mean:
            x, s = x - x.mean(), s - s.mean()
        alpha = ((x * s).sum() + eps) / ((s * s).sum() + eps)
        target = alpha * s
        noise = target - x
        value = 10 * torch.log10(((target * target).sum() + eps) / ((noise * noise).sum() + eps))
        if not math.isfinite(float(value)):
            raise ValueError(f"SI-SDR is {float(value)} (silent reference?)")
        return float(value)


@hookimpl
def register_metrics(register):
    register("mel", MelDistanceConfig, lambda cfg, ctx: MelDistance(cfg), needs_reference=True,
             higher_is_better=False, parameter_sets=sorted(MEL_PARAMETER_SETS))
    register("stft", STFTDistanceConfig, lambda cfg, ctx: STFTDistance(cfg), needs_reference=True,
             higher_is_better=False, parameter_sets=sorted(STFT_PARAMETER_SETS))
    register("l1", WaveformL1Config, lambda cfg, ctx: WaveformL1(cfg), needs_reference=True, higher_is_better=False)
    register("si_sdr", SISDRConfig, lambda cfg, ctx: SISDR(cfg), needs_reference=True, higher_is_better=True)
