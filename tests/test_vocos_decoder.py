"""The Vocos-style decoder (ConvNeXt backbone + iSTFT head from the `vocos` package) in the codec and the loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codecfw.core.codec import build_codec
from codecfw.core.config import load_recipe
from codecfw.core.registry import get_registry

from .training_support import read_metrics

pytest.importorskip("vocos")

TINY_VOCOS = "decoder={kind: vocos_istft, dim: 32, intermediate_dim: 64, num_layers: 2}"
NO_TEACHER = ["semantic.teacher=null", "semantic.codebook=null"]


def tiny(*overrides: str):
    return load_recipe("sacodec_tiny", [TINY_VOCOS, *overrides])


@pytest.mark.parametrize("upsample, istft_hop", [(1, 320), (2, 160), (4, 80)])
def test_output_length_and_istft_hop(upsample, istft_hop):
    codec = build_codec(tiny(*NO_TEACHER, f"decoder.upsample={upsample}")).eval()
    decoder = codec.decoder
    assert decoder.istft_hop == istft_hop and decoder.n_fft == 4 * istft_hop
    assert decoder.head.istft.hop_length == istft_hop
    latent = torch.randn(2, codec.acoustic.quantized_dim, 7)
    from codecfw.core.types import AcousticOutput, SemanticOutput

    with torch.no_grad():
        # 'same' padding: T frames give exactly T × hop samples before the crop/pad to the requested length
        raw = decoder.head(decoder.backbone(decoder.upsampler(latent) if decoder.upsampler else latent))
        assert raw.shape == (2, 7 * 320)
        for n in (7 * 320, 7 * 320 - 100, 7 * 320 + 50):
            y = decoder(SemanticOutput(), AcousticOutput(quantized=latent), n)
            assert y.shape == (2, 1, n)
            torch.testing.assert_close(y[..., :min(n, 7 * 320)], raw[:, None, :min(n, 7 * 320)])
    if n > 7 * 320:
        assert torch.all(y[..., 7 * 320:] == 0)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="upsample=3"):
        build_codec(tiny(*NO_TEACHER, "decoder.upsample=3"))
    with pytest.raises(ValueError, match="n_fft"):
        build_codec(tiny(*NO_TEACHER, "decoder.n_fft=641"))


def test_gradients_reach_backbone_head_and_encoder():
    codec = build_codec(tiny(*NO_TEACHER)).train()
    out = codec(torch.randn(2, 1, 3200) * 0.1)
    assert out.decoder.waveform.shape == (2, 1, 3200)
    out.decoder.waveform.pow(2).mean().backward()
    decoder = codec.decoder
    assert decoder.head.out.weight.grad.abs().sum() > 0
    assert decoder.backbone.embed.weight.grad.abs().sum() > 0
    assert all(b.pwconv2.weight.grad.abs().sum() > 0 for b in decoder.backbone.convnext)
    assert codec.semantic.projector[0].weight.grad.abs().sum() > 0
    assert codec.acoustic.activation.net[0].weight.grad.abs().sum() > 0


def test_decode_tokens_equals_the_training_path_in_eval():
    codec = build_codec(tiny(*NO_TEACHER)).eval()
    wav = torch.randn(1, 1, 6400) * 0.1
    tokens = codec.encode(wav)
    with torch.no_grad():
        semantic = codec.semantic(wav)
        direct = codec.decoder(semantic, codec.acoustic(wav, semantic), 6400)
    decoded = codec.decode(tokens, 6400)
    assert decoded.shape == (1, 1, 6400)
    torch.testing.assert_close(decoded, direct, atol=1e-5, rtol=0)


def test_chunked_decoding_equals_whole_file():
    from codecfw.core.tokenizer.api import AudioTokenizer

    tokenizer = AudioTokenizer.from_recipe(tiny(*NO_TEACHER), chunk_seconds=1.0)
    assert tokenizer.policy.exact
    wave = torch.randn(1, 56_000) * 0.1
    whole = tokenizer.encode(wave, 16000, chunked=False)[0]
    torch.testing.assert_close(tokenizer.decode(whole)[0], tokenizer.decode(whole, chunked=False)[0],
                               atol=1e-4, rtol=0)


def test_trains_adversarially_through_the_loop_and_checkpoint_round_trips(tmp_path):
    import codecfw
    from codecfw.core.training.trainer import Trainer

    recipe = tiny("semantic.codebook=null", "train.steps=2", "train.valid_every=2", "train.checkpoint_every=2",
                  "train.log_every=1", "train.valid_batches=1", "data.batch_size=2", "data.valid_clips=1",
                  "train.discriminator_start=1")
    trainer = Trainer(recipe, registry=get_registry(), run_dir=tmp_path / "run", progress=False).setup()
    trainer.train()
    trained = trainer.codec
    trainer.close()
    rows = read_metrics(tmp_path / "run")
    assert sorted(rows) == [1, 2]
    assert "loss/adversarial" not in rows[1]                    # step 0: reconstruction warm-up only
    assert np.isfinite(rows[2]["loss/adversarial"]) and np.isfinite(rows[2]["loss/discriminator"])
    assert rows[2]["loss/mel"] > 0 and rows[2]["loss/anchoring"] > 0

    loaded = codecfw.load(str(tmp_path / "run"))
    assert type(loaded.codec.decoder).__name__ == "VocosISTFTDecoder"
    ema_or_raw = {k: v for k, v in loaded.codec.state_dict().items() if k.startswith("decoder.")}
    assert ema_or_raw.keys() == {k for k in trained.state_dict() if k.startswith("decoder.")}
    wave = torch.randn(1, 8000) * 0.1
    files = loaded.encode(wave, sample_rate=16000)
    out = loaded.decode(files, sample_rate=16000)[0]
    assert out.shape[-1] == 8000 and torch.isfinite(out).all()
    # the saved decoder weights are the ones loaded (raw weights: the tiny recipe keeps no EMA)
    for name, value in ema_or_raw.items():
        torch.testing.assert_close(value, trained.state_dict()[name].cpu())


# ---------------------------------------------------------------------------------------------------------------
# the harmonic (source-filter) branch
# ---------------------------------------------------------------------------------------------------------------

HARMONIC = "decoder.harmonic_source=true"


def _chirp(f_start: float, f_end: float, seconds: float = 1.0, sr: int = 16000) -> tuple[torch.Tensor, torch.Tensor]:
    """A 12-harmonic tone gliding from f_start to f_end: (Tensor[1 x N], its F0 per sample)."""
    t = torch.arange(int(sr * seconds)) / sr
    f0 = f_start + (f_end - f_start) * t / seconds
    phase = 2 * np.pi * torch.cumsum(f0, 0) / sr
    return sum(torch.sin(k * phase) / k for k in range(1, 13))[None], f0


def test_yin_tracks_a_glide_and_calls_noise_and_silence_unvoiced():
    from codecfw.plugins.nn.pitch import yin

    x, f0_true = _chirp(110.0, 260.0)
    f0, voiced = yin(x, 16000, 320)
    assert f0.shape == voiced.shape == (1, 50)
    centres = f0_true[torch.arange(50) * 320 + 160]
    inner = slice(2, -2)  # the edge frames see zero padding
    assert voiced[0, inner].all()
    cents = (1200 * torch.log2(f0[0, inner] / centres[inner])).abs()
    assert cents.max() < 30, cents
    torch.manual_seed(0)
    _, v_noise = yin(torch.randn(1, 16000), 16000, 320)
    assert v_noise.float().mean() < 0.1
    _, v_mixed = yin(torch.cat([torch.zeros(1, 8000), x[:, :8000]], -1), 16000, 320)
    assert not v_mixed[0, 2:23].any() and v_mixed[0, 27:-2].all()  # silence first, then the tone


def test_crepe_tracks_a_glide_a_vibrato_yin_misses_and_calls_noise_and_silence_unvoiced():
    pytest.importorskip("torchcrepe")
    from codecfw.plugins.nn.pitch import crepe, yin

    x, f0_true = _chirp(110.0, 260.0)
    f0, voiced = crepe(x, 16000, 320)
    assert f0.shape == voiced.shape == (1, 50) and voiced.dtype == torch.bool
    centres = f0_true[torch.arange(50) * 320 + 160]
    inner = slice(2, -2)
    assert voiced[0, inner].all()
    cents = (1200 * torch.log2(f0[0, inner] / centres[inner])).abs()
    assert cents.max() < 30, cents  # CREPE's bins are 20 cents apart; the local average interpolates
    torch.manual_seed(0)
    _, v_noise = crepe(torch.randn(1, 16000), 16000, 320)
    assert v_noise.float().mean() < 0.1
    _, v_mixed = crepe(torch.cat([torch.zeros(1, 8000), x[:, :8000]], -1), 16000, 320)
    assert not v_mixed[0, 2:23].any() and v_mixed[0, 27:-2].all()
    # a wide, fast vibrato (300 Hz ± 15 %, 5 Hz): CREPE follows it, YIN's 40 ms window loses it on ~40 % of frames
    t = torch.arange(16000) / 16000
    f_vib = 300.0 * (1 + 0.15 * torch.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * torch.cumsum(f_vib, 0) / 16000
    vib = sum(torch.sin(k * phase) / k for k in range(1, 10))[None]
    f0_c, v_c = crepe(vib, 16000, 320)
    _, v_y = yin(vib, 16000, 320, 50.0, 800.0)
    truth = f_vib[torch.arange(50) * 320 + 160]
    error = (1200 * torch.log2(f0_c[0, inner] / truth[inner])).abs()
    assert v_c[0, inner].all() and error.median() < 25 and error.max() < 40, error
    assert v_y[0, inner].float().mean() < 0.8


def test_crepe_resamples_other_rates_and_frames_as_yin():
    pytest.importorskip("torchcrepe")
    from codecfw.plugins.nn.pitch import crepe

    t = torch.arange(24000) / 24000  # 1 s at 24 kHz: 200 Hz for 0.5 s, then 300 Hz
    f = torch.where(t < 0.5, 200.0, 300.0)
    x = sum(torch.sin(k * 2 * np.pi * torch.cumsum(f, 0) / 24000) / k for k in range(1, 8))[None]
    f0, voiced = crepe(x, 24000, 480)
    assert f0.shape == (1, 50)
    # frame t is centred on sample t·hop + hop/2: frames 0-23 end before the switch, 26-49 start after it
    assert ((f0[0, 3:21] - 200).abs() < 6).all() and ((f0[0, 29:47] - 300).abs() < 9).all()
    f0_small_batches, voiced_small_batches = crepe(x, 24000, 480, batch_frames=7)  # what long files run as
    assert torch.equal(voiced_small_batches, voiced) and torch.allclose(f0_small_batches, f0, atol=1e-2)
    assert crepe(x[:, :3000], 24000, 4000)[0].shape == (1, 1)  # a hop longer than CREPE's window
    with pytest.raises(ValueError, match="'tiny' or 'full'"):
        crepe(x, 24000, 480, capacity="small")


def test_harmonic_excitation_is_band_limited_at_the_f0():
    from codecfw.plugins.nn.pitch import harmonic_excitation

    e = harmonic_excitation(torch.full((1, 50), 1000.0), 320, 16000)
    spectrum = torch.fft.rfft(e[0] * torch.hann_window(e.shape[-1])).abs()
    freqs = torch.fft.rfftfreq(e.shape[-1], 1 / 16000)
    peaks = freqs[spectrum > 0.25 * spectrum.max()]
    assert set((peaks / 1000).round().int().tolist()) == set(range(1, 8))  # 1..7 kHz; 8 kHz is Nyquist: absent
    assert torch.allclose(peaks, (peaks / 1000).round() * 1000, atol=2.0)


def _harmonic_codec(*overrides: str):
    return build_codec(tiny(*NO_TEACHER, HARMONIC, *overrides))


def test_harmonic_branch_starts_silent_and_renders_the_predicted_f0_when_opened():
    from codecfw.core.types import AcousticOutput, SemanticOutput

    codec = _harmonic_codec().eval()
    decoder = codec.decoder
    latent = torch.randn(1, codec.acoustic.quantized_dim, 50)
    with torch.no_grad():
        plain = decoder.head(decoder.backbone(latent))[:, None]
        y = decoder(SemanticOutput(), AcousticOutput(quantized=latent), 50 * 320)
        torch.testing.assert_close(y, plain)  # the branch adds nothing at initialisation (gain exactly 0)
        # open the harmonic branch, silence the head, and pin the F0 at 200 Hz
        decoder.head.out.bias[: decoder.n_fft // 2 + 1] = -30.0
        decoder.head.out.weight.zero_()
        decoder.harmonic_gain.bias.fill_(1.0)
        decoder.f0_proj.weight.zero_()
        lo, hi = np.log2(decoder.cfg.f0_min), np.log2(decoder.cfg.f0_max)
        frac = (np.log2(200.0) - lo) / (hi - lo)
        decoder.f0_proj.bias.fill_(float(np.log(frac / (1 - frac))))
        y = decoder(SemanticOutput(), AcousticOutput(quantized=latent), 50 * 320)[0, 0, 2000:-2000]
    y = y - y.mean()
    ac = [float((y[lag:] * y[:-lag]).sum() / (y * y).sum()) for lag in (80, 40, 120)]
    assert ac[0] > 0.9 and ac[0] > ac[1] + 0.5 and ac[0] > ac[2] + 0.5  # a 200 Hz period (80 samples)
    # gain 1 renders harmonics at `harmonic_scale`: the iSTFT inverts the excitation's STFT (39 below 8 kHz at 200 Hz)
    scale = decoder.cfg.harmonic_scale
    assert y.pow(2).mean().sqrt().item() == pytest.approx(scale * np.sqrt(39 / 2), rel=0.05)


def test_harmonic_branch_trains_f0_on_yin_targets_and_its_gain_from_the_waveform():
    codec = _harmonic_codec().train()
    x, _ = _chirp(120.0, 180.0, seconds=0.4)
    out = codec(0.3 * x[None])
    losses, metrics = out.decoder.losses, out.decoder.metrics
    assert set(losses) == {"f0"} and metrics["voiced_fraction"] > 0.7
    assert losses["f0"] > 0  # untrained: its F0 is not the tone's
    (losses["f0"] + out.decoder.waveform.pow(2).mean()).backward()
    decoder = codec.decoder
    assert decoder.f0_proj.weight.grad.abs().sum() > 0 and decoder.harmonic_gain.weight.grad.abs().sum() > 0
    # chunked decoding cannot be exact (each window integrates its own phase): cross-faded and said so
    policy = decoder.chunk_policy()
    assert not policy.exact and policy.overlap > 0 and "phase" in policy.note


def test_harmonic_settings_errors_and_fine_tuning_a_plain_checkpoint(tmp_path, caplog):
    from codecfw.core import checkpoint as ckpt

    with pytest.raises(ValueError, match="f0_min"):
        _harmonic_codec("decoder.f0_min=900", "decoder.f0_max=800")
    with pytest.raises(ValueError, match="padding: same"):
        _harmonic_codec("decoder.padding=center")
    plain = build_codec(tiny(*NO_TEACHER))
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, str(tmp_path / "model.safetensors"))
    harmonic = _harmonic_codec()
    with pytest.raises(KeyError, match="missing"):
        ckpt.load_codec_weights(harmonic, tmp_path / "model.safetensors", prefer_ema=False)
    with caplog.at_level("WARNING"):
        ckpt.load_codec_weights(harmonic, tmp_path / "model.safetensors", prefer_ema=False, allow_missing=True)
    assert "decoder.harmonic_gain.weight" in caplog.text
    torch.testing.assert_close(harmonic.decoder.head.out.weight, plain.decoder.head.out.weight)
    with pytest.raises(KeyError, match="unexpected"):  # the other way round: weights with no place
        ckpt.load_codec_weights(plain, _save(harmonic, tmp_path),
                                prefer_ema=False, allow_missing=True)


def _save(codec, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "harmonic" / "model.safetensors"
    path.parent.mkdir()
    save_file({k: v.contiguous() for k, v in codec.state_dict().items()}, str(path))
    return path


# ---------------------------------------------------------------------------------------------------------------
# the pitch stream (acoustic.pitch_stream) driving the harmonic branch
# ---------------------------------------------------------------------------------------------------------------

PITCH = "acoustic.pitch_stream={frame_rate: 25}"


def test_pitch_stream_round_trip_within_its_step_and_silence_is_unvoiced():
    from codecfw.plugins.nn.pitch import PitchStream

    stream = PitchStream(16000, 320, 25.0, bits=8, f0_min=50.0, f0_max=800.0)
    x, f0_true = _chirp(110.0, 260.0)
    x = torch.cat([torch.zeros(1, 8000), x], -1)  # 0.5 s of silence, then the glide
    tokens = stream.encode(x)
    assert tokens.shape == (1, 38) and tokens.dtype == torch.long  # ceil(75 frames / 2)
    assert (tokens[0, :11] == 0).all() and (tokens[0, 14:-1] > 0).all()
    log_f0, voiced = stream.decode(tokens)
    assert log_f0.shape == voiced.shape == (1, 76)
    centres = torch.arange(76) * 320 + 160 - 8000  # sample of each frame's centre within the glide
    inside = voiced[0] & (centres > 640) & (centres < 16000 - 640)
    truth = torch.log2(f0_true[centres[inside]])
    # one 25 Hz token spans 40 ms of a glide of 150 Hz/s: its mean and the 19-cent step bound the error
    assert (1200 * (log_f0[0, inside] - truth)).abs().max() < 60
    with pytest.raises(ValueError, match="whole number"):
        PitchStream(16000, 320, 30.0)


def test_a_crepe_pitch_stream_round_trips_and_bad_trackers_are_clear_errors():
    pytest.importorskip("torchcrepe")
    from codecfw.core.config import RecipeError
    from codecfw.plugins.nn.pitch import PitchStream

    stream = PitchStream(16000, 320, 25.0, tracker="crepe", crepe_threshold=0.2)
    x, f0_true = _chirp(110.0, 260.0)
    tokens = stream.encode(torch.cat([torch.zeros(1, 8000), x], -1))
    assert (tokens[0, :11] == 0).all() and (tokens[0, 14:-1] > 0).all()
    log_f0, voiced = stream.decode(tokens)
    centres = torch.arange(76) * 320 + 160 - 8000
    inside = voiced[0] & (centres > 640) & (centres < 16000 - 640)
    assert inside.sum() > 40
    assert (1200 * (log_f0[0, inside] - torch.log2(f0_true[centres[inside]]))).abs().max() < 60
    with pytest.raises(ValueError, match="tracker must be 'yin' or 'crepe', got 'pyin'"):
        PitchStream(16000, 320, 25.0, tracker="pyin")
    with pytest.raises(RecipeError, match="acoustic.pitch_stream.tracker: expected one of 'yin', 'crepe', got 'pyin'"):
        tiny(*NO_TEACHER, HARMONIC, "acoustic.pitch_stream={frame_rate: 25, tracker: pyin}")
    codec = build_codec(tiny(*NO_TEACHER, HARMONIC, "acoustic.pitch_stream={frame_rate: 25, tracker: crepe}"))
    assert codec.acoustic.pitch.tracker == "crepe"
    assert not any("crepe" in k.lower() for k in codec.state_dict())  # the tracker never enters a checkpoint


def test_a_pitch_stream_adds_its_bits_and_the_decoder_follows_it():
    codec = build_codec(tiny(*NO_TEACHER, HARMONIC, PITCH)).eval()
    streams = {s.name: s for s in codec.streams()}
    assert streams["pitch"].frame_rate == 25 and streams["pitch"].codebook_size == 256
    assert codec.bitrate == pytest.approx(sum(s.frame_rate * s.bits_per_token for s in streams.values()))
    x, _ = _chirp(150.0, 150.0)
    with torch.no_grad():
        tokens = codec.encode(0.3 * x[None])
        assert set(tokens) == {"semantic", "acoustic", "pitch"} and tokens["pitch"].shape == (1, 25)
        decoder = codec.decoder  # open the harmonic branch, silence the head
        decoder.head.out.bias[: decoder.n_fft // 2 + 1] = -30.0
        decoder.head.out.weight.zero_()
        decoder.harmonic_gain.bias.fill_(1.0 / decoder.cfg.harmonic_scale)

        def period(pitch_tokens):
            y = codec.decode({**tokens, "pitch": pitch_tokens}, 16000)[0, 0, 2000:-2000]
            y = y - y.mean()
            ac = torch.stack([(y[lag:] * y[:-lag]).sum() / (y * y).sum() for lag in range(40, 200)])
            return 40 + int(ac.argmax())

        stream = codec.acoustic.pitch
        level = lambda hz: 1 + round((np.log2(hz) - np.log2(50)) / (np.log2(800) - np.log2(50)) * 254)  # noqa: E731
        assert period(torch.full((1, 25), level(200.0))) == 80      # 200 Hz
        assert period(torch.full((1, 25), level(100.0))) in (159, 160, 161)  # 100 Hz
        silent = codec.decode({**tokens, "pitch": torch.zeros(1, 25, dtype=torch.long)}, 16000)
        assert silent.abs().max() < 1e-3  # unvoiced everywhere: no excitation, and the head is silenced
        assert stream.codebook_size == 256


def test_voiced_head_cutoff_leaves_the_voiced_low_band_to_the_excitation():
    codec = build_codec(tiny(*NO_TEACHER, HARMONIC, PITCH, "decoder.voiced_head_cutoff=2000",
                             "decoder.voiced_head_crossover=500")).eval()
    decoder = codec.decoder
    with torch.no_grad():
        decoder.head.out.bias[: decoder.n_fft // 2 + 1] = 0.0  # the head: unit magnitude in every bin
        decoder.head.out.weight.zero_()
        head = decoder._head_spectrum(torch.zeros(1, 4, decoder.cfg.dim))
        voiced = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
        faded = decoder._faded(head, voiced).abs()
    freq = torch.arange(head.shape[1]) * 16000 / decoder.n_fft
    below, above, ramp = freq < 1750, freq > 2250, (freq > 1800) & (freq < 2200)
    assert faded[0, below][:, [0, 2]].max() == 0 and faded[0, above][:, [0, 2]].min() == pytest.approx(1.0)
    assert torch.all((faded[0, ramp][:, 0] > 0) & (faded[0, ramp][:, 0] < 1))
    assert torch.equal(faded[0, :, [1, 3]], head.abs()[0, :, [1, 3]])  # unvoiced frames keep the whole head
    # without a pitch stream (no voiced mask reaches the decoder) nothing is faded
    assert torch.equal(decoder._faded(head, None), head)
    with pytest.raises(Exception, match="voiced_head_cutoff"):
        build_codec(tiny(*NO_TEACHER, HARMONIC, PITCH, "decoder.voiced_head_cutoff=9000"))


@pytest.mark.parametrize("tracker", ["yin", "crepe"])
def test_chunked_encoding_gives_the_whole_file_pitch_tokens(tracker):
    from codecfw.core.tokenizer.api import AudioTokenizer

    if tracker == "crepe":
        pytest.importorskip("torchcrepe")
    pitch = f"acoustic.pitch_stream={{frame_rate: 25, tracker: {tracker}}}"
    tokenizer = AudioTokenizer.from_recipe(tiny(*NO_TEACHER, HARMONIC, pitch), chunk_seconds=1.0)
    assert not tokenizer.policy.exact and "phase" in tokenizer.policy.note
    x, _ = _chirp(100.0, 300.0, seconds=3.5)
    wave = 0.3 * x + 0.01 * torch.randn_like(x)
    whole = tokenizer.encode(wave, 16000, chunked=False)[0]
    chunked = tokenizer.encode(wave, 16000, chunked=True)[0]
    np.testing.assert_array_equal(whole.tokens["pitch"], chunked.tokens["pitch"])
    assert (np.asarray(whole.tokens["pitch"]) > 0).mean() > 0.9  # the glide is voiced
    decoded = tokenizer.decode(chunked)[0]
    assert decoded.shape[-1] == wave.shape[-1] and torch.isfinite(decoded).all()


@pytest.mark.parametrize("name, bitrate, streams", [
    ("sacodec_small_16k", 1400, {"semantic", "acoustic"}),
    ("sacodec_small_16k_harmonic", 1400, {"semantic", "acoustic"}),
    ("sacodec_small_16k_pitch", 1500, {"semantic", "acoustic", "pitch"}),
    ("sacodec_small_16k_voiced", 1500, {"semantic", "acoustic", "pitch"}),
    ("sacodec_small_16k_crepe", 1500, {"semantic", "acoustic", "pitch"}),
    ("sacodec_small_16k_sc", 1500, {"semantic", "acoustic", "pitch"}),
    ("sacodec_small_16k_pesq", 1500, {"semantic", "acoustic", "pitch"}),
])
def test_small_16k_recipes_stay_within_one_and_a_half_kbps(name, bitrate, streams):
    codec = build_codec(load_recipe(name, NO_TEACHER))
    assert {s.name for s in codec.streams()} == streams
    assert codec.bitrate == pytest.approx(bitrate) and codec.bitrate <= 1500
    assert (codec.decoder.f0_proj is not None) == (name != "sacodec_small_16k")


@pytest.mark.parametrize("samples", [1, 100, 319])
def test_a_click_shorter_than_a_frame_encodes_and_decodes_to_its_length(samples):
    """The DAC encoder's strided convolutions outgrow a 6 ms clip; the tokenizer pads it to one frame of the
    slowest stream and keeps the token count the codec gives any short input (one a stream)."""
    from codecfw.core.tokenizer.api import AudioTokenizer

    tokenizer = AudioTokenizer.from_recipe(tiny(*NO_TEACHER, HARMONIC, PITCH))
    torch.manual_seed(0)
    (tf,) = tokenizer.encode(0.1 * torch.randn(1, samples), 16000)
    assert tf.num_samples == samples and tf.lengths() == {"semantic": 1, "acoustic": 1, "pitch": 1}
    assert tokenizer.decode(tf)[0].shape == (1, samples)
    (longer,) = tokenizer.encode(0.1 * torch.randn(1, 1000), 16000)  # unpadded inputs keep the codec's own count
    assert longer.lengths() == {"semantic": 3, "acoustic": 3, "pitch": 2}
