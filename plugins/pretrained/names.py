"""codecfw's own pretrained names: the official SemantiCodec and X-Codec checkpoints on the Hugging Face hub, and
the codecs codecfw trained itself, whose weights ship in the package (``weights/<name>/``, no download).

Registered through the ``pretrained`` entry point with the same ``register_pretrained`` hook a third party uses
(see :mod:`codecfw.core.pretrained`); each converter is named as ``"module:function"`` so it is imported only when
its name is loaded.
"""

from __future__ import annotations

from pathlib import Path

from codecfw import hookimpl
from codecfw.core.pretrained import PretrainedSpec, bundled_spec, lazy_converter, pretrained_spec

#: Checkpoint folders of the codecs trained by codecfw, installed with the package (package data).
WEIGHTS = Path(__file__).parent / "weights"


SEMANTICODEC_CONVERTER = "codecfw.plugins.pretrained.semanticodec:convert_official_semanticodec"
XCODEC_CONVERTER = "codecfw.plugins.pretrained.xcodec:convert_official"
_VOCAB = {"4k": 4096, "8k": 8192, "16k": 16384, "32k": 32768}


def builtin_specs() -> list[tuple[str, type[PretrainedSpec], str]]:
    """(name, spec class, converter target) of the official SemantiCodec and X-Codec checkpoints."""
    out = []
    for tps in (100, 50, 25):
        stack = 100 // tps
        for tag, vocab in _VOCAB.items():
            name = f"semanticodec-{tps}tps.{tag}"
            codebook = f"codebook_idx/combine_{512 // stack}_audioset_dominate/codebook_{vocab // 2}_0.npy"
            out.append((name, pretrained_spec(
                name, repo_id="haoheliu/SemantiCodec",
                files=[f"semanticodec_tokenrate_{tps}/encoder.ckpt", f"semanticodec_tokenrate_{tps}/decoder.ckpt",
                       codebook],
                options={"token_rate": tps, "stack_factor": stack, "semantic_vocab_size": vocab},
                description=f"SemantiCodec, {tps} tokens/s over 2 streams, {vocab}-entry semantic codebook, 16 kHz",
                license="MIT (model card)", url="https://huggingface.co/haoheliu/SemantiCodec"),
                SEMANTICODEC_CONVERTER))
    xcodec = {
        "xcodec-hubert-librispeech": ("xcodec_speech_hubert_librispeech.pth", "config_hubert.yaml",
                                      "facebook/hubert-base-ls960", "speech, LibriSpeech"),
        "xcodec-wavlm-mls": ("xcodec_speech_wavlm_mls.pth", "config_wavlm.yaml", "microsoft/wavlm-base-plus",
                             "speech, MLS English"),
        "xcodec-wavlm-more-data": ("xcodec_speech_wavlm_more_data.pth", "config_wavlm.yaml",
                                   "microsoft/wavlm-base-plus", "speech, MLS English + internal data"),
        "xcodec-hubert-general": ("xcodec_hubert_general_audio_v2.pth", "config_hubert_general.yaml",
                                  "ZhenYe234/hubert_base_general_audio", "general audio, 200k h internal data"),
    }
    for name, (weights, config, teacher, what) in xcodec.items():
        out.append((name, pretrained_spec(
            name, repo_id="ZhenYe234/xcodec", files=[weights, config], options={"teacher": teacher},
            description=f"X-Codec ({what}), 16 kHz, 8 RVQ layers of 1024 at 50 Hz",
            url="https://huggingface.co/ZhenYe234/xcodec"), XCODEC_CONVERTER))
    return out


def bundled_specs() -> list[tuple[str, type[PretrainedSpec]]]:
    """(name, spec class) of the codecs trained by codecfw (recipes/, docs/sacodec.md), weights in ``WEIGHTS``."""
    return [
        ("codecfw-sacodec-small-16k", bundled_spec(
            "codecfw-sacodec-small-16k", WEIGHTS / "codecfw-sacodec-small-16k",
            description="codecfw's small SACodec-structured codec: 16 kHz, 1.5 kbps (50 Hz x (12 + 14) bits + a "
                        "25 Hz 8-bit pitch stream), Whisper tiny.en-anchored semantic tokens + SimVQ acoustic tokens, "
                        "Vocos decoder with a pitch-driven harmonic excitation; 6.0M parameters, trained on CPU "
                        "(recipes/sacodec_small_16k_pesq.yaml, the last of six stages: docs/sacodec.md)",
            license="MIT (weights); trained on the Debian corpus of scripts/make_training_corpus.py",
            url="docs/sacodec.md")),
    ]


def _not_converted(spec, files):
    raise RuntimeError(f"pretrained {spec.kind!r} ships as a codecfw checkpoint in {spec.folder}: nothing to convert")


@hookimpl
def register_pretrained(register):
    for name, spec, target in builtin_specs():
        register(name, spec, lazy_converter(target))
    for name, spec in bundled_specs():
        register(name, spec, _not_converted)
