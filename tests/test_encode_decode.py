"""Encode/decode: the Python API, chunked long recordings, streamed audio I/O, the CLI round trips and their errors,
and the pretrained registry (hub download, offline error, cached conversion). Everything runs on the toy codec."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from codecfw import hookimpl
from codecfw.core import registry as registry_module
from codecfw.core.tokenizer.api import AudioTokenizer, CheckpointError, load
from codecfw.core.data.stream import AudioError, AudioSource, StreamingResampler
from codecfw.core.checkpoint import save_checkpoint
from codecfw.core.tokenizer.chunking import ChunkPolicy, decode_stream, encode_stream, resolve_chunk_policy, windows
from codecfw.core.cli import main
from codecfw.core.codec import build_codec
from codecfw.core.config import RecipeError, validate_recipe
from codecfw.core.pretrained import Converted, PretrainedUnavailable, pretrained_spec
from codecfw.plugins.pretrained.names import builtin_specs, bundled_specs
from codecfw.core.tokenizer.tokens import TokenFile
from codecfw.core.types import TokenStream

from .toy_codec import TOY_RECIPE

SR = 16000
DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"


@pytest.fixture
def registry(toy_registry):
    """The toy registry installed as the process-wide one (what the CLI and ``codecfw.load`` use)."""
    old = registry_module._REGISTRY
    registry_module.set_registry(toy_registry)
    yield toy_registry
    registry_module.set_registry(old)


def save_toy(path: Path, registry, seed: int = 0, **overrides) -> Path:
    torch.manual_seed(seed)
    recipe = validate_recipe({**TOY_RECIPE, **overrides}, registry)
    codec = build_codec(recipe, registry)
    return save_checkpoint(path, 7, {"model": codec}, {"recipe": recipe.model_dump(mode="json")}, {})


@pytest.fixture
def checkpoint(tmp_path, registry) -> Path:
    return save_toy(tmp_path / "run", registry)


def noise(n: int, seed: int = 0, channels: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (n,) if channels is None else (channels, n)
    return 0.3 * torch.randn(shape, generator=g)


def write(path: Path, wave: torch.Tensor, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = wave.numpy().T if wave.dim() == 2 else wave.numpy()
    sf.write(path, data, sr, subtype="FLOAT" if path.suffix == ".wav" else "PCM_16")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------------------------------------------


def test_load_checkpoint_restores_weights_and_identity(checkpoint, registry):
    import codecfw

    tok = codecfw.load(checkpoint)  # lazily exposed on the package
    assert isinstance(tok, AudioTokenizer) and tok.sample_rate == SR
    recipe = validate_recipe(TOY_RECIPE, registry)
    assert tok.config_hash == recipe.config_hash() and tok.codec_id == "toy"
    torch.manual_seed(0)
    fresh = build_codec(recipe, registry)
    assert torch.equal(tok.codec.semantic.vq.codebook, fresh.semantic.vq.codebook)
    assert load(checkpoint.parent.parent).config_hash == tok.config_hash  # a run directory works too


def test_load_rejects_unknown_names_and_broken_folders(tmp_path, registry):
    with pytest.raises(ValueError, match="neither a checkpoint folder nor a registered pretrained name"):
        load("no-such-codec")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load(tmp_path / "empty")


def test_input_shapes_channels_and_resampling(checkpoint):
    tok = load(checkpoint)
    stereo = noise(16000, channels=2)
    mean, first = tok.encode(stereo[None], SR), tok.encode(stereo[None], SR, mixdown="first")
    assert len(mean) == 1 and mean[0].lengths() == {"semantic": 100, "acoustic": 100}
    np.testing.assert_array_equal(first[0].tokens["semantic"], tok.encode(stereo[0], SR)[0].tokens["semantic"])
    torch.testing.assert_close(tok.prepare(stereo[None], SR)[0], stereo.mean(0))
    torch.testing.assert_close(tok.prepare(stereo[None], SR, mixdown="first")[0], stereo[0])
    with pytest.raises(Exception, match="2 channels"):
        tok.encode(stereo[None], SR, mixdown="error")
    batch = tok.encode(torch.stack([noise(8000, 1), noise(8000, 2)]), SR)  # Tensor[B x N]: two mono items
    assert [b.num_samples for b in batch] == [8000, 8000]
    ragged = tok.encode([noise(8000, 1), noise(4000, 3), noise(8000, 2)], SR, batch_size=2)
    assert [r.num_samples for r in ragged] == [8000, 4000, 8000]
    np.testing.assert_array_equal(ragged[2].tokens["acoustic"], batch[1].tokens["acoustic"])  # batching is exact
    up = tok.encode(noise(44100), 44100)[0]
    assert up.num_samples == 16000 and up.metadata["source_sample_rate"] == 44100
    with pytest.raises(ValueError, match="44100 Hz.*16000 Hz"):
        tok.encode(noise(44100), 44100, resample_input=False)
    with pytest.raises(ValueError, match="empty"):
        tok.encode(torch.zeros(0), SR)
    with pytest.raises(ValueError, match="item 1: waveform contains NaN"):
        tok.encode([noise(100), torch.tensor([0.0, float("nan")])], SR)
    with pytest.raises(ValueError, match="Tensor"):
        tok.encode(torch.zeros(1, 1, 1, 10), SR)


def test_decode_token_files_and_raw_lm_tokens(checkpoint):
    tok = load(checkpoint)
    files = tok.encode([noise(8000), noise(5000, 1)], SR)
    waves = tok.decode(files)
    assert [tuple(w.shape) for w in waves] == [(1, 8000), (1, 5000)]
    raw = {"semantic": torch.randint(0, 16, (3, 20)), "acoustic": torch.randint(0, 32, (3, 20))}
    out = tok.decode(raw)
    assert out.shape == (3, 1, 3200)  # 20 frames at 100 Hz
    assert tok.decode(raw, sample_rate=8000).shape == (3, 1, 1600)
    with pytest.raises(KeyError, match="acoustic"):
        tok.decode({"semantic": raw["semantic"]})


def test_chunked_tokens_and_audio_equal_whole_file_processing(checkpoint):
    tok = load(checkpoint, chunk_seconds=1.0)  # 1 s windows + the default 1 s of context
    assert tok.policy.window == 16000 and tok.policy.context == 16000
    wave = noise(118_001, seed=5)
    whole = tok.encode(wave, SR, chunked=False)[0]
    chunked = tok.encode(wave, SR, batch_size=3)[0]
    assert chunked.lengths() == whole.lengths() == {"semantic": 737, "acoustic": 737}
    for name in whole.tokens:
        np.testing.assert_array_equal(chunked.tokens[name], whole.tokens[name])
    a, b = tok.decode(whole, chunked=False)[0], tok.decode(whole)[0]
    assert a.shape == b.shape == (1, 118_001)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_overlap_add_windows_follow_the_semanticodec_schedule():
    # 10.24 s windows with 0.64 s overlap at 50 tokens/s: the reference splits while start + 512 < T, hop 480.
    spans = windows(1300 * 320, 163840, 163840 - 10240)
    assert [(s // 320, e // 320) for s, e in spans] == [(0, 512), (480, 992), (960, 1300)]
    streams = [TokenStream("semantic", 50.0, 16384), TokenStream("acoustic", 50.0, 8192)]
    policy = ChunkPolicy(window=163840, overlap=10240)
    tokens = {"semantic": np.arange(1300) % 7, "acoustic": np.arange(1300) % 5}

    def render(batch, n):  # a "decoder" whose output at sample i depends only on the token at frame i // 320
        t = batch["semantic"].float() + 10 * batch["acoustic"].float()
        return t.repeat_interleave(320, dim=-1)[:, None, :n]

    whole = render({k: torch.from_numpy(v)[None] for k, v in tokens.items()}, 1300 * 320)[0, 0]
    pieces = list(decode_stream(render, tokens, 1300 * 320, policy, streams, SR, batch_size=2))
    torch.testing.assert_close(torch.cat(pieces), whole)  # cross-fading two equal signals changes nothing

    def constant(batch, n):  # each window decodes to its own first token: the joins show the linear ramps
        return batch["semantic"][:, :1, None].float().expand(-1, 1, n)

    ramps = torch.cat(list(decode_stream(constant, {"semantic": np.repeat([1, 2, 3], [480, 480, 340]),
                                                    "acoustic": tokens["acoustic"]}, 1300 * 320, policy, streams,
                                         SR)))
    assert ramps.shape == (416000,)
    assert ramps[0] == 1 and ramps[153600] == 1 and ramps[163839] == 2 and ramps[-1] == 3
    torch.testing.assert_close(ramps[153600 + 5120], torch.tensor(1.5), atol=1e-3, rtol=0)


def test_encoder_extra_tail_tokens_survive_chunking():
    # SemantiCodec-like: a chunk of n samples yields n // 320 tokens plus 8 trailing ones; only the file's last chunk
    # keeps them, so chunked and whole encodes agree.
    stream = [TokenStream("s", 50.0, 4096)]

    def encode(x):
        frames = x[:, 0, ::320].long()[:, : x.shape[-1] // 320]
        return {"s": torch.cat([frames, torch.full((x.shape[0], 8), 4095)], 1)}

    wave = (torch.arange(500_000) // 320).float()
    whole = encode(wave[None, None])["s"][0].numpy()
    blocks = wave.split(12_345)
    out, n = encode_stream(encode, blocks, ChunkPolicy(window=163840), stream, SR, batch_size=2)
    assert n == 500_000
    np.testing.assert_array_equal(out["s"], whole)


def test_policies_declared_by_slots_are_used_and_checked(checkpoint):
    tok = load(checkpoint)
    assert tok.policy.window == 30 * SR and not tok.policy.exact  # nothing declared: the documented default
    tok.codec.decoder.chunk_policy = lambda: ChunkPolicy(window=32000, overlap=1600, note="diffusion windows")
    tok.codec.acoustic.chunk_policy = lambda: ChunkPolicy(context=3200)
    policy = resolve_chunk_policy(tok.codec)
    assert (policy.window, policy.overlap, policy.context, policy.exact) == (32000, 1600, 3200, True)
    # context and overlap are minimums: rounded up to whole 100 Hz frames (160 samples)
    tok.codec.decoder.chunk_policy = lambda: ChunkPolicy(window=32000, overlap=1000)
    tok.codec.acoustic.chunk_policy = lambda: ChunkPolicy(context=3000)
    policy = resolve_chunk_policy(tok.codec)
    assert (policy.overlap, policy.context) == (1120, 3040)
    tok.codec.decoder.chunk_policy = lambda: ChunkPolicy(window=1000)  # not whole 100 Hz frames
    with pytest.raises(ValueError, match="not a multiple of 160"):
        resolve_chunk_policy(tok.codec)


def test_semanticodec_style_policies_combine():
    # front-end: exact per 10.24 s segment; decoder: 10.24 s diffusion windows cross-faded over 0.64 s.
    slot = lambda policy: types.SimpleNamespace(chunk_policy=lambda: policy)  # noqa: E731
    codec = types.SimpleNamespace(
        sample_rate=SR, streams=lambda: [TokenStream("semantic", 50.0, 32768), TokenStream("acoustic", 50.0, 8192)],
        semantic=slot(ChunkPolicy(window=3 * 163840, align=2560, window_align=163840)), acoustic=None,
        decoder=slot(ChunkPolicy(window=163840, overlap=10240, align=2560, exact=False, note="stochastic")))
    policy = resolve_chunk_policy(codec)
    assert (policy.window, policy.overlap, policy.align, policy.exact) == (163840, 10240, 2560, False)
    assert resolve_chunk_policy(codec, window_seconds=25).window == 2 * 163840  # rounded down to whole segments
    assert resolve_chunk_policy(codec, window_seconds=1).window == 163840  # at least one segment


# ---------------------------------------------------------------------------------------------------------------
# Streamed audio
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orig,new", [(44100, 16000), (8000, 16000), (22050, 24000)])
def test_streaming_resampler_matches_torchaudio(orig, new):
    import torchaudio

    x = noise(30_011, seed=orig)
    resampler = StreamingResampler(orig, new)
    y = torch.cat([resampler.push(b) for b in x.split(4_097)] + [resampler.flush()])
    ref = torchaudio.functional.resample(x, orig, new)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, atol=1e-4, rtol=0)


def test_bad_audio_is_reported_precisely(tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"definitely not audio")
    with pytest.raises(AudioError, match="junk.wav: cannot read audio"):
        AudioSource(tmp_path / "junk.wav", SR)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SR)
    with pytest.raises(AudioError, match="empty audio"):
        AudioSource(tmp_path / "empty.wav", SR)
    bad = noise(4000)
    bad[1234] = float("nan")
    write(tmp_path / "nan.wav", bad)
    with pytest.raises(AudioError, match="non-finite sample.*frame 1234"):
        AudioSource(tmp_path / "nan.wav", SR).read()
    write(tmp_path / "hi.wav", noise(4410), 44100)
    with pytest.raises(AudioError, match="44100 Hz.*16000 Hz"):
        AudioSource(tmp_path / "hi.wav", SR, resample=False)
    assert AudioSource(tmp_path / "hi.wav", SR).read().shape == (1600,)
    with pytest.raises(AudioError, match="no such file"):
        AudioSource(tmp_path / "missing.flac", SR)


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A few files of the demo corpus (one per domain) when present, else synthetic ones, in nested folders."""
    root = tmp_path / "corpus"
    picks = [sorted((DEMO / d).glob("*.flac"))[:2] for d in ("speech", "music", "sound")] if DEMO.is_dir() else []
    if picks and all(picks):
        for files in picks:
            for f in files:
                (root / f.parent.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(f, root / f.parent.name / f.name)
    else:
        for i, d in enumerate(("speech", "music", "sound")):
            write(root / d / f"clip{i}.flac", noise(8000 + 3000 * i, i))
    write(root / "music" / "long.wav", noise(75_000, 9))  # longer than the 2 s chunk window used below
    write(root / "stereo44k.wav", noise(44100, 3, channels=2), 44100)
    return root


def test_cli_round_trip_mirrors_paths_and_keeps_lengths(tmp_path, checkpoint, corpus, capsys):
    tokens, audio = tmp_path / "tokens", tmp_path / "audio"
    assert main(["encode", str(corpus), "-o", str(tokens), "-c", str(checkpoint), "-q", "--chunk-seconds", "2",
                 "--batch-size", "3"]) == 0
    summary = capsys.readouterr().out
    sources = sorted(p.relative_to(corpus) for p in corpus.rglob("*") if p.is_file())
    made = sorted(p.relative_to(tokens) for p in tokens.rglob("*.cfwt"))
    assert made == [s.with_suffix(".cfwt") for s in sources]
    assert f"encoded {len(sources)} file(s), 0 failed" in summary and "real-time factor" in summary
    tf = TokenFile.load(tokens / "stereo44k.cfwt")
    assert tf.metadata["source_sample_rate"] == 44100 and tf.metadata["source_channels"] == 2
    assert tf.num_samples == 16000
    assert main(["decode", str(tokens), "-o", str(audio), "-c", str(checkpoint), "-q", "--chunk-seconds", "2"]) == 0
    for src in sources:
        out = audio / src.with_suffix(".flac")
        info = sf.info(out)
        expected = round(sf.info(corpus / src).frames * SR / sf.info(corpus / src).samplerate)
        assert info.samplerate == SR and info.frames == expected, src
    # Chunked (2 s windows) and whole-file encodes of the long file agree token for token.
    assert main(["encode", str(corpus / "music" / "long.wav"), "-o", str(tmp_path / "whole.cfwt"),
                 "-c", str(checkpoint), "-q", "--no-chunk"]) == 0
    np.testing.assert_array_equal(TokenFile.load(tmp_path / "whole.cfwt").tokens["acoustic"],
                                  TokenFile.load(tokens / "music" / "long.cfwt").tokens["acoustic"])
    assert main(["decode", str(tokens / "stereo44k.cfwt"), "-o", str(tmp_path / "orig.wav"), "-c", str(checkpoint),
                 "-q", "--original-rate"]) == 0
    assert sf.info(tmp_path / "orig.wav").samplerate == 44100
    assert not list(tmp_path.rglob(".*.tmp*"))  # no temporary files left anywhere


def test_the_tokenizer_alone_batches_files_and_records_their_source(tmp_path, checkpoint, capsys):
    """One decision, one metadata writer: the tokenizer's file loop decides short against long, batches, and writes
    the header; ``codecfw encode`` saves exactly what it returns. Before, the command read short files itself and
    handed the tokenizer audio already at the codec's rate, so the tokenizer recorded ``source_sample_rate`` 16000
    for a 44.1 kHz file and the command patched the header afterwards."""
    from codecfw.core.data.audio import AudioError

    src = tmp_path / "in"
    write(src / "a" / "short44.wav", noise(44100, 1, channels=2), 44100)  # 1 s: one 2 s window
    write(src / "short16.wav", noise(8000, 2))
    write(src / "long22.wav", noise(3 * 22050, 3), 22050)  # 3 s: streamed in 2 s windows
    (src / "junk.wav").write_bytes(b"not audio")
    tok = load(checkpoint, chunk_seconds=2)
    paths = [src / "a" / "short44.wav", src / "junk.wav", src / "short16.wav", src / "long22.wav"]
    assert [tok.processed_whole(n) for n in (16000, 32000, 32001)] == [True, True, False]
    results = dict(tok.encode_files(paths, names=["a/short44.wav", "junk.wav", "short16.wav", "long22.wav"],
                                    batch_size=2))
    assert sorted(results) == [0, 1, 2, 3] and isinstance(results[1], AudioError)
    short44, short16, long22 = results[0], results[2], results[3]
    assert {k: v for k, v in short44.metadata.items() if k != "codecfw"} == {
        "source": "a/short44.wav", "source_sample_rate": 44100, "source_channels": 2, "mixdown": "mean"}
    assert short16.metadata["source_sample_rate"] == 16000 and short16.metadata["source_channels"] == 1
    assert long22.metadata["source_sample_rate"] == 22050 and long22.num_samples == 48000
    # the same tokens as the in-memory API (batching and streaming are exact), whose header has the same rate
    stereo, _ = sf.read(src / "a" / "short44.wav", dtype="float32")
    in_memory = tok.encode(torch.from_numpy(stereo.T.copy())[None], 44100)[0]
    np.testing.assert_array_equal(in_memory.tokens["acoustic"], short44.tokens["acoustic"])
    assert in_memory.metadata["source_sample_rate"] == 44100
    np.testing.assert_array_equal(tok.encode_file(src / "long22.wav").tokens["semantic"], long22.tokens["semantic"])
    # codecfw encode writes what the tokenizer returned, byte for byte
    assert main(["encode", str(src), "-o", str(tmp_path / "t"), "-c", str(checkpoint), "-q", "--chunk-seconds", "2",
                 "--batch-size", "2"]) == 1
    assert "junk.wav: cannot read audio" in capsys.readouterr().err
    for tf, rel in ((short44, "a/short44.cfwt"), (short16, "short16.cfwt"), (long22, "long22.cfwt")):
        assert (tmp_path / "t" / rel).read_bytes() == tf.save(tmp_path / "api" / rel).read_bytes(), rel


def test_the_tokenizer_alone_decodes_files_at_the_asked_rate(tmp_path, checkpoint):
    tok = load(checkpoint, chunk_seconds=2)
    files = [tok.encode(noise(44100, 1), 44100)[0], tok.encode(noise(3 * SR, 2), SR)[0]]
    targets = [tmp_path / "short.wav", tmp_path / "long.flac"]
    done = dict(tok.decode_files(files, targets, sample_rate="source", batch_size=2))
    assert done == {0: targets[0], 1: targets[1]}
    assert (sf.info(targets[0]).samplerate, sf.info(targets[0]).frames) == (44100, 44100)
    assert (sf.info(targets[1]).samplerate, sf.info(targets[1]).frames) == (SR, 3 * SR)
    done = dict(tok.decode_files(files, [tmp_path / "bad.mp4", tmp_path / "x.wav"], sample_rate=8000))
    assert isinstance(done[0], ValueError) and sf.info(tmp_path / "x.wav").samplerate == 8000  # one bad, one done


@pytest.mark.skipif(not (DEMO / "manifest.jsonl").is_file(), reason="demo corpus not present")
def test_cli_round_trip_on_the_whole_demo_corpus(tmp_path, checkpoint, capsys):
    listed = [json.loads(line)["path"] for line in (DEMO / "manifest.jsonl").read_text().splitlines() if line.strip()]
    tokens, audio = tmp_path / "tokens", tmp_path / "audio"
    assert main(["encode", str(DEMO), "-o", str(tokens), "-c", str(checkpoint), "-q", "--batch-size", "16"]) == 0
    assert main(["decode", str(tokens), "-o", str(audio), "-c", str(checkpoint), "-q", "--batch-size", "16"]) == 0
    out = capsys.readouterr().out
    assert f"encoded {len(listed)} file(s), 0 failed" in out and f"decoded {len(listed)} file(s), 0 failed" in out
    for rel in listed:
        tf = TokenFile.load((tokens / rel).with_suffix(".cfwt"))
        src = sf.info(DEMO / rel)
        assert tf.num_samples == src.frames and tf.lengths()["semantic"] == src.frames // 160
        assert sf.info((audio / rel).with_suffix(".flac")).frames == src.frames


def test_cli_globs_export_and_skip_existing(tmp_path, checkpoint, corpus, capsys):
    out = tmp_path / "t"
    pattern = str(corpus / "**" / "*.flac")
    assert main(["encode", pattern, "-o", str(out), "-c", str(checkpoint), "-q"]) == 0
    flacs = sorted(p.relative_to(corpus) for p in corpus.rglob("*.flac"))
    assert sorted(p.relative_to(out) for p in out.rglob("*.cfwt")) == [f.with_suffix(".cfwt") for f in flacs]
    assert main(["encode", pattern, "-o", str(out), "-c", str(checkpoint), "-q", "--skip-existing"]) == 0
    assert f"{len(flacs)} skipped" in capsys.readouterr().out
    assert main(["export", str(out), "-o", str(tmp_path / "npy"), "--layout", "interleaved"]) == 0
    first = flacs[0].with_suffix(".npy")
    arr = np.load(tmp_path / "npy" / first)
    tf = TokenFile.load(out / flacs[0].with_suffix(".cfwt"))
    assert arr.dtype == np.int16 and arr.shape == (2 * len(tf.tokens["semantic"]),)
    assert main(["export", str(out / flacs[0].with_suffix(".cfwt")), "-o", str(tmp_path / "one.pt"),
                 "--format", "pt"]) == 0
    assert torch.load(tmp_path / "one.pt", weights_only=True)["codec"] == "toy"


def test_cli_reports_bad_audio_and_keeps_going(tmp_path, checkpoint, capsys):
    src = tmp_path / "in"
    write(src / "good.wav", noise(8000))
    write(src / "rate.wav", noise(4410), 44100)
    (src / "junk.wav").write_bytes(b"not audio at all")
    sf.write(src / "empty.wav", np.zeros(0, np.float32), SR)
    code = main(["encode", str(src), "-o", str(tmp_path / "t"), "-c", str(checkpoint), "-q", "--no-resample"])
    err = capsys.readouterr().err
    assert code == 1
    assert "junk.wav: cannot read audio" in err and "empty.wav: empty audio" in err
    assert "rate.wav: sample rate 44100 Hz, but the codec expects 16000 Hz" in err
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["good.cfwt"]
    assert main(["encode", str(tmp_path / "nothing*.wav"), "-o", str(tmp_path / "t"), "-c", str(checkpoint)]) == 1
    assert "no file matches" in capsys.readouterr().err
    assert main(["encode", str(src / "good.wav"), "-o", str(tmp_path / "t"), "-c", "semanticodec-9000tps"]) == 2
    assert "neither a checkpoint folder nor a registered pretrained name" in capsys.readouterr().err


def test_cli_rejects_foreign_and_damaged_token_files(tmp_path, registry, checkpoint, capsys):
    other = save_toy(tmp_path / "other", registry, name="toy-big", acoustic={"kind": "toy_vq", "codebook_size": 64})
    write(tmp_path / "a.wav", noise(8000))
    assert main(["encode", str(tmp_path / "a.wav"), "-o", str(tmp_path / "foreign.cfwt"), "-c", str(other),
                 "-q"]) == 0
    assert main(["encode", str(tmp_path / "a.wav"), "-o", str(tmp_path / "mine"), "-c", str(checkpoint), "-q"]) == 0
    data = (tmp_path / "mine" / "a.cfwt").read_bytes()
    (tmp_path / "mine" / "cut.cfwt").write_bytes(data[:-7])
    flipped = bytearray(data)
    flipped[-6] ^= 0xFF
    (tmp_path / "mine" / "flip.cfwt").write_bytes(bytes(flipped))
    capsys.readouterr()
    code = main(["decode", str(tmp_path / "foreign.cfwt"), str(tmp_path / "mine"), "-o", str(tmp_path / "out"),
                 "-c", str(checkpoint), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert "foreign.cfwt: tokens were written by codec 'toy-big'" in err and "loaded codec is 'toy'" in err
    assert "cut.cfwt: truncated" in err and "flip.cfwt: damaged: checksum mismatch" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.flac"]  # the good one (from mine/) decoded


# ---------------------------------------------------------------------------------------------------------------
# Pretrained registry
# ---------------------------------------------------------------------------------------------------------------


def toy_converter(calls: list):
    def convert(spec, files):
        calls.append(sorted(files))
        from safetensors.torch import load_file

        return Converted(recipe=json.loads(files["recipe.json"].read_text()),
                         state_dict=load_file(str(files["weights/toy.safetensors"])))

    return convert


@pytest.fixture
def pretrained(tmp_path, registry, monkeypatch):
    """A pretrained name ``toy-pretrained`` registered by a plugin, its "hub" repository in a folder."""
    from safetensors.torch import save_file

    monkeypatch.setenv("CODECFW_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CODECFW_PRETRAINED_DIR", raising=False)
    hub = tmp_path / "hub"
    (hub / "weights").mkdir(parents=True)
    torch.manual_seed(3)
    recipe = validate_recipe({**TOY_RECIPE, "name": "toy-pretrained"}, registry)
    save_file(build_codec(recipe, registry).state_dict(), str(hub / "weights" / "toy.safetensors"))
    (hub / "recipe.json").write_text(json.dumps(recipe.model_dump(mode="json")))
    calls: list = []
    plugin = types.ModuleType("toy_pretrained")

    @hookimpl
    def register_pretrained(register):
        spec = pretrained_spec("toy-pretrained", repo_id="codecfw-tests/toy",
                               files=["weights/toy.safetensors", "recipe.json"])
        register("toy-pretrained", spec, toy_converter(calls))

    plugin.register_pretrained = register_pretrained
    registry.register_module(plugin, name="toy_pretrained")
    return types.SimpleNamespace(hub=hub, calls=calls, recipe=recipe)


def test_pretrained_offline_error_names_cache_folder_and_files(tmp_path, pretrained, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PretrainedUnavailable) as info:
        load("toy-pretrained", cache_dir=tmp_path / "hf")
    msg = str(info.value)
    assert str(tmp_path / "hf" / "models--codecfw-tests--toy") in msg
    assert "weights/toy.safetensors, recipe.json" in msg and "hf download codecfw-tests/toy" in msg
    assert pretrained.calls == []


def test_pretrained_downloads_converts_once_and_caches(tmp_path, pretrained, monkeypatch):
    import huggingface_hub

    fetched = []

    def fake_download(repo_id, filename, *, revision=None, cache_dir=None, local_files_only=False, **_):
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        fetched.append((repo_id, filename))
        return str(pretrained.hub / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    tok = load("toy-pretrained")
    assert fetched == [("codecfw-tests/toy", "weights/toy.safetensors"), ("codecfw-tests/toy", "recipe.json")]
    assert tok.codec_id == "toy-pretrained" and tok.config_hash == pretrained.recipe.config_hash()
    tokens = tok.encode(noise(4000), SR)[0]
    again = load("toy-pretrained")  # served from the converted checkpoint: no new download, no conversion
    assert len(fetched) == 2 and len(pretrained.calls) == 1
    np.testing.assert_array_equal(again.encode(noise(4000), SR)[0].tokens["acoustic"], tokens.tokens["acoustic"])


def test_pretrained_from_a_local_folder(tmp_path, pretrained, monkeypatch):
    monkeypatch.setenv("CODECFW_PRETRAINED_DIR", str(tmp_path / "manual"))
    shutil.copytree(pretrained.hub, tmp_path / "manual" / "toy-pretrained")
    assert load("toy-pretrained").codec_id == "toy-pretrained"
    assert pretrained.calls == [["recipe.json", "weights/toy.safetensors"]]


def test_builtin_names_point_at_the_official_files(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from codecfw.plugins.pretrained import names as pretrained_module
    from codecfw.core.registry import Registry

    specs = {name: spec() for name, spec, _ in builtin_specs()}
    assert len([n for n in specs if n.startswith("semanticodec-")]) == 12
    s = specs["semanticodec-100tps.32k"]
    assert s.repo_id == "haoheliu/SemantiCodec" and s.files == [
        "semanticodec_tokenrate_100/encoder.ckpt", "semanticodec_tokenrate_100/decoder.ckpt",
        "codebook_idx/combine_512_audioset_dominate/codebook_16384_0.npy"]
    assert specs["semanticodec-25tps.4k"].files[2] == "codebook_idx/combine_128_audioset_dominate/codebook_2048_0.npy"
    x = specs["xcodec-hubert-librispeech"]
    assert x.repo_id == "ZhenYe234/xcodec" and x.files == ["xcodec_speech_hubert_librispeech.pth",
                                                           "config_hubert.yaml"]
    registry = Registry(strict=True)
    registry.register_module(pretrained_module, name="pretrained")
    assert set(registry.kinds("pretrained")) == set(specs) | {name for name, _ in bundled_specs()}
    monkeypatch.setenv("CODECFW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PretrainedUnavailable, match="models--haoheliu--SemantiCodec"):
        load("semanticodec-100tps.32k", registry=registry, cache_dir=tmp_path / "hf")


# ---------------------------------------------------------------------------------------------------------------
# Codecs shipped inside a package (bundled names) and release_checkpoint
# ---------------------------------------------------------------------------------------------------------------


def _ema_checkpoint(tmp_path: Path, registry) -> tuple[Path, dict]:
    """A toy run checkpoint whose EMA weights differ from its model weights."""
    torch.manual_seed(5)
    recipe = validate_recipe(TOY_RECIPE, registry)
    codec = build_codec(recipe, registry)
    ema = {k: v.detach() + 0.01 for k, v in codec.named_parameters()}
    folder = save_checkpoint(tmp_path / "run", 40, {"model": codec, "ema": ema},
                             {"recipe": recipe.model_dump(mode="json"), "config_hash": recipe.config_hash()}, {})
    return folder, ema


def test_release_writes_ema_weights_in_half_precision_and_rewrites_the_recipe(tmp_path, registry):
    from codecfw.core.checkpoint import read_checkpoint_meta, read_safetensors
    from codecfw.core.pretrained import release_checkpoint

    folder, ema = _ema_checkpoint(tmp_path, registry)
    out = release_checkpoint(folder, tmp_path / "shipped", dtype=torch.float16,
                             overrides=["description=shipped"], registry=registry, released_as="toy-shipped")
    weights = read_safetensors(out / "model.safetensors")
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float16}
    for name, value in ema.items():  # the EMA weights, not the raw ones, rounded to float16
        assert torch.equal(weights[name], value.to(torch.float16)), name
    meta = read_checkpoint_meta(out)
    assert meta["recipe"]["description"] == "shipped" and meta["step"] == 40 and meta["released_as"] == "toy-shipped"
    assert meta["weights"] == "ema"
    raw = release_checkpoint(folder, tmp_path / "raw", prefer_ema=False, registry=registry)
    raw_weights = read_safetensors(raw / "model.safetensors")
    assert read_checkpoint_meta(raw)["weights"] == "raw" and raw_weights[name].dtype == torch.float32
    assert not torch.equal(raw_weights[name], value)  # the last EMA name/value of the loop above
    assert meta["trained_from"] == {"checkpoint": folder.name, "step": 40,
                                    "config_hash": validate_recipe(TOY_RECIPE, registry).config_hash()}
    with pytest.raises(RecipeError, match="semantic.nonexistent"):  # validated like any recipe: the key is named
        release_checkpoint(folder, tmp_path / "bad", overrides=["semantic.nonexistent=1"], registry=registry)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="over the limit"):  # too large for the package: refused before writing
        release_checkpoint(folder, tmp_path / "big", dtype=torch.float16, max_bytes=16, registry=registry)
    assert not (tmp_path / "big").exists()
    from_run = release_checkpoint(folder.parent.parent, tmp_path / "from-run", registry=registry)  # a run directory
    assert read_checkpoint_meta(from_run)["weights"] == "ema" and read_checkpoint_meta(from_run)["step"] == 40


def test_a_bundled_name_loads_offline_in_float32_and_round_trips(tmp_path, registry, monkeypatch):
    from codecfw.core.pretrained import bundled_spec, release_checkpoint

    folder, ema = _ema_checkpoint(tmp_path, registry)
    shipped = release_checkpoint(folder, tmp_path / "pkg" / "weights" / "toy-shipped", dtype=torch.float16,
                                 registry=registry)
    plugin = types.ModuleType("toy_bundled")

    @hookimpl
    def register_pretrained(register):
        register("toy-shipped", bundled_spec("toy-shipped", shipped), lambda spec, files: None)

    plugin.register_pretrained = register_pretrained
    registry.register_module(plugin, name="toy_bundled")
    monkeypatch.setenv("CODECFW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = load("toy-shipped")
    params = dict(tok.codec.named_parameters())
    assert all(p.dtype == torch.float32 for p in params.values())
    for name, value in ema.items():
        assert torch.equal(params[name].data, value.to(torch.float16).float()), name
    assert not (tmp_path / "cache").exists()  # nothing converted or cached: the package's folder is loaded
    audio = write(tmp_path / "in.wav", noise(SR))
    assert main(["encode", str(audio), "-o", str(tmp_path / "t.cfwt"), "-c", "toy-shipped", "--quiet"]) == 0
    assert main(["decode", str(tmp_path / "t.cfwt"), "-o", str(tmp_path / "out.wav"), "-c", "toy-shipped",
                 "--quiet"]) == 0
    assert sf.info(tmp_path / "out.wav").frames == SR
    assert main(["import", "pretrained", "toy-shipped", "-o", str(tmp_path / "copy")]) == 0
    assert (tmp_path / "copy" / "model.safetensors").read_bytes() == (shipped / "model.safetensors").read_bytes()
    (shipped / "model.safetensors").unlink()
    with pytest.raises(PretrainedUnavailable, match="should ship at .*model.safetensors.*reinstall"):
        load("toy-shipped")
