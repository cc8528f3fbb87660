"""Whisper's encoder as a frozen semantic teacher, for any input length.

Whisper (Radford et al., "Robust Speech Recognition via Large-Scale Weak Supervision", arXiv 2212.04356) encodes a
80- or 128-bin log-mel spectrogram (16 kHz, 25 ms window, 10 ms hop) with two convolutions (the second with stride
2) and a transformer: one frame every 320 samples, 50 Hz, the frame rate of codecfw's 16 kHz codecs with hop 320.
Recent semantic codecs use this encoder as their teacher (XY-Tokenizer, GLM-4-Voice's tokenizer, SimWhisper-Codec).

:class:`WhisperTeacher` wraps transformers' ``WhisperEncoder`` (the layers are the dependency's; only the loop over
them is here) so that :class:`~codecfw.plugins.semantic.ssl_teacher.HiddenStateReader` reads it like a HuBERT:

- the log-mel front end is :class:`WhisperLogMel`, the same computation as transformers' ``WhisperFeatureExtractor``
  (its own mel filterbank) in torch, batched, on the waveform's device, *without* padding to 30 s;
- transformers' ``WhisperEncoder.forward`` insists on exactly ``2 * max_source_positions`` (3000) mel frames and adds
  all 1500 positional embeddings; :meth:`WhisperTeacher.encode` runs the same modules on ``T <= 1500`` frames with the
  first ``T`` positional embeddings. Its hidden states follow transformers' convention: index 0 the embedding output
  (conv stack + positions), ``i`` the output of layer ``i``, the last one after the final layer norm (=
  ``last_hidden_state``);
- inputs longer than 30 s are cut into consecutive 30-s windows encoded independently (Whisper's own practice: it
  never attends across 30-s windows), then concatenated;
- ``pad_to_window=True`` pads the input with zeros to whole 30-s windows first, as ``WhisperFeatureExtractor`` does:
  exactly Whisper's features (the frames past the input are dropped), at 30 s / input-length times the compute.

Alignment: encoder frame ``t`` is centred on input sample ``320 t`` (mel frame ``2t``); its receptive field spans
about ±520 samples before attention.

Whisper was trained only on 30-s windows (speech followed by zero padding), and every layer attends over the whole
window, so a short clip encoded at its own length does *not* give the first frames of the same clip padded to 30 s:
the embedding output (hidden state 0) is identical except for the last frame (the STFT's reflect padding sees audio
instead of zeros), and the difference grows with depth, largest after the final layer norm. docs/xcodec.md
("Whisper as teacher") gives the measured figures; ``pad_to_window`` is the exact alternative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Whisper's front end, identical for every released model (only the number of mel bins differs: 80 or 128)
SAMPLE_RATE = 16000
N_FFT = 400
MEL_HOP = 160


class WhisperLogMel(nn.Module):
    """Whisper's log-mel spectrogram, the numbers of transformers' ``WhisperFeatureExtractor`` (torch path, no
    dither), without padding to 30 s.

    waveform : Tensor[B x N] → Tensor[B x n_mels x N // hop]: centred STFT (reflect padding), last frame dropped,
    power → mel → log10 clamped at 1e-10 and at (per-utterance maximum − 8), then ``(x + 4) / 4``.
    """

    def __init__(self, n_mels: int = 80, n_fft: int = N_FFT, hop_length: int = MEL_HOP,
                 sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        from transformers import WhisperFeatureExtractor

        extractor = WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=sample_rate, hop_length=hop_length,
                                            n_fft=n_fft)
        self.n_fft, self.hop_length, self.n_mels = n_fft, hop_length, n_mels
        # derived from settings, never trained: not part of checkpoints
        self.register_buffer("mel_filters", torch.from_numpy(extractor.mel_filters).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, waveform: Tensor) -> Tensor:
        stft = torch.stft(waveform.float(), self.n_fft, self.hop_length, window=self.window, return_complex=True)
        power = stft[..., :-1].abs() ** 2
        log_spec = (self.mel_filters.T @ power).clamp_min(1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.amax(dim=(-2, -1), keepdim=True) - 8.0)
        return (log_spec + 4.0) / 4.0


class WhisperTeacher(nn.Module):
    """transformers' ``WhisperEncoder`` behind Whisper's log-mel front end, for inputs of any length.

    waveform : Tensor[B x N] (16 kHz) → ``BaseModelOutput(last_hidden_state=Tensor[B x T x H],
    hidden_states=(num_layers + 1) x Tensor[B x T x H])`` with ``T = ceil((N // 160) / 2)``: 50 Hz frames.
    """

    #: input samples per encoder frame (mel hop 160 × conv2 stride 2)
    hop_length: int
    #: HiddenStateReader's default for ``padding``: none, frame t is already centred on sample 320 t
    default_padding = 0

    def __init__(self, encoder: nn.Module, n_mels: int | None = None, pad_to_window: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.pad_to_window = pad_to_window
        self.config = encoder.config
        self.log_mel = WhisperLogMel(n_mels or self.config.num_mel_bins)
        self.mel_stride = self.encoder.conv1.stride[0] * self.encoder.conv2.stride[0]
        self.hop_length = self.log_mel.hop_length * self.mel_stride
        self.max_frames = int(self.config.max_source_positions)

    @classmethod
    def from_model(cls, model: nn.Module, pad_to_window: bool = False) -> WhisperTeacher:
        """The encoder of a ``WhisperModel``/``WhisperForConditionalGeneration`` (the decoder is dropped)."""
        encoder = model.get_encoder() if hasattr(model, "get_encoder") else model
        return cls(encoder.float(), pad_to_window=pad_to_window)

    def encode(self, mel: Tensor) -> list[Tensor]:
        """mel : Tensor[B x n_mels x M], M <= 2 * max_source_positions → hidden states, (layers + 1) x Tensor[B x
        ceil(M / 2) x H], exactly as ``WhisperEncoder.forward(..., output_hidden_states=True)`` computes them for M =
        3000, with the first ceil(M / 2) positional embeddings."""
        enc = self.encoder
        x = F.gelu(enc.conv2(F.gelu(enc.conv1(mel.to(enc.conv1.weight.dtype))))).transpose(1, 2)
        if x.shape[1] > enc.embed_positions.num_embeddings:
            raise ValueError(f"Whisper encoder: {x.shape[1]} frames exceed its {enc.embed_positions.num_embeddings} "
                             f"positions")
        hidden = F.dropout(x + enc.embed_positions.weight[: x.shape[1]], p=enc.dropout, training=enc.training)
        states = [hidden]
        for layer in enc.layers:
            if not (enc.training and enc.layerdrop > 0 and torch.rand([]) < enc.layerdrop):
                hidden = layer(hidden, None)
            states.append(hidden)
        states[-1] = enc.layer_norm(hidden)
        return states

    def forward(self, waveform: Tensor, output_hidden_states: bool = True):
        from transformers.modeling_outputs import BaseModelOutput

        frames = -(-(waveform.shape[-1] // self.log_mel.hop_length) // self.mel_stride)
        window = self.max_frames * self.mel_stride
        if self.pad_to_window:  # Whisper's own input: zeros up to whole 30-s windows, as WhisperFeatureExtractor does
            samples = window * self.log_mel.hop_length
            waveform = F.pad(waveform, (0, -waveform.shape[-1] % samples))
        mel = self.log_mel(waveform)
        pieces = [self.encode(mel[..., i:i + window]) for i in range(0, mel.shape[-1], window)]
        states = tuple(torch.cat(layer, dim=1)[:, :frames] for layer in zip(*pieces))
        return BaseModelOutput(last_hidden_state=states[-1], hidden_states=states if output_hidden_states else None)
