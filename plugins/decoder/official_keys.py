"""The official SemantiCodec ``decoder.ckpt`` layout → codecfw's latent diffusion decoder.

``haoheliu/SemantiCodec`` ships ``semanticodec_tokenrate_{100,50,25}/decoder.ckpt``: a flat state dict (no
``state_dict`` wrapper) with

- ``model.diffusion_model.*``: the T-UNet (openaimodel names) → ``unet.*`` (diffusers names);
- ``model_ema.*``: LitEma shadow copies, unused by the reference's inference → dropped;
- ``first_stage_model.decoder.* / post_quant_conv.*``: the VAE decoder (LDM names) → ``vae.*`` (diffusers
  ``AutoencoderKL`` names); ``first_stage_model.encoder.* / quant_conv.*``: the VAE encoder, kept only for training;
- ``first_stage_model.vocoder.*``: HiFi-GAN ``Generator_old`` with weight norm removed → ``vocoder.*``
  (transformers ``SpeechT5HifiGan`` names);
- ``betas, alphas_cumprod, ...`` (12 schedule buffers) and ``logvar``: recomputed, checked, not stored;
- ``scale_factor``: the latent scale → ``scale_factor``.

Pure Python: importing this module imports neither diffusers nor transformers.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from codecfw.plugins.decoder.hifigan import official_vocoder_state
from codecfw.plugins.decoder.t_unet import attention_levels

#: ResBlock sub-module names: official openaimodel → diffusers ``ResnetBlock2D``.
RESBLOCK_RENAMES = {
    "in_layers.0.": "norm1.", "in_layers.2.": "conv1.", "emb_layers.1.": "time_emb_proj.",
    "out_layers.0.": "norm2.", "out_layers.3.": "conv2.", "skip_connection.": "conv_shortcut.",
}
#: VAE ResnetBlock / AttnBlock sub-module names: LDM → diffusers.
VAE_RENAMES = {"nin_shortcut.": "conv_shortcut.", "norm.": "group_norm.", "q.": "to_q.", "k.": "to_k.",
               "v.": "to_v.", "proj_out.": "to_out.0."}
SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2")


def rename_by_prefix(state: dict[str, Tensor], prefix_map: dict[str, str], source: str = "checkpoint",
                     sub_renames: dict[str, str] | None = None) -> dict[str, Tensor]:
    """Rename keys by their longest matching prefix; targets tagged ``#sub`` also get ``sub_renames`` applied to
    the rest of the key. Raises KeyError naming the keys no prefix matches."""
    prefixes = sorted(prefix_map, key=len, reverse=True)
    out, unknown = {}, []
    for key, value in state.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
            continue
        target, rest = prefix_map[prefix], key[len(prefix):]
        if target.endswith("#sub"):
            target = target[:-4]
            for old, new in (sub_renames or {}).items():
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
        out[target + rest] = value
    if unknown:
        raise KeyError(f"{source}: {len(unknown)} key(s) fit no known layout, e.g. {unknown[:5]}")
    return out


def official_unet_key_map(num_levels: int, num_res_blocks: int, attention_levels: Sequence[bool],
                          extra_self_attention: bool = True) -> dict[str, str]:
    """Prefix map official openaimodel ``UNetModel`` → :class:`TUNet2DConditionModel` (keys without
    ``model.diffusion_model.``)."""
    m = {"time_embed.0.": "time_embedding.linear_1.", "time_embed.2.": "time_embedding.linear_2.",
         "input_blocks.0.0.": "conv_in.", "out.0.": "conv_norm_out.", "out.2.": "conv_out."}

    def site(official: str, ours: str) -> int:
        """ResBlock at .0, then (self-attention transformer,) cross-attention transformer; returns next index."""
        i = 1
        if extra_self_attention:
            m[f"{official}.{i}."] = f"{ours}.self_transformer."
            i += 1
        m[f"{official}.{i}."] = f"{ours}.cross_transformer."
        return i + 1

    idx = 1
    for level in range(num_levels):
        for r in range(num_res_blocks):
            m[f"input_blocks.{idx}.0."] = f"down_blocks.{level}.resnets.{r}.#sub"
            if attention_levels[level]:
                site(f"input_blocks.{idx}", f"down_blocks.{level}.attentions.{r}")
            idx += 1
        if level != num_levels - 1:
            m[f"input_blocks.{idx}.0.op."] = f"down_blocks.{level}.downsamplers.0.conv."
            idx += 1
    m["middle_block.0."] = "mid_block.resnets.0.#sub"
    m[f"middle_block.{site('middle_block', 'mid_block.attentions.0')}."] = "mid_block.resnets.1.#sub"
    idx = 0
    for u, level in enumerate(reversed(range(num_levels))):
        for i in range(num_res_blocks + 1):
            m[f"output_blocks.{idx}.0."] = f"up_blocks.{u}.resnets.{i}.#sub"
            nxt = site(f"output_blocks.{idx}", f"up_blocks.{u}.attentions.{i}") if attention_levels[level] else 1
            if level and i == num_res_blocks:
                m[f"output_blocks.{idx}.{nxt}.conv."] = f"up_blocks.{u}.upsamplers.0.conv."
            idx += 1
    return m


def official_vae_key_map(num_levels: int, num_res_blocks: int, encoder: bool = True) -> dict[str, str]:
    """Prefix map LDM ``AutoencoderKL`` (keys without ``first_stage_model.``) → diffusers ``AutoencoderKL``."""
    m = {"post_quant_conv.": "post_quant_conv.", "decoder.conv_in.": "decoder.conv_in.",
         "decoder.norm_out.": "decoder.conv_norm_out.", "decoder.conv_out.": "decoder.conv_out."}
    parts = ["decoder", "encoder"] if encoder else ["decoder"]
    for part in parts:
        m[f"{part}.mid.block_1."] = f"{part}.mid_block.resnets.0.#sub"
        m[f"{part}.mid.attn_1."] = f"{part}.mid_block.attentions.0.#sub"
        m[f"{part}.mid.block_2."] = f"{part}.mid_block.resnets.1.#sub"
    for level in range(num_levels):
        up = num_levels - 1 - level  # diffusers lists decoder levels deepest first
        for b in range(num_res_blocks + 1):
            m[f"decoder.up.{level}.block.{b}."] = f"decoder.up_blocks.{up}.resnets.{b}.#sub"
        if level:
            m[f"decoder.up.{level}.upsample.conv."] = f"decoder.up_blocks.{up}.upsamplers.0.conv."
    if encoder:
        m.update({"quant_conv.": "quant_conv.", "encoder.conv_in.": "encoder.conv_in.",
                  "encoder.norm_out.": "encoder.conv_norm_out.", "encoder.conv_out.": "encoder.conv_out."})
        for level in range(num_levels):
            for b in range(num_res_blocks):
                m[f"encoder.down.{level}.block.{b}."] = f"encoder.down_blocks.{level}.resnets.{b}.#sub"
            if level != num_levels - 1:
                m[f"encoder.down.{level}.downsample.conv."] = f"encoder.down_blocks.{level}.downsamplers.0.conv."
    return m


def convert_official_vae_state(state: dict[str, Tensor], num_levels: int, num_res_blocks: int,
                               encoder: bool = True, source: str = "first_stage_model") -> dict[str, Tensor]:
    """LDM VAE keys (no prefix) → diffusers ``AutoencoderKL`` keys; the attention's 1×1 convs become linears."""
    if not encoder:
        state = {k: v for k, v in state.items() if not k.startswith(("encoder.", "quant_conv."))}
    out = rename_by_prefix(state, official_vae_key_map(num_levels, num_res_blocks, encoder), source, VAE_RENAMES)
    for key, value in out.items():
        if ".attentions." in key and key.endswith(".weight") and value.ndim == 4:
            out[key] = value[:, :, 0, 0]
    return out


def map_official_decoder_state(state: dict[str, Tensor], *, channel_mult: Sequence[int] = (1, 2, 3, 5),
                               num_res_blocks: int = 2, attention_resolutions: Sequence[int] = (8, 4, 2),
                               extra_self_attention: bool = True, vae_levels: int = 3, vae_num_res_blocks: int = 2,
                               keep_vae_encoder: bool = False, source: str = "decoder.ckpt") -> dict[str, Tensor]:
    """The official ``decoder.ckpt`` state dict → the state dict of :class:`LatentDiffusionDecoder`.

    Keeps the UNet, the VAE decoder (and encoder if ``keep_vae_encoder``, which training needs), the vocoder and
    ``scale_factor``; drops ``model_ema.*``, ``logvar`` and the schedule buffers (check those with
    :func:`check_official_schedule` first). Defaults are the official 100/50/25 tokens/s architecture, whose only
    difference between token rates is the cross-attention context width, read from the weights.
    """
    groups: dict[str, dict[str, Tensor]] = {"unet": {}, "vae": {}, "vocoder": {}}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("model.diffusion_model."):
            groups["unet"][key[len("model.diffusion_model."):]] = value
        elif key.startswith("first_stage_model.vocoder."):
            groups["vocoder"][key[len("first_stage_model.vocoder."):]] = value
        elif key.startswith("first_stage_model."):
            groups["vae"][key[len("first_stage_model."):]] = value
        elif key == "scale_factor":
            out["scale_factor"] = torch.as_tensor(value, dtype=torch.float32).reshape(())
        elif key.startswith("model_ema.") or key == "logvar" or key in SCHEDULE_BUFFERS:
            continue
        else:
            raise KeyError(f"{source}: unexpected key {key!r} (not UNet, EMA, VAE, vocoder or schedule)")
    prefixes = {"unet": "model.diffusion_model.", "vae": "first_stage_model.", "vocoder": "first_stage_model.vocoder."}
    for name, group in groups.items():
        if not group:
            raise KeyError(f"{source}: no {name} weights (expected keys under {prefixes[name]!r})")
    unet_map = official_unet_key_map(len(channel_mult), num_res_blocks,
                                     attention_levels(len(channel_mult), attention_resolutions), extra_self_attention)
    out.update({f"unet.{k}": v for k, v in rename_by_prefix(groups["unet"], unet_map, f"{source} (UNet)",
                                                             RESBLOCK_RENAMES).items()})
    vae = convert_official_vae_state(groups["vae"], vae_levels, vae_num_res_blocks, keep_vae_encoder,
                                     f"{source} (VAE)")
    out.update({f"vae.{k}": v for k, v in vae.items()})
    out.update({f"vocoder.{k}": v for k, v in official_vocoder_state(groups["vocoder"], f"{source} (vocoder)").items()})
    if "scale_factor" not in out:
        raise KeyError(f"{source}: no 'scale_factor' (the latent scale the UNet was trained with)")
    out["scale_initialized"] = torch.tensor(True)  # the checkpoint's scale is final: training must not re-estimate
    return out


def check_official_schedule(state: dict[str, Tensor], expected: dict[str, Tensor], rtol: float = 1e-5,
                            source: str = "decoder.ckpt") -> None:
    """Assert the checkpoint's stored schedule buffers equal the recomputed ones (``expected``: name → Tensor).
    Buffers missing from the checkpoint are skipped."""
    bad = []
    for name in SCHEDULE_BUFFERS:
        if name not in state or name not in expected:
            continue
        stored, ours = state[name].double(), expected[name].double().to(state[name].device)
        if stored.shape != ours.shape or not torch.allclose(stored, ours, rtol=rtol, atol=1e-8):
            diff = (stored - ours).abs().max().item() if stored.shape == ours.shape else "shape"
            bad.append(f"{name} (max diff {diff})")
    if bad:
        raise ValueError(f"{source}: stored diffusion schedule differs from the configured one: {', '.join(bad)}; "
                         f"check num_train_timesteps / beta_start / beta_end / noise_schedule")
