"""Noise schedules and diffusers samplers for SemantiCodec's latent diffusion decoder.

Two training schedules:

- ``scaled_linear`` (the official checkpoints): LDM's "linear" schedule, ``betas = linspace(√0.0015, √0.0195,
  1000)²`` in float64, cast to float32. ᾱ₉₉₉ = 1.4e-4, so the terminal SNR is not zero.
- ``zero_snr_cosine`` (the paper's choice for training, §3.4, after Lin et al., 2024, arXiv:2305.08891): the
  squared-cosine schedule rescaled to zero terminal SNR; sample with ``trailing`` timesteps.

Three samplers from diffusers, all with v-prediction: ``ddim`` (``DDIMScheduler``; η selectable), ``dpmsolver++``
(``DPMSolverMultistepScheduler``) and ``unipc`` (``UniPCMultistepScheduler``), the last two for 10–25 step decoding.

Timestep spacing. The reference's DDIM visits ``range(0, 1000, 1000 // S) + 1`` (descending): for S dividing 1000
that is diffusers' ``leading`` spacing with ``steps_offset=1``. For other S it runs more steps than asked (S=30 →
31, S=60 → 63) and for S ∈ {3, 9, 27, 36, 37, 101–111, 251–333, 501–1000} it indexes timestep 1000 and crashes.
codecfw's default ``leading`` runs exactly S steps; ``timestep_spacing="reference"`` reproduces the reference's
list (and refuses the crashing S with a ValueError).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

NoiseSchedule = Literal["scaled_linear", "zero_snr_cosine"]
Sampler = Literal["ddim", "dpmsolver++", "unipc"]
Spacing = Literal["reference", "leading", "trailing", "linspace"]


def reference_schedule_buffers(num_train_timesteps: int = 1000, beta_start: float = 0.0015,
                               beta_end: float = 0.0195) -> dict[str, Tensor]:
    """The 12 schedule buffers the official ``decoder.ckpt`` stores (LDM ``register_schedule``, float64 maths cast
    to float32), for checking a checkpoint and for exact DDIM coefficients."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    ac = torch.cumprod(alphas, 0)
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    posterior_variance = betas * (1.0 - ac_prev) / (1.0 - ac)
    out = {
        "betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": ac.sqrt(), "sqrt_one_minus_alphas_cumprod": (1.0 - ac).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - ac).log(), "sqrt_recip_alphas_cumprod": (1.0 / ac).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / ac - 1).sqrt(), "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * ac_prev.sqrt() / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac),
    }
    return {k: v.float() for k, v in out.items()}


def reference_timesteps(steps: int, num_train_timesteps: int = 1000) -> Tensor:
    """The reference DDIM's timesteps, descending: ``range(0, T, T // steps) + 1`` (may be longer than ``steps``)."""
    if not 0 < steps <= num_train_timesteps:
        raise ValueError(f"steps must be in [1, {num_train_timesteps}], got {steps}")
    ts = np.arange(0, num_train_timesteps, num_train_timesteps // steps) + 1
    if ts[-1] >= num_train_timesteps:
        raise ValueError(f"timestep_spacing='reference' with steps={steps} would visit timestep {ts[-1]} of "
                         f"{num_train_timesteps} (the reference crashes here); use another step count or spacing")
    return torch.from_numpy(ts[::-1].copy())


def default_spacing(noise_schedule: NoiseSchedule) -> Spacing:
    """``leading`` (+1 offset) reproduces the reference for S dividing 1000; zero-SNR schedules start at the last
    timestep (``trailing``), as Lin et al. prescribe."""
    return "trailing" if noise_schedule == "zero_snr_cosine" else "leading"


def make_scheduler(sampler: Sampler = "ddim", noise_schedule: NoiseSchedule = "scaled_linear",
                   num_train_timesteps: int = 1000, beta_start: float = 0.0015, beta_end: float = 0.0195,
                   prediction_type: str = "v_prediction", timestep_spacing: Spacing | None = None):
    """A diffusers scheduler for this decoder. For ``scaled_linear`` + ``ddim`` the cumulative alphas are the
    float64-derived values the reference (and its checkpoint buffers) use, so DDIM steps match it exactly."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    spacing = timestep_spacing or default_spacing(noise_schedule)
    common = dict(num_train_timesteps=num_train_timesteps, prediction_type=prediction_type,
                  timestep_spacing="leading" if spacing == "reference" else spacing,
                  steps_offset=1 if spacing in ("leading", "reference") else 0)
    if noise_schedule == "scaled_linear":
        common.update(beta_schedule="scaled_linear", beta_start=beta_start, beta_end=beta_end)
    elif noise_schedule == "zero_snr_cosine":
        common.update(beta_schedule="squaredcos_cap_v2", rescale_betas_zero_snr=True)
    else:
        raise ValueError(f"noise_schedule must be 'scaled_linear' or 'zero_snr_cosine', got {noise_schedule!r}")
    if sampler == "ddim":
        scheduler = DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **common)
    elif sampler == "dpmsolver++":
        scheduler = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **common)
    elif sampler == "unipc":
        scheduler = UniPCMultistepScheduler(solver_order=2, **common)
    else:
        raise ValueError(f"sampler must be 'ddim', 'dpmsolver++' or 'unipc', got {sampler!r}")
    if sampler == "ddim" and noise_schedule == "scaled_linear":
        ac = reference_schedule_buffers(num_train_timesteps, beta_start, beta_end)["alphas_cumprod"]
        scheduler.alphas_cumprod = ac
        scheduler.final_alpha_cumprod = ac[0]  # set_alpha_to_one=False: ᾱ_prev of the last step is ᾱ₀
    return scheduler


def set_timesteps(scheduler, steps: int, spacing: Spacing, device: torch.device | str = "cpu") -> Tensor:
    """``scheduler.set_timesteps(steps)``, then the reference's own list if ``spacing == "reference"`` (DDIM's
    step keeps using ``T // steps`` as its stride, which is what the reference does too)."""
    scheduler.set_timesteps(steps, device=device)
    if spacing == "reference":
        if type(scheduler).__name__ != "DDIMScheduler":
            raise ValueError("timestep_spacing='reference' is the reference DDIM's quirk; use it with sampler='ddim'")
        scheduler.timesteps = reference_timesteps(steps, scheduler.config.num_train_timesteps).to(device)
    return scheduler.timesteps


def training_alphas_cumprod(noise_schedule: NoiseSchedule = "scaled_linear", num_train_timesteps: int = 1000,
                            beta_start: float = 0.0015, beta_end: float = 0.0195) -> Tensor:
    """ᾱ_t (float32) used for q(z_t | z_0) in training; zero at t = T-1 for the zero-SNR schedule."""
    if noise_schedule == "scaled_linear":
        return reference_schedule_buffers(num_train_timesteps, beta_start, beta_end)["alphas_cumprod"]
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2",
                          rescale_betas_zero_snr=True)
    return sched.alphas_cumprod.float().clone()
