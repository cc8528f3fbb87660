"""The mel-spectrogram VAE of AudioLDM 2 (16 kHz, 64 mel bins) as diffusers' ``AutoencoderKL``, and the log-mel
front end it was trained on.

SemantiCodec (arXiv:2405.00233, §3.4) takes its VAE from AudioLDM 2 unchanged and keeps it frozen: a KL
autoencoder with 128 base channels, multipliers (1, 2, 4), two ResBlocks per level (three per decoder level), a
single-head attention only in the middle blocks, GroupNorm(32, eps 1e-6) and swish, compressing a log-mel image
``[1 x T x 64]`` 4× along time and frequency into ``[8 x T/4 x 16]``. That is diffusers' ``AutoencoderKL`` with
``DownEncoderBlock2D``/``UpDecoderBlock2D`` blocks (diffusers' AudioLDM pipelines load the same lineage).

The mel (training targets only; inference never computes one): magnitude STFT with a periodic Hann window,
n_fft = win = 1024, hop 160, reflect-padded centre frames, Slaney mel filters 0–8 kHz, ``log(max(x, 1e-5))``
(AudioLDM's ``TacotronSTFT``), frames ``[0, N/160)``: a 10.24 s window gives exactly 1024 frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class VAESpec:
    """AudioLDM 2 16 kHz VAE hyper-parameters (the official ones by default)."""

    channels: int = 128
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 4])
    num_res_blocks: int = 2
    latent_channels: int = 8
    mel_bins: int = 64

    @property
    def downsample(self) -> int:
        """Compression factor along each axis."""
        return 2 ** (len(self.channel_mult) - 1)


def build_vae(spec: VAESpec | None = None, encoder: bool = True):
    """A diffusers ``AutoencoderKL`` for ``spec``; ``encoder=False`` drops the encoder and ``quant_conv``
    (inference needs only ``post_quant_conv`` and the decoder)."""
    from diffusers import AutoencoderKL

    spec = spec or VAESpec()
    widths = tuple(spec.channels * m for m in spec.channel_mult)
    vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * len(widths),
                        up_block_types=("UpDecoderBlock2D",) * len(widths), block_out_channels=widths,
                        layers_per_block=spec.num_res_blocks, act_fn="silu", latent_channels=spec.latent_channels,
                        norm_num_groups=32, sample_size=256, scaling_factor=1.0)
    if not encoder:
        vae.encoder = None
        vae.quant_conv = None
    return vae


class AudioLDMMel(nn.Module):
    """waveform ``Tensor[B x 1 x N]`` (16 kHz) → log-mel ``Tensor[B x 1 x N/hop x mel_bins]`` (time first), the
    VAE's input domain."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 1024, hop_length: int = 160, mel_bins: int = 64,
                 f_min: float = 0.0, f_max: float = 8000.0, clip: float = 1e-5) -> None:
        super().__init__()
        import torchaudio

        self.hop_length = hop_length
        self.clip = clip
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=n_fft, hop_length=hop_length, f_min=f_min, f_max=f_max,
            n_mels=mel_bins, power=1.0, center=True, pad_mode="reflect", norm="slaney", mel_scale="slaney")
        # The window and filter bank follow from the arguments: keep them out of checkpoints (the periodic window
        # is also a view of a longer tensor, which safetensors refuses to save).
        for module in self.mel.modules():
            for name, buf in list(module._buffers.items()):
                if buf is not None:
                    module.register_buffer(name, buf.clone(), persistent=False)

    def forward(self, waveform: Tensor) -> Tensor:
        frames = waveform.shape[-1] // self.hop_length
        # AudioLDM asserts its input lies in [-1, 1]; clamp instead of failing on a clipped training crop.
        mel = self.mel(waveform[:, 0].float().clamp(-1, 1))[..., :frames]
        return torch.log(mel.clamp(min=self.clip)).transpose(1, 2)[:, None]
