"""``codecfw import semanticodec`` on a synthetic checkpoint in the official ``haoheliu/SemantiCodec`` layout.

The synthetic files are built from the parity fixtures' recipes (official key names): ``encoder.ckpt`` = the full
AudioMAE of ``audiomae_base`` (MAE decoder included) + the 1-layer BiLSTM/64-code VQ of ``acoustic_encoder``;
``decoder.ckpt`` = the tiny LatentDiffusion of ``ddim_sampler`` (UNet, LitEma copies, VAE encoder and decoder,
vocoder, schedule buffers). Converted and loaded as a codecfw checkpoint, the codec must reproduce the reference's
tokens for the 3.3 s fixture waveform end to end (waveform → fbank → ViT-B → k-means → BiLSTM → VQ).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from codecfw.core.checkpoint import read_state_dict as read_state
from codecfw.plugins.pretrained.semanticodec import convert_encoder_state, import_semanticodec, local_files
from codecfw.plugins.semantic.audiomae import audiomae_pos_embed

from .test_semanticodec_encoder import case, regen

TINY_DECODER = {"model_channels": 32, "channel_mult": [1, 2], "attention_resolutions": [2], "num_res_blocks": 1,
                "num_head_channels": 16, "vae_channels": 32, "vae_num_res_blocks": 1, "vocoder_channels": 64,
                "steps": 2, "window_batch_size": 1}


def official_encoder_state() -> dict[str, torch.Tensor]:
    base_meta, base = case("audiomae_base")
    state = regen.fill(None, base_meta["recipe"], base_meta["base_seed"], keep=base)
    state["audiomae.model.pos_embed"] = audiomae_pos_embed(768)  # "keep" tables not stored in the fixture
    state["audiomae.model.decoder_pos_embed"] = audiomae_pos_embed(512)
    ac_meta, ac = case("acoustic_encoder")
    state.update(regen.fill(None, ac_meta["recipe"], ac_meta["base_seed"], keep=ac))
    state["quantizer._codebook.initted"] = torch.tensor([1.0])  # vector-quantize-pytorch <= 1.14 layout
    state["quantizer._codebook.cluster_size"] = torch.ones(1, 64)
    return state


def official_decoder_state() -> dict[str, torch.Tensor]:
    meta, st = case_ddim()
    state = regen.fill(None, meta["recipe"], meta["base_seed"], keep=st)
    state["logvar"] = torch.zeros(1000)
    state["model_ema.decay"] = torch.tensor(0.9999)
    state["model_ema.num_updates"] = torch.tensor(0, dtype=torch.int)
    return state


def case_ddim():
    path = Path(__file__).parent / "fixtures" / "semanticodec" / "ddim_sampler.json"
    if not path.is_file():
        pytest.skip("ddim_sampler fixture (the decoder's) not present")
    return case("ddim_sampler")


@pytest.fixture(scope="module")
def official_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    ckpts = root / "semanticodec_tokenrate_100"
    ckpts.mkdir()
    torch.save(official_encoder_state(), ckpts / "encoder.ckpt")
    torch.save(official_decoder_state(), ckpts / "decoder.ckpt")
    books = root / "codebook_idx" / "combine_512_audioset_dominate"
    books.mkdir(parents=True)
    table = regen.make("centroids_K1", [64, 768], "randn", case("semantic_quant")[0]["base_seed"])
    np.save(books / "codebook_32_0.npy", table.numpy())  # 64 centroids, named after half of them as upstream
    return root


@pytest.fixture(scope="module")
def registry():
    """The three SemantiCodec plugins registered by hand (independent of installed entry points)."""
    from codecfw.core.registry import Registry
    from codecfw.plugins.acoustic import bilstm_vq
    from codecfw.plugins.decoder import latent_diffusion
    from codecfw.plugins.semantic import audiomae

    reg = Registry(strict=True)
    for module in (audiomae, bilstm_vq, latent_diffusion):
        reg.register_module(module, name=module.__name__.rsplit(".", 1)[-1], distribution="codecfw")
    return reg


@pytest.fixture(scope="module")
def converted(official_folder, tmp_path_factory, registry) -> Path:
    out = tmp_path_factory.mktemp("converted") / "semanticodec-tiny"
    return import_semanticodec(out, official_folder, token_rate=100, vocab_size=64,
                               overrides={"decoder": TINY_DECODER}, registry=registry)


def test_converted_checkpoint_layout(converted, official_folder):
    from safetensors import safe_open

    meta = json.loads((converted / "meta.json").read_text())
    with safe_open(str(converted / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        embed = f.get_tensor("acoustic.quantizer._codebook.embed")
        scale = f.get_tensor("decoder.scale_factor")
    assert not any(k.startswith(("model_ema", "decoder.model_ema")) for k in keys)
    assert not any("audiomae.decoder" in k or "mask_token" in k for k in keys)
    assert not any(k.startswith("decoder.vae.encoder") or k.startswith("decoder.vae.quant_conv") for k in keys)
    assert "semantic.codebooks.centroids_64" in keys and "semantic.audiomae.blocks.11.attn.qkv.weight" in keys
    official = read_state(official_folder / "semanticodec_tokenrate_100" / "encoder.ckpt")
    assert torch.equal(embed, official["quantizer._codebook.embed"])
    assert float(scale) == pytest.approx(0.6)
    assert meta["dropped_tensors"]["model_ema"] > 0 and meta["dropped_tensors"]["vae_encoder"] > 0
    assert meta["dropped_tensors"]["audiomae_decoder"] == sum(k.startswith(("audiomae.model.decoder",
                                                                            "audiomae.model.mask_token"))
                                                              for k in official)
    assert meta["schedule_checked"] is True
    recipe = meta["recipe"]
    assert recipe["semantic"]["stack_factor"] == 1 and recipe["acoustic"]["lstm_layers"] == 1
    assert recipe["acoustic"]["codebook_size"] == 64 and recipe["decoder"]["vae_encoder"] is False


def test_converted_codec_reproduces_reference_tokens(converted, registry):
    from codecfw.core.checkpoint import load_checkpoint

    codec, recipe, _ = load_checkpoint(converted, registry)
    wave = case("fbank_frontend")[1]["in/waveform"]  # 3.3 s: 168 tokens per stream, rows >= 165 are padding
    tokens = codec.encode(wave[None])
    ref = case("acoustic_encoder")[1]["out/pad/tokens"][0, :168]
    assert torch.equal(tokens["semantic"][0], ref[:, 0])
    assert torch.equal(tokens["acoustic"][0], ref[:, 1])
    assert codec.token_rate == 100 and codec.bitrate == pytest.approx(50 * (6 + 6))
    audio = codec.decode(tokens, wave.shape[-1])
    assert audio.shape == (1, 1, wave.shape[-1]) and torch.isfinite(audio).all()


def test_conversion_errors(official_folder, tmp_path, registry):
    state = official_encoder_state()
    convert_encoder_state(state)
    with pytest.raises(KeyError, match="unexpected key.*'something.else'"):
        convert_encoder_state({**state, "something.else": torch.zeros(1)}, "my.ckpt")
    del state["encoder_output_linear.weight"]
    with pytest.raises(KeyError, match="missing 'encoder_output_linear.weight'"):
        convert_encoder_state(state)
    # a stored schedule that is not the recomputed one
    bad = tmp_path / "hub"
    (bad / "semanticodec_tokenrate_100").mkdir(parents=True)
    for name in ("encoder.ckpt",):
        (bad / "semanticodec_tokenrate_100" / name).symlink_to(official_folder / "semanticodec_tokenrate_100" / name)
    (bad / "codebook_idx").symlink_to(official_folder / "codebook_idx")
    decoder = official_decoder_state()
    decoder["betas"] = decoder["betas"] * 1.01
    torch.save(decoder, bad / "semanticodec_tokenrate_100" / "decoder.ckpt")
    with pytest.raises(ValueError, match="schedule.*betas"):
        import_semanticodec(tmp_path / "out", bad, vocab_size=64, overrides={"decoder": TINY_DECODER},
                            registry=registry)
    assert not (tmp_path / "out").exists()


def test_missing_files_and_unsafe_pickles(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"semanticodec_tokenrate_50/decoder\.ckpt.*codebook_8192_0\.npy"):
        local_files(tmp_path, 50, [16384])
    from codecfw.core.cli import main

    assert main(["import", "semanticodec", "--source", str(tmp_path), "--token-rate", "25",
                 "-o", str(tmp_path / "x")]) == 2
    assert main(["import", "semanticodec", "--source", "./no/such/folder", "-o", str(tmp_path / "x")]) == 2

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"encoder.weight_ih_l0": Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match=r"evil\.ckpt: holds objects other than tensors"):
        read_state(tmp_path / "evil.ckpt")
