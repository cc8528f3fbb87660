"""SemantiCodec's latent diffusion decoder (Liu et al., 2024, arXiv:2405.00233, §3.4), built from diffusers.

tokens' features ─► context ``[acoustic | semantic | sinusoid(192)]`` per 10.24 s window ─► T-UNet (v-prediction,
classifier-free guidance) + a diffusers sampler ─► latent ``[8 x 256 x 16]`` ─► AutoencoderKL decoder ─► 64-bin
log-mel ─► HiFi-GAN ─► 163840 samples per window ─► linear cross-fade over 0.64 s ─► waveform.

What codecfw does differently from the reference (docs/semanticodec.md has the details):

- windows are batched (``window_batch_size`` windows of every batch item per UNet call) and classifier-free
  guidance is one UNet call on ``[uncond; cond]``; attention is PyTorch SDPA; ``precision="auto"`` runs the UNet
  and VAE in bf16 on CUDA;
- each window is placed at its tokens' position: the vocoder's 32 surplus samples (``160·T + 32``) are cut from
  the window's end, so windows do not drift by +32 samples each as in the reference's overlap-add;
- ``eta=0`` (deterministic DDIM, as the paper describes) and seeded starting noise per window, so decoding the same
  tokens twice gives the same audio; the reference runs η = 1 with unseeded noise (``eta=1`` is selectable);
- DPM-Solver++ and UniPC for fewer steps; the zero-terminal-SNR cosine schedule for new training.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from codecfw import hookimpl
from codecfw.core.config import PluginConfig
from codecfw.core.types import AcousticOutput, BuildContext, Decoder, DecoderOutput, FrozenPart, SemanticOutput


class LatentDiffusionDecoderConfig(PluginConfig):
    """Defaults are the official SemantiCodec decoder (any token rate: the context width follows the slots)."""

    kind: Literal["latent_diffusion"] = "latent_diffusion"
    # T-UNet (reference openaimodel arguments)
    model_channels: int = Field(64, gt=0)
    channel_mult: list[int] = Field(default_factory=lambda: [1, 2, 3, 5], min_length=1)
    num_res_blocks: int = Field(2, gt=0)
    attention_resolutions: list[int] = Field(default_factory=lambda: [8, 4, 2], description="downsample factors")
    num_head_channels: int = Field(32, gt=0)
    transformer_depth: int = Field(1, gt=0)
    extra_self_attention: bool = Field(True, description="self-attention transformer before each cross-attention one")
    position_dim: int = Field(192, ge=0, description="sinusoidal position features appended to the context")
    # VAE and vocoder (frozen)
    vae_channels: int = Field(128, gt=0)
    vae_channel_mult: list[int] = Field(default_factory=lambda: [1, 2, 4], min_length=1)
    vae_num_res_blocks: int = Field(2, gt=0)
    latent_channels: int = Field(8, gt=0)
    mel_bins: int = Field(64, gt=0)
    vae_encoder: bool = Field(True, description="build the VAE encoder (training needs it; inference does not)")
    scale_factor: float = Field(1.0, gt=0, description="latent scale (a checkpoint buffer; see scale_by_std)")
    scale_by_std: bool = Field(True, description="training sets scale_factor = 1/std(z) on its first batch "
                                                 "unless a checkpoint provided it")
    vocoder_channels: int = Field(1024, gt=0, description="HiFi-GAN upsample_initial_channel")
    vocoder_upsample_rates: list[int] = Field(default_factory=lambda: [5, 4, 2, 2, 2])
    vocoder_upsample_kernel_sizes: list[int] = Field(default_factory=lambda: [16, 16, 8, 4, 4])
    weights: str | None = Field(None, description="official decoder.ckpt, or a .safetensors in the official or "
                                                  "codecfw layout")
    # diffusion
    noise_schedule: Literal["scaled_linear", "zero_snr_cosine"] = "scaled_linear"
    num_train_timesteps: int = Field(1000, gt=1)
    beta_start: float = Field(0.0015, gt=0)
    beta_end: float = Field(0.0195, gt=0)
    # sampling
    sampler: Literal["ddim", "dpmsolver++", "unipc"] = "ddim"
    steps: int = Field(50, gt=0)
    guidance_scale: float = Field(2.0, description="classifier-free guidance; 1.0 runs the conditional model only")
    guidance_rescale: float = Field(0.0, ge=0, le=1, description="Lin et al. guidance rescale (zero-SNR training)")
    eta: float = Field(0.0, ge=0, description="DDIM η; the reference uses 1.0 with unseeded noise")
    timestep_spacing: Literal["reference", "leading", "trailing", "linspace"] | None = Field(
        None, description="None: leading (+1), the reference's for steps dividing 1000; trailing for zero-SNR")
    seed: int | None = Field(0, description="seed of each window's starting noise; None: the global RNG")
    # windows
    window_seconds: float = Field(10.24, gt=0)
    overlap_seconds: float = Field(0.64, ge=0)
    pad_value: float = Field(-1.0, description="context rows past the last token of the last window (reference)")
    window_batch_size: int = Field(4, gt=0, description="windows per UNet batch (peak memory is bounded by this)")
    precision: Literal["auto", "float32", "bfloat16"] = Field("auto", description="UNet/VAE; auto: bf16 on CUDA")
    cache_context: bool = Field(True, description="compute cross-attention keys/values once per window, not per step")
    channels_last: bool = Field(True, description="channels-last UNet/VAE convolutions (faster oneDNN/cuDNN paths)")
    vocoder_precision: Literal["float32", "bfloat16"] = "float32"
    # training
    cond_drop_prob: float = Field(0.1, ge=0, le=1, description="condition dropout for classifier-free guidance")

    @model_validator(mode="after")
    def _check(self) -> "LatentDiffusionDecoderConfig":
        if self.overlap_seconds >= self.window_seconds:
            raise ValueError(f"overlap_seconds ({self.overlap_seconds}) must be shorter than window_seconds")
        if self.timestep_spacing == "reference" and self.sampler != "ddim":
            raise ValueError("timestep_spacing 'reference' reproduces the reference DDIM; use it with sampler 'ddim'")
        return self


def sinusoid_table(length: int, dim: int) -> Tensor:
    """The reference's ``PositionalEncoding``: ``Tensor[length x dim]``, sin on even and cos on odd dims."""
    position = torch.arange(length).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2) * -(math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table


def _exact_ratio(value: float, name: str) -> int:
    if abs(value - round(value)) > 1e-6 or round(value) <= 0:
        raise ValueError(f"{name} must come out a positive whole number, got {value}")
    return int(round(value))


class LatentDiffusionDecoder(Decoder):
    """Token features → waveform by latent diffusion; ``training_output`` returns the v-prediction loss."""

    objective = "diffusion"

    def __init__(self, cfg: LatentDiffusionDecoderConfig, ctx: BuildContext) -> None:
        super().__init__()
        from codecfw.plugins.decoder.hifigan import HiFiGANSpec, build_hifigan
        from codecfw.plugins.decoder.mel_vae import AudioLDMMel, VAESpec, build_vae
        from codecfw.plugins.decoder.t_unet import TUNet2DConditionModel

        if ctx.semantic is None or ctx.acoustic is None:
            raise ValueError("latent_diffusion needs the semantic and acoustic slots built first")
        self.cfg = cfg
        self.sample_rate = ctx.sample_rate
        self.feature_dim = ctx.acoustic.quantized_dim + ctx.semantic.quantized_dim
        self.vocoder_spec = HiFiGANSpec(num_mels=cfg.mel_bins, upsample_initial_channel=cfg.vocoder_channels,
                                        upsample_rates=cfg.vocoder_upsample_rates,
                                        upsample_kernel_sizes=cfg.vocoder_upsample_kernel_sizes)
        self.vae_spec = VAESpec(cfg.vae_channels, cfg.vae_channel_mult, cfg.vae_num_res_blocks, cfg.latent_channels,
                                cfg.mel_bins)
        # Window geometry: tokens per window / hop, samples per token at the vocoder's rate.
        rate, hop = ctx.semantic.frame_rate, self.vocoder_spec.hop_length
        self.vocoder_rate = self.vocoder_spec.sampling_rate
        self.window_tokens = _exact_ratio(cfg.window_seconds * rate, "window_seconds x token frame rate")
        self.overlap_tokens = round(cfg.overlap_seconds * rate)
        self.samples_per_token = _exact_ratio(self.vocoder_rate / rate, "vocoder rate / token frame rate")
        self.window_samples = self.window_tokens * self.samples_per_token
        frames = _exact_ratio(self.window_samples / hop, "window samples / mel hop")
        down = self.vae_spec.downsample * 2 ** (len(cfg.channel_mult) - 1)
        if frames % down or cfg.mel_bins % down:
            raise ValueError(f"a window's mel ({frames} x {cfg.mel_bins}) must divide by {down} (VAE x UNet levels)")
        self.latent_shape = (cfg.latent_channels, frames // self.vae_spec.downsample,
                             cfg.mel_bins // self.vae_spec.downsample)

        self.unet = TUNet2DConditionModel(
            in_channels=cfg.latent_channels, out_channels=cfg.latent_channels, model_channels=cfg.model_channels,
            channel_mult=tuple(cfg.channel_mult), num_res_blocks=cfg.num_res_blocks,
            attention_resolutions=tuple(cfg.attention_resolutions), num_head_channels=cfg.num_head_channels,
            context_dim=self.feature_dim + cfg.position_dim, transformer_depth=cfg.transformer_depth,
            extra_self_attention=cfg.extra_self_attention)
        self.vae = build_vae(self.vae_spec, encoder=cfg.vae_encoder).requires_grad_(False).eval()
        if cfg.channels_last:
            self.unet.to(memory_format=torch.channels_last)
            self.vae.to(memory_format=torch.channels_last)
        self.vocoder = build_hifigan(self.vocoder_spec).requires_grad_(False).eval()
        self.mel = AudioLDMMel(self.vocoder_rate, hop_length=hop, mel_bins=cfg.mel_bins) if cfg.vae_encoder else None
        self.register_buffer("scale_factor", torch.tensor(float(cfg.scale_factor)))
        self.register_buffer("scale_initialized", torch.tensor(not cfg.scale_by_std))
        self.register_buffer("position_table", sinusoid_table(self.window_tokens, cfg.position_dim), persistent=False)
        from codecfw.plugins.decoder.diffusion_schedule import training_alphas_cumprod

        self.register_buffer("alphas_cumprod", training_alphas_cumprod(
            cfg.noise_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end), persistent=False)
        if cfg.weights:
            self.load_weights(cfg.weights)

    # -- weights -----------------------------------------------------------------------------------------------
    def official_schedule(self) -> dict[str, Tensor]:
        """The 12 schedule buffers an official checkpoint of this configuration stores."""
        from codecfw.plugins.decoder.diffusion_schedule import reference_schedule_buffers

        return reference_schedule_buffers(self.cfg.num_train_timesteps, self.cfg.beta_start, self.cfg.beta_end)

    def convert_official(self, state: dict[str, Tensor], source: str = "decoder.ckpt") -> dict[str, Tensor]:
        """Official ``decoder.ckpt`` state → this module's state (schedule checked, EMA dropped)."""
        from codecfw.plugins.decoder.official_keys import check_official_schedule, map_official_decoder_state

        if self.cfg.noise_schedule == "scaled_linear":
            check_official_schedule(state, self.official_schedule(), source=source)
        cfg = self.cfg
        return map_official_decoder_state(
            state, channel_mult=cfg.channel_mult, num_res_blocks=cfg.num_res_blocks,
            attention_resolutions=cfg.attention_resolutions, extra_self_attention=cfg.extra_self_attention,
            vae_levels=len(cfg.vae_channel_mult), vae_num_res_blocks=cfg.vae_num_res_blocks,
            keep_vae_encoder=cfg.vae_encoder, source=source)

    def load_weights(self, path: str | Path) -> None:
        """Load an official ``decoder.ckpt`` (flat state dict) or a ``.safetensors`` in either layout."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"decoder weights {path} not found")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
        if any(k.startswith("model.diffusion_model.") for k in state):
            state = self.convert_official(state, str(path))
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise KeyError(f"{path}: weights do not fit this decoder's configuration; missing {missing[:5]} "
                           f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})")

    def pretrained_parts(self) -> list[FrozenPart]:
        """The frozen VAE and HiFi-GAN vocoder (AudioLDM 2's), loaded with the whole decoder by ``weights``."""
        source = ("set decoder.weights to the official decoder.ckpt (haoheliu/SemantiCodec "
                  "semanticodec_tokenrate_<N>/decoder.ckpt; the T-UNet then starts from it too), or --init-from a "
                  "checkpoint made by `codecfw import semanticodec -o DIR`")
        loaded = bool(self.cfg.weights)
        return [FrozenPart("vae", "the mel VAE (frozen latent space of the diffusion model)", loaded, source),
                FrozenPart("vocoder", "the HiFi-GAN vocoder (frozen mel-to-waveform)", loaded, source)]

    def train(self, mode: bool = True) -> "LatentDiffusionDecoder":
        super().train(mode)
        self.vae.eval()  # frozen parts stay in inference mode
        self.vocoder.eval()
        return self

    # -- conditioning --------------------------------------------------------------------------------------------
    def condition_features(self, semantic: SemanticOutput, acoustic: AcousticOutput) -> Tensor:
        """``[acoustic | semantic]`` features, Tensor[B x T x (Fa + Fs)] (the reference's order)."""
        if semantic.quantized is None or acoustic.quantized is None:
            raise ValueError("latent_diffusion needs semantic.quantized and acoustic.quantized")
        a, s = acoustic.quantized, semantic.quantized
        if a.shape[0] != s.shape[0] or a.shape[-1] != s.shape[-1]:
            raise ValueError(f"acoustic {tuple(a.shape)} and semantic {tuple(s.shape)} features must share B and T")
        return torch.cat([a, s], dim=1).transpose(1, 2)

    def context(self, features: Tensor, drop: Tensor | None = None) -> Tensor:
        """features : Tensor[N x W x F] → Tensor[N x W x (F + position_dim)]; rows ``drop`` (BoolTensor[N]) get zero
        features (the unconditional context of classifier-free guidance)."""
        if drop is not None:
            features = torch.where(drop[:, None, None], torch.zeros_like(features), features)
        table = self.position_table[: features.shape[1]].to(features.dtype)
        return torch.cat([features, table.expand(features.shape[0], -1, -1)], dim=-1)

    def window_starts(self, num_tokens: int) -> list[int]:
        """Token offsets of the decode windows (the reference's rule: full windows while one more would not fit
        entirely, then the remainder)."""
        if num_tokens <= 0:
            raise ValueError("cannot decode zero tokens")
        hop, starts, start = self.window_tokens - self.overlap_tokens, [], 0
        while start + self.window_tokens < num_tokens:
            starts.append(start)
            start += hop
        return starts + [start]

    # -- synthesis -----------------------------------------------------------------------------------------------
    def _autocast(self, precision: str):
        device = self.position_table.device
        if precision == "auto":
            precision = "bfloat16" if device.type == "cuda" else "float32"
        if precision == "float32":
            return nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def _noise(self, count: int, generators: list | None) -> Tensor:
        """Tensor[count x latent shape]: one draw per window from its own CPU generator (device-independent)."""
        device = self.position_table.device
        if generators is None:
            return torch.randn(count, *self.latent_shape, device=device)
        return torch.stack([torch.randn(self.latent_shape, generator=g) for g in generators]).to(device)

    def _generators(self, ids: list[tuple[int, int]]) -> list | None:
        """One generator per (item, window), seeded from ``seed`` and the pair, so a window's noise does not depend
        on which other windows share its batch."""
        if self.cfg.seed is None:
            return None
        return [torch.Generator().manual_seed(int(np.random.SeedSequence([self.cfg.seed, b, w]).generate_state(1)[0]))
                for b, w in ids]

    @torch.no_grad()
    def sample_latents(self, context: Tensor, x_T: Tensor, *, steps: int | None = None,
                       guidance_scale: float | None = None, eta: float | None = None, sampler: str | None = None,
                       step_noise=None) -> Tensor:
        """Reverse diffusion. context : Tensor[N x W x C_ctx]; x_T : Tensor[N x 8 x 256 x 16] → z_0 (unscaled).

        ``step_noise(i) -> Tensor`` supplies DDIM's η-noise at step i (seeded per window by default).
        """
        from codecfw.plugins.decoder.diffusion_schedule import default_spacing, make_scheduler, set_timesteps

        cfg = self.cfg
        steps, guidance = steps or cfg.steps, cfg.guidance_scale if guidance_scale is None else guidance_scale
        eta, sampler = cfg.eta if eta is None else eta, sampler or cfg.sampler
        spacing = cfg.timestep_spacing or default_spacing(cfg.noise_schedule)
        scheduler = make_scheduler(sampler, cfg.noise_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end,
                                   timestep_spacing=spacing)
        timesteps = set_timesteps(scheduler, steps, spacing, device=x_T.device)
        guided = guidance != 1.0
        # One batched UNet call per step: [unconditional; conditional] (the reference makes two batch-1 calls).
        ctx = torch.cat([self.context(context, torch.ones(len(context), dtype=torch.bool, device=context.device)),
                         self.context(context)]) if guided else self.context(context)
        x = x_T.float()
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast(cfg.precision):
            kv = {"context_kv": self.unet.context_kv(ctx)} if cfg.cache_context else None
        return self._denoise(x, ctx, kv, timesteps, scheduler, guidance, eta, sampler, step_noise)

    def _denoise(self, x: Tensor, ctx: Tensor, kv: dict | None, timesteps: Tensor, scheduler, guidance: float,
                 eta: float, sampler: str, step_noise) -> Tensor:
        cfg, guided = self.cfg, guidance != 1.0
        for i, t in enumerate(timesteps):
            with self._autocast(cfg.precision):
                v = self.unet(torch.cat([x, x]) if guided else x, t, encoder_hidden_states=ctx,
                              cross_attention_kwargs=kv).sample.float()
            if guided:
                v_uncond, v_cond = v.chunk(2)
                v = v_uncond + guidance * (v_cond - v_uncond)
                if cfg.guidance_rescale > 0:  # Lin et al. (2024) eq. 15-16
                    std_cond = v_cond.std(dim=(1, 2, 3), keepdim=True)
                    rescaled = v * (std_cond / v.std(dim=(1, 2, 3), keepdim=True))
                    v = cfg.guidance_rescale * rescaled + (1 - cfg.guidance_rescale) * v
            if sampler == "ddim":
                noise = step_noise(i) if (eta > 0 and step_noise is not None) else None
                x = scheduler.step(v, t, x, eta=eta, variance_noise=noise).prev_sample
            else:
                x = scheduler.step(v, t, x).prev_sample
        return x

    @torch.no_grad()
    def latents_to_waveform(self, z: Tensor) -> Tensor:
        """z : Tensor[N x 8 x 256 x 16] (sampler scale) → Tensor[N x window_samples]."""
        with self._autocast(self.cfg.precision):
            # The reference multiplies by the float32 reciprocal of scale_factor.
            mel = self.vae.decode(z * (1.0 / self.scale_factor)).sample.float()
        with self._autocast(self.cfg.vocoder_precision):
            wav = self.vocoder(mel[:, 0]).float()
        return wav[:, : self.window_samples]  # the 32 surplus samples sit at the end

    @torch.no_grad()
    def decode_windows(self, windows: Tensor, ids: list[tuple[int, int]] | None = None, x_T: Tensor | None = None,
                       **sample_kwargs) -> Tensor:
        """windows : Tensor[N x W x F] (already padded) → Tensor[N x window_samples]; ``ids`` (item, window) seed
        each window's noise, so results do not depend on how windows are batched."""
        ids = ids or [(0, i) for i in range(len(windows))]
        generators = self._generators(ids)
        if x_T is None:
            x_T = self._noise(len(ids), generators)
        step_noise = None if generators is None else (lambda i: self._noise(len(ids), generators))
        sample_kwargs.setdefault("step_noise", step_noise)
        return self.latents_to_waveform(self.sample_latents(windows, x_T, **sample_kwargs))

    def forward(self, semantic: SemanticOutput, acoustic: AcousticOutput, num_samples: int) -> Tensor:
        return self.synthesize(self.condition_features(semantic, acoustic), num_samples)

    @torch.no_grad()
    def synthesize(self, features: Tensor, num_samples: int, **sample_kwargs) -> Tensor:
        """features : Tensor[B x T x F] → Tensor[B x 1 x num_samples] at the codec's sample rate."""
        return self._synthesize(lambda i, start, stop: features[i, start:stop], features.shape[0], features.shape[1],
                                num_samples, **sample_kwargs)

    @torch.no_grad()
    def decode_tokens(self, tokens: dict[str, Tensor], semantic_slot, acoustic_slot, num_samples: int,
                      **sample_kwargs) -> Tensor:
        """Streaming decode: ``{stream: LongTensor[B x T]}`` → Tensor[B x 1 x num_samples].

        Features are looked up window by window through the slots' ``from_tokens`` (pointwise lookups), so memory
        beyond the output buffer stays bounded by ``window_batch_size`` however long the input is.
        """
        semantic_names = {s.name for s in semantic_slot.streams()}
        lengths = {v.shape[:2] for v in tokens.values()}
        if len(lengths) != 1:
            raise ValueError(f"token streams differ in shape: { {k: tuple(v.shape) for k, v in tokens.items()} }")
        (b, t), = lengths

        def rows(i: int, start: int, stop: int) -> Tensor:
            part = {k: v[i:i + 1, start:stop] for k, v in tokens.items()}
            sem = semantic_slot.from_tokens({k: v for k, v in part.items() if k in semantic_names})
            ac = acoustic_slot.from_tokens({k: v for k, v in part.items() if k not in semantic_names}, sem)
            return self.condition_features(sem, ac)[0]

        return self._synthesize(rows, b, t, num_samples, **sample_kwargs)

    def _synthesize(self, rows, batch: int, num_tokens: int, num_samples: int, **sample_kwargs) -> Tensor:
        """``rows(item, start, stop) -> Tensor[n x F]``. Windows of every item are decoded ``window_batch_size`` at
        a time and cross-faded straight into the output buffer (on the decoder's device)."""
        device = self.position_table.device
        starts = self.window_starts(num_tokens)
        hop_samples = (self.window_tokens - self.overlap_tokens) * self.samples_per_token
        overlap = self.overlap_tokens * self.samples_per_token
        out = torch.zeros(batch, (len(starts) - 1) * hop_samples + self.window_samples, device=device)
        fade_in = torch.from_numpy(np.linspace(0, 1, overlap)).float().to(device)
        jobs = [(i, w) for i in range(batch) for w in range(len(starts))]
        for chunk in range(0, len(jobs), self.cfg.window_batch_size):
            ids = jobs[chunk: chunk + self.cfg.window_batch_size]
            windows = torch.stack([self._window(rows(i, starts[w], starts[w] + self.window_tokens).to(device))
                                   for i, w in ids])
            wav = self.decode_windows(windows, ids, **sample_kwargs)
            for (i, w), y in zip(ids, wav):
                if overlap and w > 0:
                    y = torch.cat([y[:overlap] * fade_in, y[overlap:]])
                if overlap and w < len(starts) - 1:
                    y = torch.cat([y[:-overlap], y[-overlap:] * fade_in.flip(0)])
                out[i, w * hop_samples: w * hop_samples + self.window_samples] += y
        if self.sample_rate != self.vocoder_rate:
            import torchaudio

            out = torchaudio.functional.resample(out, self.vocoder_rate, self.sample_rate)
        if out.shape[-1] < num_samples:
            out = F.pad(out, (0, num_samples - out.shape[-1]))
        return out[:, None, :num_samples]  # a view: no second output-sized copy

    def _window(self, rows: Tensor) -> Tensor:
        """One window's rows Tensor[n x F], right-padded with ``pad_value`` to ``window_tokens``."""
        return F.pad(rows, (0, 0, 0, self.window_tokens - rows.shape[0]), value=self.cfg.pad_value)

    # -- training ------------------------------------------------------------------------------------------------
    def training_output(self, semantic: SemanticOutput, acoustic: AcousticOutput, waveform: Tensor) -> DecoderOutput:
        """v-prediction loss ``‖v − v̂(z_t, t, E)‖²`` on 10.24 s windows (paper eq. 8-9), with the context dropped
        (zeroed features, positions kept) for a ``cond_drop_prob`` share of windows in training mode."""
        if self.mel is None:
            raise RuntimeError("training needs the VAE encoder; this decoder was built with vae_encoder=false "
                               "(an inference-only import)")
        features = self.condition_features(semantic, acoustic)
        b, t, f = features.shape
        if t % self.window_tokens:
            raise ValueError(f"training features cover {t} tokens, not whole windows of {self.window_tokens}")
        n = t // self.window_tokens
        wav = waveform.float()
        if self.sample_rate != self.vocoder_rate:
            import torchaudio

            wav = torchaudio.functional.resample(wav, self.sample_rate, self.vocoder_rate)
        wav = F.pad(wav, (0, max(0, n * self.window_samples - wav.shape[-1])))[..., : n * self.window_samples]
        windows = wav.reshape(b * n, 1, self.window_samples)
        with torch.no_grad():
            z0 = self.vae.encode(self.mel(windows)).latent_dist.sample()  # LDM samples the posterior
            if not bool(self.scale_initialized):
                std = z0.detach().flatten().std()
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    torch.distributed.all_reduce(std)
                    std /= torch.distributed.get_world_size()
                self.scale_factor.fill_(1.0 / float(std))
                self.scale_initialized.fill_(True)
            z0 = z0 * self.scale_factor
        features = features.reshape(b * n, self.window_tokens, f)
        # Condition dropout only while training: validation losses stay conditional.
        drop = torch.rand(b * n, device=features.device) < (self.cfg.cond_drop_prob if self.training else 0.0)
        steps = torch.randint(0, self.cfg.num_train_timesteps, (b * n,), device=z0.device)
        noise = torch.randn_like(z0)
        ab = self.alphas_cumprod[steps].view(-1, 1, 1, 1)
        z_t = ab.sqrt() * z0 + (1 - ab).sqrt() * noise
        target = ab.sqrt() * noise - (1 - ab).sqrt() * z0
        # Training precision is the loop's (train.precision), not the decoder's inference setting.
        pred = self.unet(z_t, steps, encoder_hidden_states=self.context(features, drop)).sample.float()
        loss = F.mse_loss(pred, target)
        return DecoderOutput(losses={"diffusion": loss},
                             metrics={"scale_factor": self.scale_factor.detach().clone(),
                                      "cond_dropped": drop.float().mean()})


@hookimpl
def register_decoders(register):
    register("latent_diffusion", LatentDiffusionDecoderConfig, LatentDiffusionDecoder)
