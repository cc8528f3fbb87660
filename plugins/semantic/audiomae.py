"""AudioMAE + k-means semantic front-end (SemantiCodec, Liu et al., 2024, arXiv:2405.00233, §3.1).

waveform ─► Kaldi fbank (128 bins, AudioSet normalisation, 10.24 s windows) ─► AudioMAE ViT-B/16 (mean of the
LayerNorm'd outputs of the last blocks) ─► stack K patches ─► nearest frozen k-means centroid ─► semantic tokens.

Token layout. AudioMAE cuts each 1024-frame × 128-bin window into a 64 (time) × 8 (frequency) grid of 16×16 patches,
index ``t*8 + f``. Tokens follow that patch order, time-major: at K=1 eight tokens (one per 16-bin band) per 0.16 s;
K=2 joins frequency neighbours (four tokens per 0.16 s); K=4 joins 2×2 time-frequency blocks with channel order
(t0f0, t0f1, t1f0, t1f1) (four tokens per 0.32 s). A stream therefore carries 50/K tokens per second on average.

Windows. Every 10.24 s window is encoded on its own (its own mean removal and fbank), so chunked encoding of a
long file equals whole-file encoding; the reference computes one fbank over the whole padded file, which differs
only in the last two frames of each window but the last (``reference_compat=True`` does that).

Token count. codecfw keeps every token group that covers part of the input: ``T = ceil(N / S) * n`` with
``S = 2560`` samples (K=1, 2) or 5120 (K=4) and ``n = 8/K`` (K=1, 2) or 4 (K=4), and pads to ``ceil(N / 163840)``
windows. ``reference_compat=True`` reproduces the reference's float arithmetic instead (``ceil`` of a float
target, one extra 0.16 s for multiples of 0.16 s, one extra window for multiples of 10.24 s); docs/semanticodec.md
has the table.

The ViT keeps the official key names (``patch_embed.proj``, ``blocks.N.attn.qkv``, ``norm`` ...), so the
``audiomae.model.*`` weights of the official ``encoder.ckpt`` load after a prefix change; timm is not needed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.checkpoint import read_state_dict
from codecfw.core.config import PluginConfig, StrictModel
from codecfw.core.types import ChunkPolicy, FrozenPart, SemanticFrontend, SemanticOutput, TokenStream

from codecfw.plugins.semantic.kmeans_codebook import KMeansCodebooks

SAMPLE_RATE = 16000
SEGMENT_SAMPLES = 163840  # 10.24 s
SEGMENT_FRAMES = 1024  # 10 ms frames per window
MEL_BINS = 128
PATCH = 16
GRID = (SEGMENT_FRAMES // PATCH, MEL_BINS // PATCH)  # 64 time x 8 frequency patches
#: AudioSet fbank statistics used by AST/AudioMAE (the reference's ``norm_mean``/``norm_std``).
FBANK_MEAN, FBANK_STD = -4.2677393, 4.5689974


# ----------------------------------------------------------------------------------------------------------------
# Token arithmetic
# ----------------------------------------------------------------------------------------------------------------


class TokenLayout:
    """Where the tokens of stack factor K sit on the 64×8 patch grid of each 10.24 s window."""

    def __init__(self, stack_factor: int) -> None:
        if stack_factor not in (1, 2, 4):
            raise ValueError(f"stack_factor must be 1, 2 or 4, got {stack_factor}")
        self.stack_factor = stack_factor
        self.time_patches = 2 if stack_factor == 4 else 1
        self.freq_patches = stack_factor // self.time_patches
        self.tokens_per_column = GRID[1] // self.freq_patches
        self.samples_per_column = SEGMENT_SAMPLES // GRID[0] * self.time_patches
        self.segment_tokens = GRID[0] * GRID[1] // stack_factor
        self.frame_rate = self.segment_tokens * SAMPLE_RATE / SEGMENT_SAMPLES  # 50 / K

    def num_segments(self, num_samples: int, reference_compat: bool = False) -> int:
        """10.24 s windows the input is padded to (the reference always adds at least one sample of padding)."""
        if reference_compat:
            return num_samples // SEGMENT_SAMPLES + 1
        return max(1, -(-num_samples // SEGMENT_SAMPLES))

    def num_tokens(self, num_samples: int, reference_compat: bool = False) -> int:
        """Tokens per stream for ``num_samples`` at 16 kHz."""
        if reference_compat:
            return math.ceil(reference_target_token_len(num_samples, self.stack_factor))
        return -(-num_samples // self.samples_per_column) * self.tokens_per_column


def reference_target_token_len(num_samples: int, stack_factor: int) -> float:
    """The reference's float ``target_token_len`` (``SemantiCodec.load_audio``), quirks included."""
    duration = num_samples / SAMPLE_RATE
    duration = duration + (0.16 - duration % 0.16)
    return 8 * duration / 0.16 / float(stack_factor)


# ----------------------------------------------------------------------------------------------------------------
# Kaldi fbank front end
# ----------------------------------------------------------------------------------------------------------------


def kaldi_fbank(waveform: Tensor, num_frames: int) -> Tensor:
    """AudioSet-normalised Kaldi fbank of one 16 kHz signal.

    waveform : Tensor[N] → Tensor[num_frames x 128]. The signal's mean is removed first; 25 ms Hann frames every
    10 ms (snip_edges), pre-emphasis 0.97, 512-point power spectrum, 128 Kaldi mel bins from 20 Hz. The frame axis
    is zero-padded (log domain, before normalisation) or cut to ``num_frames``.
    """
    from torchaudio.compliance import kaldi

    waveform = waveform - waveform.mean()
    fbank = kaldi.fbank(waveform[None], htk_compat=True, sample_frequency=SAMPLE_RATE, use_energy=False,
                        window_type="hanning", num_mel_bins=MEL_BINS, dither=0.0, frame_shift=10)
    fbank = F.pad(fbank, (0, 0, 0, max(0, num_frames - fbank.shape[0])))[:num_frames]
    return (fbank - FBANK_MEAN) / (2 * FBANK_STD)


# ----------------------------------------------------------------------------------------------------------------
# AudioMAE ViT encoder (He et al., 2022; Huang et al., 2022) with the official parameter names
# ----------------------------------------------------------------------------------------------------------------


def audiomae_pos_embed(dim: int) -> Tensor:
    """The fixed sin-cos table ``Tensor[1 x 513 x dim]`` of AudioMAE (``get_2d_sincos_pos_embed_flexible``).

    AudioMAE builds it on an (8, 64) grid while its patches are ordered ``t*8 + f``: patch p gets
    ``[sincos(p % 64), sincos(p // 64)]``, not its true (t, f). Reproduced as is; row 0 (cls) is zeros.
    """
    if dim % 4:
        raise ValueError(f"AudioMAE embed_dim must be divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    pos = torch.arange(GRID[0] * GRID[1], dtype=torch.float64)

    def sincos(p: Tensor) -> Tensor:
        out = p[:, None] * omega[None]
        return torch.cat([out.sin(), out.cos()], 1)

    table = torch.cat([sincos(pos % GRID[0]), sincos(pos // GRID[0])], 1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()[None]


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block, parameter names as timm's ``vision_transformer.Block``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=PATCH, stride=PATCH)

    def forward(self, x: Tensor) -> Tensor:
        """x : Tensor[B x 1 x 1024 x 128] → Tensor[B x 512 x D] in patch order t*8 + f."""
        return self.proj(x).flatten(2).transpose(1, 2)


class AudioMAEEncoder(nn.Module):
    """The encoder half of AudioMAE's ``MaskedAutoencoderViT`` as SemantiCodec runs it (``forward_encoder_no_mask``).

    The output is the mean over blocks with index ``n > contextual_depth`` of ``norm(x_n)``; the official
    ViT-B/16 (depth 12, contextual_depth 8) averages blocks 9-11. No masking; the cls row is kept (row 0).
    """

    def __init__(self, embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 contextual_depth: int = 8) -> None:
        super().__init__()
        if not 0 <= contextual_depth < depth - 1:
            raise ValueError(f"contextual_depth must be in [0, depth - 2] = [0, {depth - 2}], got {contextual_depth}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.contextual_depth = contextual_depth
        self.patch_embed = PatchEmbed(embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(audiomae_pos_embed(embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def forward(self, fbank: Tensor) -> Tensor:
        """fbank : Tensor[B x 1 x 1024 x 128] → Tensor[B x 513 x D] (row 0 = cls, then patches t*8 + f)."""
        x = self.patch_embed(fbank) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], 1)
        layers = []
        for n, block in enumerate(self.blocks):
            x = block(x)
            if n > self.contextual_depth:
                layers.append(self.norm(x))
        return torch.stack(layers).mean(0)


def stack_patches(x: Tensor, stack_factor: int) -> Tensor:
    """Concatenate neighbouring patches: Tensor[B x 512 x D] (patch order t*8 + f) → Tensor[B x 512/K x K·D].

    K=2 joins frequency neighbours (2j, 2j+1); K=4 joins 2×2 blocks with channel order (t0f0, t0f1, t1f0, t1f1);
    the result is flattened time-major, as the reference's ``concat_1x2``/``concat_2x2`` then ``flatten``.
    """
    b, n, d = x.shape
    if n != GRID[0] * GRID[1]:
        raise ValueError(f"expected {GRID[0] * GRID[1]} patches, got {n}")
    if stack_factor == 1:
        return x
    if stack_factor == 2:
        return x.reshape(b, n // 2, 2 * d)
    if stack_factor == 4:
        grid = x.reshape(b, GRID[0] // 2, 2, GRID[1] // 2, 2, d).permute(0, 1, 3, 2, 4, 5)
        return grid.reshape(b, n // 4, 4 * d)
    raise ValueError(f"stack_factor must be 1, 2 or 4, got {stack_factor}")


# ----------------------------------------------------------------------------------------------------------------
# The plugin
# ----------------------------------------------------------------------------------------------------------------


class CodebookSpec(StrictModel):
    size: int = Field(..., gt=1, description="vocabulary size (rows of the centroid table)")
    path: str | None = Field(None, description="official codebook_<N>_0.npy or codecfw cluster .safetensors; "
                                               "None: seeded random rows, to be filled by a checkpoint")


class AudioMAEKMeansConfig(PluginConfig):
    """Defaults are the official SemantiCodec front-end at 100 tokens/s."""

    kind: Literal["audiomae_kmeans"] = "audiomae_kmeans"
    stack_factor: Literal[1, 2, 4] = Field(1, description="K: 1, 2, 4 for 100, 50, 25 tokens/s (both streams)")
    embed_dim: int = Field(768, gt=0)
    depth: int = Field(12, gt=1)
    num_heads: int = Field(12, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    contextual_depth: int = Field(8, ge=0, description="average norm(x) after blocks with index > this")
    codebooks: list[CodebookSpec] = Field(
        default_factory=lambda: [CodebookSpec(size=s) for s in (4096, 8192, 16384, 32768)],
        description="centroid tables; training draws one per batch, inference uses vocab_size")
    vocab_size: int | None = Field(None, description="codebook used outside training (default: 16384 if loaded, "
                                                     "else the largest)")
    train_vocab_sizes: list[int] | None = Field(None, description="codebooks drawn in training (default: all)")
    audiomae_weights: str | None = Field(None, description="AudioMAE weights file (official encoder.ckpt, ...)")
    reference_compat: bool = Field(False, description="reproduce the reference's token count and padding quirks")
    mark_padding: bool = Field(True, description="set rows after the trailing-silence cutoff to -1 (reference)")
    silence_std: float = Field(1e-7, ge=0, description="a frame is padding if its std over the 128 bins is <= this")
    max_batch_segments: int = Field(8, gt=0, description="10.24 s windows per AudioMAE call (memory bound)")
    precision: Literal["float32", "bfloat16"] = Field("float32", description="AudioMAE compute on CUDA (centroid "
                                                                          "distances are always float32)")
    seed: int = Field(0, description="seed of placeholder centroid tables")

    @model_validator(mode="after")
    def _check_sizes(self) -> "AudioMAEKMeansConfig":
        sizes = [c.size for c in self.codebooks]
        if not sizes:
            raise ValueError("codebooks: at least one codebook is required")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"codebooks: sizes must be distinct, got {sizes}")
        if self.vocab_size is not None and self.vocab_size not in sizes:
            raise ValueError(f"vocab_size {self.vocab_size} is not among the codebook sizes {sizes}")
        for size in self.train_vocab_sizes or []:
            if size not in sizes:
                raise ValueError(f"train_vocab_sizes: {size} is not among the codebook sizes {sizes}")
        return self


def read_audiomae_weights(path: str | Path) -> dict[str, Tensor]:
    """AudioMAE encoder weights from an official ``encoder.ckpt`` (``audiomae.model.*``), an AudioMAE ``.pth``
    (``{"model": ...}``), a codecfw checkpoint (``semantic.audiomae.*``) or a bare state dict; the MAE decoder
    (``decoder_*``, ``mask_token``) is dropped."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = read_state_dict(path, allow_wrapper=("model", "state_dict"))
    out = {}
    for prefix in ("semantic.audiomae.", "audiomae.model.", "model.", ""):
        out = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if "patch_embed.proj.weight" in out:
            break
    else:
        raise KeyError(f"{path}: no AudioMAE weights found (looked for 'patch_embed.proj.weight' under the prefixes "
                       f"'semantic.audiomae.', 'audiomae.model.', 'model.')")
    return {k: v for k, v in out.items() if not (k.startswith("decoder_") or k == "mask_token")}


class AudioMAEKMeansFrontend(SemanticFrontend):
    """AudioMAE features stacked by K and tokenized by a frozen k-means codebook.

    ``forward`` returns, for ``S`` padded windows of ``T_s = 512/K`` tokens each:

    - ``features`` : Tensor[B x F x S·T_s], continuous stacked AudioMAE features (F = K · embed_dim);
    - ``quantized`` : Tensor[B x F x S·T_s], their centroids, rows after each window's trailing-silence cutoff
      set to -1 (the reference's padding marks; what the decoder is conditioned on in training);
    - ``tokens["semantic"]`` : LongTensor[B x T], trimmed to the token count of the input;
    - ``extras``: ``valid`` BoolTensor[B x S·T_s] (rows before the cutoff), ``num_tokens`` T, ``segment_tokens``
      T_s, ``vocab_size`` (the codebook drawn for this batch).
    """

    def __init__(self, cfg: AudioMAEKMeansConfig, sample_rate: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_sample_rate = sample_rate
        self.layout = TokenLayout(cfg.stack_factor)
        self.stack_factor = cfg.stack_factor
        self.segment_tokens = self.layout.segment_tokens
        self.frame_rate = self.layout.frame_rate
        self.feature_dim = self.quantized_dim = cfg.embed_dim * cfg.stack_factor
        self.audiomae = AudioMAEEncoder(cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.contextual_depth)
        if cfg.audiomae_weights:
            weights = read_audiomae_weights(cfg.audiomae_weights)
            missing, unexpected = self.audiomae.load_state_dict(weights, strict=False)
            if missing or unexpected:
                raise KeyError(f"{cfg.audiomae_weights}: AudioMAE weights do not match the configured encoder; "
                               f"missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.audiomae.requires_grad_(False).eval()
        sizes = [c.size for c in cfg.codebooks]
        self.codebooks = KMeansCodebooks(self.feature_dim, sizes, [c.path for c in cfg.codebooks], seed=cfg.seed)
        self.vocab_size = cfg.vocab_size or (16384 if 16384 in sizes else max(sizes))
        self.train_vocab_sizes = cfg.train_vocab_sizes or sizes

    def train(self, mode: bool = True) -> "AudioMAEKMeansFrontend":
        super().train(mode)
        self.audiomae.eval()  # frozen, always in inference mode
        return self

    def streams(self) -> list[TokenStream]:
        return [TokenStream("semantic", self.frame_rate, self.vocab_size)]

    # -- front end ---------------------------------------------------------------------------------------------
    def fbank(self, waveform: Tensor) -> tuple[Tensor, int]:
        """waveform : Tensor[B x 1 x N] → (Tensor[B x S·1024 x 128], token count of the input)."""
        if waveform.ndim != 3 or waveform.shape[1] != 1:
            raise ValueError(f"expected a mono waveform Tensor[B x 1 x N], got shape {tuple(waveform.shape)}")
        x = waveform[:, 0].float()
        if self.input_sample_rate != SAMPLE_RATE:
            import torchaudio

            x = torchaudio.functional.resample(x, self.input_sample_rate, SAMPLE_RATE)
        n = x.shape[-1]
        if n == 0:
            raise ValueError("cannot encode an empty waveform")
        segments = self.layout.num_segments(n, self.cfg.reference_compat)
        x = F.pad(x, (0, segments * SEGMENT_SAMPLES - n))
        # float32 under a bf16 training autocast too: tokens must not depend on the training precision (and the
        # frozen AudioMAE, run without autocast, would get a bf16 input)
        with torch.autocast(x.device.type, enabled=False):
            if self.cfg.reference_compat:  # one fbank over the whole padded signal, as the reference
                fbank = torch.stack([kaldi_fbank(item, segments * SEGMENT_FRAMES) for item in x])
            else:  # each window on its own: chunked encoding then equals whole-file encoding
                fbank = torch.stack([kaldi_fbank(item, SEGMENT_FRAMES) for item in x.reshape(-1, SEGMENT_SAMPLES)])
                fbank = fbank.reshape(x.shape[0], segments * SEGMENT_FRAMES, MEL_BINS)
        return fbank, self.layout.num_tokens(n, self.cfg.reference_compat)

    def chunk_policy(self) -> ChunkPolicy:
        """Encoding windows of 10.24 s on the token grid (see ``codecfw.core.tokenizer.chunking``)."""
        sr = self.input_sample_rate
        window, align = SEGMENT_SAMPLES * sr // SAMPLE_RATE, self.layout.samples_per_column * sr // SAMPLE_RATE
        if self.cfg.reference_compat:
            return ChunkPolicy(window=window, align=align, exact=False,
                               note="reference_compat: one fbank over the whole file (its mean and the last two "
                                    "frames of each 10.24 s window depend on the neighbouring window)")
        return ChunkPolicy(window=window, align=align, exact=True)

    def pretrained_parts(self) -> list[FrozenPart]:
        """The frozen AudioMAE and the frozen k-means codebooks: both come from SemantiCodec's official release
        (``haoheliu/SemantiCodec`` on the Hugging Face hub), or the codebooks from ``codecfw cluster``."""
        tps = round(self.frame_rate * 2)  # two streams at the semantic frame rate
        official = f"haoheliu/SemantiCodec semanticodec_tokenrate_{tps}"
        return [
            FrozenPart("audiomae", "the AudioMAE encoder (frozen feature extractor)", bool(self.cfg.audiomae_weights),
                       f"set semantic.audiomae_weights to the official encoder.ckpt ({official}/encoder.ckpt) or an "
                       f"AudioMAE .pth, or --init-from a checkpoint made by `codecfw import semanticodec "
                       f"--token-rate {tps} -o DIR`"),
            FrozenPart("codebooks", "the k-means codebooks (frozen semantic vocabularies)",
                       all(c.path for c in self.cfg.codebooks),
                       f"set semantic.codebooks[i].path to the official codebook_<size/2>_0.npy files (haoheliu/"
                       f"SemantiCodec codebook_idx/combine_{self.segment_tokens}_audioset_dominate/) or to the "
                       f"output of `codecfw cluster RECIPE`", feeds_features=False),
        ]

    def valid_rows(self, fbank: Tensor) -> Tensor:
        """Per-window token rows before the trailing-silence cutoff.

        fbank : Tensor[W x 1024 x 128] → LongTensor[W]. A frame is padding if its std over the bins is at most
        ``silence_std``; the cutoff is ``ceil(T_s * (last non-padding frame + 1) / 1024)``.
        """
        silent = fbank.std(dim=-1) <= self.cfg.silence_std
        frame = torch.arange(fbank.shape[1], device=fbank.device)
        column_max = torch.where(~silent, frame, -1).amax(-1) + 1
        if self.cfg.reference_compat:
            # The reference's exception path (a 0-d nonzero() result) zeroes the cutoff when one frame is non-silent.
            column_max = torch.where(silent.any(-1) & ((~silent).sum(-1) == 1), 0, column_max)
        return (column_max * self.segment_tokens + fbank.shape[1] - 1) // fbank.shape[1]

    @torch.no_grad()
    def stacked_features(self, fbank: Tensor) -> Tensor:
        """fbank : Tensor[W x 1024 x 128] → Tensor[W x T_s x F] (AudioMAE, cls dropped, stacked by K)."""
        bf16 = self.cfg.precision == "bfloat16" and fbank.device.type == "cuda"
        # An ambient autocast (bf16 training) is switched off unless asked for: tokens must not depend on it.
        with torch.autocast(fbank.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = [stack_patches(self.audiomae(chunk[:, None])[:, 1:].float(), self.stack_factor)
                   for chunk in fbank.split(self.cfg.max_batch_segments)]
        return torch.cat(out)

    def _draw_vocab_size(self) -> int:
        if not self.training:
            return self.vocab_size
        if len(self.train_vocab_sizes) == 1:
            return self.train_vocab_sizes[0]
        # The global RNG: seeded by the trainer and saved with its state, so resumption repeats the draw.
        return self.train_vocab_sizes[int(torch.randint(len(self.train_vocab_sizes), ()))]

    @torch.no_grad()
    def encode_fbank(self, fbank: Tensor, num_tokens: int | None = None) -> SemanticOutput:
        """fbank : Tensor[B x S·1024 x 128] (normalised) → :class:`SemanticOutput` (see the class docstring)."""
        b, frames, bins = fbank.shape
        if bins != MEL_BINS or frames % SEGMENT_FRAMES:
            raise ValueError(f"expected fbank [B x S*{SEGMENT_FRAMES} x {MEL_BINS}], got {tuple(fbank.shape)}")
        windows = fbank.reshape(-1, SEGMENT_FRAMES, MEL_BINS)
        rows = self.valid_rows(windows)
        features = self.stacked_features(windows).reshape(b, -1, self.feature_dim)
        size = self._draw_vocab_size()
        tokens = self.codebooks.quantize(features, size)
        quantized = self.codebooks.lookup(tokens, size)
        valid = (torch.arange(self.segment_tokens, device=fbank.device)[None] < rows[:, None]).reshape(b, -1)
        if self.cfg.mark_padding:
            quantized = torch.where(valid[..., None], quantized, -1.0)
        num_tokens = tokens.shape[1] if num_tokens is None else num_tokens
        usage = torch.unique(tokens[:, :num_tokens]).numel() / size
        return SemanticOutput(
            features=features.transpose(1, 2), quantized=quantized.transpose(1, 2),
            tokens={"semantic": tokens[:, :num_tokens]},
            metrics={"semantic_codebook_usage": torch.tensor(usage)},
            extras={"valid": valid, "num_tokens": num_tokens, "segment_tokens": self.segment_tokens,
                    "vocab_size": size})

    def forward(self, waveform: Tensor) -> SemanticOutput:
        """waveform : Tensor[B x 1 x N] at the codec's sample rate (resampled to 16 kHz if it differs)."""
        fbank, num_tokens = self.fbank(waveform)
        return self.encode_fbank(fbank, num_tokens)

    def from_tokens(self, tokens: dict[str, Tensor]) -> SemanticOutput:
        """``{"semantic": LongTensor[B x T]}`` → ``quantized`` Tensor[B x F x T] (no padding marks)."""
        quantized = self.codebooks.lookup(tokens["semantic"], self.vocab_size)
        return SemanticOutput(quantized=quantized.transpose(1, 2), extras={"num_tokens": tokens["semantic"].shape[1]})

    @torch.no_grad()
    def extract_features(self, waveform: Tensor) -> Tensor:
        """Stacked AudioMAE features for clustering, Tensor[B x F x T] with T the input's token count."""
        fbank, num_tokens = self.fbank(waveform)
        features = self.stacked_features(fbank.reshape(-1, SEGMENT_FRAMES, MEL_BINS))
        return features.reshape(fbank.shape[0], -1, self.feature_dim)[:, :num_tokens].transpose(1, 2)


@hookimpl
def register_semantic_frontends(register):
    register("audiomae_kmeans", AudioMAEKMeansConfig,
             lambda cfg, ctx: AudioMAEKMeansFrontend(cfg, ctx.sample_rate if ctx is not None else SAMPLE_RATE))
