"""Metric plugins: ideal values on identical signals, agreement with the reference packages (DAC, pesq, pystoi,
torchmetrics), pinned parameter sets, ASR/WER and text normalisers, token statistics, selection and missing backends."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from codecfw.core.metric import (DEFAULT_METRICS, MetricSpecError, MetricUnavailable, build_metrics,
                                 load_metric_configs, parse_metric_spec)
from codecfw.core.types import TokenStream
from codecfw.plugins.metric.asr import WER, WERConfig, basic_normalise, edit_distance, make_normaliser
from codecfw.plugins.metric.distance import (MEL_PARAMETER_SETS, STFT_PARAMETER_SETS, SISDR, MelDistance,
                                             MelDistanceConfig, SISDRConfig, STFTDistance, STFTDistanceConfig,
                                             WaveformL1, WaveformL1Config)
from codecfw.plugins.metric.perceptual import PESQ, STOI, PESQConfig, STOIConfig, ViSQOL, ViSQOLConfig
from codecfw.plugins.metric.tokens import Bitrate, BitrateConfig, CodebookConfig, CodebookUsage

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "eval"


pytestmark = pytest.mark.usefixtures("one_thread")

TRANSCRIPT = "Rice is often served in round bowls."


@pytest.fixture(scope="module")
def speech():
    from codecfw.core.data.dataset import read_audio

    return read_audio(FIXTURES / "speech_kal.flac", 16000)[0]


def _degrade(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lowpassed = torch.nn.functional.avg_pool1d(x[None, None], 5, 1, 2)[0, 0]
    return lowpassed + 0.01 * torch.randn(x.shape, generator=g)


# ------------------------------------------------------------------------------------------------------------
# registry and selection
# ------------------------------------------------------------------------------------------------------------


def test_metric_kinds_register_with_metadata(eval_registry):
    kinds = eval_registry.kinds("metric")
    assert set(DEFAULT_METRICS) <= set(kinds)
    assert kinds["pesq"].capabilities["dependency"] == "pesq"
    assert kinds["wer"].capabilities["needs_transcript"] is True
    assert kinds["mel"].capabilities["parameter_sets"] == ["dac_eval_default", "dac_train_7scale"]
    metrics = {m.name: m for m in build_metrics(load_metric_configs(None, eval_registry), eval_registry)}
    assert metrics["mel"].needs_reference and metrics["mel"].higher_is_better is False
    assert metrics["pesq"].dependency == "pesq" and metrics["pesq"].domains == ("speech",)
    assert metrics["codebook"].needs_tokens and not metrics["codebook"].needs_reference
    assert metrics["visqol_speech"].dependency == "visqol-python"


def test_metric_specs_name_parameter_sets_and_rates(eval_registry):
    assert parse_metric_spec("mel:params=dac_train_7scale,sample_rate=44100,domains=speech;music") == {
        "kind": "mel", "params": "dac_train_7scale", "sample_rate": 44100, "domains": ["speech", "music"]}
    names = [m.name for m in build_metrics(load_metric_configs(
        ["mel", "mel:params=dac_train_7scale,sample_rate=44100", "stft:sample_rate=22050", "stoi:extended=true"],
        eval_registry), eval_registry)]
    assert names == ["mel", "mel@dac_train_7scale@44.1k", "stft@22.05k", "estoi"]


def test_bad_metric_specs_report_every_problem(eval_registry, tmp_path):
    with pytest.raises(MetricSpecError) as err:
        load_metric_configs(["melody", "mel:params=dac_eval_default,pow=-1", "pesq:mode=xx", "stoi:=3"], eval_registry)
    text = str(err.value)
    assert "unknown metric kind 'melody'" in text and "known kinds:" in text and "si_sdr" in text
    assert "pow" in text and "mode" in text and "not key=value" in text
    with pytest.raises(MetricSpecError, match="both named 'mel'"):
        build_metrics(load_metric_configs(["mel", "mel:name=mel"], eval_registry), eval_registry)
    spec = tmp_path / "metrics.yaml"
    spec.write_text("metrics:\n  - mel\n  - {kind: stft, name: stft_eval}\n")
    assert [c.kind for c in load_metric_configs([str(spec)], eval_registry)] == ["mel", "stft"]
    with pytest.raises(ValueError, match="unknown parameter set 'dac_v2'"):
        MelDistance(MelDistanceConfig(params="dac_v2"))


def test_parameter_sets_are_pinned():
    # DAC 1.0.0: MelSpectrogramLoss() defaults and conf/base.yml; changing these silently changes every result
    assert MEL_PARAMETER_SETS["dac_eval_default"] == dict(
        n_mels=[150, 80], window_lengths=[2048, 512], clamp_eps=1e-5, pow=2.0, mag_weight=1.0, log_weight=1.0,
        mel_fmin=[0.0, 0.0], mel_fmax=[None, None])
    seven = MEL_PARAMETER_SETS["dac_train_7scale"]
    assert seven["n_mels"] == [5, 10, 20, 40, 80, 160, 320] and seven["window_lengths"] == [32, 64, 128, 256, 512,
                                                                                            1024, 2048]
    assert (seven["pow"], seven["mag_weight"], seven["log_weight"]) == (1.0, 0.0, 1.0)
    assert STFT_PARAMETER_SETS["dac_eval_default"]["window_lengths"] == [2048, 512]
    custom = MelDistance(MelDistanceConfig(window_lengths=[1024], n_mels=[64]))
    assert custom.name == "mel@dac_eval_default+custom" and custom.settings()["mel_fmax"] == [None]


# ------------------------------------------------------------------------------------------------------------
# ideal values and reference agreement
# ------------------------------------------------------------------------------------------------------------


def test_identical_signals_get_the_ideal_values(speech):
    x = speech
    assert MelDistance(MelDistanceConfig())(x, x, 16000) == 0.0
    assert MelDistance(MelDistanceConfig(params="dac_train_7scale"))(x, x, 16000) == 0.0
    assert STFTDistance(STFTDistanceConfig())(x, x, 16000) == 0.0
    assert WaveformL1(WaveformL1Config())(x, x, 16000) == 0.0
    assert SISDR(SISDRConfig())(x, x, 16000) > 150  # +inf up to torchmetrics' eps
    assert PESQ(PESQConfig())(x, x, 16000) == pytest.approx(4.644, abs=1e-3)  # P.862.2's maximum
    assert STOI(STOIConfig())(x, x, 16000) == pytest.approx(1.0, abs=1e-6)
    y = _degrade(x)
    assert MelDistance(MelDistanceConfig())(y, x, 16000) > 0.1
    assert PESQ(PESQConfig())(y, x, 16000) < 4.5


def test_mel_stft_l1_agree_with_descript_audio_codec():
    signals = np.load(FIXTURES / "dac_signals.npz")
    reference = json.loads((FIXTURES / "dac_reference.json").read_text())
    for case in reference["cases"]:
        sr = case["sample_rate"]
        ref = torch.from_numpy(signals[f"ref_{sr}"].astype(np.float32) / 32767)
        est = torch.from_numpy(signals[f"est_{sr}"].astype(np.float32) / 32767)
        assert MelDistance(MelDistanceConfig())(est, ref, sr) == pytest.approx(case["mel@dac_eval_default"], rel=1e-5)
        assert MelDistance(MelDistanceConfig(params="dac_train_7scale"))(est, ref, sr) == pytest.approx(
            case["mel@dac_train_7scale"], rel=1e-5)
        assert STFTDistance(STFTDistanceConfig())(est, ref, sr) == pytest.approx(case["stft@dac_eval_default"],
                                                                                 rel=1e-5)
        assert WaveformL1(WaveformL1Config())(est, ref, sr) == pytest.approx(case["l1"], rel=1e-6)
        # DAC puts its eps elsewhere in the ratio: same value to float32 precision
        assert SISDR(SISDRConfig())(est, ref, sr) == pytest.approx(-case["neg_si_sdr_dac"], abs=1e-4)


def test_si_sdr_matches_torchmetrics(speech):
    from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio as tm_si_sdr

    ref = speech.double()
    est = _degrade(speech).double() * 0.7 + 0.003
    for zero_mean in (True, False):
        ours = SISDR(SISDRConfig(zero_mean=zero_mean))(est, ref, 16000)
        assert ours == pytest.approx(float(tm_si_sdr(est, ref, zero_mean=zero_mean)), abs=1e-9)


def test_pesq_and_stoi_match_the_reference_packages(speech):
    from pesq import pesq
    from pystoi import stoi
    from torchmetrics.functional.audio import perceptual_evaluation_speech_quality as tm_pesq
    from torchmetrics.functional.audio import short_time_objective_intelligibility as tm_stoi

    ref, est = speech, _degrade(speech)
    ours = PESQ(PESQConfig())(est, ref, 16000)
    assert ours == pesq(16000, ref.numpy(), est.numpy(), "wb")
    assert ours == pytest.approx(float(tm_pesq(est, ref, 16000, "wb")), abs=1e-6)
    assert PESQ(PESQConfig(mode="nb", sample_rate=8000))(est, ref, 16000) > 1.0
    ours = STOI(STOIConfig())(est, ref, 16000)
    assert ours == pytest.approx(stoi(ref.numpy(), est.numpy(), 16000), abs=1e-6)
    assert ours == pytest.approx(float(tm_stoi(est, ref, 16000)), abs=1e-5)
    assert STOI(STOIConfig(extended=True))(est, ref, 16000) == pytest.approx(
        stoi(ref.numpy(), est.numpy(), 16000, extended=True), abs=1e-6)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_pesq_fails_loudly_on_silence():
    silence = torch.zeros(16000)
    with pytest.raises(Exception):  # the runner turns this into NaN + one logged error
        PESQ(PESQConfig())(silence, silence, 16000)


# ------------------------------------------------------------------------------------------------------------
# WER
# ------------------------------------------------------------------------------------------------------------


def test_edit_distance_and_normalisers_match_torchmetrics():
    from torchmetrics.functional.text import char_error_rate, word_error_rate

    pairs = [("the cat sat on the mat", "the cat sat on mat"), ("a b c", "x a b c d"), ("hello", "yellow")]
    for ref, hyp in pairs:
        assert edit_distance(ref.split(), hyp.split()) / len(ref.split()) == pytest.approx(
            float(word_error_rate(hyp, ref)))
        assert edit_distance(list(ref), list(hyp)) / len(ref) == pytest.approx(float(char_error_rate(hyp, ref)))
    assert basic_normalise("Rice is often served -- in 'round' bowls, isn't it?") == \
        "rice is often served in round bowls isn't it"
    english, info = make_normaliser("whisper_english")
    assert english("Mr. Smith didn't") == "mister smith did not" and info["name"] == "whisper_english"


def test_pocketsphinx_wer_dwer_and_corpus_summary(speech):
    pytest.importorskip("pocketsphinx", reason="the offline ASR backend is the optional package pocketsphinx")
    metric = WER(WERConfig())
    metric.check()
    clean = metric(speech, speech, 16000, transcript=TRANSCRIPT, clip_id="kal")
    assert clean["dwer"] == 0.0  # lossless: ASR(reconstruction) == ASR(original)
    assert clean["wer"] <= 30.0  # pocketsphinx reads this festival voice (nearly) right
    noise = 0.2 * torch.randn(16000, generator=torch.Generator().manual_seed(0))
    noisy = metric(speech[:16000] * 0.02 + noise, speech, 16000, transcript=TRANSCRIPT, clip_id="kal")
    assert noisy["dwer"] > 0.0
    summary = metric.summary()
    errors, words = metric.totals["wer"]
    assert words == 2 * 7 and summary["wer"] == pytest.approx(100 * errors / words)
    settings = metric.settings()
    assert settings["asr_model"]["backend"] == "pocketsphinx" and settings["asr_model"]["hmm"].endswith("en-us")
    assert settings["text_normaliser"]["name"] == "basic"
    assert [r["hypothesis"] for r in metric.artifacts()["wer_transcripts.jsonl"]][0] == \
        metric.artifacts()["wer_transcripts.jsonl"][0]["reference_hypothesis"]


def test_wer_with_a_local_transformers_checkpoint(tmp_path):
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Processor)

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4,
             **{c: i + 5 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz'")}}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), word_delimiter_token="|")
    features = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True)
    Wav2Vec2Processor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(tmp_path)
    torch.manual_seed(0)
    Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2),
                                  num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)).save_pretrained(tmp_path)
    metric = WER(WERConfig(asr="transformers", model=str(tmp_path), normaliser="whisper_basic"))
    x = 0.1 * torch.randn(8000, generator=torch.Generator().manual_seed(1))
    out = metric(x, x, 16000, transcript="hello world", clip_id="a")
    assert out["dwer"] == 0.0 and math.isfinite(out["wer"])
    assert metric.settings()["asr_model"] == {"backend": "transformers", "version": metric.settings()["asr_model"][
        "version"], "model": str(tmp_path), "model_type": "wav2vec2", "language": None}
    missing = WER(WERConfig(asr="transformers", model=str(tmp_path / "nowhere")))
    with pytest.raises(MetricUnavailable, match="nowhere"):
        missing.check()


# ------------------------------------------------------------------------------------------------------------
# tokens
# ------------------------------------------------------------------------------------------------------------


class _System:
    sample_rate = 16000
    streams = [TokenStream("semantic", 50, 8), TokenStream("acoustic", 50, 4)]
    bitrate = 50 * 3 + 50 * 2
    token_rate = 100


def test_codebook_usage_and_perplexity():
    metric = CodebookUsage(CodebookConfig())
    metric.setup(_System())
    assert metric.columns() == ["usage/semantic", "perplexity/semantic", "usage/acoustic", "perplexity/acoustic"]
    clip1 = metric(None, None, 16000, tokens={"semantic": torch.arange(8), "acoustic": torch.zeros(8, dtype=torch.long)})
    assert clip1["usage/semantic"] == 1.0 and clip1["perplexity/semantic"] == pytest.approx(8.0)
    assert clip1["usage/acoustic"] == 0.25 and clip1["perplexity/acoustic"] == pytest.approx(1.0)
    metric(None, None, 16000, tokens={"semantic": torch.arange(8), "acoustic": torch.ones(8, dtype=torch.long)})
    pooled = metric.summary()  # the corpus pools histograms: acoustic uses 2 of 4 entries evenly
    assert pooled["usage/acoustic"] == 0.5 and pooled["perplexity/acoustic"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="outside"):
        metric(None, None, 16000, tokens={"semantic": torch.tensor([9]), "acoustic": torch.tensor([0])})


def test_bitrate_declared_and_measured():
    metric = Bitrate(BitrateConfig())
    metric.setup(_System())
    out = metric(None, None, 16000, num_samples=16000,
                 tokens={"semantic": torch.zeros(50, dtype=torch.long), "acoustic": torch.zeros(49, dtype=torch.long)})
    assert out["bitrate_kbps"] == 0.25 and out["token_rate"] == 100
    assert out["token_rate_measured"] == 99 and out["bitrate_kbps_measured"] == pytest.approx((50 * 3 + 49 * 2) / 1000)
    assert metric(None, None, 16000, num_samples=8000, encoded_bits=1000)["bitrate_kbps_measured"] == 2.0


# ------------------------------------------------------------------------------------------------------------
# missing optional backends
# ------------------------------------------------------------------------------------------------------------


def test_missing_optional_backends_are_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "pesq", None)  # import pesq → ImportError
    with pytest.raises(MetricUnavailable, match="pip install pesq"):
        PESQ(PESQConfig()).check()
    monkeypatch.setitem(sys.modules, "visqol", None)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(MetricUnavailable, match="ViSQOL is not installed"):
        ViSQOL(ViSQOLConfig()).check()
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    with pytest.raises(MetricUnavailable, match="pocketsphinx"):
        WER(WERConfig()).check()
