"""The AudioLDM 2 Transformer-UNet (T-UNet) as a diffusers ``UNet2DConditionModel``.

SemantiCodec's latent diffusion decoder (Liu et al., 2024, arXiv:2405.00233, §3.4) uses the T-UNet of AudioLDM 2
(Liu et al., 2023, arXiv:2308.05734): an LDM UNet whose every attention site is

    ResBlock ─► SpatialTransformer(self-attention, self-attention, GEGLU) ─► SpatialTransformer(self, cross, GEGLU)

The first transformer gets no context, so its second attention is self-attention too (the reference's
``extra_sa_layer``). diffusers' ``UNet2DConditionModel`` has the same ResBlock/down/up/mid layout, the same
timestep embedding (``[cos, sin]``, no frequency shift) and the same transformer (GroupNorm(32, eps 1e-6) → 1×1
``proj_in`` → LayerNorm/attn/LayerNorm/attn/LayerNorm/GEGLU → 1×1 ``proj_out``), but one transformer per site.
:class:`TUNet2DConditionModel` therefore builds the stock model and wraps each of its ``Transformer2DModel`` s in a
:class:`SelfCrossTransformer` that runs an extra ``double_self_attention`` transformer first. Everything else, SDPA
attention processors included, is diffusers' own.

``official_keys.official_unet_key_map`` maps the official ``model.diffusion_model.*`` layout
(``input_blocks.4.1...``) onto this class's keys (``down_blocks.1.attentions.0.self_transformer...``).
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import Tensor, nn


def attention_levels(num_levels: int, attention_resolutions: Sequence[int]) -> list[bool]:
    """Which UNet levels have attention sites (level l runs at downsample factor 2**l)."""
    return [2 ** level in attention_resolutions for level in range(num_levels)]


class SelfCrossTransformer(nn.Module):
    """One T-UNet attention site: a self-attention-only transformer, then a cross-attention transformer.

    Both are diffusers ``Transformer2DModel`` s. Called with the keyword arguments diffusers' cross-attention blocks
    pass to their ``attentions[i]``; returns a 1-tuple like ``Transformer2DModel(..., return_dict=False)``.
    """

    def __init__(self, cross_transformer: nn.Module, extra_self_attention: bool = True) -> None:
        super().__init__()
        cfg = cross_transformer.config
        self.self_transformer = Transformer2DModel(
            num_attention_heads=cfg.num_attention_heads, attention_head_dim=cfg.attention_head_dim,
            in_channels=cfg.in_channels, num_layers=cfg.num_layers, norm_num_groups=cfg.norm_num_groups,
            cross_attention_dim=None, double_self_attention=True) if extra_self_attention else None
        self.cross_transformer = cross_transformer

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                cross_attention_kwargs: dict | None = None, attention_mask: Tensor | None = None,
                encoder_attention_mask: Tensor | None = None, return_dict: bool = False, **_: object) -> tuple[Tensor]:
        """hidden_states : Tensor[B x C x H x W]; encoder_hidden_states : Tensor[B x L x context_dim]."""
        if self.self_transformer is not None:
            hidden_states = self.self_transformer(hidden_states, cross_attention_kwargs=cross_attention_kwargs,
                                                  return_dict=False)[0]
        out = self.cross_transformer(hidden_states, encoder_hidden_states=encoder_hidden_states,
                                     cross_attention_kwargs=cross_attention_kwargs,
                                     encoder_attention_mask=encoder_attention_mask, return_dict=False)[0]
        return (out,)


class ContextKVAttnProcessor(AttnProcessor2_0):
    """SDPA attention whose cross-attention can take its keys and values precomputed.

    A window's context is the same at every diffusion step, yet ``to_k``/``to_v`` of ``[B x 512 x 1728]`` are about
    a quarter of the official T-UNet's FLOPs when recomputed each step. :meth:`TUNet2DConditionModel.context_kv`
    computes them once; ``cross_attention_kwargs={"context_kv": kv}`` then hands cross-attention number ``slot``
    its pair. The values are plain call arguments (no state kept between calls), so a compiled UNet sees them as
    graph inputs. Self-attentions (``slot=None``) accept and ignore the argument: diffusers warns about keyword
    arguments a processor's signature lacks.
    """

    def __init__(self, slot: int | None = None) -> None:
        super().__init__()
        self.slot = slot

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None,
                 context_kv: list[tuple[Tensor, Tensor]] | None = None) -> Tensor:
        if context_kv is None or self.slot is None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        if attention_mask is not None:
            raise ValueError("precomputed context keys/values do not take an attention mask")
        k, v = context_kv[self.slot]
        b, heads = hidden_states.shape[0], attn.heads
        q = attn.to_q(hidden_states)
        d = k.shape[-1] // heads
        out = F.scaled_dot_product_attention(q.view(b, -1, heads, d).transpose(1, 2),
                                             k.view(b, -1, heads, d).transpose(1, 2),
                                             v.view(b, -1, heads, d).transpose(1, 2))
        out = out.transpose(1, 2).reshape(b, -1, heads * d).to(q.dtype)
        return attn.to_out[1](attn.to_out[0](out)) / attn.rescale_output_factor


class TUNet2DConditionModel(UNet2DConditionModel):
    """The T-UNet in the reference's terms (``openaimodel.UNetModel`` arguments).

    model_channels, channel_mult : widths ``model_channels * m`` per level.
    attention_resolutions : downsample factors (1, 2, 4, ...) whose levels get attention sites; the middle block
        always has one.
    num_head_channels : attention head width (heads = width / num_head_channels).
    context_dim : width of the cross-attention context ``Tensor[B x L x context_dim]``.
    extra_self_attention : the reference's ``extra_sa_layer`` (a self-attention transformer before each
        cross-attention one).

    ``forward(sample, timestep, encoder_hidden_states)`` is diffusers' own: sample Tensor[B x C x T x F]; add
    ``cross_attention_kwargs={"context_kv": self.context_kv(encoder_hidden_states)}`` to reuse the context's
    keys/values across steps.
    """

    compile_target = True  # train.compile compiles it whole (core.training.trainer.compile_marked_modules)

    @register_to_config
    def __init__(self, in_channels: int = 8, out_channels: int = 8, model_channels: int = 64,
                 channel_mult: Sequence[int] = (1, 2, 3, 5), num_res_blocks: int = 2,
                 attention_resolutions: Sequence[int] = (8, 4, 2), num_head_channels: int = 32,
                 context_dim: int = 1728, transformer_depth: int = 1, extra_self_attention: bool = True,
                 norm_num_groups: int = 32) -> None:
        widths = [model_channels * m for m in channel_mult]
        attention = attention_levels(len(widths), attention_resolutions)
        bad = [w for w in widths if w % num_head_channels or w % norm_num_groups]
        if bad:
            raise ValueError(f"T-UNet widths {bad} must be multiples of num_head_channels={num_head_channels} "
                             f"and norm_num_groups={norm_num_groups}")
        down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention]
        up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)]
        # The parent registers its own arguments too: its forward reads them from self.config.
        super().__init__(
            in_channels=in_channels, out_channels=out_channels, flip_sin_to_cos=True, freq_shift=0,
            down_block_types=tuple(down), mid_block_type="UNetMidBlock2DCrossAttn", up_block_types=tuple(up),
            block_out_channels=tuple(widths), layers_per_block=num_res_blocks, norm_num_groups=norm_num_groups,
            norm_eps=1e-5, cross_attention_dim=context_dim, transformer_layers_per_block=transformer_depth,
            # diffusers' historical naming: for UNet2DConditionModel this is the number of heads per level.
            attention_head_dim=tuple(w // num_head_channels for w in widths))
        for block in [*self.down_blocks, self.mid_block, *self.up_blocks]:
            if getattr(block, "attentions", None) is not None:
                block.attentions = nn.ModuleList(SelfCrossTransformer(t, extra_self_attention)
                                                 for t in block.attentions)
        self.set_attn_processor(ContextKVAttnProcessor())
        for slot, attn in enumerate(self.cross_attentions()):
            attn.set_processor(ContextKVAttnProcessor(slot))

    def cross_attentions(self) -> list[nn.Module]:
        """The context attentions (``attn2`` of every cross-attention transformer block)."""
        return [block.attn2 for site in self.modules() if isinstance(site, SelfCrossTransformer)
                for block in site.cross_transformer.transformer_blocks]

    def context_kv(self, context: Tensor) -> list[tuple[Tensor, Tensor]]:
        """context : Tensor[B x L x context_dim] → per cross-attention (keys, values), each Tensor[B x L x width].

        Pass the result as ``cross_attention_kwargs={"context_kv": kv}`` to every step that uses this context.
        """
        kv = []
        for attn in self.cross_attentions():
            c = attn.norm_encoder_hidden_states(context) if attn.norm_cross else context
            kv.append((attn.to_k(c), attn.to_v(c)))
        return kv
