"""Frozen speech teacher (HuBERT, WavLM, mHuBERT-147, Whisper's encoder, ...) + X-Codec's semantic conv encoder.

X-Codec (Ye et al., "Codec Does Matter", arXiv 2408.17175) feeds the waveform, padded by half a hop on both sides,
to a frozen HuBERT/WavLM and averages all of its hidden states (embedding output + every layer) into a 768-d, 50 Hz
target. A trainable conv stack (:class:`SemanticEncoder`) turns that target into the semantic half of the latent that
the acoustic quantizer fuses and quantizes; the decoder's reconstruction head regresses the same target.

The front-end emits no tokens of its own: ``SemanticOutput.features`` is the encoded semantic latent
``Tensor[B x C x T]`` and ``extras["teacher_features"]`` the regression target ``Tensor[B x H x T]``.

The teacher loads through transformers (``AutoModel``/``HubertModel``/``WavLMModel``/``Wav2Vec2Model``/``WhisperModel``)
from a hub id or a local directory, or is built from a config dict alone (``teacher_config``) when its weights come
from a codecfw checkpoint. A Whisper model (``model_type: whisper`` in its config) keeps its encoder only, behind
Whisper's log-mel front end (:mod:`codecfw.plugins.semantic.whisper_teacher`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from codecfw import hookimpl
from codecfw.core.config import PluginConfig, StrictModel
from codecfw.core.types import ChunkPolicy, FrozenPart, SemanticFrontend, SemanticOutput

from codecfw.plugins.nn.semantic_conv import SemanticConvConfig, SemanticEncoder

_MODEL_CLASSES = {"auto": "AutoModel", "hubert": "HubertModel", "wavlm": "WavLMModel", "wav2vec2": "Wav2Vec2Model",
                  "whisper": "WhisperModel"}


class TeacherNotFoundError(FileNotFoundError):
    """The SSL teacher is neither in the Hugging Face cache nor at the given local path."""


class TeacherSettings(StrictModel):
    """Which frozen transformers model to load and which of its hidden states to read. Shared by every front-end
    that uses a teacher (X-Codec's ``ssl_teacher``, SACodec's ``semantic_anchoring``, hence ``codecfw cluster``).
    A Whisper checkpoint (detected from its config's ``model_type``) contributes its encoder only."""

    model: str = Field("facebook/hubert-base-ls960",
                       description="hub id (facebook/hubert-base-ls960, microsoft/wavlm-base-plus, "
                                   "utter-project/mHuBERT-147, ZhenYe234/hubert_base_general_audio, "
                                   "openai/whisper-tiny.en) or local directory (e.g. from `codecfw import whisper`)")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit)")
    model_class: Literal["auto", "hubert", "wavlm", "wav2vec2", "whisper"] = Field(
        "auto", description="transformers class: AutoModel (from the config's model_type), HubertModel, WavLMModel, "
                            "Wav2Vec2Model or WhisperModel (encoder only)")
    teacher_config: dict[str, Any] | None = Field(
        None, description="build the teacher from this transformers config dict (needs 'model_type') instead of "
                          "loading `model`; its weights must then come from a codecfw checkpoint")
    local_files_only: bool | None = Field(None, description="never touch the network; default: HF_HUB_OFFLINE")
    layers: Literal["mean"] | int | list[int] = Field(
        "mean", description="'mean': uniform average of all hidden states incl. the embedding output (X-Codec); "
                            "an int: that hidden state (0 = embedding output); a list: the average of those")
    padding: int | None = Field(None, ge=0, description="zero samples added on both sides before the teacher; "
                                                       "default: half the teacher's hop (160 at 16 kHz), 0 for "
                                                       "Whisper (its frame t is centred on sample t * hop)")
    normalize: bool = Field(False, description="per-utterance zero mean / unit variance before the teacher "
                                               "(Wav2Vec2FeatureExtractor do_normalize; mHuBERT-147 expects it, "
                                               "X-Codec's HuBERT/WavLM teachers get the raw waveform)")
    teacher_train_mode: bool = Field(
        False, description="leave the teacher in train mode while training (dropout, layerdrop, SpecAugment masks "
                           "on the target), as X-Codec's loop does by accident; default: always eval")
    teacher_sample_rate: int = Field(16000, gt=0, description="the rate the teacher was trained at")
    hop_length: int | None = Field(None, gt=0, description="teacher samples per frame; default: product of "
                                                           "the teacher config's conv_stride (Whisper: 320)")
    pad_to_window: bool = Field(
        False, description="Whisper only: pad every input with zeros to Whisper's 30-s window, as it was trained "
                           "(its exact features, at 30 s / input-length times the compute); false: encode the input "
                           "at its own length (positional embeddings sliced), whose deeper layers differ from the "
                           "padded ones (docs/xcodec.md, Whisper as teacher)")

    def frozen_part(self, where: str) -> FrozenPart:
        """The teacher as a :class:`FrozenPart`: pretrained unless ``teacher_config`` builds it untrained (a loading
        failure already stops the build with :class:`TeacherNotFoundError`). ``where``: its recipe key prefix."""
        return FrozenPart("teacher", f"the SSL teacher {self.model!r} (frozen)", self.teacher_config is None,
                          f"remove {where}.teacher_config to load {where}.model (a hub id in the Hugging Face cache, "
                          f"or a local save_pretrained folder, e.g. from `codecfw import whisper`)")


class SSLTeacherConfig(TeacherSettings, PluginConfig):
    """A frozen transformers SSL model as the semantic teacher, plus X-Codec's semantic conv encoder."""

    kind: Literal["ssl_teacher"] = "ssl_teacher"
    encoder: SemanticConvConfig = Field(default_factory=SemanticConvConfig)


def _hub_cache_dir(model: str) -> str:
    from huggingface_hub import constants

    return os.path.join(constants.HF_HUB_CACHE, "models--" + model.replace("/", "--"))


def _model_class(name: str):
    import transformers

    return getattr(transformers, _MODEL_CLASSES[name])


def load_teacher(cfg: TeacherSettings) -> nn.Module:
    """The transformers model named by ``cfg`` (see :class:`SSLTeacherConfig`), frozen, in eval mode."""
    import transformers

    cls = _model_class(cfg.model_class)
    if cfg.teacher_config is not None:
        config_dict = dict(cfg.teacher_config)
        model_type = config_dict.pop("model_type", None)
        if model_type is None:
            raise ValueError("semantic.teacher_config: needs a 'model_type' key (e.g. 'hubert', 'wavlm')")
        config = transformers.AutoConfig.for_model(model_type, **config_dict)
        # a fixed seed: `codecfw cluster` and `codecfw train` must see the same untrained teacher
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = cls.from_config(config) if cls is transformers.AutoModel else cls(config)
    else:
        local = Path(cfg.model).expanduser()
        looks_local = local.exists() or cfg.model.startswith((".", "/", "~")) or cfg.model.count("/") > 1
        if looks_local and not (local / "config.json").is_file():
            raise TeacherNotFoundError(
                f"semantic.model: SSL teacher directory {str(local)!r} has no config.json; it must hold a "
                f"transformers checkpoint (config.json + model.safetensors, as written by save_pretrained)")
        offline = cfg.local_files_only
        if offline is None:
            offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
        try:
            model = cls.from_pretrained(str(local) if looks_local else cfg.model, revision=cfg.revision,
                                        local_files_only=offline)
        except (OSError, ValueError) as exc:
            raise TeacherNotFoundError(
                f"semantic.model: cannot load the SSL teacher {cfg.model!r}"
                f"{' (offline)' if offline else ''}: {type(exc).__name__}: {str(exc).splitlines()[0]}\n"
                f"  Put it in the Hugging Face cache at {_hub_cache_dir(cfg.model)} (e.g. run "
                f"`huggingface-cli download {cfg.model}` where there is network and copy that folder, or set HF_HOME), "
                f"or save it with save_pretrained() to a local directory (config.json + model.safetensors) and set "
                f"semantic.model to that path.") from exc
    if getattr(model.config, "model_type", None) == "whisper":
        from codecfw.plugins.semantic.whisper_teacher import WhisperTeacher

        model = WhisperTeacher.from_model(model, pad_to_window=cfg.pad_to_window)
    elif cfg.pad_to_window:
        raise ValueError(f"semantic.pad_to_window: applies to Whisper teachers only; {cfg.model!r} is a "
                         f"{getattr(model.config, 'model_type', type(model).__name__)!r} model")
    model.requires_grad_(False)
    return model.eval()


class HiddenStateReader:
    """Reads the chosen hidden states of a loaded teacher (see :class:`TeacherSettings`).

    waveform : Tensor[B x 1 x N] → Tensor[B x H x ceil(N / hop)]: the waveform is right-padded to a whole number of
    hops, then padded by ``padding`` on both sides, so that the teacher's frames line up with a conv encoder of the
    same hop.
    """

    def __init__(self, cfg: TeacherSettings, teacher: nn.Module, sample_rate: int) -> None:
        if sample_rate != cfg.teacher_sample_rate:
            raise ValueError(f"semantic: the codec runs at {sample_rate} Hz but the teacher {cfg.model!r} expects "
                             f"{cfg.teacher_sample_rate} Hz (set sample_rate or the teacher's teacher_sample_rate)")
        tcfg = teacher.config
        self.dim = int(tcfg.hidden_size)
        native_hop = getattr(teacher, "hop_length", None)  # a wrapped teacher (Whisper) knows its own hop
        if native_hop is None and hasattr(tcfg, "conv_stride"):
            native_hop = math.prod(tcfg.conv_stride)
        stride = cfg.hop_length or native_hop
        if stride is None:
            raise ValueError(f"semantic.hop_length: the teacher {cfg.model!r} has no conv_stride; set hop_length")
        self.hop = int(stride)
        self.padding = cfg.padding if cfg.padding is not None else getattr(teacher, "default_padding", self.hop // 2)
        self.normalize = cfg.normalize
        self.num_hidden_states = int(tcfg.num_hidden_layers) + 1
        self.layer_indices = self._resolve_layers(cfg.layers)

    def _resolve_layers(self, layers: str | int | list[int]) -> list[int]:
        n = self.num_hidden_states
        chosen = list(range(n)) if layers == "mean" else [layers] if isinstance(layers, int) else list(layers)
        if not chosen:
            raise ValueError("semantic.layers: an empty list selects no hidden state")
        bad = [i for i in chosen if not -n <= i < n]
        if bad:
            raise ValueError(f"semantic.layers: {bad} out of range; the teacher has {n} hidden states "
                             f"(0 = embedding output .. {n - 1} = last layer)")
        return [i % n for i in chosen]

    @torch.no_grad()
    def __call__(self, teacher: nn.Module, waveform: Tensor) -> Tensor:
        if waveform.dim() != 3 or waveform.shape[1] != 1:
            raise ValueError(f"semantic: expected a mono waveform Tensor[B x 1 x N], got shape {tuple(waveform.shape)}")
        x = waveform[:, 0].float()
        frames = math.ceil(x.shape[-1] / self.hop)
        if self.normalize:
            x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-7)
        x = F.pad(x, (self.padding, frames * self.hop - x.shape[-1] + self.padding))
        hidden = teacher(x, output_hidden_states=True).hidden_states
        if len(self.layer_indices) == len(hidden):
            feats = torch.stack(hidden, 1).mean(1)
        elif len(self.layer_indices) == 1:
            feats = hidden[self.layer_indices[0]]
        else:
            feats = torch.stack([hidden[i] for i in self.layer_indices], 1).mean(1)
        feats = feats.transpose(1, 2)
        if feats.shape[-1] < frames:  # a teacher with a wider receptive field: repeat its last frame
            feats = F.pad(feats, (0, frames - feats.shape[-1]), mode="replicate")
        return feats[..., :frames]


class SSLTeacherFrontend(SemanticFrontend):
    """Frozen SSL teacher → layer selection → :class:`SemanticEncoder`.

    waveform : Tensor[B x 1 x N] → ``SemanticOutput(features=Tensor[B x C x T], extras={"teacher_features":
    Tensor[B x H x T]})`` with ``T = ceil(N / hop)`` (see :class:`HiddenStateReader`).
    """

    def __init__(self, cfg: SSLTeacherConfig, sample_rate: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.teacher = load_teacher(cfg)
        self.reader = HiddenStateReader(cfg, self.teacher, sample_rate)
        self.teacher_dim = self.reader.dim
        enc = cfg.encoder
        self.encoder = SemanticEncoder(self.teacher_dim, enc.channels or self.teacher_dim, enc.channel_ratios,
                                       enc.strides, enc.kernel_size, enc.block_dilations, enc.unit_kernel_size)
        self.feature_dim = self.encoder.out_channels
        self.quantized_dim = 0
        self.hop_length = self.reader.hop * math.prod(enc.strides)
        self.frame_rate = sample_rate / self.hop_length

    def train(self, mode: bool = True) -> SSLTeacherFrontend:
        super().train(mode)
        # nn.Module.train recurses into the teacher; keep it deterministic unless the quirk is asked for
        self.teacher.train(mode and self.cfg.teacher_train_mode)
        return self

    def pretrained_parts(self) -> list[FrozenPart]:
        return [self.cfg.frozen_part("semantic")]

    def chunk_policy(self) -> ChunkPolicy:
        return ChunkPolicy(context=self.sample_rate, align=self.hop_length, exact=False,
                           note="the SSL teacher attends over its whole input, so chunked tokens differ slightly "
                                "from whole-file tokens (1 s of context on each side limits the difference)")

    def teacher_features(self, waveform: Tensor) -> Tensor:
        """waveform : Tensor[B x 1 x N] → the selected/averaged hidden states, Tensor[B x H x ceil(N / hop)]."""
        return self.reader(self.teacher, waveform)

    def forward(self, waveform: Tensor) -> SemanticOutput:
        target = self.teacher_features(waveform)
        return SemanticOutput(features=self.encoder(target), extras={"teacher_features": target})

    def extract_features(self, waveform: Tensor) -> Tensor:
        return self.teacher_features(waveform)


@hookimpl
def register_semantic_frontends(register):
    register("ssl_teacher", SSLTeacherConfig, lambda cfg, ctx: SSLTeacherFrontend(cfg, ctx.sample_rate))
