"""HiFi-GAN V1 vocoder of AudioLDM / SemantiCodec (Kong et al., 2020, arXiv:2010.05646) as transformers'
``SpeechT5HifiGan``.

The reference's ``hifigan.Generator_old`` (built by ``get_vocoder`` with a hard-coded config, weight norm removed
before loading) and transformers' ``SpeechT5HifiGan`` are the same network: ``conv_pre`` (k7) → per stage
leaky-ReLU(0.1) → transposed conv (padding ``(k-u)//2``) → mean of the ResBlock1 multi-receptive-field blocks
(kernels 3/7/11, dilations 1/3/5) → leaky-ReLU with PyTorch's default slope 0.01 → ``conv_post`` (k7) → tanh. Only
the upsampler's name differs (``ups`` vs ``upsampler``) and SpeechT5HifiGan carries ``mean``/``scale`` buffers that
``normalize_before=False`` leaves unused. diffusers' AudioLDM/AudioLDM 2 pipelines use the same class for the same
checkpoint lineage.

Output length: ``160·T + 32`` samples for ``T`` mel frames with the default rates; the 32 extra samples come from
the transposed convolutions' padding and sit at the end (``[0, 160·T)`` is frame-aligned).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor


@dataclass
class HiFiGANSpec:
    """The vocoder's hyper-parameters; defaults are the official SemantiCodec/AudioLDM 16 kHz, 64-mel vocoder."""

    num_mels: int = 64
    upsample_initial_channel: int = 1024
    upsample_rates: list[int] = field(default_factory=lambda: [5, 4, 2, 2, 2])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [16, 16, 8, 4, 4])
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5]] * 3)
    sampling_rate: int = 16000

    @property
    def hop_length(self) -> int:
        hop = 1
        for rate in self.upsample_rates:
            hop *= rate
        return hop


def build_hifigan(spec: HiFiGANSpec | None = None):
    """A ``transformers.SpeechT5HifiGan`` with ``spec``'s architecture, in eval mode, without weight norm.

    Input ``Tensor[B x T x num_mels]`` (log-mel, time first) → ``Tensor[B x (hop·T + extra)]``.
    """
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    spec = spec or HiFiGANSpec()
    values = asdict(spec)
    config = SpeechT5HifiGanConfig(model_in_dim=values.pop("num_mels"), normalize_before=False,
                                   leaky_relu_slope=0.1, **values)
    return SpeechT5HifiGan(config).eval()


def official_vocoder_state(state: dict[str, Tensor], source: str = "vocoder") -> dict[str, Tensor]:
    """``Generator_old`` keys (no prefix) → ``SpeechT5HifiGan`` keys.

    Weight-normed tensors (``weight_g``/``weight_v``, as in a vocoder saved before ``remove_weight_norm``) are
    folded into plain weights; ``mean``/``scale`` are added (zeros/ones) when absent.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith(".weight_v"):
            continue
        if key.endswith(".weight_g"):
            stem = key[: -len("_g")]
            v = state.get(stem + "_v")
            if v is None:
                raise KeyError(f"{source}: {key} has no matching {stem}_v")
            # torch weight_norm with dim=0: w = g * v / ||v|| over every dim but 0
            norm = v.flatten(1).norm(dim=1).reshape(-1, *([1] * (v.ndim - 1)))
            key, value = stem, value * v / norm
        if key.startswith("ups."):
            key = "upsampler." + key[len("ups."):]
        elif not key.startswith(("conv_pre.", "conv_post.", "resblocks.", "mean", "scale")):
            raise KeyError(f"{source}: unexpected vocoder key {key!r}")
        out[key] = value
    if "conv_pre.weight" not in out:
        raise KeyError(f"{source}: no conv_pre.weight; is this a HiFi-GAN Generator state dict?")
    num_mels = out["conv_pre.weight"].shape[1]
    out.setdefault("mean", torch.zeros(num_mels))
    out.setdefault("scale", torch.ones(num_mels))
    return out
