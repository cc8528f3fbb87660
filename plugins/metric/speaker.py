"""Speaker similarity: cosine similarity of speaker embeddings of the reconstruction and the original.

Codec papers of 2024-25 (X-Codec 2.0, BigCodec, FocalCodec, WavTokenizer) report it as "SPK-SIM" or "SIM" next to
WER and UTMOS: a low-bitrate codec can stay intelligible while losing who is speaking.

* ``backend=resemblyzer`` (default): the GE2E speaker encoder (Wan et al. 2018) of ``resemblyzer``, whose weights
  (``pretrained.pt``, 17 MB) ship inside its wheel, so it runs offline. Its own preprocessing is applied to both
  signals (resample to 16 kHz with librosa, volume normalised up to -30 dBFS, long silences trimmed with
  webrtcvad), then ``VoiceEncoder.embed_utterance`` (1.6 s partials at 1.3 per second, L2-normalised mean);
  256-dimensional embeddings.
* ``backend=wavlm,model=FOLDER``: a transformers ``WavLMForXVector`` checkpoint (e.g. microsoft/wavlm-base-plus-sv)
  from a local folder or, when online, a hub id; x-vector embeddings of the 16 kHz signals. Note that the WavLM-large
  ECAPA-TDNN verification model many papers cite is UniSpeech's (not a transformers checkpoint), so values are not
  interchangeable with theirs.

The value is the cosine similarity in [-1, 1] (1: same embedding). Default ``domains: [speech]``.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from codecfw import hookimpl
from codecfw.core.metric import Metric, MetricConfig, MetricUnavailable, resample


class SpeakerSimilarityConfig(MetricConfig):
    kind: Literal["spk_sim"] = "spk_sim"
    backend: Literal["resemblyzer", "wavlm"] = Field("resemblyzer", description="speaker encoder")
    model: str | None = Field(None, description="wavlm: WavLMForXVector folder or hub id (required); resemblyzer: "
                                                "weights file (default: pretrained.pt inside the wheel)")
    trim_silence: bool = Field(True, description="resemblyzer: its preprocessing (volume normalisation, webrtcvad "
                                                 "silence trimming) before embedding")
    device: str = "cpu"
    domains: list[str] | None = ["speech"]


class ResemblyzerEncoder:
    """GE2E encoder of ``resemblyzer``. ``embed(wav : Tensor[N] at 16 kHz) -> ndarray[256]`` (unit norm)."""

    rate = 16000

    def __init__(self, weights: str | None, device: str, trim_silence: bool) -> None:
        try:
            from resemblyzer import VoiceEncoder
        except ImportError as exc:  # also webrtcvad / scipy.ndimage problems, which resemblyzer imports
            raise MetricUnavailable(f"spk_sim (backend=resemblyzer) needs the optional package 'resemblyzer' "
                                    f"(pip install resemblyzer): {exc}") from None
        self.encoder = VoiceEncoder(device, verbose=False, weights_fpath=weights)
        self.weights, self.trim_silence = weights, trim_silence

    def describe(self) -> dict[str, Any]:
        return {"backend": "resemblyzer", "version": version("resemblyzer"),
                "weights": self.weights or "pretrained.pt in the resemblyzer wheel (GE2E, 256-d)",
                "preprocessing": "resemblyzer.preprocess_wav: librosa resample to 16 kHz, normalise volume up to "
                                 "-30 dBFS, trim silences > 6x30 ms (webrtcvad)" if self.trim_silence else
                                 "none (trim_silence=false)"}

    def embed(self, wav: Tensor) -> np.ndarray:
        from resemblyzer import preprocess_wav

        x = wav.numpy().astype(np.float32)
        if self.trim_silence:
            x = preprocess_wav(x)  # already at 16 kHz: no resampling, volume + VAD trimming only
            if x.size == 0:
                raise ValueError("no voiced audio left after resemblyzer's silence trimming")
        return self.encoder.embed_utterance(x)


class WavLMEncoder:
    """transformers ``WavLMForXVector``. ``embed(wav : Tensor[N] at 16 kHz) -> ndarray[D]``."""

    def __init__(self, model: str, device: str) -> None:
        try:
            from transformers import AutoFeatureExtractor, WavLMForXVector
        except ImportError as exc:
            raise MetricUnavailable(f"spk_sim (backend=wavlm) needs transformers: {exc}") from None
        try:
            self.extractor = AutoFeatureExtractor.from_pretrained(model)
            self.model = WavLMForXVector.from_pretrained(model).to(device).eval()
        except (OSError, ValueError) as exc:
            raise MetricUnavailable(f"spk_sim: cannot load the WavLM x-vector model {model!r}: {exc}. Offline, "
                                    f"download it elsewhere (e.g. huggingface-cli download "
                                    f"microsoft/wavlm-base-plus-sv) and pass model=/path/to/folder.") from None
        self.name, self.device = model, device
        self.rate = int(getattr(self.extractor, "sampling_rate", 16000))

    def describe(self) -> dict[str, Any]:
        import transformers

        return {"backend": "wavlm", "model": self.name, "transformers": transformers.__version__,
                "class": "WavLMForXVector", "embedding_dim": int(self.model.config.xvector_output_dim),
                "feature_extractor": type(self.extractor).__name__}

    @torch.inference_mode()
    def embed(self, wav: Tensor) -> np.ndarray:
        inputs = self.extractor(wav.numpy().astype(np.float32), sampling_rate=self.rate, return_tensors="pt")
        emb = self.model(**{k: v.to(self.device) for k, v in inputs.items()}).embeddings[0]
        return emb.float().cpu().numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors, computed in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


class SpeakerSimilarity(Metric):
    """Cosine similarity of speaker embeddings (reference vs reconstruction); 1 for a lossless codec."""

    higher_is_better = True

    def __init__(self, config: SpeakerSimilarityConfig) -> None:
        if config.backend == "wavlm" and not config.model:
            raise ValueError("spk_sim: backend=wavlm needs model=<WavLMForXVector folder or hub id>")
        super().__init__(config)
        self.dependency = "resemblyzer" if config.backend == "resemblyzer" else "transformers"
        self._encoder: ResemblyzerEncoder | WavLMEncoder | None = None
        self._ref_cache: dict[str, np.ndarray] = {}

    def default_name(self) -> str:
        return "spk_sim" if self.config.backend == "resemblyzer" else f"spk_sim@{self.config.backend}"

    @property
    def encoder(self) -> ResemblyzerEncoder | WavLMEncoder:
        if self._encoder is None:
            cfg = self.config
            self._encoder = (ResemblyzerEncoder(cfg.model, cfg.device, cfg.trim_silence) if cfg.backend ==
                             "resemblyzer" else WavLMEncoder(cfg.model, cfg.device))
        return self._encoder

    def check(self) -> None:
        self.encoder  # noqa: B018 - loading the model is the check

    def settings(self) -> dict:
        return {**super().settings(), "encoder": self.encoder.describe(), "similarity": "cosine"}

    def __call__(self, estimate: Tensor, reference: Tensor, sample_rate: int, **meta) -> float:
        enc = self.encoder
        key = meta.get("clip_id")
        ref_emb = self._ref_cache.get(key) if key is not None else None
        if ref_emb is None:
            ref_emb = enc.embed(resample(reference.float(), sample_rate, enc.rate))
            if key is not None:
                self._ref_cache[key] = ref_emb
        return cosine(enc.embed(resample(estimate.float(), sample_rate, enc.rate)), ref_emb)


@hookimpl
def register_metrics(register):
    register("spk_sim", SpeakerSimilarityConfig, lambda cfg, ctx: SpeakerSimilarity(cfg), needs_reference=True,
             dependency="resemblyzer (default) or transformers (WavLM)", higher_is_better=True)
