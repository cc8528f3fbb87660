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
